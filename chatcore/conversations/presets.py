"""System prompt presets: a few built in; people add their own, kept in the store.

A built-in preset is an id; its name and prompt are the catalog's `presets.<id>.name` and
`presets.<id>.prompt`, so each page language shows its own (the Filipino Translator
translates into Filipino). The model's own default has no prompt at all.
"""
from __future__ import annotations

from chatcore.i18n import LANGUAGES, Texts, load_texts

BUILTIN_PRESET_IDS: tuple[str, ...] = ("default", "concise", "teacher", "code", "translator")
# The preset that leaves the system prompt empty: the model's own default.
NO_PROMPT = "default"


def builtin_presets(texts: Texts) -> dict[str, str]:
    """The built-in presets as a page shows them: name -> prompt, in `texts`' language."""
    return {texts(f"presets.{preset}.name"):
            "" if preset == NO_PROMPT else texts(f"presets.{preset}.prompt")
            for preset in BUILTIN_PRESET_IDS}


def builtin_names() -> frozenset[str]:
    """Every built-in preset's name in every language: names no saved preset may take, so
    that a saved preset never hides a built-in one on a page in another language."""
    return frozenset(name for language in LANGUAGES
                     for name in builtin_presets(load_texts(language)))
