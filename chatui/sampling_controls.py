"""The page's sampling controls, built from `backends.sampling`, and their values read back.

Every slider takes its range, step, label and help text from `SamplingSettings`, so the
page offers exactly what models.yaml and the API accept. Values coming back are validated
by the same model: an out-of-range value (which a slider cannot send, though a script
calling the page's API could) is refused with a `gr.Error` naming the control and the
bound, as Gradio itself refuses a value outside a slider's range; it is not clamped.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from pydantic import ValidationError

from backends.base import GenParams
from backends import sampling
from chatcore.i18n import Texts, english
from backends.sampling import SamplingSettings


def slider(name: str, value: float, *, texts: Texts, **kwargs: Any) -> gr.Slider:
    """A slider for the sampling setting `name`, its range and step from the schema, its
    label and info from the catalog (`sampling.<name>`, the schema's words in English);
    `kwargs` (elem_id, scale, a shorter label...) go to gr.Slider as they are."""
    minimum, maximum, step = sampling.bounds(name)
    field = SamplingSettings.model_fields[name]
    options: dict[str, Any] = {"label": texts(f"sampling.{name}"),
                               "info": texts(f"sampling.{name}_info")}
    if field.annotation is int:
        options["precision"] = 0  # the handler gets an int, as the schema wants
    options.update(kwargs)
    return gr.Slider(minimum, maximum, value=value, step=step, **options)


def seed_number(value: int, *, texts: Texts, **kwargs: Any) -> gr.Number:
    """The seed box: a whole number, -1 for a random seed each time."""
    options: dict[str, Any] = {"label": texts("sampling.seed"),
                               "info": texts("sampling.seed_info"), "precision": 0}
    options.update(kwargs)
    return gr.Number(value=value, **options)


def seed_value(settings: SamplingSettings) -> int:
    """The seed box's value for these settings: -1 when the seed is random."""
    return -1 if settings.seed is None else settings.seed


THINK_CHOICES = ("default", "on", "off")  # the Radio's values; its labels are the catalog's


def think_radio(value: bool | None, *, texts: Texts, **kwargs: Any) -> gr.Radio:
    """The Think switch: the template's default, on or off."""
    options: dict[str, Any] = {"label": texts("sampling.think"),
                               "info": texts("sampling.think_info")}
    options.update(kwargs)
    return gr.Radio(texts.choices("sampling.think_choice", list(THINK_CHOICES)),
                    value=think_choice(value), **options)


def think_choice(value: bool | None) -> str:
    return THINK_CHOICES[0] if value is None else ("on" if value else "off")


def think_value(choice: str | None) -> bool | None:
    return {"on": True, "off": False}.get(choice or "")


def params_from_controls(temperature: float, top_p: float, top_k: float,
                         max_new_tokens: float, repetition_penalty: float,
                         seed: float | None, think: str | None = None,
                         thinking_budget: float | None = None,
                         texts: Texts | None = None) -> GenParams:
    """The page's controls as backend parameters; a seed of None or below 0 is random, a
    thinking budget of 0 is none.

    Validated through SamplingSettings; a value out of range raises gr.Error naming the
    control and the bound."""
    return sampling.gen_params(_validated(
        texts or english(), temperature=temperature, top_p=top_p, top_k=_whole(top_k),
        max_new_tokens=_whole(max_new_tokens), repetition_penalty=repetition_penalty,
        seed=None if seed is None or seed < 0 else _whole(seed), think=think_value(think),
        thinking_budget=_whole(thinking_budget) or 0))


def pane_params(defaults: SamplingSettings, temperature: float, max_new_tokens: float,
                think: str | None = None, thinking_budget: float | None = None,
                texts: Texts | None = None) -> GenParams:
    """A Compare pane's parameters: the model entry's defaults with the pane's temperature,
    max new tokens and thinking settings over them (None keeps the default)."""
    try:
        settings = sampling.merge(defaults, temperature=temperature,
                                  max_new_tokens=_whole(max_new_tokens),
                                  think=think_value(think),
                                  thinking_budget=_whole(thinking_budget) or None)
    except ValidationError as exc:
        raise gr.Error(_message(exc, texts or english())) from None
    return sampling.gen_params(settings)


def _validated(texts: Texts, **values: Any) -> SamplingSettings:
    try:
        return SamplingSettings.model_validate(values)
    except ValidationError as exc:
        raise gr.Error(_message(exc, texts)) from None


def _whole(value: Any) -> Any:
    """A float with no fraction as an int (a slider or number box may send 40.0); anything
    else as it is, for the schema to accept or refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _message(exc: ValidationError, texts: Texts) -> str:
    """One line naming the control as the page labels it, the bound (pydantic's English)
    and the value."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error.get("loc") else ""
    where = texts(f"sampling.{name}") if name in SamplingSettings.model_fields else name
    return texts("sampling.refused", control=where, detail=error["msg"],
                 value=repr(error.get("input")))
