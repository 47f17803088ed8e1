"""Finding backends: the built-in ones, and any third-party one named MODULE:ATTR or MODULE.

A backend is any object with ``name``, ``cells``, ``forward`` and ``backward`` (see the
README's contract). Nothing here checks its class: the suite uses duck typing only. What a
backend declares beyond that (``backward = None``, ``dtypes``, ``known_defects``) is read here
too, so that every test reads it the same way.
"""
import importlib
import importlib.util
import os

import numpy as np

#: Built-in backends, by name, as MODULE:ATTR specs. Those whose dependencies are
#: missing on this machine (torch, a GPU or the CUDA simulator) are left out by available().
BUILTIN = {
    "reference": "reference:backend",
    "torch": "reference.torch_backend:backend",
    "jit.cpu": "jit.cpu:backend",
    "jit.cuda": "jit.cuda:backend",
    # Third-party frameworks, through cellbench's adapters (each needs its optional extra).
    "onnxruntime": "adapters.onnxruntime",
    "keras": "adapters.keras",
    "flax": "adapters.flax",
}

CONTRACT_ATTRS = ("name", "cells", "forward", "backward")


class BackendError(ValueError):
    """A backend spec that cannot be loaded; the message says why, in one line."""


def load_backend(spec: str):
    """Import ``MODULE:ATTR``, ``MODULE`` (its ``backend`` attribute, or the module itself) or a
    built-in name, and check it has the contract's attributes."""
    if not isinstance(spec, str):
        raise TypeError(f"backend: expected a str MODULE:ATTR; got {type(spec).__name__}")
    spec = BUILTIN.get(spec, spec)
    module_name, sep, attr = spec.partition(":")
    if not module_name or (sep and not attr):
        raise BackendError(
            f"backend: expected MODULE:ATTR or MODULE (for example reference:backend) or one of "
            f"{', '.join(BUILTIN)}; got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {spec!r}: cannot import {module_name!r}: {exc}") from exc
    obj = module
    if not sep:  # a plain module: its `backend` attribute if it has one, else the module itself
        attr = "backend" if hasattr(module, "backend") else ""
    for part in filter(None, attr.split(".")):
        if not hasattr(obj, part):
            raise BackendError(f"backend {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    missing = [a for a in CONTRACT_ATTRS if not hasattr(obj, a)]
    if missing:
        raise BackendError(
            f"backend {spec!r}: expected an object with {', '.join(CONTRACT_ATTRS)}; "
            f"{type(obj).__name__} lacks {', '.join(missing)}")
    return obj


#: The built-ins that wrap a third-party framework (adapters/).
FRAMEWORK_ADAPTERS = ("onnxruntime", "keras", "flax")


def is_framework_adapter(backend) -> bool:
    module = getattr(backend, "__name__", None) or type(backend).__module__
    return module in {BUILTIN[name] for name in FRAMEWORK_ADAPTERS}


#: Optional built-ins and the package each needs; without it the backend is left out.
#: Any other failure to load a built-in is raised: a broken kernel must never vanish quietly.
OPTIONAL_NEEDS = {"torch": "torch", "onnxruntime": "onnxruntime", "keras": "keras", "flax": "flax"}


def available():
    """The built-in backends usable on this machine, as {name: backend}.

    torch and the framework adapters are left out when their framework is not installed;
    jit.cuda when its ``available()`` says there is neither a GPU nor the CUDA simulator.
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


#: The dtypes a backend supports unless it declares ``dtypes``.
DEFAULT_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


def declared_dtypes(backend) -> frozenset:
    """The dtypes the backend declares (``dtypes``), as np.dtype; both floats when it declares none."""
    declared = getattr(backend, "dtypes", None)
    return DEFAULT_DTYPES if declared is None else frozenset(np.dtype(d) for d in declared)


def has_backward(backend) -> bool:
    """False for a forward-only backend, one that declares ``backward = None``."""
    return getattr(backend, "backward", None) is not None


def known_defects(backend) -> tuple:
    """The framework defects the backend declares (adapters.known.KnownDefect items)."""
    from adapters.known import check_known_defects
    return check_known_defects(getattr(backend, "known_defects", ()))


#: Packages whose backends are the project's own: their error messages are held to the
#: contract's literal wording ("expected …; got …"), a third-party backend's only to naming things.
OWN_PACKAGES = ("reference", "jit", "adapters")


def is_own(backend) -> bool:
    module = getattr(backend, "__name__", None) or type(backend).__module__
    return module.partition(".")[0] in OWN_PACKAGES


#: What a layer implementation may support beyond stacking; reference.layers' composition has all.
LAYER_FEATURES = frozenset({"bidirectional", "lengths", "projection"})


def native_layers(backend) -> bool:
    """True when the backend implements layers itself (``layer_forward``)."""
    return getattr(backend, "layer_forward", None) is not None


def layer_features(backend) -> frozenset:
    """The layer features a backend's own layers declare (``layer_features``; all when it declares
    none); every feature when the suite composes layers from its cells."""
    if not native_layers(backend):
        return LAYER_FEATURES
    return frozenset(getattr(backend, "layer_features", LAYER_FEATURES))


def has_layer_backward(backend) -> bool:
    """Whether layer gradients exist: the backend's own layer_backward, or its cells' backward."""
    if native_layers(backend):
        return getattr(backend, "layer_backward", None) is not None
    return has_backward(backend)
