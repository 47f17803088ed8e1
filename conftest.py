"""Repo-root pytest hook: decide, before anything imports Numba, whether numba.cuda is simulated.

Numba reads NUMBA_ENABLE_CUDASIM once, when its configuration first loads, so the choice
has to be made here, the first project code pytest runs (this file loads before any test
module or properties/conftest.py). On a machine without an NVIDIA driver the property
suite then runs jit.cuda under the CUDA simulator; with a driver it runs on the GPU. A
value the user set (including NUMBA_ENABLE_CUDASIM=0) is always kept.
"""
import ctypes.util
import os


def nvidia_driver_present() -> bool:
    """True when the kernel module or the driver library (libcuda) of an NVIDIA GPU is here."""
    return os.path.exists("/proc/driver/nvidia") or ctypes.util.find_library("cuda") is not None


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not nvidia_driver_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def pytest_addoption(parser):
    # Imported here, after the simulator switch above, and only for its option list.
    from properties.conftest import add_options

    add_options(parser)
