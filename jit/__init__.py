"""Numba backends: jit.cpu (@njit kernels) and jit.cuda (numba.cuda kernels); jit.gatemath is their shared scalar math."""
