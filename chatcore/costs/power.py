"""The machine's power draw while it answers: the CPU packages' energy counters (RAPL,
through Linux's powercap) where readable, else a GPU's own power reading, else a stated
default the person can change. The source is always named beside the figure."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")
DEFAULT_WATTS = 35.0  # a laptop or small desktop's CPU package under load
SAMPLE_S = 0.25  # the first reading's window; later ones span the time since the last


@dataclass(frozen=True)
class PowerReading:
    watts: float
    source: str  # "set" (by the person), "rapl", "gpu" or "default"


def rapl_counters(root: Path = POWERCAP) -> list[tuple[Path, int]]:
    """Each CPU package's energy counter file and its wrap-around range, where readable
    (sub-zones such as `intel-rapl:0:0` are inside their package and not counted again)."""
    found = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue
        try:
            (zone / "energy_uj").read_text()
            span = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        found.append((zone / "energy_uj", span))
    return found


def gpu_watts() -> float | None:
    """The first CUDA GPU's power draw now, through NVML (None without one)."""
    try:
        import pynvml  # noqa: PLC0415 - only where an NVIDIA driver is

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetPowerUsage(pynvml.nvmlDeviceGetHandleByIndex(0)) / 1000
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: not a source
        return None


class PowerMeter:
    """Reads the draw; RAPL counters are sampled across calls (the watts since the last
    reading), so a page that refreshes while replies run reads the draw under load."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self._counters = rapl_counters(root)
        self._lock = threading.Lock()
        self._last: tuple[float, list[int]] | None = None
        self._watts: float | None = None

    def read(self, set_watts: float | None, device: str = "cpu") -> PowerReading:
        """The watts to charge a model on `device` with: the person's, else the GPU's
        reading for a model on one, else the CPU packages', else the default."""
        if set_watts is not None:
            return PowerReading(set_watts, "set")
        if device.startswith("cuda") and (watts := gpu_watts()) is not None:
            return PowerReading(watts, "gpu")
        try:
            watts = self._rapl() if self._counters else None
        except (OSError, ValueError):
            watts = None
        if watts is not None:
            return PowerReading(watts, "rapl")
        return PowerReading(DEFAULT_WATTS, "default")

    def _rapl(self) -> float | None:
        with self._lock:
            if self._last is None:
                self._last = self._sample()
                time.sleep(SAMPLE_S)
            now = self._sample()
            then, self._last = self._last, now
            seconds = now[0] - then[0]
            if seconds >= SAMPLE_S / 2:
                joules = sum((b - a) % span for a, b, (_, span)
                             in zip(then[1], now[1], self._counters)) / 1e6
                self._watts = joules / seconds
            return self._watts

    def _sample(self) -> tuple[float, list[int]]:
        try:
            return time.monotonic(), [int(p.read_text()) for p, _ in self._counters]
        except (OSError, ValueError) as exc:
            log.warning("RAPL counters stopped being readable: %s", exc)
            self._counters = []
            raise
