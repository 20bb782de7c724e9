"""A line for a person made below the page, which the page can say in its own language.

Engines and the core speak English to the log, the API, the bench and the terminal; the
page speaks the reader's language. A `Note` is both: the English text itself (it is a str,
so every English use stays as it was) carrying its catalog key and values, which
`chatcore.i18n.Texts.say` reads.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class Note(str):
    """English text that also knows its catalog key (`models.amx.died`) and values."""

    key: str
    params: Mapping[str, object]

    def __new__(cls, english: str, key: str, **params: object) -> Note:
        note = super().__new__(cls, english)
        note.key = key
        note.params = MappingProxyType(params)
        return note

    def __reduce__(self) -> tuple:  # copies and pickles keep the key (str's own drop it)
        return _rebuilt, (str(self), self.key, dict(self.params))


def _rebuilt(english: str, key: str, params: dict[str, object]) -> Note:
    return Note(english, key, **params)
