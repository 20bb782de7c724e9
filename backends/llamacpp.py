"""GGUF models through llama-cpp-python: the default engine on CPU.

One llama.cpp context per model serves up to `parallel` replies at once through continuous
batching (backends/llamacpp_batch.py): cancellation is checked before every step and tokens
are counted exactly. The chat template is the one in the GGUF metadata (or the entry's
override), rendered in the sandbox. A reply decoding alone drafts tokens ahead, checked in
one step: from its own prompt and text (prompt lookup) or from a draft model of the same
tokenizer loaded beside this one (backends/draft_model.py). Prompt, room, stop strings and
usage are the shared local base's (backends/local.py). The model and context are built with
llama-cpp-python's low-level wrappers rather than `Llama`, which has no setting for several
sequences, weight buffer types or automatic flash attention.
"""
from __future__ import annotations

import codecs
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

from backends.amx_probe import AmxSettingError, BufferPath, choose_buffers
from backends.base import BackendError, GenParams, ProgressCallback
from backends.chat_template import ChatTemplate
from backends.cores import physical_cores
from backends.draft_model import DraftModel, DraftSpec
from backends.footprint import MemoryEstimate, PlannerError
from backends.gguf import check_gguf
from backends.kv_background import KvProbe, kv_for_load
from backends.kv_probe import KvChoice, KvSettingError, planned_kv_cache
from backends.llamacpp_adapters import apply_adapters, check_gguf_adapters
from backends.llamacpp_batch import BatchDecoder
from backends.llamacpp_log import route_to_python_logging
from backends.llamacpp_memory import KV_TYPES, llamacpp_estimate
from backends.llamacpp_states import SavedStates, prompt_cache_note
from backends.local import Decoding, LocalBackend
from backends.notes import Note
from backends.lora import Adapter, adapter_bytes
from backends.shared_weights import SharedWeights
from backends.thinking import Markers

log = logging.getLogger(__name__)

KvCacheType = Literal["auto", "f16", "q8_0", "q4_0"]
FlashAttention = Literal["auto", "on", "off"]
N_BATCH = 512  # tokens one step may hold: every running reply's next token + prompt chunks


def kv_cache_problem(kv_cache: str, flash_attention: str) -> str | None:
    """Why llama.cpp would refuse this cache type with this flash attention setting."""
    if kv_cache != "auto" and kv_cache not in KV_TYPES:
        return (f"kv_cache {kv_cache!r} is not one of auto (measured once per machine), "
                f"{', '.join(KV_TYPES)}")
    if flash_attention not in ("auto", "on", "off"):
        return f"flash_attention {flash_attention!r} is not one of auto, on, off"
    if kv_cache not in ("auto", "f16") and flash_attention == "off":
        return (f"kv_cache {kv_cache} quantizes the V cache, which llama.cpp can do only with "
                "flash attention: set flash_attention to auto or on, or kv_cache to f16")
    return None


