"""Turns a models.yaml entry into the backend object that will run it."""
from __future__ import annotations

from pathlib import Path

import platformdirs

from backends.base import Backend
from backends.draft_model import DraftSpec
from backends.hf import HFSettings, TransformersBackend
from backends.llamacpp import LlamaCppBackend
from backends.lora import Adapter
from backends.openai import OpenAIBackend
from backends.shared_weights import SharedWeights
from chatcore.generation.registry import ModelEntry
from chatcore.generation.weights import ModelNotAvailable, resolve_weights

APP_NAME = "local-chat"
ENGINES: dict[str, type[Backend]] = {"llamacpp": LlamaCppBackend,
                                     "transformers": TransformersBackend,
                                     "openai": OpenAIBackend}


def default_cache_dir() -> Path:
    """Where GGUF weights dequantized for bitsandbytes are kept between runs."""
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "dequantized"


def engine_class(entry: ModelEntry) -> type[Backend]:
    """The class that runs the entry: its capability flags, known without loading."""
    return ENGINES[entry.backend]


def make_backend(entry: ModelEntry, allow_download: bool = False,
                 cache_dir: Path | None = None, shared: SharedWeights | None = None) -> Backend:
    """Raises ModelNotAvailable when the weights are not on this machine. Backends made
    with one `shared` pool load a base that several entries name once (an entry and the
    same base with adapters); without one each loads its own copy."""
    if entry.is_remote:
        return OpenAIBackend(entry.base_url or "", entry.remote_model or entry.id,
                             api_key_env=entry.api_key_env, timeout=entry.timeout,
                             context_length=entry.context_length, reasoning=entry.markers,
                             server_settings=tuple(entry.server_settings))
    weights = resolve_weights(entry, allow_download=allow_download)
    adapters = tuple(Adapter(Path(a.path), a.scale) for a in entry.adapters)
    if entry.backend == "llamacpp":
        return LlamaCppBackend(
            weights,
            context_length=entry.context_length,
            chat_template=entry.chat_template,
            n_threads=entry.n_threads,
            n_gpu_layers=entry.n_gpu_layers,
            parallel=entry.parallel or 1,
            kv_cache=entry.kv_cache,
            flash_attention=entry.flash_attention,
            reasoning=entry.markers,
            speculative=entry.speculative == "ngram",
            draft=draft_spec(entry, allow_download),
            adapters=adapters,
            shared=shared,
        )
    if entry.backend == "transformers":
        spec = entry.quantization_spec
        settings = HFSettings(
            quant_bits=spec.bits if spec else None,
            quant_type=spec.quant_type if spec else "nf4",
            double_quant=spec.double_quant if spec else True,
            compute_dtype=spec.compute_dtype if spec else "auto",
            dtype=entry.dtype,
            device=entry.device,
            max_memory=entry.max_memory,
            trust_remote_code=entry.trust_remote_code,
        )
        return TransformersBackend(weights, settings, context_length=entry.context_length,
                                   chat_template=entry.chat_template,
                                   cache_dir=cache_dir or default_cache_dir(),
                                   reasoning=entry.markers, adapters=adapters, shared=shared)
    raise ValueError(f"unknown backend {entry.backend!r}")  # the schema prevents this


def draft_spec(entry: ModelEntry, allow_download: bool = False) -> DraftSpec | None:
    """The draft model an entry names, linked by the registry; without its weights on this
    machine the spec has no path, and the entry drafts by prompt lookup (and says so)."""
    draft = entry.draft_entry
    if draft is None:
        return None
    try:
        path = resolve_weights(draft, allow_download=allow_download)
    except ModelNotAvailable:
        path = None
    return DraftSpec(path, draft.id, entry.id, draft.name)
