"""How many cores this process may decode on; engines size their threads by it and the
core's CPU share splits it between replies."""
from __future__ import annotations

import os


def physical_cores() -> int:
    """Physical cores this process may use: decoding gains nothing from SMT siblings."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    cores: set[tuple[str, str]] = set()
    try:
        cpu = phys = core = None
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and cpu is not None:
                    if core is not None and (not allowed or cpu in allowed):
                        cores.add((phys or "0", core))
                    cpu = phys = core = None
            if cpu is not None and core is not None and (not allowed or cpu in allowed):
                cores.add((phys or "0", core))
    except OSError:
        pass
    return len(cores) or len(allowed) or os.cpu_count() or 1
