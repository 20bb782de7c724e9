"""The page's sampling controls: one per field of `SamplingSettings`, read back as one value.

The controls are made by looping over the schema's fields (backends/sampling.py): each
takes its range, step and kind from the field and its label and help text from the catalog
(`sampling.<name>`), so a new setting appears on every page that shows settings, and a
reopened conversation restores every field, without touching a handler. Values coming back
are validated by the same schema: an out-of-range value (which a slider cannot send, though
a script calling the page's API could) is refused with a `gr.Error` naming the control and
the bound, as Gradio itself refuses a value outside a slider's range; it is not clamped.

Handlers never see the controls one by one: `with_settings` hands them one
`SamplingSettings` (a list of them for Compare's panes).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
from pydantic import ValidationError

from backends import sampling
from backends.sampling import SamplingSettings
from chatcore.generation.manager import ModelManager
from chatcore.i18n import Texts

THINK_CHOICES = ("default", "on", "off")  # the Radio's values; its labels are the catalog's
FIELDS = tuple(SamplingSettings.model_fields)
PER_ROW = 3


class SettingsControls:
    """One control per sampling setting, in rows, showing `settings`; `elem_id` makes each
    control's id from the field's name ("top_p" -> "top-p" by default)."""

    def __init__(self, settings: SamplingSettings, *, texts: Texts,
                 elem_id: Callable[[str], str] = lambda name: name.replace("_", "-")) -> None:
        self.texts = texts
        self.components: list[gr.components.Component] = []
        shown = self.shown(settings)
        for start in range(0, len(FIELDS), PER_ROW):
            with gr.Row():
                for name, value in zip(FIELDS[start:start + PER_ROW],
                                       shown[start:start + PER_ROW]):
                    self.components.append(_control(name, value, texts, elem_id(name)))

    @staticmethod
    def shown(settings: SamplingSettings) -> list[Any]:
        """The controls' values for these settings, in the controls' order: a random seed
        shows as -1, the template's default Think as "default"."""
        values = settings.model_dump()
        values["seed"] = -1 if settings.seed is None else settings.seed
        values["think"] = THINK_CHOICES[0] if settings.think is None else \
            ("on" if settings.think else "off")
        return [values[name] for name in FIELDS]

    def read(self, values: Sequence[Any]) -> SamplingSettings:
        """The controls' values as settings; a gr.Error names the control and the bound."""
        given = {name: _whole(value) for name, value in zip(FIELDS, values, strict=True)}
        seed = given["seed"]
        given["seed"] = None if seed is None or (isinstance(seed, int) and seed < 0) else seed
        given["think"] = {"on": True, "off": False}.get(given["think"] or "")
        given["thinking_budget"] = given["thinking_budget"] or 0
        try:
            return SamplingSettings.model_validate(given)
        except ValidationError as exc:
            raise gr.Error(_message(exc, self.texts)) from None


def defaults_of(manager: ModelManager, model_id: str | None) -> SamplingSettings:
    """The sampling defaults of a model's entry; the schema's own for an unknown model."""
    entry = manager.registry.get(model_id or "")
    return entry.defaults if entry is not None else SamplingSettings()


def with_settings(handler: Callable, before: Sequence, controls: SettingsControls |
                  Sequence[SettingsControls], after: Sequence = ()) -> tuple[Callable, list]:
    """The function and inputs of an event whose handler takes the settings whole.

    The event's inputs are `before`, every control of `controls`, then `after`; the handler
    is called as handler(*before, settings, *after, request=request), `settings` being one
    SamplingSettings, or a list with one per group when `controls` is a sequence."""
    groups = [controls] if isinstance(controls, SettingsControls) else list(controls)
    start, widths = len(before), [len(group.components) for group in groups]
    end = start + sum(widths)

    def split(values: tuple) -> list:
        settings, at = [], start
        for group, width in zip(groups, widths):
            settings.append(group.read(values[at:at + width]))
            at += width
        whole = settings[0] if isinstance(controls, SettingsControls) else settings
        return [*values[:start], whole, *values[end:]]

    # The request comes first: Gradio hands it only to a named positional parameter.
    if inspect.isgeneratorfunction(handler):
        def event(request: gr.Request, *values: Any):
            yield from handler(*split(values), request=request)
    else:
        def event(request: gr.Request, *values: Any):
            return handler(*split(values), request=request)
    inputs = [*before, *(c for group in groups for c in group.components), *after]
    return event, inputs


def _control(name: str, value: Any, texts: Texts, elem_id: str) -> gr.components.Component:
    options: dict[str, Any] = {"label": texts(f"sampling.{name}"),
                               "info": texts(f"sampling.{name}_info"), "elem_id": elem_id}
    kind = sampling.control(name)
    if kind == "choice":
        return gr.Radio(texts.choices("sampling.think_choice", list(THINK_CHOICES)),
                        value=value, **options)
    if kind == "number":
        return gr.Number(value=value, precision=0, **options)
    minimum, maximum, step = sampling.bounds(name)
    if SamplingSettings.model_fields[name].annotation is int:
        options["precision"] = 0  # the handler gets an int, as the schema wants
    return gr.Slider(minimum, maximum, value=value, step=step, **options)


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
