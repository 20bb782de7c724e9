"""What a token costs where a server bills for it, and the currencies a price (or the
electricity price of chatcore/costs) may be given in: one list, so a code the registry
takes is one the page can show."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Currencies a price may be given in (ISO 4217 code -> the sign shown before an amount).
CURRENCIES: Mapping[str, str] = MappingProxyType({
    "PHP": "₱", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "CN¥", "INR": "₹",
    "IDR": "Rp", "SGD": "S$", "AUD": "A$", "CAD": "C$", "KRW": "₩",
})
MAX_PRICE = 10_000  # per million tokens: far above any server's, below a typo's


class Price(BaseModel):
    """What a remote server charges per million tokens, in `currency` (an ISO 4217 code)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=MAX_PRICE)
    output: float = Field(ge=0, le=MAX_PRICE)
    currency: str = "USD"

    @field_validator("currency")
    @classmethod
    def _known(cls, value: str) -> str:
        if value.upper() not in CURRENCIES:
            raise ValueError(f"unknown currency code; known: {', '.join(CURRENCIES)}")
        return value.upper()
