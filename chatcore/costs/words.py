"""Costs in a person's words: amounts with their currency's sign, the Models tab's line,
the note under a reply and the power source."""
from __future__ import annotations

import math

from chatcore.costs.book import ModelCost
from backends.price import CURRENCIES
from chatcore.i18n import Texts


def money(amount: float, currency: str, texts: Texts) -> str:
    """`₱0.0040`, `$1.25`, `₱120`: two significant digits below one, cents above."""
    if amount == 0:
        digits = 0
    elif amount >= 100:
        digits = 0
    elif amount >= 1:
        digits = 2
    else:
        digits = min(-math.floor(math.log10(amount)) + 1, 10)
    return f"{CURRENCIES.get(currency, currency + ' ')}{texts.number(amount, digits)}"


def power_words(cost: ModelCost, texts: Texts) -> str:
    """"35 W, default" / "41 W, read from RAPL" / "60 W, set by you"."""
    return texts(f"costs.power.{cost.watts_source}", watts=texts.number(cost.watts or 0, 0))


def cost_line(cost: ModelCost, texts: Texts) -> str:
    """The Models tab's line for one model, with where the figure comes from."""
    if not cost.known:
        return texts("costs.unmeasured")
    amounts = dict(output=money(cost.output_per_million or 0, cost.currency, texts),
                   input=money(cost.input_per_million or 0, cost.currency, texts))
    if cost.source == "price":
        return texts("costs.line_price", **amounts)
    hardware = texts("costs.hardware", amount=money(cost.hardware_per_hour, cost.currency,
                                                    texts)) if cost.hardware_per_hour else ""
    return texts("costs.line_measured", **amounts, n=cost.replies, engine=cost.engine,
                 device=cost.device,
                 power=power_words(cost, texts),
                 price=money(cost.price_per_kwh or 0, cost.currency, texts),
                 hardware=hardware)


def reply_note(cost: ModelCost, prompt_tokens: int, completion_tokens: int,
               texts: Texts) -> str:
    """"≈ ₱0.004 for this reply", or "" while the model's cost is not known."""
    amount = cost.of_reply(prompt_tokens, completion_tokens)
    return "" if amount is None else texts("costs.reply", amount=money(amount, cost.currency,
                                                                         texts))
