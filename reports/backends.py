"""Choosing the backends a benchmark run measures, with a one-line reason for any left out.

Built on properties.backends (the registry and MODULE:ATTR loader). Unlike
properties.backends.available(), a built-in that fails to load does not abort a whole
benchmark run: it is left out and its reason is printed and written into the report, so
it never vanishes quietly.
"""
import importlib.util
import os

from properties.backends import BUILTIN, OPTIONAL_NEEDS, BackendError, load_backend


def simulated(name, backend) -> bool:
    """True when a backend would run on the CUDA simulator: its timings mean nothing.

    A backend may say so itself (a true ``simulated`` or ``SIMULATOR`` attribute); jit.cuda
    and any backend whose name mentions cuda count as simulated when NUMBA_ENABLE_CUDASIM=1.
    """
    for attr in ("simulated", "SIMULATOR"):
        flag = getattr(backend, attr, None)
        if flag is not None:
            return bool(flag() if callable(flag) else flag)
    mentions_cuda = "cuda" in name.lower() or "cuda" in str(getattr(backend, "name", "")).lower()
    return mentions_cuda and os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


SIMULATED_PREFIX = "simulated"
#: Why a CUDA backend is not timed on a machine without a CUDA GPU. The property suite still checks
#: it there (the repo-root conftest.py turns the simulator on), so a report says of it, in the
#: Machines note and in its conformance row alike: simulated, checked, not timed.
SIMULATED = f"{SIMULATED_PREFIX} here: no CUDA GPU, and timings on the CUDA simulator mean nothing"

#: Timing peers that are not contract backends: the name and the module that provides ``prepare``.
PEERS = {"torch.nn": "reports.torch_peer"}
#: Built-ins timed only when named: the torch oracle builds a module and copies arrays in every
#: call, so torch.nn (reports.torch_peer) stands for PyTorch's speed instead.
TIMED_ON_REQUEST = {"torch"}


def load_peer(name):
    return importlib.import_module(PEERS[name])


def resolve_backends(specs=None):
    """({name: backend}, {name: why it was left out}) for specs, or for every built-in one.

    specs: built-in names or MODULE:ATTR strings. An explicitly named backend that cannot be
    loaded, or that would run on the CUDA simulator, raises BackendError, with the valid
    built-in names in its message.
    """
    found, left_out = {}, {}
    if specs:
        for spec in specs:
            if spec in PEERS:
                found[spec] = load_peer(spec)
                continue
            try:
                backend = load_backend(spec)
            except BackendError as exc:
                raise BackendError(f"{exc} (built-in backends: {', '.join([*BUILTIN, *PEERS])})") from None
            name = spec if spec in BUILTIN else str(backend.name)
            if simulated(name, backend):
                raise BackendError(f"backend {spec!r} is {SIMULATED}; it is never timed")
            found[name] = backend
        return found, left_out
    for name, spec in BUILTIN.items():
        need = OPTIONAL_NEEDS.get(name)
        if need and importlib.util.find_spec(need) is None:
            left_out[name] = f"needs {need}, which is not installed"
            continue
        try:
            backend = load_backend(spec)
        except BackendError as exc:
            left_out[name] = str(exc)
            continue
        if callable(getattr(backend, "available", None)) and not backend.available():
            # a CUDA backend with no GPU here (and the simulator off in this process): the property
            # suite runs it on the simulator all the same, so it is left out as a simulated one is
            left_out[name] = SIMULATED if "cuda" in name.lower() else \
                "its available() says it cannot run here (no GPU, no simulator)"
            continue
        if simulated(name, backend):
            left_out[name] = SIMULATED
            continue
        if name in TIMED_ON_REQUEST:
            left_out[name] = "timed only when named (--backend torch); torch.nn is PyTorch's timing peer"
            continue
        found[name] = backend
    if importlib.util.find_spec("torch") is not None:
        found["torch.nn"] = load_peer("torch.nn")
    return found, left_out

