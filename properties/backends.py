"""Finding backends: the built-in ones, and any third-party one named MODULE:ATTR.

A backend is any object with ``name``, ``cells``, ``forward`` and ``backward`` (see the
README's contract). Nothing here checks its class: the suite uses duck typing only.
"""
import importlib
import importlib.util
import os

#: Built-in backends, by name, as MODULE:ATTR specs. Those whose dependencies are
#: missing on this machine (torch, a GPU or the CUDA simulator) are left out by available().
BUILTIN = {
    "reference": "reference:backend",
    "torch": "reference.torch_backend:backend",
    "jit.cpu": "jit.cpu:backend",
    "jit.cuda": "jit.cuda:backend",
}

CONTRACT_ATTRS = ("name", "cells", "forward", "backward")


class BackendError(ValueError):
    """A backend spec that cannot be loaded; the message says why, in one line."""


def load_backend(spec: str):
    """Import ``MODULE:ATTR`` (or a built-in name) and check it has the contract's attributes."""
    if not isinstance(spec, str):
        raise TypeError(f"backend: expected a str MODULE:ATTR; got {type(spec).__name__}")
    spec = BUILTIN.get(spec, spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BackendError(
            f"backend: expected MODULE:ATTR (for example reference:backend) or one of "
            f"{', '.join(BUILTIN)}; got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {spec!r}: cannot import {module_name!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BackendError(f"backend {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    missing = [a for a in CONTRACT_ATTRS if not hasattr(obj, a)]
    if missing:
        raise BackendError(
            f"backend {spec!r}: expected an object with {', '.join(CONTRACT_ATTRS)}; "
            f"{type(obj).__name__} lacks {', '.join(missing)}")
    return obj


#: Optional built-ins and the package each needs; without it the backend is left out.
#: Any other failure to load a built-in is raised: a broken kernel must never vanish quietly.
OPTIONAL_NEEDS = {"torch": "torch"}


def available():
    """The built-in backends usable on this machine, as {name: backend}.

    torch is left out when it is not installed; jit.cuda when its ``available()`` says
    there is neither a GPU nor the CUDA simulator.
    """
    found = {}
    for name, spec in BUILTIN.items():
        need = OPTIONAL_NEEDS.get(name)
        if need and importlib.util.find_spec(need) is None:
            continue
        backend = load_backend(spec)
        if callable(getattr(backend, "available", None)) and not backend.available():
            continue
        found[name] = backend
    return found


def selected():
    """The backends a run should check: CELLBENCH_BACKEND if set, else every built-in one."""
    spec = os.environ.get("CELLBENCH_BACKEND")
    if spec:
        backend = load_backend(spec)
        return {str(backend.name): backend}
    return available()
