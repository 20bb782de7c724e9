"""Sampling settings, declared once: their bounds, defaults and help text.

The same settings reach a model four ways: a model entry's `defaults:` in models.yaml, the
OpenAI-compatible API request, the Chat, Compare and Evaluate controls, and a stored
conversation reopened. `SamplingSettings` is the one value that travels: the API request's
optional fields are made from its fields (`optional_fields`), the page builds one control
per field by looping over them, and `backends.base.GenParams` carries it whole to the
engines. Adding a setting is adding a field here, then teaching each engine to apply it
(or to name it in `unhonoured`). No UI here: the page and the API both import it.
"""
from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_SEED = 2**63  # exclusive: seeds are non-negative signed 64-bit integers

Temperature = Annotated[float, Field(
    ge=0.0, le=2.0,
    description="How random the reply is: 0 always takes the likeliest token (greedy), "
                "higher values give more varied text.",
    json_schema_extra={"step": 0.05})]
TopP = Annotated[float, Field(
    gt=0.0, le=1.0,
    description="Nucleus sampling: only the likeliest tokens whose probabilities add up "
                "to this share are considered; 1 keeps them all.",
    json_schema_extra={"step": 0.05, "slider_minimum": 0.05})]
TopK = Annotated[int, Field(
    ge=0, le=200,
    description="Only the k likeliest tokens are considered at each step; 0 turns it off.",
    json_schema_extra={"step": 1})]
MaxNewTokens = Annotated[int, Field(
    ge=1, le=8192,
    description="The most tokens the reply may have; the model's context may allow fewer.",
    json_schema_extra={"step": 1})]
MinP = Annotated[float, Field(
    ge=0.0, le=1.0,
    description="Min-p sampling: tokens less likely than this share of the likeliest "
                "token's probability are left out; 0 turns it off.",
    json_schema_extra={"step": 0.01})]
RepetitionPenalty = Annotated[float, Field(
    ge=0.5, le=2.0,
    description="Above 1 discourages repeating tokens already in the text; 1 is off.",
    json_schema_extra={"step": 0.05})]
Seed = Annotated[int | None, Field(
    ge=0, lt=MAX_SEED,
    description="The same seed and settings give the same reply again; none (on the page: "
                "-1) means a random one each time.",
    json_schema_extra={"step": 1, "control": "number"})]


Think = Annotated[bool | None, Field(
    description="Thinking models: whether the model thinks before it answers, through the "
                "chat template's enable_thinking; none keeps the template's default.",
    json_schema_extra={"control": "choice"})]
ThinkingBudget = Annotated[int, Field(
    ge=0, le=32768,
    description="Thinking models: the most tokens the thought may take; then the end "
                "marker is written for the model and it answers. 0 or none: no limit.",
    json_schema_extra={"step": 1})]


class SamplingSettings(BaseModel):
    """The sampling settings of one reply, or a model entry's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Temperature = 0.7
    top_p: TopP = 0.9
    top_k: TopK = 40
    min_p: MinP = 0.0
    max_new_tokens: MaxNewTokens = 512
    repetition_penalty: RepetitionPenalty = 1.0
    seed: Seed = None
    think: Think = None
    thinking_budget: ThinkingBudget = 0


def merge(defaults: SamplingSettings, **overrides: Any) -> SamplingSettings:
    """`defaults` with the given settings over them; a None override keeps the default.

    The result is validated: an out-of-range or unknown setting raises pydantic's
    ValidationError naming the field and the bound."""
    values = defaults.model_dump()
    values.update({name: value for name, value in overrides.items() if value is not None})
    return SamplingSettings.model_validate(values)


def optional_fields(leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every setting as an optional field ("not given": None), for pydantic.create_model:
    the API request takes exactly the settings models.yaml and the page take."""
    return {name: (Annotated[(info.annotation | None, *info.metadata)] if info.metadata
                   else info.annotation | None, Field(None, description=info.description))
            for name, info in SamplingSettings.model_fields.items() if name not in leave_out}


def stored(values: dict | None) -> SamplingSettings:
    """The settings kept with a reply or a conversation, read back: a field written by an
    older version that no longer validates, or one it did not have, takes its default."""
    known = {}
    for name, value in (values or {}).items():
        if name in SamplingSettings.model_fields:
            try:
                SamplingSettings.model_validate({name: value})
            except ValidationError:
                continue
            known[name] = value
    return SamplingSettings.model_validate(known)


def control(name: str) -> str:
    """How the page shows a setting: "slider", "number" (the seed) or "choice" (Think)."""
    return _metadata(name)[1].get("control", "slider")


def _metadata(name: str) -> tuple[Any, dict]:
    try:
        info = SamplingSettings.model_fields[name]
    except KeyError:
        raise KeyError(f"no sampling setting {name!r}; known: "
                       f"{', '.join(SamplingSettings.model_fields)}") from None
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return info, extra


def bounds(name: str) -> tuple[float, float, float]:
    """(minimum, maximum, step) of a setting's slider, read from the field's constraints.

    An exclusive lower bound (top_p > 0) is given as the schema's practical slider minimum
    (`slider_minimum`); the seed has no practical maximum, so its own is the largest seed."""
    info, extra = _metadata(name)
    low = high = None
    for item in info.metadata:
        if isinstance(item, Ge):
            low = item.ge
        elif isinstance(item, Gt):
            low = extra.get("slider_minimum", item.gt)
        elif isinstance(item, Le):
            high = item.le
        elif isinstance(item, Lt):
            high = item.lt - 1 if isinstance(item.lt, int) else item.lt
    if low is None or high is None:
        raise ValueError(f"sampling setting {name!r} declares no lower and upper bound")
    return low, high, extra["step"]