class LlamaCppBackend(LocalBackend):
    """One GGUF file with one llama.cpp context of `parallel` slots, each a full context."""

    template_origin = "the GGUF file's metadata"

    def __init__(
        self,
        model_path: Path,
        context_length: int = 2048,
        chat_template: str | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        parallel: int = 1,
        kv_cache: KvCacheType = "auto",
        flash_attention: FlashAttention = "auto",
        buffers: BufferPath | None = None,
        reasoning: Markers | None = None,
        speculative: bool = True,
        kv_probe: KvProbe | None = None,
        draft: DraftSpec | None = None,
        adapters: tuple[Adapter, ...] = (),
        shared: SharedWeights | None = None,
    ) -> None:
        super().__init__(context_length, chat_template, reasoning)
        if problem := kv_cache_problem(kv_cache, flash_attention):
            raise BackendError(problem)
        if parallel < 1:
            raise BackendError(f"parallel must be at least 1 (got {parallel})")
        self.model_path = Path(model_path)
        self.n_threads = n_threads or physical_cores()
        self.n_gpu_layers = n_gpu_layers
        self.parallel = parallel
        self.kv_cache = kv_cache  # the setting; `kv_type` is what the context uses
        self.kv_choice: KvChoice | None = None  # how `auto` was settled, once loaded
        self._kv_probe = kv_probe or KvProbe()
        # The measurement a load of this backend started in the background (tests join it).
        self.kv_measurement: threading.Thread | None = None
        self.flash_attention = flash_attention
        self.speculative = speculative  # drafts for a reply decoding alone
        self.draft = draft  # their draft model (a spec without a path: not installed)
        self._draft_model: DraftModel | None = None
        self._buffers_choice = buffers  # None: the AMX probe decides at the first load
        self.buffers: BufferPath | None = None
        self._model = None
        self._ctx = None
        self._decoder: BatchDecoder | None = None
        self._eos_ids: tuple[int, ...] = ()
        self._placement = ""
        self._cache_extra = 0  # prompt cache bytes the planner lent beyond the estimate
        self.adapters = tuple(adapters)  # LoRA GGUFs set on this context
        # One model for every entry naming this file (backends/llamacpp_adapters.py).
        self._shared = shared or SharedWeights()
        self._shared_key: tuple | None = None

    # -- lifecycle -------------------------------------------------------------------
    def load(self, progress: ProgressCallback | None = None) -> None:
        if self._decoder is not None:
            return
        report = progress or (lambda fraction, step: None)
        report(0.0, "reading")
        _check_gguf(self.model_path)
        if self.speculative and self.draft is not None and self.draft.path is not None:
            _check_gguf(self.draft.path)
        check_gguf_adapters(self.model_path, self.adapters)  # before any weights load
        try:
            import llama_cpp
            from llama_cpp._internals import LlamaContext, LlamaModel
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "llama-cpp-python is not installed: pip install -r requirements.txt"
            ) from exc
        try:
            buffers = self._buffers_choice or choose_buffers(probe_model=self.model_path)
            kv_choice = None
            if self.kv_cache == "auto":  # never waits: f16 until measured in the background
                kv_choice, started = kv_for_load(self._kv_probe, self.flash_attention,
                                                 self.decodes_on_cpu(), self.model_path,
                                                 buffers.extra_buffers)
                self.kv_measurement = started or self.kv_measurement
        except (AmxSettingError, KvSettingError) as exc:
            raise BackendError(str(exc)) from exc
        self.kv_choice = kv_choice
        _quiet(llama_cpp)
        key = ("llamacpp", str(self.model_path), self.n_gpu_layers, buffers.extra_buffers)
        try:
            held = self._shared.acquire(key, lambda: LlamaModel(
                path_model=str(self.model_path), params=self._model_params(llama_cpp, buffers),
                verbose=False), lambda loaded: loaded.close())
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        model, self._shared_key = held.value, key
        report(0.7, "making the context")
        try:
            ctx = LlamaContext(model=model, params=self._context_params(llama_cpp),
                               verbose=False)
        except ValueError as exc:
            self._release_model()
            raise BackendError(
                f"llama.cpp could not make a context for {self.model_path.name} "
                f"({self.parallel} slots of {self.context_length} tokens, KV cache "
                f"{self.kv_type}, flash attention {self.flash_attention}): out of memory, "
                "or a quantized KV cache on a device without flash attention") from exc
        report(0.8, "reading chat template")
        try:
            with held.lock:
                apply_adapters(llama_cpp, held.extra, model, ctx, self.adapters)
            metadata = model.metadata()
            self._template = ChatTemplate.choose(
                self._template_override, metadata.get("tokenizer.chat_template"),
                bos_token=_token_text(model, model.token_bos()),
                eos_token=_token_text(model, model.token_eos()),
                model_name=self.model_path.name,
                architecture=metadata.get("general.architecture"))
        except BackendError:
            ctx.close()
            self._release_model()
            raise
        self._model, self._ctx, self.buffers = model, ctx, buffers
        self._eos_ids = _end_of_generation_ids(model)
        self._warnings = self._template.check([_token_text(model, t) for t in self._eos_ids])
        self._placement = _placement(metadata, self.n_gpu_layers)
        speculative = self._can_draft(llama_cpp, model)
        if speculative and self.draft is not None and self.draft.path is not None:
            report(0.9, "loading the draft model")
            try:
                self._draft_model = DraftModel.load(
                    self.draft, model.vocab, self._model_params(llama_cpp, buffers),
                    self._context_params(llama_cpp, slots=1))
            except BackendError:
                self.unload()
                raise
        states = SavedStates(self._saved_states_bytes() + self._cache_extra)
        self._decoder = BatchDecoder(ctx.ctx, model.vocab, model.n_vocab(), self.parallel,
                                     N_BATCH, self.n_threads, states, self.model_path.stem,
                                     speculative=speculative, draft_model=self._draft_model)
        report(1.0, "ready")
        log.info("loaded %s with %d threads, %d slots, on %s, %s", self.model_path.name,
                 self.n_threads, self.parallel, self._placement, buffers.describe())

    def _can_draft(self, llama_cpp, model) -> bool:
        """Drafts need rejected positions removed from the cache: a recurrent (or hybrid)
        model's state cannot be cut back, so it decodes without them."""
        if not self.speculative:
            return False
        if llama_cpp.llama_model_is_recurrent(model.model) or \
                llama_cpp.llama_model_is_hybrid(model.model):
            log.info("%s is recurrent: no speculative drafts", self.model_path.name)
            return False
        return True

    def _model_params(self, llama_cpp, buffers: BufferPath):
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if self.n_gpu_layers == -1 else self.n_gpu_layers
        params.use_extra_bufts = buffers.extra_buffers
        return params

    def _context_params(self, llama_cpp, slots: int | None = None):
        """This model's context (`parallel` slots), or with `slots` the draft model's."""
        slots = slots or self.parallel
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_length * slots  # each slot holds a full context
        params.n_seq_max = slots
        params.kv_unified = False
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_threads = params.n_threads_batch = self.n_threads
        params.type_k = params.type_v = _GGML_TYPES[self.kv_type](llama_cpp)
        # "auto" is llama.cpp's: on for the CPU. It keeps a reply the same token for token
        # whether it is decoded alone or in a batch (without it, SmolLM2's greedy replies
        # differ), at a cost in decode speed with long contexts on the CPU (after a
        # 750-token prompt, 31 tokens/s against 56 without, on 2 cores).
        params.flash_attn_type = {
            "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}[self.flash_attention]
        params.no_perf = True
        return params

    def unload(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
        if self._draft_model is not None:
            self._draft_model.close()
        if self._ctx is not None:
            self._ctx.close()
        self._release_model()
        self._decoder = self._ctx = self._model = self._draft_model = None
        self.kv_choice = None
        self._template = None
        self._cache_extra = 0  # the loan ends with the load
        self._placement = ""

    def _release_model(self) -> None:
        """The model is freed when the last entry using it lets go."""
        if self._shared_key is not None:
            self._shared.release(self._shared_key)
        self._shared_key = None

    def shared_weights(self) -> tuple[object, int] | None:
        key = ("llamacpp", str(self.model_path), self.n_gpu_layers)
        return key, self.model_path.stat().st_size

    @property
    def placement(self) -> str:
        return self._placement

    @property
    def kv_type(self) -> str:
        """The KV cache type in use (loaded) or planned: an explicit setting; for `auto`
        how the load settled it, else the remembered answer, else f16 (the largest, so
        the planner's estimate is an upper bound)."""
        if self.kv_cache != "auto":
            return self.kv_cache
        if self.kv_choice is not None:
            return self.kv_choice.kv_cache
        return planned_kv_cache(self.flash_attention, self.decodes_on_cpu(),
                                self._kv_probe.cache_file)

    @property
    def runtime_notes(self) -> list[str]:
        """The weight buffers, the prompt cache's use and how `kv_cache: auto` was settled,
        known only once loaded (slots, an explicit cache type and flash attention are the
        entry's settings, shown beside it)."""
        if not self._decoder:
            return []
        notes = [self.buffers.describe()] if self.buffers else []
        notes += [self.kv_choice.describe()] if self.kv_choice else []
        notes += [self.drafting] if self._decoder.speculative else []
        if self._decoder.states is not None:  # what changes goes last
            notes.append(prompt_cache_note(self._decoder.states.use()))
        return notes

    @property
    def drafting(self) -> Note:
        """Which drafts a reply decoding alone makes, for the Models tab and the bench."""
        if self._draft_model is not None:
            label = self._draft_model.spec.label
            return Note(f"drafts from {label}", "models.speculative.draft_model", name=label)
        if self.draft is not None and self.draft.path is None:
            return Note(f"prompt lookup drafts: the draft model {self.draft.label} is not "
                        "installed", "models.speculative.draft_missing", name=self.draft.label)
        return Note("prompt lookup drafts", "models.speculative.prompt_lookup")

    def grant_prompt_cache(self, extra_bytes: int) -> int:
        """The prompt cache's capacity is the estimate's one slot plus this loan."""
        self._cache_extra = max(0, extra_bytes)
        if self._decoder is not None and self._decoder.states is not None:
            self._decoder.states.resize(self._saved_states_bytes() + self._cache_extra)
        return self._cache_extra

    def decodes_on_cpu(self) -> bool:
        return self.n_gpu_layers != -1  # partly offloaded models still decode layers here

    def memory_estimate(self) -> int:
        return self.memory_breakdown().total

    def memory_breakdown(self) -> MemoryEstimate:
        _check_gguf(self.model_path)
        try:
            estimate = llamacpp_estimate(self.model_path, self.context_length, self.parallel,
                                         self.kv_type)
            if self.speculative and self.draft is not None and self.draft.path is not None:
                # The draft model: its file, one slot's KV cache, its working memory.
                draft = llamacpp_estimate(self.draft.path, self.context_length, 1,
                                          self.kv_type)
                estimate = replace(estimate, weights=estimate.weights + draft.weights,
                                   kv_cache=estimate.kv_cache + draft.kv_cache,
                                   working=estimate.working + draft.working)
            return replace(estimate, weights=estimate.weights + adapter_bytes(self.adapters))
        except PlannerError as exc:
            raise BackendError(str(exc)) from exc

    def _saved_states_bytes(self) -> int:
        try:
            return self.memory_breakdown().saved_states
        except BackendError:
            return 0

    # -- prompting ---------------------------------------------------------------------
    @property
    def _model_name(self) -> str:
        return self.model_path.name

    def _encode_prompt(self, prompt: str) -> tuple[list[int], int]:
        tokens = self._tokenize(prompt)
        return tokens, len(tokens)

    def _eog_ids(self) -> tuple[int, ...]:
        return self._eos_ids

    def _tokenize(self, prompt: str) -> list[int]:
        """BOS as the GGUF asks, unless the prompt already starts with it (a template wrote it)."""
        model = self._require_model()
        bos = self._require_template().bos_token
        add_bos = model.add_bos_token() and not (bos and prompt.startswith(bos))
        return model.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    # -- generation --------------------------------------------------------------------
    def _decode(self, prompt: list[int], max_new: int, params: GenParams,
                cancel: threading.Event, decoding: Decoding) -> Iterator[str]:
        """The reply's tokens from its slot in the batch, turned into text here."""
        model = self._require_model()
        decoder = self._decoder
        sequence = decoder.submit(prompt, max_new, params, cancel) if decoder else None
        if sequence is None:
            return
        eog = set(self._eos_ids)
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for token in decoder.tokens(sequence):
                decoding.tokens += 1
                if cancel.is_set():  # computed while Stop came: not shown
                    break
                if token in eog:
                    decoding.ended_on_eog = True
                    break
                if piece := text.decode(model.detokenize([token])):
                    yield piece
        finally:  # also when the base closes this generator on a stop string
            decoder.leave(sequence)
            decoding.cached_tokens = sequence.reused
            decoding.drafted, decoding.accepted = sequence.drafted, sequence.accepted
        if tail := text.decode(b"", final=True):
            yield tail

    def _require_model(self):
        if self._model is None or self._decoder is None:
            raise BackendError(f"{self.model_path.name} is not loaded")
        return self._model


def reference_llama(model_path: Path, buffers: BufferPath, n_ctx: int = 2048,
                    n_threads: int | None = None, flash_attn: bool = True,
                    kv_cache: str = "f16"):
    """llama-cpp-python's own `Llama` on the same weight buffers and KV cache type as this
    backend (pass the backend's `kv_type`): what tests and the bench compare the batched
    engine against (flash attention on, as "auto" gives on the CPU: it changes the
    arithmetic, so greedy text follows it, as it follows the cache type). `Llama` takes no
    buffer setting, so its model defaults are patched while it loads (in this thread;
    nothing else loads)."""
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    original = lib.llama_model_default_params

    def with_buffers():
        params = original()
        params.use_extra_bufts = buffers.extra_buffers
        return params

    lib.llama_model_default_params = with_buffers
    try:
        return llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, verbose=False,
                               n_threads=n_threads or physical_cores(), flash_attn=flash_attn,
                               type_k=_GGML_TYPES[kv_cache](lib),
                               type_v=_GGML_TYPES[kv_cache](lib))
    finally:
        lib.llama_model_default_params = original


_GGML_TYPES = {"f16": lambda lib: lib.GGML_TYPE_F16, "q8_0": lambda lib: lib.GGML_TYPE_Q8_0,
               "q4_0": lambda lib: lib.GGML_TYPE_Q4_0}


def _quiet(llama_cpp) -> None:
    """llama.cpp's own log lines go to the Python log, not to stderr (backends/llamacpp_log.py)."""
    route_to_python_logging(llama_cpp)
    llama_cpp.llama_backend_init()


def _end_of_generation_ids(model) -> tuple[int, ...]:
    import llama_cpp

    return tuple(t for t in range(model.n_vocab())
                 if llama_cpp.llama_vocab_is_eog(model.vocab, t))


def _token_text(model, token_id: int) -> str:
    if token_id < 0:
        return ""
    return model.detokenize([token_id], special=True).decode("utf-8", errors="replace")


def _check_gguf(path: Path) -> None:
    """Fail with a plain reason before llama.cpp sees a file that is not a GGUF model."""
    problem = check_gguf(path)
    if problem:
        raise BackendError(problem)


def _placement(metadata: dict[str, str], n_gpu_layers: int) -> str:
    """Where llama.cpp put the layers: cpu, "cpu + N GPU layers" or "GPU (all N layers)"."""
    import llama_cpp

    if n_gpu_layers == 0 or not llama_cpp.llama_supports_gpu_offload():
        return "cpu"
    try:
        layers = int(metadata[f"{metadata['general.architecture']}.block_count"])
    except (KeyError, ValueError):
        layers = None
    if layers is None:
        return "GPU (all layers)" if n_gpu_layers < 0 else f"cpu + {n_gpu_layers} GPU layers"
    # llama.cpp counts the output layer as one more: block_count + 1 offloads everything.
    if n_gpu_layers < 0 or n_gpu_layers > layers:
        return f"GPU (all {layers} layers)"
    return f"cpu + {n_gpu_layers} GPU layers"
