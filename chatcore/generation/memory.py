"""The memory budget models must fit, and this process's memory.

What a model will take is each engine's own estimate (backends/footprint.py and the
engines' *_memory modules); the planner here only compares it with the budget.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from backends.cuda import driver_present

log = logging.getLogger(__name__)

GB = 1e9


def format_bytes(n: float) -> str:
    """"4.7 GB", "412 MB", "38 kB" (nothing at all reads "0 MB", beside budgets in MB)."""
    if abs(n) >= GB:
        return f"{n / GB:.1f} GB"
    return f"{n / 1e6:.0f} MB" if abs(n) >= 1e6 or n == 0 else f"{n / 1e3:.0f} kB"


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes the models may take, per device ("cpu", "cuda:0", ...)."""

    limits: dict[str, int]
    gpu_free: Callable[[str], int] | None = None  # free bytes on a GPU now; tests pass a fake

    def limit(self, device: str, held: int = 0) -> int:
        """A set limit, or for a GPU without one 90% of what is free there now plus what
        this app's resident models already `held` there: they are not in the free figure,
        and the planner subtracts them itself, so they must not be missing twice."""
        if device not in self.limits:
            if not device.startswith("cuda"):
                return 0
            return ((self.gpu_free or gpu_free_bytes)(device) + held) * 9 // 10
        return self.limits[device]

    @classmethod
    def parse(cls, text: str | None) -> MemoryBudget:
        """`12GB`, or `cpu=12GB,cuda:0=20GB`; without it, 75% of the RAM free now."""
        limits = {"cpu": available_ram_bytes() * 3 // 4}
        if not text:
            return cls(limits)
        for part in text.split(","):
            device, _, size = part.strip().rpartition("=")
            device = device.strip() or "cpu"
            if device != "cpu" and not re.fullmatch(r"cuda:\d+", device):
                raise ValueError(f"--max-memory: unknown device {device!r} (use cpu or cuda:N)")
            limits[device] = parse_size(size)
        return cls(limits)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*", text, re.I)
    if not match:
        raise ValueError(f"--max-memory: {text!r} is not a size like 12GB or 512MiB")
    units = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    return int(float(match.group(1)) * units[(match.group(2) or "gb").lower()])


def available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gpu_free_bytes(device: str) -> int:
    if not driver_present():
        return 0
    try:
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(int(device.partition(":")[2] or 0))
            return int(free)
    except (ImportError, RuntimeError, ValueError):
        pass
    return 0


def gpu_devices() -> list[str]:
    """The CUDA devices torch sees ("cuda:0", ...); none with the CPU wheel."""
    if not driver_present():
        return []
    try:
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):
        return []


def process_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory() -> None:
    """Hand memory the allocator kept after frees back to the system (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
