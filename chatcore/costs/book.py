"""What a token costs, per model: for a local model, its measured seconds per token times
the power draw times the electricity price (plus the hardware's cost per hour, when given);
for a remote server, the price its entry declares. One object the page, Compare and
Evaluate ask, fed by the manager with every finished reply."""
from __future__ import annotations

from dataclasses import dataclass

from chatcore.conversations.store import Store
from chatcore.costs.power import PowerMeter
from chatcore.costs.settings import CostSettings, load_settings, save_settings
from chatcore.costs.speeds import Speed, SpeedBook
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.replies import Measured

MILLION = 1_000_000
SECONDS_PER_HOUR = 3_600


@dataclass(frozen=True)
class ModelCost:
    """A model's cost per million tokens in `currency`, and where it comes from: "measured"
    (local: time x watts x price), "price" (the entry's), or "unmeasured" (no reply yet)."""

    model_id: str
    source: str
    currency: str
    input_per_million: float | None = None
    output_per_million: float | None = None
    replies: int = 0  # measured replies behind a local figure
    watts: float | None = None
    watts_source: str = ""  # power.PowerReading.source
    price_per_kwh: float | None = None
    hardware_per_hour: float = 0.0
    tokens_per_second: float | None = None  # measured output speed
    engine: str = ""  # where the time was measured: the engine and device
    device: str = ""

    @property
    def known(self) -> bool:
        return self.output_per_million is not None

    def of_reply(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What one reply of these sizes cost; None while the figures are unknown."""
        if self.output_per_million is None:
            return None
        return (prompt_tokens * (self.input_per_million or 0.0)
                + completion_tokens * self.output_per_million) / MILLION


def per_million(seconds_per_token: float | None, watts: float, settings: CostSettings) -> \
        float | None:
    """Seconds per token -> cost per million tokens: energy (W x s -> kWh) at the price,
    plus the hardware's share of the hours the tokens took."""
    if seconds_per_token is None:
        return None
    hours = seconds_per_token * MILLION / SECONDS_PER_HOUR
    return hours * (watts / 1000 * settings.price_per_kwh + settings.hardware_per_hour)


class CostBook:
    def __init__(self, store: Store, power: PowerMeter | None = None) -> None:
        self._store = store
        self.speeds = SpeedBook(store)
        self.power = power or PowerMeter()

    def record(self, measured: Measured) -> None:
        """ModelManager.measure_with's listener: one more measured reply."""
        self.speeds.record(measured)

    def settings(self, language: str) -> CostSettings:
        return load_settings(self._store, language)

    def save(self, settings: CostSettings) -> None:
        save_settings(self._store, settings)

    def cost(self, entry: ModelEntry, settings: CostSettings) -> ModelCost:
        speed = self.speeds.speed(entry.id, entry.backend)
        rate = speed.output_tokens_per_second if speed else None
        if entry.price is not None:
            return ModelCost(entry.id, "price", entry.price.currency, entry.price.input,
                             entry.price.output, speed.replies if speed else 0,
                             tokens_per_second=rate)
        if entry.is_remote or speed is None or speed.seconds_per_output_token is None:
            return ModelCost(entry.id, "unmeasured", settings.currency)
        return self._measured(entry, speed, settings)

    def _measured(self, entry: ModelEntry, speed: Speed, settings: CostSettings) -> ModelCost:
        power = self.power.read(settings.watts, speed.device)
        return ModelCost(entry.id, "measured", settings.currency,
                         per_million(speed.seconds_per_input_token, power.watts, settings),
                         per_million(speed.seconds_per_output_token, power.watts, settings),
                         speed.replies, power.watts, power.source, settings.price_per_kwh,
                         settings.hardware_per_hour, speed.output_tokens_per_second,
                         speed.engine, speed.device)

    def costs(self, registry: ModelRegistry, settings: CostSettings) -> dict[str, ModelCost]:
        """Every entry's cost, by model id, in file order."""
        return {entry.id: self.cost(entry, settings) for entry in registry.entries}
