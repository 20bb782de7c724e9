"""The cost settings a person sets once: watts, electricity price and currency, and an
optional hardware cost spread over hours of use; bounded, kept in the store.

Until they are saved, the page's language picks the currency and a stated price per kWh
(pesos on the Filipino page), and the watts are read from the machine where it says them.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from chatcore.conversations.store import Store
from backends.price import CURRENCIES

PREFERENCE = "costs"  # the store's preferences row (user "": the machine's, not a person's)
MAX_WATTS = 5_000.0  # a workstation with several GPUs draws under this
MAX_PRICE_PER_KWH = 1_000.0  # in any listed currency's units: above every tariff's
MAX_HARDWARE_COST = 100_000_000.0
MAX_HOURS = 1_000_000.0
# The page's language -> the currency and price per kWh it starts with: the Philippines'
# household rate is about ₱12 per kWh (Meralco, 2024); $0.15 is near the US average.
LANGUAGE_DEFAULTS: dict[str, tuple[str, float]] = {"fil": ("PHP", 12.0), "en": ("USD", 0.15)}


class CostSettingError(ValueError):
    """A cost setting refused; the message names the field and its unit, and the parts
    stay apart for the page to say in its language (`kind`: bounds, number or currency)."""

    def __init__(self, field: str, value: object, kind: str, low: float = 0.0,
                 high: float = 0.0, unit: str = "") -> None:
        self.field, self.value, self.kind = field, value, kind
        self.low, self.high, self.unit = low, high, unit
        super().__init__(
            f"{field}: unknown currency code {value!r}; known: {', '.join(CURRENCIES)}"
            if kind == "currency" else f"{field}: {value!r} is not a number"
            if kind == "number" else
            f"{field}: {value!r} is out of bounds; give {low:,.0f} to {high:,.0f} {unit}")


@dataclass(frozen=True)
class CostSettings:
    """`watts` None: read from the machine (chatcore/costs/power.py), else the default."""

    currency: str
    price_per_kwh: float
    watts: float | None = None
    hardware_cost: float = 0.0  # in `currency`, spread evenly over `hardware_hours`
    hardware_hours: float = 10_000.0
    saved: bool = False  # False: the page's language's defaults, not a person's choice

    def __post_init__(self) -> None:
        if self.currency not in CURRENCIES:
            raise CostSettingError("currency", self.currency, "currency")
        _bounded("price_per_kwh", self.price_per_kwh, 0, MAX_PRICE_PER_KWH,
                 f"{self.currency}/kWh")
        if self.watts is not None:
            _bounded("watts", self.watts, 0, MAX_WATTS, "W")
        _bounded("hardware_cost", self.hardware_cost, 0, MAX_HARDWARE_COST, self.currency)
        _bounded("hardware_hours", self.hardware_hours, 1, MAX_HOURS, "h")

    @property
    def hardware_per_hour(self) -> float:
        return self.hardware_cost / self.hardware_hours


def _bounded(name: str, value: float, low: float, high: float, unit: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) \
            or not low <= value <= high:
        raise CostSettingError(name, value, "bounds", low, high, unit)


def default_settings(language: str) -> CostSettings:
    currency, price = LANGUAGE_DEFAULTS.get(language, LANGUAGE_DEFAULTS["en"])
    return CostSettings(currency, price)


def parse_settings(currency: str, price_per_kwh: object, watts: object = None,
                   hardware_cost: object = 0.0, hardware_hours: object = 10_000.0) -> CostSettings:
    """Settings from a form or a file, each field checked; blank watts means "read them"."""
    return CostSettings(str(currency or "").strip().upper(),
                        _number("price_per_kwh", price_per_kwh),
                        None if watts in (None, "") else _number("watts", watts),
                        _number("hardware_cost", _given(hardware_cost, 0.0)),
                        _number("hardware_hours", _given(hardware_hours, 10_000.0)), saved=True)


def _given(value: object, default: float) -> object:
    """A field left empty takes its default; zero is a value (and checked as one)."""
    return default if value is None or value == "" else value


def _number(name: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CostSettingError(name, value, "number") from None


def load_settings(store: Store, language: str) -> CostSettings:
    """The saved settings, or the page language's defaults when none are saved (or what
    was saved no longer passes the bounds)."""
    raw = store.preference("", PREFERENCE)
    if raw:
        try:
            fields = json.loads(raw)
            fields.pop("saved", None)
            return CostSettings(**fields, saved=True)
        except (ValueError, TypeError):
            pass
    return default_settings(language)


def save_settings(store: Store, settings: CostSettings) -> None:
    fields = asdict(settings)
    fields.pop("saved")
    store.set_preference("", PREFERENCE, json.dumps(fields))
