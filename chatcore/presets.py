"""System prompt presets: a few built in; people add their own, kept in the store."""
from __future__ import annotations

BUILTIN_PRESETS: dict[str, str] = {
    "Model default": "",
    "Concise": "Answer briefly and directly. Use as few words as the answer needs.",
    "Teacher": "Explain step by step, as a patient teacher would, with a small example.",
    "Code assistant": "You are an expert programmer. Answer with working code and short notes.",
    "Translator": "Translate the user's text into English. Reply with the translation only.",
}
