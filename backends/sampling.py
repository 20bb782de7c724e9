"""Sampling settings, declared once: their bounds, defaults, labels and help text.

The same six settings reach a model three ways: a model entry's `defaults:` in models.yaml,
the OpenAI-compatible API request, and the Chat and Compare sliders. They used to be
declared in each place and disagreed (a repetition penalty of 5 was fine in models.yaml,
refused by the sliders, accepted by the API). Here each setting's constraint is one
`Annotated` alias, reused by `SamplingSettings` (models.yaml) and by the API request's
optional fields, and the page builds its sliders from this schema through `bounds()`,
so a bound or a help text changes in one place only. No UI here: the page and the API
both import it.

`SamplingSettings` is the validated shape; `backends.base.GenParams` stays the runtime
value the engines take (`gen_params` converts, adding the API's stop strings and the
continue flag).
"""
from __future__ import annotations

from typing import Annotated, Any, get_args

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field

from backends.base import GenParams

MAX_SEED = 2**63  # exclusive: seeds are non-negative signed 64-bit integers

Temperature = Annotated[float, Field(
    ge=0.0, le=2.0,
    description="How random the reply is: 0 always takes the likeliest token (greedy), "
                "higher values give more varied text.",
    json_schema_extra={"label": "Temperature (0 = greedy)", "step": 0.05})]
TopP = Annotated[float, Field(
    gt=0.0, le=1.0,
    description="Nucleus sampling: only the likeliest tokens whose probabilities add up "
                "to this share are considered; 1 keeps them all.",
    json_schema_extra={"label": "Top p", "step": 0.05, "slider_minimum": 0.05})]
TopK = Annotated[int, Field(
    ge=0, le=200,
    description="Only the k likeliest tokens are considered at each step; 0 turns it off.",
    json_schema_extra={"label": "Top k (0 = off)", "step": 1})]
MaxNewTokens = Annotated[int, Field(
    ge=1, le=8192,
    description="The most tokens the reply may have; the model's context may allow fewer.",
    json_schema_extra={"label": "Max new tokens", "step": 1})]
RepetitionPenalty = Annotated[float, Field(
    ge=0.5, le=2.0,
    description="Above 1 discourages repeating tokens already in the text; 1 is off.",
    json_schema_extra={"label": "Repetition penalty", "step": 0.05})]
Seed = Annotated[int, Field(
    ge=0, lt=MAX_SEED,
    description="The same seed and settings give the same reply again; none (on the page: "
                "-1) means a random one each time.",
    json_schema_extra={"label": "Seed (-1 = random)", "step": 1})]


Think = Annotated[bool, Field(
    description="Thinking models: whether the model thinks before it answers, through the "
                "chat template's enable_thinking; none keeps the template's default.",
    json_schema_extra={"label": "Think"})]
ThinkingBudget = Annotated[int, Field(
    ge=0, le=32768,
    description="Thinking models: the most tokens the thought may take; then the end "
                "marker is written for the model and it answers. 0 or none: no limit.",
    json_schema_extra={"label": "Thinking budget (tokens, 0 = no limit)", "step": 1})]


def optional(setting: Any) -> Any:
    """The same setting, also taking None ("not given": the API request's fields).

    The constraints stay on the number and the description and label on the field, so the
    JSON schema and the error messages read as they do for the setting itself."""
    base, *metadata = get_args(setting)
    return Annotated[(base | None, *metadata)]


OptionalTemperature = optional(Temperature)
OptionalTopP = optional(TopP)
OptionalTopK = optional(TopK)
OptionalMaxNewTokens = optional(MaxNewTokens)
OptionalRepetitionPenalty = optional(RepetitionPenalty)
OptionalSeed = optional(Seed)
OptionalThink = optional(Think)
OptionalThinkingBudget = optional(ThinkingBudget)

FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed",
          "think", "thinking_budget")


class SamplingSettings(BaseModel):
    """The sampling settings of one reply, or a model entry's defaults."""

    model_config = ConfigDict(extra="forbid")

    temperature: Temperature = 0.7
    top_p: TopP = 0.9
    top_k: TopK = 40
    max_new_tokens: MaxNewTokens = 512
    repetition_penalty: RepetitionPenalty = 1.0
    seed: OptionalSeed = None
    think: OptionalThink = None
    thinking_budget: ThinkingBudget = 0


def merge(defaults: SamplingSettings, **overrides: Any) -> SamplingSettings:
    """`defaults` with the given settings over them; a None override keeps the default.

    The result is validated: an out-of-range or unknown setting raises pydantic's
    ValidationError naming the field and the bound."""
    values = defaults.model_dump()
    values.update({name: value for name, value in overrides.items() if value is not None})
    return SamplingSettings.model_validate(values)


def gen_params(settings: SamplingSettings, stop: tuple[str, ...] | list[str] = (),
               continue_final: bool = False) -> GenParams:
    """The runtime parameters a backend takes, from validated settings."""
    return GenParams(temperature=float(settings.temperature), top_p=float(settings.top_p),
                     top_k=int(settings.top_k), max_new_tokens=int(settings.max_new_tokens),
                     repetition_penalty=float(settings.repetition_penalty),
                     seed=settings.seed, think=settings.think,
                     thinking_budget=settings.thinking_budget, stop=tuple(stop),
                     continue_final=continue_final)


def _metadata(name: str) -> tuple[Any, dict]:
    try:
        info = SamplingSettings.model_fields[name]
    except KeyError:
        raise KeyError(f"no sampling setting {name!r}; known: {', '.join(FIELDS)}") from None
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


def label(name: str) -> str:
    """The short name a person sees for a setting."""
    return _metadata(name)[1]["label"]


def description(name: str) -> str:
    """The help text for a setting (the slider's info, the API schema's description)."""
    return _metadata(name)[0].description or ""
