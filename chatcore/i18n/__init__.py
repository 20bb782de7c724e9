"""The page's words in each language: one TOML catalog per language, the same keys in each.

A message is a string with named placeholders (`"{n} tokens"`), or a table of CLDR plural
forms (`{ one = "…", other = "…" }`) chosen by the `n` parameter through Babel's plural
rules. Babel also formats numbers the language's way. The terminal and the API
stay English: only the page (and the one-shot CLI's own messages) read these catalogs.
"""
from __future__ import annotations

import functools
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from babel import Locale
from babel.numbers import format_decimal

CATALOG_DIR = Path(__file__).resolve().parent / "locales"
# Language code -> (Babel locale, its name in itself): a language is a catalog file plus a
# line here.
LANGUAGES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "en": ("en", "English"),
    "fil": ("fil_PH", "Filipino"),
})
DEFAULT_LANGUAGE = "en"
# Browser tags that mean a language we ship under another code: Tagalog is read as Filipino.
_ALIASES: Mapping[str, str] = MappingProxyType({"tl": "fil"})
# Currencies a price may be given in (ISO 4217 code -> the sign shown before an amount).
CURRENCIES: Mapping[str, str] = MappingProxyType({
    "PHP": "₱", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "CN¥", "INR": "₹",
    "IDR": "Rp", "SGD": "S$", "AUD": "A$", "CAD": "C$", "KRW": "₩",
})
PLURAL_CATEGORIES = frozenset({"zero", "one", "two", "few", "many", "other"})

Message = str | Mapping[str, str]


class CatalogError(Exception):
    """A catalog file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Texts:
    """One language's messages; call it with a key and the placeholders' values."""
    language: str
    messages: Mapping[str, Message] = field(repr=False)

    @functools.cached_property
    def locale(self) -> Locale:  # parsed once: footers format numbers on every streamed step
        return Locale.parse(LANGUAGES[self.language][0])

    def __call__(self, key: str, /, **params: object) -> str:
        try:
            message = self.messages[key]
        except KeyError:
            raise CatalogError(f"{self.language}: no message {key!r}") from None
        if not isinstance(message, str):
            if "n" not in params:
                raise CatalogError(f"{self.language}: {key!r} has plural forms and needs n=")
            message = message.get(self.plural_category(params["n"]), message["other"])
        if not params:
            return message
        return message.format(**{name: self._shown(value) for name, value in params.items()})

    def say(self, line: str) -> str:
        """A line an engine or the core made (a `backends.notes.Note`) in this language,
        its values said too; any other text (a path, a model's own error) as it is."""
        key = getattr(line, "key", None)
        if key is None:
            return str(line)
        return self(key, **{name: self.say(value) if isinstance(value, str) else value
                            for name, value in line.params.items()})

    def plural_category(self, count: object) -> str:
        return self.locale.plural_form(count if isinstance(count, (int, float)) else 0)

    def _shown(self, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.number(value)
        return value

    def number(self, value: float, digits: int = 0) -> str:
        """`12,345` or `3.5`, grouped and pointed the language's way."""
        pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def labels(self, prefix: str, ids: list[str]) -> list[str]:
        """The words shown for ids (`prefix.<id>` each): a table's headers, say."""
        return [self(f"{prefix}.{name}") for name in ids]

    def choices(self, prefix: str, values: list[str]) -> list[tuple[str, str]]:
        """(shown label, value) pairs for a Radio or Dropdown whose values stay English ids."""
        return list(zip(self.labels(prefix, values), values))


def catalog_path(language: str) -> Path:
    return CATALOG_DIR / f"{language}.toml"


def read_catalog(path: Path) -> dict[str, Message]:
    """The flat key -> message mapping of one catalog file, checked for shape."""
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from None
    messages: dict[str, Message] = {}
    _flatten(path, tree, "", messages)
    return messages


def _flatten(path: Path, tree: Mapping, prefix: str, into: dict[str, Message]) -> None:
    for name, value in tree.items():
        key = prefix + name
        if isinstance(value, str):
            into[key] = value
        elif isinstance(value, Mapping) and value and set(value) <= PLURAL_CATEGORIES:
            if "other" not in value or not all(isinstance(v, str) for v in value.values()):
                raise CatalogError(f"{path}: {key}: plural forms need 'other', all strings")
            into[key] = MappingProxyType(dict(value))
        elif isinstance(value, Mapping):
            _flatten(path, value, key + ".", into)
        else:
            raise CatalogError(f"{path}: {key}: a message is a string or a table of plural "
                               f"forms, not {type(value).__name__}")


def placeholders(message: Message) -> frozenset[str]:
    """The named fields a message (every plural form of it) formats."""
    forms = [message] if isinstance(message, str) else list(message.values())
    return frozenset(name for form in forms for _, name, _, _ in string.Formatter().parse(form)
                     if name)


@functools.cache
def load_texts(language: str) -> Texts:
    """The catalog of a shipped language, read once per process (the files do not change)."""
    if language not in LANGUAGES:
        raise CatalogError(f"no catalog for language {language!r}: choose one of "
                           f"{', '.join(LANGUAGES)}")
    return Texts(language, MappingProxyType(read_catalog(catalog_path(language))))


def english() -> Texts:
    """The source language, which code that is not given a language speaks."""
    return load_texts(DEFAULT_LANGUAGE)


_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:[-_][A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


def match_language(accept_language: str | None) -> str | None:
    """The first shipped language an Accept-Language header (or navigator.language) asks for:
    `fil-PH,fil;q=0.9,en;q=0.8` -> "fil"; `tl` -> "fil"; `ja-JP` -> None."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        found = _TAG.match(item)
        if not found:
            continue
        try:
            weight = float(found.group(2)) if found.group(2) else 1.0
        except ValueError:
            continue
        code = found.group(1).lower()
        code = _ALIASES.get(code, code)
        if weight > 0 and code in LANGUAGES:
            ranked.append((-weight, position, code))
    return min(ranked)[2] if ranked else None


def choose_language(chosen: str | None, default: str | None,
                    accept_language: str | None) -> str:
    """Whose word counts: the person's own choice (the switch), then the server's
    `--language`, then the browser's languages, then English."""
    for candidate in (chosen, default, match_language(accept_language)):
        if candidate in LANGUAGES:
            return candidate
    return DEFAULT_LANGUAGE


def state_key(state: object) -> str:
    """The catalog key of a model state (`ModelState.NOT_DOWNLOADED` -> `state.not_downloaded`)."""
    return f"state.{getattr(state, 'name', str(state)).lower()}"
