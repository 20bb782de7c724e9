"""models.yaml: the schema, and a loader whose messages name the file, entry and field.

A broken entry does not stop the app: it is kept as a `BrokenEntry` with its reason so the
page can show it as unavailable. Only a file that is unreadable, not YAML, or without a
single valid entry is fatal (`ConfigError`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from backends.llamacpp import kv_cache_problem
from backends.model_tags import ModelTags
from backends.lora import MAX_ADAPTERS, AdapterSetting
from backends.notes import Note
from backends.thinking import Markers, Reasoning
from backends.openai import ServerSetting
from backends.price import Price
from backends.quantization import Quantization
from backends.sampling import SamplingSettings

BackendName = Literal["llamacpp", "transformers", "openai"]
BACKENDS = ("llamacpp", "transformers", "openai")
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"
# Fields that only the transformers engine understands, with their "not set" values.
TRANSFORMERS_ONLY = {"quantization": "none", "dtype": "auto", "device": "auto",
                     "max_memory": None, "trust_remote_code": False}
LLAMACPP_ONLY = {"n_gpu_layers": 0, "n_threads": None, "parallel": None, "kv_cache": "auto",
                 "flash_attention": "auto", "speculative": "ngram", "draft": None}
CPU_PARALLEL = 4  # replies a llama.cpp entry on the CPU batches unless it says otherwise
# Fields that only a remote OpenAI-compatible server needs.
OPENAI_ONLY = {"remote_model": None, "api_key_env": None, "timeout": None,
               "server_settings": [], "price": None}


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_ID, MAX_NAME, MAX_DESCRIPTION, MAX_TEMPLATE = 64, 200, 2_000, 100_000


class ConfigError(Exception):
    """models.yaml cannot be used at all; the message is one line for a person."""


class ModelEntry(BaseModel):
    """One model a person can pick; exactly one source field says where its weights are."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, max_length=MAX_ID)
    name: str = Field("", max_length=MAX_NAME)
    backend: BackendName
    path: str | None = None
    repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    file: str | None = None
    package: str | None = None
    base_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    remote_model: str | None = Field(None, min_length=1)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: float | None = Field(None, gt=0, le=3600)
    # Sampling settings beyond OpenAI's own that the server takes by the same name (vLLM and
    # llama.cpp's server take both); the others are named as not applied.
    server_settings: list[ServerSetting] = Field(default_factory=list)
    price: Price | None = None  # a remote server's, per million tokens: what a token costs
    context_length: int = Field(2048, ge=64)
    # Sampling defaults the page and the API start from; bounds in backends/sampling.py.
    defaults: SamplingSettings = Field(default_factory=SamplingSettings)
    chat_template: str | None = Field(None, max_length=MAX_TEMPLATE)
    description: str = Field("", max_length=MAX_DESCRIPTION)
    n_gpu_layers: int = Field(0, ge=-1)
    n_threads: int | None = Field(None, ge=1)
    # Replies decoded together in one batch, each with a full context of KV cache (charged
    # by the planner); 1 answers one at a time. Default: 4 on the CPU, 1 with GPU layers.
    parallel: int | None = Field(None, ge=1, le=16)
    # auto: the type a short measurement on this machine chose (backends/kv_probe.py).
    kv_cache: Literal["auto", "f16", "q8_0", "q4_0"] = "auto"
    flash_attention: Literal["auto", "on", "off"] = "auto"
    # Speculative decoding: "ngram" drafts from the reply's own prompt and text (prompt
    # lookup, same output, faster where a reply quotes); "off" decodes one token at a time.
    speculative: Literal["ngram", "off"] = "ngram"
    # The id of another llamacpp entry of the same tokenizer whose guesses replace prompt
    # lookup's (backends/draft_model.py); linked by `_link_drafts`.
    draft: str | None = Field(None, pattern=ID_PATTERN, max_length=MAX_ID)
    _draft_entry: ModelEntry | None = PrivateAttr(None)
    quantization: Literal["none", "8bit", "4bit"] | Quantization = "none"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    max_memory: dict[str | int, str] | None = None
    trust_remote_code: bool = False
    # A thinking model's markers ({start: "<think>", end: "</think>"}); without it they are
    # found in the chat template when it mentions them (local models only).
    reasoning: Reasoning | None = None
    # What the model is for: {tasks: [chat, code, ...], languages: [en, tl], license: mit};
    # see backends/model_tags.py.
    tags: ModelTags = Field(default_factory=ModelTags)
    # Fine-tuned variants: LoRA adapters over this base (backends/lora.py).
    adapters: list[AdapterSetting] = Field(default_factory=list, max_length=MAX_ADAPTERS)

    @property
    def markers(self) -> Markers | None:
        return Markers(self.reasoning.start, self.reasoning.end) if self.reasoning else None

    @field_validator("flash_attention", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        """YAML reads an unquoted on/off as true/false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) \
            else value

    @field_validator("speculative", mode="before")
    @classmethod
    def _yaml_speculative(cls, value: object) -> object:
        """An unquoted off (or on) reaches here as a bool; on means the default, ngram."""
        return {True: "ngram", False: "off"}.get(value, value) if isinstance(value, bool) \
            else value

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        sources = [f for f in ("path", "repo", "package", "base_url") if getattr(self, f)]
        if len(sources) != 1:
            found = ", ".join(sources) if sources else "none"
            raise ValueError(
                f"give exactly one source of path, repo, package or base_url (found: {found})"
            )
        if self.package and not self.file:
            raise ValueError("'package' needs 'file': the model file inside that package")
        if self.path and self.file:
            raise ValueError("'file' goes with 'repo' or 'package', not with 'path'")
        if self.adapters and self.backend == "openai":
            raise ValueError("'adapters' applies to local models (llamacpp, transformers): "
                             "a remote server applies its own")
        if (self.backend == "openai") != bool(self.base_url):
            raise ValueError("a remote server entry is 'backend: openai' with 'base_url'"
                             if self.backend == "openai" else
                             "'base_url' is for remote servers: use 'backend: openai'")
        if self.backend == "llamacpp" and self.repo and not self.file:
            raise ValueError("a llamacpp entry with 'repo' needs 'file': the GGUF file name")
        for fields, owner in ((TRANSFORMERS_ONLY, "transformers"), (LLAMACPP_ONLY, "llamacpp"),
                              (OPENAI_ONLY, "openai")):
            if self.backend != owner:
                for name, unset in fields.items():
                    if getattr(self, name) != unset:
                        raise ValueError(f"'{name}' applies to backend {owner} only")
        if self.backend == "llamacpp":
            if problem := kv_cache_problem(self.kv_cache, self.flash_attention):
                raise ValueError(problem)
            if self.parallel is None:
                self.parallel = CPU_PARALLEL if self.n_gpu_layers == 0 else 1
            if self.draft == self.id:
                raise ValueError(f"field 'draft': {self.id!r} cannot draft for itself")
            if self.draft and self.speculative == "off":
                raise ValueError("field 'draft': needs speculative decoding on (it is off)")
        if self.backend == "openai":
            self.base_url = (self.base_url or "").rstrip("/")
            self.remote_model = self.remote_model or self.id
        if isinstance(self.quantization, str) and self.quantization != "none":
            self.quantization = Quantization(bits=4 if self.quantization == "4bit" else 8)
        if not self.name:
            self.name = self.id
        return self

    @property
    def draft_entry(self) -> ModelEntry | None:
        """The entry `draft` names, once the registry linked it."""
        return self._draft_entry

    @property
    def is_remote(self) -> bool:
        """Served by another program: no local weights, no local memory."""
        return self.backend == "openai"

    @property
    def quantization_spec(self) -> Quantization | None:
        return self.quantization if isinstance(self.quantization, Quantization) else None

    @property
    def settings_label(self) -> str:
        """Backend, quantization and device, as shown beside the name in the dropdown (a
        `Note` where it has words the page translates)."""
        if self.backend == "openai":
            return Note(f"remote · {self.base_url}", "models.engine.remote", url=self.base_url)
        if self.backend == "llamacpp":
            return Note(" · ".join([self.backend, f"{self.parallel} parallel",
                                    f"KV {self.kv_cache}",
                                    f"flash attention {self.flash_attention}"]),
                        "models.engine.llamacpp", parallel=self.parallel, kv=self.kv_cache,
                        flash=self.flash_attention)
        if self.backend != "transformers":
            return self.backend
        spec = self.quantization_spec
        return f"transformers · {spec.label if spec else self.dtype} · {self.device}"

    @property
    def display_name(self) -> str:
        """The name, with the engine settings where one model may be set up several ways."""
        return f"{self.name} [{self.settings_label}]" if self.backend == "transformers" \
            else self.name

    @property
    def source_text(self) -> str:
        """Where the weights are expected, in the words the entry used (with the
        adapters laid over them)."""
        if self.adapters:
            base = self.path or (f"{self.repo}/{self.file}" if self.file else self.repo) or ""
            listed = ", ".join(f"{Path(a.path).name} ×{a.scale:g}" for a in self.adapters)
            return Note(f"{base} + LoRA {listed}", "lora.source", base=base, adapters=listed)
        if self.path:
            return self.path
        if self.repo:
            return f"{self.repo}/{self.file}" if self.file else self.repo
        if self.package:
            return Note(f"{self.file} in package {self.package}", "models.source.package",
                        file=self.file or "", package=self.package)
        return self.base_url or ""


@dataclass(frozen=True)
class BrokenEntry:
    """An entry that failed validation; shown as unavailable with `reason`."""

    index: int
    id: str
    name: str
    reason: str


@dataclass(frozen=True)
class ModelRegistry:
    """Everything models.yaml declared, in file order, and where it was read from.

    With a personal registry laid over it, `personal` names the entries that came from
    the person's own file (theirs to edit and remove) and `personal_path` is that file.
    """

    path: Path
    entries: tuple[ModelEntry, ...]
    broken: tuple[BrokenEntry, ...]
    personal_path: Path | None = None
    personal: frozenset[str] = frozenset()

    def get(self, model_id: str) -> ModelEntry | None:
        return next((e for e in self.entries if e.id == model_id), None)

    def broken_entry(self, model_id: str) -> BrokenEntry | None:
        return next((b for b in self.broken if b.id == model_id), None)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]


def load_layered_registry(shipped: Path, personal: Path | None) -> ModelRegistry:
    """The shipped registry with the person's own file laid over it: an entry of theirs
    with a shipped id replaces that entry in place, the others follow in their order. The
    person's file may be missing or list no models; the app never writes the shipped one."""
    base = load_registry(shipped, link=False)
    if personal is None or not Path(personal).exists():
        return _link_drafts(ModelRegistry(base.path, base.entries, base.broken, personal))
    theirs = load_registry(personal, allow_empty=True, link=False)
    mine = {e.id: e for e in theirs.entries}
    entries = [mine.pop(e.id, e) for e in base.entries] + list(mine.values())
    return _link_drafts(ModelRegistry(base.path, tuple(entries), base.broken + theirs.broken,
                                      Path(personal), frozenset(e.id for e in theirs.entries)))


def _link_drafts(registry: ModelRegistry) -> ModelRegistry:
    """Give each `draft:` its entry; one naming no llamacpp entry here breaks its entry."""
    by_id = {e.id: e for e in registry.entries}
    entries, broken = [], list(registry.broken)
    for index, entry in enumerate(registry.entries, start=1):
        draft = by_id.get(entry.draft or "")
        if entry.draft and (draft is None or draft.backend != "llamacpp"):
            why = f"it is a {draft.backend} entry" if draft else "that entry is broken" \
                if registry.broken_entry(entry.draft) else "no entry has that id"
            where = registry.personal_path if entry.id in registry.personal else registry.path
            broken.append(BrokenEntry(index, entry.id, entry.name, (
                f"{where}: entry {entry.id!r}: field 'draft': {entry.draft!r} is not a "
                f"llamacpp entry of the registry ({why})")))
            continue
        if draft is not None:
            entry = entry.model_copy()
            entry._draft_entry = draft
        entries.append(entry)
    if not entries:
        raise ConfigError(f"no valid model entry; first problem: {broken[0].reason}")
    return replace(registry, entries=tuple(entries), broken=tuple(broken))


def load_registry(path: Path, allow_empty: bool = False, link: bool = True) -> ModelRegistry:
    """Read and validate models.yaml; relative paths in entries are resolved against it.
    `link=False` leaves the drafts unlinked (a layered registry links the whole)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if document is None and allow_empty:
        return ModelRegistry(path=path, entries=(), broken=())
    if document is None:
        raise ConfigError(f"{path}: the file is empty; it needs a 'models:' list")
    if not isinstance(document, dict) or "models" not in document:
        raise ConfigError(f"{path}: the top level must be a mapping with a 'models:' list")
    unknown = sorted(set(document) - {"models"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level field {unknown[0]!r}; only 'models' is allowed")
    raw_entries = document["models"]
    if allow_empty and raw_entries in (None, []):
        return ModelRegistry(path=path, entries=(), broken=())
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ConfigError(f"{path}: 'models' must be a non-empty list of model entries")

    entries: list[ModelEntry] = []
    broken: list[BrokenEntry] = []
    for index, raw in enumerate(raw_entries, start=1):
        raw_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
        label = f"{path}: entry {index}" + (f" (id {raw_id!r})" if raw_id else "")
        reason = _entry_problem(raw, entries, path)
        if reason is None:
            entries.append(_resolve_paths(ModelEntry.model_validate(raw), path.parent))
            continue
        broken.append(BrokenEntry(index, raw_id or f"entry-{index}", raw_id or f"entry {index}",
                                  f"{label}: {reason}"))
    if not entries and not allow_empty:
        detail = broken[0].reason if broken else f"{path}: no model entries"
        raise ConfigError(f"no valid model entry; first problem: {detail}")
    registry = ModelRegistry(path=path, entries=tuple(entries), broken=tuple(broken))
    return _link_drafts(registry) if link and entries else registry


def _entry_problem(raw: object, valid: list[ModelEntry], path: Path) -> str | None:
    """The first thing wrong with one raw entry, as `field 'x': what`, or None."""
    if not isinstance(raw, dict):
        return f"must be a mapping of fields, not {type(raw).__name__}"
    try:
        entry = ModelEntry.model_validate(raw)
    except ValidationError as exc:
        return _describe(_most_specific(exc.errors()))
    duplicate = next((e for e in valid if e.id == entry.id), None)
    if duplicate is not None:
        return f"field 'id': duplicate id {entry.id!r}, already used by an earlier entry"
    return None


def _most_specific(errors: list) -> dict:
    """For a field that takes a word or a mapping, report the branch the person wrote."""
    field = errors[0].get("loc", ())[:1]
    candidates = [e for e in errors if e.get("loc", ())[:1] == field
                  and e.get("type") != "model_type"
                  and not (e.get("type") == "literal_error" and isinstance(e.get("input"), dict))]
    return candidates[0] if candidates else errors[0]


def _describe(error: dict) -> str:
    # Union members appear in pydantic's location as tags; a person never wrote them.
    parts = [str(p) for p in error.get("loc", ())
             if not str(p).startswith("literal[") and not str(p)[:1].isupper()]
    location = ".".join(parts)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"field {location!r}: unknown field (check the spelling)"
    if kind == "missing":
        return f"field {location!r}: required field is missing"
    if kind == "literal_error" and location == "backend":
        return (f"field 'backend': unknown backend {error.get('input')!r}; "
                f"valid: {', '.join(BACKENDS)}")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not location:
        return message
    given = error.get("input")
    shown = f"{len(given):,} characters" if isinstance(given, str) and len(given) > 80 \
        else repr(given)
    return f"field {location!r}: {message} (got {shown})"


def _resolve_paths(entry: ModelEntry, base: Path) -> ModelEntry:
    adapters = [a.model_copy(update={"path": _resolved(a.path, base)}) for a in entry.adapters]
    update: dict = {"adapters": adapters} if adapters else {}
    if entry.path is not None:
        update["path"] = _resolved(entry.path, base)
    return entry.model_copy(update=update) if update else entry


def _resolved(path: str, base: Path) -> str:
    resolved = Path(path).expanduser()
    return str(resolved if resolved.is_absolute() else (base / resolved).resolve())
