"""GGUF models through llama-cpp-python: the default engine on CPU.

Decoding is our own loop over `Llama.generate`, so cancellation is checked before every
token is computed and tokens are counted exactly; the chat template is the one in the GGUF
metadata (or the entry's override), rendered in the sandbox. Prompt, room, stop strings and
usage are the shared local base's (backends/local.py).
"""
from __future__ import annotations

import codecs
import logging
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backends.base import BackendError, GenParams, ProgressCallback
from backends.chat_template import ChatTemplate
from backends.cores import physical_cores
from backends.footprint import MemoryEstimate, PlannerError
from backends.gguf import check_gguf
from backends.llamacpp_memory import llamacpp_estimate
from backends.llamacpp_states import SavedStates
from backends.local import Decoding, LocalBackend

log = logging.getLogger(__name__)

# Llama() takes no argument for weight buffer types, so loads patch its defaults briefly.
_DEFAULT_PARAMS_PATCH = threading.Lock()


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return any(line.startswith("flags") and " amx_int8" in line for line in info)
    except OSError:
        return False


@contextmanager
def _plain_cpu_weight_buffers():
    """Keep llama.cpp off its AMX weight buffers while a model loads.

    With llama-cpp-python 0.3.36 built natively on an AMX CPU (Sapphire Rapids and later),
    decoding any batch of two or more tokens through AMX-repacked weights segfaults; plain
    CPU buffers are correct, at about half the single-token speed.
    """
    from llama_cpp import llama_cpp as lib

    with _DEFAULT_PARAMS_PATCH:
        original = lib.llama_model_default_params

        def without_extra_buffers():
            params = original()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            lib.llama_model_default_params = original


class LlamaCppBackend(LocalBackend):
    """One GGUF file with one llama.cpp context; not thread-safe, the manager serialises it."""

    template_origin = "the GGUF file's metadata"

    def __init__(
        self,
        model_path: Path,
        context_length: int = 2048,
        chat_template: str | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> None:
        super().__init__(context_length, chat_template)
        self.model_path = Path(model_path)
        self.n_threads = n_threads or physical_cores()
        self.n_gpu_layers = n_gpu_layers
        self._llm = None
        self._states: SavedStates | None = None
        self._eos_ids: tuple[int, ...] = ()
        self._placement = ""

    # -- lifecycle -------------------------------------------------------------------
    def load(self, progress: ProgressCallback | None = None) -> None:
        if self._llm is not None:
            return
        report = progress or (lambda fraction, step: None)
        report(0.0, "reading")
        _check_gguf(self.model_path)
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "llama-cpp-python is not installed: pip install -r requirements.txt"
            ) from exc
        try:
            with _plain_cpu_weight_buffers() if cpu_has_amx() else _no_patch():
                llm = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.context_length,
                    n_threads=self.n_threads,
                    n_gpu_layers=self.n_gpu_layers,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        report(0.8, "reading chat template")
        try:
            self._template = ChatTemplate.choose(
                self._template_override, llm.metadata.get("tokenizer.chat_template"),
                bos_token=_token_text(llm, llm.token_bos()),
                eos_token=_token_text(llm, llm.token_eos()),
                model_name=self.model_path.name,
                architecture=llm.metadata.get("general.architecture"))
        except BackendError:
            llm.close()
            raise
        self._llm = llm
        self._states = SavedStates(self._saved_states_bytes())
        self._eos_ids = _end_of_generation_ids(llm)
        self._warnings = self._template.check([_token_text(llm, t) for t in self._eos_ids])
        self._placement = _placement(llm, self.n_gpu_layers)
        report(1.0, "ready")
        log.info("loaded %s with %d threads on %s", self.model_path.name, self.n_threads,
                 self._placement)

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
        self._llm = None
        self._template = None
        self._states = None
        self._placement = ""

    @property
    def placement(self) -> str:
        return self._placement

    def decodes_on_cpu(self) -> bool:
        return self.n_gpu_layers != -1  # partly offloaded models still decode layers here

    def memory_estimate(self) -> int:
        return self.memory_breakdown().total

    def memory_breakdown(self) -> MemoryEstimate:
        _check_gguf(self.model_path)
        try:
            return llamacpp_estimate(self.model_path, self.context_length)
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
        llm = self._require_llm()
        bos = self._require_template().bos_token
        add_bos = llm._model.add_bos_token() and not (bos and prompt.startswith(bos))
        return llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    # -- generation --------------------------------------------------------------------
    def _decode(self, prompt: list[int], max_new: int, params: GenParams,
                cancel: threading.Event, decoding: Decoding) -> Iterator[str]:
        """One token at a time from `Llama.generate`, after the longest saved state that
        the prompt starts with; the thread count follows `params.threads` between tokens."""
        llm = self._require_llm()
        import llama_cpp

        if self._states is not None:
            self._states.restore_best(llm, prompt)
        llm.set_seed(params.seed if params.seed is not None else random.randrange(2**31))
        tokens = llm.generate(
            prompt,
            temp=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=0.0,
            repeat_penalty=params.repetition_penalty,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        threads = self.n_threads
        try:
            while decoding.tokens < max_new:
                if cancel.is_set():
                    break
                if params.threads is not None and \
                        (wanted := min(self.n_threads, params.threads())) != threads:
                    threads = wanted
                    llama_cpp.llama_set_n_threads(llm._ctx.ctx, threads, threads)
                token = next(tokens)
                decoding.tokens += 1
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    decoding.ended_on_eog = True
                    break
                text = decoder.decode(llm.detokenize([token]))
                if text:
                    yield text
        finally:  # also when the base closes this generator on a stop string
            tokens.close()
            if threads != self.n_threads:
                llama_cpp.llama_set_n_threads(llm._ctx.ctx, self.n_threads, self.n_threads)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _reply_done(self) -> None:
        if self._states is not None and self._llm is not None:
            self._states.save(self._llm)

    def _require_llm(self):
        if self._llm is None:
            raise BackendError(f"{self.model_path.name} is not loaded")
        return self._llm


@contextmanager
def _no_patch():
    yield


def _end_of_generation_ids(llm) -> tuple[int, ...]:
    import llama_cpp

    vocab = llm._model.vocab
    return tuple(t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))


def _token_text(llm, token_id: int) -> str:
    if token_id < 0:
        return ""
    return llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")


def _check_gguf(path: Path) -> None:
    """Fail with a plain reason before llama.cpp sees a file that is not a GGUF model."""
    problem = check_gguf(path)
    if problem:
        raise BackendError(problem)


def _placement(llm, n_gpu_layers: int) -> str:
    """Where llama.cpp put the layers: cpu, "cpu + N GPU layers" or "GPU (all N layers)"."""
    import llama_cpp

    if n_gpu_layers == 0 or not llama_cpp.llama_supports_gpu_offload():
        return "cpu"
    try:
        layers = int(llm.metadata[f"{llm.metadata['general.architecture']}.block_count"])
    except (KeyError, ValueError):
        layers = None
    if layers is None:
        return "GPU (all layers)" if n_gpu_layers < 0 else f"cpu + {n_gpu_layers} GPU layers"
    # llama.cpp counts the output layer as one more: block_count + 1 offloads everything.
    if n_gpu_layers < 0 or n_gpu_layers > layers:
        return f"GPU (all {layers} layers)"
    return f"cpu + {n_gpu_layers} GPU layers"
