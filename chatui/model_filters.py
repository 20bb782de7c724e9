"""The task / language / licence filter over model lists: the Models tab's table and
picker, the Chat, Compare and Evaluate pickers (chatui/chat_tab.py filter_pickers) and the
Hub search use the same controls and the same test (`backends.model_tags.TagFilter`)."""
from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from backends.model_tags import OPENNESS, TASKS, ModelTags, TagFilter
from chatcore.generation.manager import ModelManager
from chatcore.i18n import Texts

# The languages offered in the filter, by code; the page's own language comes first.
LANGUAGE_CODES = ("en", "tl", "fil", "ja", "zh", "es", "fr", "de", "ko", "id", "vi", "ar",
                  "hi", "pt")
# The codes a page's language puts at the top of the list (Filipino: Tagalog and Filipino).
PAGE_FIRST = {"fil": ("tl", "fil"), "en": ("en",)}


def language_codes(texts: Texts) -> list[str]:
    """LANGUAGE_CODES with the page's own language first."""
    first = PAGE_FIRST.get(texts.language, ())
    return [*first, *(code for code in LANGUAGE_CODES if code not in first)]


def tag_filter(task: str | None, language: str | None, openness: str | None) -> TagFilter:
    """The filter the three controls' values make; a value the lists do not offer (an
    API caller's) lets everything through rather than hiding every model."""
    return TagFilter(task=task if task in TASKS else "",
                     language=language if language in LANGUAGE_CODES else "",
                     openness=openness if openness in OPENNESS else "")


def matching_ids(manager: ModelManager, only: TagFilter) -> set[str]:
    """The registry's entries that pass `only` (all of them when it is empty)."""
    return {e.id for e in manager.registry.entries if only.matches(e.tags)}


def tags_line(tags: ModelTags, texts: Texts) -> str:
    """'code, chat · en, tl · apache-2.0 (open source, OSI)' for a details cell or the
    Hub's result list; empty for a model without tags."""
    if tags.empty:
        return ""
    parts = []
    if tags.tasks:
        parts.append(", ".join(texts(f"tags.task.{t}") for t in tags.tasks))
    if tags.languages:
        parts.append(", ".join(tags.languages))
    openness = texts(f"tags.openness.{tags.open_as}")
    parts.append(texts("tags.license", license=tags.license, openness=openness)
                 if tags.license else openness)
    return " · ".join(parts)


class FilterControls:
    """Three dropdowns (task, language, licence), each starting at "any"."""

    def __init__(self, texts: Texts, elem_prefix: str, openness: bool = True) -> None:
        any_choice = [(texts("tags.any"), "")]
        self.task = gr.Dropdown(any_choice + texts.choices("tags.task", list(TASKS)), value="",
                                label=texts("tags.filter.task"), scale=1,
                                elem_id=f"{elem_prefix}-task")
        self.language = gr.Dropdown(
            any_choice + [(texts(f"tags.language.{code}"), code)
                          for code in language_codes(texts)],
            value="", label=texts("tags.filter.language"), scale=1,
            elem_id=f"{elem_prefix}-language")
        self.openness = gr.Dropdown(any_choice + texts.choices("tags.openness", list(OPENNESS)),
                                    value="", label=texts("tags.filter.openness"), scale=1,
                                    elem_id=f"{elem_prefix}-openness", visible=openness)

    @property
    def components(self) -> list[gr.Dropdown]:
        return [self.task, self.language, self.openness]

    def on_change(self, handler: Callable, outputs: list) -> None:
        for control in self.components:
            control.change(handler, self.components, outputs, api_name=False, queue=False)
