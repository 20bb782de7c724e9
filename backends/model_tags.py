"""What a model is for: its tasks, languages and licence, and whether that licence is
OSI-open or only open weights.

One typed value (`ModelTags`) for a registry entry (written by hand in models.yaml, or
filled in from a GGUF's metadata when a file is added or downloaded) and for a Hub search
result (from the repo's tags, which the Hub derives from its model card). `TagFilter` is the
one test the Models tab, the Chat picker and anything else use to narrow a list.

Open as in OSI: a licence the Open Source Initiative approved (Apache-2.0, MIT, BSD, ...)
lets anyone use, study, change and share the model for any purpose. Model licences such as
Llama 2's, Llama 3.x's or Gemma's publish the weights under use restrictions: open weights,
not open source. The two tables below say which is which for the licence ids the Hugging
Face Hub uses; any other licence is "unknown" until an entry says otherwise (`openness`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The tasks a model can be picked for (the lesson's: chat, code, maths, medicine; and the
# leaderboards' reasoning and translation).
TASKS = ("chat", "code", "math", "medical", "reasoning", "translation")
# Words in Hub tags, GGUF general.tags and pipeline tags that name one of TASKS.
TASK_WORDS: Mapping[str, str] = {
    "chat": "chat", "conversational": "chat", "code": "code", "coding": "code",
    "math": "math", "mathematics": "math", "medical": "medical", "medicine": "medical",
    "biology": "medical", "clinical": "medical", "biomedical": "medical",
    "reasoning": "reasoning", "translation": "translation",
}
# The Hub tag a search for each task filters on (the Hub marks chat models "conversational").
HUB_TASK_TAGS: Mapping[str, str] = {"chat": "conversational", "code": "code", "math": "math",
                                    "medical": "medical", "reasoning": "reasoning",
                                    "translation": "translation"}
# Licence ids (the Hub's spelling) the Open Source Initiative approved.
OSI_LICENSES = frozenset({
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "isc", "mpl-2.0", "gpl-2.0",
    "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "epl-2.0", "ecl-2.0", "artistic-2.0",
    "unlicense", "ofl-1.1", "bsl-1.0", "osl-3.0", "afl-3.0", "zlib", "ms-pl", "upl-1.0",
})
# Licences that publish weights with use restrictions (not OSI-approved).
OPEN_WEIGHTS_LICENSES = frozenset({
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma",
    "openrail", "openrail++", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "deepseek", "falcon", "other",
})
Openness = Literal["osi", "open-weights", "unknown"]
OPENNESS = ("osi", "open-weights", "unknown")
MAX_LANGUAGES = 64
MAX_LICENSE = 64
# ISO 639-1 codes, or 639-2/3 where a language has no two-letter one, with an optional region.
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})?$")
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
# Hub tags are mostly free words; of the three-letter ones only these are read as languages
# (two-letter tags are ISO 639-1 codes, which the Hub writes from the card's `language`).
_THREE_LETTER_LANGUAGES = frozenset({"fil", "tgl", "ceb", "ilo", "yue", "haw", "war"})


class ModelTags(BaseModel):
    """Tasks, languages, licence; `openness` overrides what the licence tables say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field((), max_length=len(TASKS))
    languages: tuple[str, ...] = Field((), max_length=MAX_LANGUAGES)
    license: str | None = Field(None, max_length=MAX_LICENSE)
    openness: Openness | None = None

    @field_validator("tasks", mode="before")
    @classmethod
    def _known_tasks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value  # pydantic says what it wanted
        unknown = [t for t in value if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)}")
        return tuple(dict.fromkeys(value))

    @field_validator("languages", mode="before")
    @classmethod
    def _language_codes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        codes = [str(v).strip().lower() for v in value]
        bad = [c for c in codes if not LANGUAGE_CODE.match(c)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a language code (ISO 639, e.g. en, tl, fil)")
        return tuple(dict.fromkeys(codes))

    @field_validator("license", mode="before")
    @classmethod
    def _license_id(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        license_id = value.strip().lower()
        if len(license_id) <= MAX_LICENSE and not _LICENSE.match(license_id):
            raise ValueError(f"{value!r} is not a licence id (like apache-2.0, mit, llama2)")
        return license_id

    @property
    def open_as(self) -> Openness:
        """osi, open-weights or unknown: the entry's word, else the licence tables'."""
        if self.openness:
            return self.openness
        return openness_of(self.license)

    @property
    def empty(self) -> bool:
        return not (self.tasks or self.languages or self.license or self.openness)


def openness_of(license_id: str | None) -> Openness:
    if license_id in OSI_LICENSES:
        return "osi"
    if license_id in OPEN_WEIGHTS_LICENSES:
        return "open-weights"
    return "unknown"


@dataclass(frozen=True)
class TagFilter:
    """What a list is narrowed to; an empty field lets everything through."""

    task: str = ""
    language: str = ""
    openness: str = ""

    def matches(self, tags: ModelTags) -> bool:
        return ((not self.task or self.task in tags.tasks)
                and (not self.language or _speaks(tags.languages, self.language))
                and (not self.openness or tags.open_as == self.openness))

    @property
    def active(self) -> bool:
        return bool(self.task or self.language or self.openness)


def _speaks(languages: Sequence[str], wanted: str) -> bool:
    """Filipino is Tagalog-based: either code finds a model tagged with the other."""
    same = {"tl": {"tl", "fil", "tgl"}, "fil": {"tl", "fil", "tgl"}}.get(wanted, {wanted})
    return any(code.split("-")[0] in same for code in languages)


def task_words(words: Iterable[object]) -> list[str]:
    """The TASKS named among free words (Hub tags, general.tags, a pipeline tag)."""
    found = [TASK_WORDS.get(str(w).strip().lower()) for w in words if isinstance(w, str)]
    return list(dict.fromkeys(t for t in found if t))


def _languages(values: Iterable[object], hub: bool = False) -> list[str]:
    codes = []
    for value in values:
        code = str(value).strip().lower() if isinstance(value, str) else ""
        if LANGUAGE_CODE.match(code) and (not hub or len(code) == 2
                                      or code in _THREE_LETTER_LANGUAGES):
            codes.append(code)
    return list(dict.fromkeys(codes))[:MAX_LANGUAGES]


def _license(value: object) -> str | None:
    text = value.strip().lower() if isinstance(value, str) else ""
    return text if text and len(text) <= MAX_LICENSE and _LICENSE.match(text) else None


def _listed(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] if value else []


def merged(first: ModelTags, then: ModelTags) -> ModelTags:
    """Each field from `first` where it has one, else from `then` (a file's own metadata
    before what the Hub's card says about its repo)."""
    return ModelTags(tasks=first.tasks or then.tasks, languages=first.languages or then.languages,
                     license=first.license or then.license,
                     openness=first.openness or then.openness)


def tags_from_gguf(metadata: Mapping[str, object]) -> ModelTags:
    """general.tags (tasks), general.languages and general.license of a GGUF header; what
    is not a known task, a language code or a licence id is left out, never an error."""
    return ModelTags(tasks=task_words(_listed(metadata.get("general.tags"))),
                     languages=_languages(_listed(metadata.get("general.languages"))),
                     license=_license(metadata.get("general.license")))


def tags_from_hub(tags: Sequence[str], pipeline_tag: str | None = None,
                  card: Mapping[str, object] | None = None) -> ModelTags:
    """A Hub repo's tags ("license:apache-2.0", language codes, task words) and, where the
    answer carried it, its card data (license, language, tags)."""
    card = card or {}
    words = [*tags, *(_listed(card.get("tags"))), *([pipeline_tag] if pipeline_tag else [])]
    licenses = [t.split(":", 1)[1] for t in tags if isinstance(t, str)
                and t.startswith("license:")]
    license_id = next((lid for lid in map(_license, _listed(card.get("license"))) if lid),
                      None) or next(
        (lid for lid in map(_license, licenses) if lid), None)
    languages = _languages(_listed(card.get("language"))) or _languages(tags, hub=True)
    return ModelTags(tasks=task_words(words), languages=languages, license=license_id)
