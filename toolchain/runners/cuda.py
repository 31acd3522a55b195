"""The cuda runner: bundles whose kernels run on an NVIDIA GPU, run natively on this machine's GPU 0.

It is the host runner with one more condition: the NVIDIA driver must report a GPU the bundle's
device code serves, the target's architecture or newer (the bundle embeds PTX for newer GPUs).
On a machine without one the bundle is built, not run; a board's GPU is reached over SSH or TVM RPC.
"""

import ctypes

from ..bundle import Entry
from ..target.profile import Target
from . import register
from .base import RunnerCaps
from .host import HostRunner

_CUDA_SUCCESS = 0
# CUdevice_attribute values (cuda.h).
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


def _compute_capability() -> tuple[int, int] | str:
    """(major, minor) of GPU 0 from the NVIDIA driver, or why there is none."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "this machine has no NVIDIA driver (libcuda.so.1), so no GPU to run on"
    try:
        driver.cuInit
    except AttributeError:  # edgeyard's build-time stand-in (toolchain/backends/tvm/cuda.py) exports nothing
        return "this machine has no NVIDIA driver, so no GPU to run on"
    count, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if driver.cuInit(0) != _CUDA_SUCCESS or driver.cuDeviceGetCount(ctypes.byref(count)) != _CUDA_SUCCESS \
            or count.value == 0:
        return "the NVIDIA driver finds no GPU on this machine"
    for attribute, value in ((_COMPUTE_CAPABILITY_MAJOR, major), (_COMPUTE_CAPABILITY_MINOR, minor)):
        if driver.cuDeviceGetAttribute(ctypes.byref(value), attribute, 0) != _CUDA_SUCCESS:
            return "the NVIDIA driver cannot tell GPU 0's compute capability"
    return major.value, minor.value


class CudaRunner(HostRunner):
    name = "cuda"
    caps = RunnerCaps(resource="cuda")

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        reason = super().unavailable_reason(target, entry)
        if reason is not None:
            return reason
        capability = _compute_capability()
        if isinstance(capability, str):
            return capability
        needed = int(target.tvm_target["arch"].removeprefix("sm_").rstrip("abcdefghijklmnopqrstuvwxyz"))
        found = capability[0] * 10 + capability[1]
        if found < needed:
            return f"GPU 0 is sm_{found}, older than the bundle's {target.tvm_target['arch']}"
        return None


register(CudaRunner())
