"""Whether CUDA can be used, asked without importing torch where it cannot: torch takes
seconds and about 180 MB to import, and the first page (the Models tab's fit badges)
asks before any model is loaded. No NVIDIA driver library means no CUDA device, whatever
torch build is installed; only where the driver is there does torch answer."""
from __future__ import annotations

import ctypes
import functools
import sys

DRIVER_LIBRARIES = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}  # macOS has no CUDA


@functools.cache
def driver_present() -> bool:
    """True when the NVIDIA driver's CUDA library loads (what torch needs for a device).
    Asked once per process: the Models tab asks every second."""
    name = DRIVER_LIBRARIES.get(sys.platform)
    if name is None:
        return False
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch where there is no driver."""
    if not driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def empty_cache() -> None:
    """Hand CUDA's cached blocks back, where torch was imported (else it holds none)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
