"""Hugging Face checkpoints through transformers, quantized by bitsandbytes, placed by accelerate.

`generate` runs in a worker thread feeding a `TextIteratorStreamer`; a `StoppingCriteria`
bound to the cancel event ends `generate` itself on Stop (and on a stop string, when the
shared local base closes the decoding), the worker's exception reaches the reader as a
`BackendError`, and the worker is joined before the reply ends. Prompt, room, stop strings
and usage are the shared local base's (backends/local.py).
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty

from backends.base import BackendError, GenParams, ProgressCallback
from backends.chat_template import ChatTemplate
from backends.cores import physical_cores
from backends.cuda import cuda_available
from backends.footprint import MemoryEstimate, PlannerError
from backends.gguf import gguf_shape
from backends.hf_adapters import activate, add_adapters, check_peft_adapters
from backends.hf_memory import checkpoint_shape, transformers_estimate
from backends.local import Decoding, LocalBackend
from backends.lora import Adapter, adapter_bytes
from backends.shared_weights import Held, SharedWeights
from backends.thinking import Markers

log = logging.getLogger(__name__)

TOKEN_TIMEOUT_S = 120.0
# Model classes are patched only while a model is built; loads that patch take turns.
_CLASS_PATCH = threading.Lock()
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True)
class HFSettings:
    """How to load: from models.yaml, translated to transformers' words by the backend."""

    quant_bits: int | None = None  # None, 4 or 8
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    max_memory: dict | None = None
    trust_remote_code: bool = False


class TransformersBackend(LocalBackend):
    template_origin = "the tokenizer's config"

    def __init__(self, source: Path, settings: HFSettings, context_length: int = 2048,
                 chat_template: str | None = None, cache_dir: Path | None = None,
                 reasoning: Markers | None = None, adapters: tuple[Adapter, ...] = (),
                 shared: SharedWeights | None = None) -> None:
        """`source` is a checkpoint directory or a GGUF file (loaded dequantized);
        `adapters` are PEFT LoRA folders applied on a base shared through `shared`."""
        super().__init__(context_length, chat_template, reasoning)
        self.source = Path(source)
        self.settings = settings
        self._cache_dir = cache_dir
        self._model = None
        self._tokenizer = None
        self._cores = physical_cores()  # the cap for a reply's share of threads
        self._placement = ""
        self.adapters = tuple(adapters)
        self._shared = shared or SharedWeights()
        self._held: Held | None = None

    # -- lifecycle -------------------------------------------------------------------
    def load(self, progress: ProgressCallback | None = None) -> None:
        if self._model is not None:
            return
        self._check_source()
        check_peft_adapters(self.source, self.adapters)  # before any weights load
        key = self._weights_key()
        held = self._shared.acquire(key, lambda: self._load_base(progress),
                                    lambda loaded: None)  # freed with the last reference
        try:
            add_adapters(held, self.adapters)
        except BackendError:
            self._shared.release(key)
            raise
        model, tokenizer = held.value
        self._held = held
        self._template = ChatTemplate.choose(
            self._template_override, getattr(tokenizer, "chat_template", None),
            bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "",
            model_name=self.source.name, architecture=getattr(model.config, "model_type", None))
        self._model, self._tokenizer = model, tokenizer
        self._placement = _placement(model)
        eos_ids = self._eos_ids()
        self._warnings = self._template.check(tokenizer.convert_ids_to_tokens(eos_ids))
        (progress or (lambda fraction, step: None))(1.0, "ready")
        log.info("loaded %s on %s", self.source.name, self._placement)

    def _weights_key(self) -> tuple:
        return ("transformers", str(self.source), repr(self.settings))

    def shared_weights(self) -> tuple[object, int] | None:
        try:
            estimate = self._base_breakdown()
        except BackendError:
            return None
        return self._weights_key(), estimate.weights

    def _load_base(self, progress: ProgressCallback | None) -> tuple:
        """The base model and tokenizer, as every entry sharing them uses them."""
        report = progress or (lambda fraction, step: None)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendError("transformers is not installed: pip install -r requirements.txt") from exc
        is_gguf = self.source.is_file()
        device = self._device(torch)
        report(0.0, "reading")
        try:
            if is_gguf and self.settings.quant_bits:
                directory, gguf_file = self._dequantized_copy(report), None
            elif is_gguf:
                directory, gguf_file = self.source.parent, self.source.name
                report(0.1, "dequantizing")
            else:
                directory, gguf_file = self.source, None
            tokenizer = AutoTokenizer.from_pretrained(
                directory, gguf_file=gguf_file, trust_remote_code=self.settings.trust_remote_code)
            if self.settings.quant_bits:
                report(0.5, "quantizing")
            quantizing_falcon = (self.settings.quant_bits is not None and gguf_file is None
                                 and _model_type(directory) == "falcon")
            with _falcon_linears_as_plain_linears() if quantizing_falcon else nullcontext():
                model = AutoModelForCausalLM.from_pretrained(
                    directory, gguf_file=gguf_file, dtype=self._dtype(torch, device),
                    device_map=self._device_map(device), max_memory=self._max_memory(),
                    quantization_config=self._quantization_config(torch, device),
                    trust_remote_code=self.settings.trust_remote_code)
        except BackendError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
            raise BackendError(f"transformers could not load {self.source}: {exc}") from exc
        model.eval()
        report(0.9, "reading chat template")
        return model, tokenizer

    def unload(self) -> None:
        if self._held is not None:
            self._held = None
            self._shared.release(self._weights_key())
        self._model = None
        self._tokenizer = None
        self._template = None
        self._placement = ""
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    @property
    def placement(self) -> str:
        """The devices accelerate put the weights on ("cpu", "cuda:0, cpu"), once loaded."""
        return self._placement

    def _check_source(self) -> None:
        """A missing path, or a checkpoint directory without weights, in one sentence."""
        if not self.source.exists():
            raise BackendError(f"model not found: {self.source}")
        if self.source.is_dir() and not any(
                any(self.source.glob(pattern)) for pattern in WEIGHT_FILES):
            raise BackendError(f"{self.source} holds no weights (looked for "
                               f"{', '.join(WEIGHT_FILES)}): is the download complete?")

    def memory_estimate(self) -> int:
        return self.memory_breakdown().total

    def memory_breakdown(self) -> MemoryEstimate:
        estimate = self._base_breakdown()
        return replace(estimate, weights=estimate.weights + adapter_bytes(self.adapters))

    def _base_breakdown(self) -> MemoryEstimate:
        self._check_source()
        try:
            if self.source.is_file():
                shape = gguf_shape(self.source)
                # Dequantizing reads the GGUF; quantizing reads the fp32 conversion.
                source_bytes = (shape.n_params * 4 if self.settings.quant_bits
                                else self.source.stat().st_size)
            else:
                shape = checkpoint_shape(self.source)
                source_bytes = sum(p.stat().st_size for p in self.source.glob("*.safetensors"))
        except PlannerError as exc:
            raise BackendError(str(exc)) from exc
        dtype_bytes = 4 if self._dtype_name() == "float32" else 2
        return transformers_estimate(shape, self.context_length, dtype_bytes,
                                     self.settings.quant_bits, source_bytes)

    def memory_device(self) -> str:
        device = self.settings.device
        if device == "cpu":
            return "cpu"
        if device.startswith("cuda:"):
            return device
        return "cuda:0" if cuda_available() else "cpu"

    def _dtype_name(self) -> str:
        if self.settings.dtype != "auto":
            return self.settings.dtype
        return "float32" if self.memory_device() == "cpu" else "bfloat16"

    def decodes_on_cpu(self) -> bool:
        return self.memory_device() == "cpu"

    def memory_footprint(self) -> int:
        """Bytes the loaded weights take, as transformers counts them."""
        return int(self._require_model().get_memory_footprint())

    # -- prompting ---------------------------------------------------------------------
    @property
    def _model_name(self) -> str:
        return self.source.name

    def _encode_prompt(self, prompt: str):
        inputs = self._encode(prompt)
        return inputs, int(inputs["input_ids"].shape[1])

    def _eog_ids(self) -> tuple[int, ...]:
        return tuple(self._eos_ids())

    def _encode(self, prompt: str):
        """A chat template already holds the special tokens the model expects; plain text
        in completion mode gets the ones its tokenizer adds (BOS where the model wants it,
        as llama.cpp does from the GGUF)."""
        add_special = self._require_template().completion
        return self._require_tokenizer()(prompt, return_tensors="pt",
                                         add_special_tokens=add_special)

    # -- generation --------------------------------------------------------------------
    def _decode(self, prompt, max_new: int, params: GenParams, cancel: threading.Event,
                decoding: Decoding) -> Iterator[str]:
        """`generate` in a worker thread, its text read from a streamer; closing this
        generator (a stop string, a reader that left) halts `generate` and joins the worker."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        model, tokenizer = self._require_model(), self._require_tokenizer()
        held = self._held or Held((model, tokenizer), lambda loaded: None)
        inputs = prompt.to(model.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        cores = self._cores
        halt = threading.Event()  # set when this generator ends, for whatever reason
        seen = {"length": prompt_tokens, "last": None}

        class Halt(StoppingCriteria):
            """Runs after every new token: counts it and ends generate on Stop."""

            def __call__(self, input_ids, scores, **kwargs):
                seen["length"], seen["last"] = int(input_ids.shape[1]), int(input_ids[0, -1])
                follow_thread_share()
                return cancel.is_set() or halt.is_set()

        def follow_thread_share() -> None:
            if params.threads is not None and \
                    (wanted := min(cores, params.threads())) != torch.get_num_threads():
                torch.set_num_threads(wanted)

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=TOKEN_TIMEOUT_S)
        eos_ids = self._eos_ids()
        settings = params.sampling
        sampling = settings.temperature > 0
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=max_new,
                      do_sample=sampling, repetition_penalty=settings.repetition_penalty,
                      stopping_criteria=StoppingCriteriaList([Halt()]),
                      eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id or eos_ids[0])
        if sampling:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p,
                          top_k=settings.top_k or None, min_p=settings.min_p or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None, min_p=None)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                follow_thread_share()
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                with held.lock, torch.inference_mode():  # adapters set for this reply
                    activate(held, self.adapters)
                    model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader
                failure.append(exc)
                streamer.end()
            finally:
                if params.threads is not None:
                    torch.set_num_threads(cores)  # this thread's setting is what new ones get

        worker = threading.Thread(target=work, name="hf-generate", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield text
        except Empty:
            halt.set()
            raise BackendError(f"no token for {TOKEN_TIMEOUT_S:.0f} s: generation stalled") from None
        finally:  # also when the base closes this generator on a stop string
            halt.set()
            worker.join()
            decoding.tokens = seen["length"] - prompt_tokens
            decoding.ended_on_eog = seen["last"] in eos_ids
        if failure:
            raise BackendError(f"generation failed: {type(failure[0]).__name__}: {failure[0]}")

    # -- helpers -----------------------------------------------------------------------
    def _eos_ids(self) -> list[int]:
        model, tokenizer = self._require_model(), self._require_tokenizer()
        configured = model.generation_config.eos_token_id
        ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
        for text in (tokenizer.eos_token, *self._require_template().stop_strings):
            token = tokenizer.convert_tokens_to_ids(text) if text else None
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                ids.append(token)
        return [i for i in dict.fromkeys(ids) if i is not None]

    def _device(self, torch) -> str:
        device = self.settings.device
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} asked for, but no CUDA GPU is available")
        return device

    def _device_map(self, device: str):
        if self.settings.device == "auto" and device == "cuda":
            return "auto"  # accelerate spreads layers over GPUs, then CPU, by max_memory
        return {"": device}

    def _max_memory(self) -> dict | None:
        if not self.settings.max_memory:
            return None
        return {int(k) if str(k).isdigit() else k: v for k, v in self.settings.max_memory.items()}

    def _dtype(self, torch, device: str):
        if self.settings.dtype != "auto":
            return getattr(torch, self.settings.dtype)
        return torch.float32 if device == "cpu" else torch.bfloat16

    def _quantization_config(self, torch, device: str):
        if not self.settings.quant_bits:
            return None
        from transformers import BitsAndBytesConfig

        if self.settings.quant_bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        compute = self.settings.compute_dtype
        compute_dtype = self._dtype(torch, device) if compute == "auto" else getattr(torch, compute)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.settings.quant_type,
                                  bnb_4bit_use_double_quant=self.settings.double_quant,
                                  bnb_4bit_compute_dtype=compute_dtype)

    def _dequantized_copy(self, report: ProgressCallback) -> Path:
        """The GGUF's weights as a safetensors checkpoint, made once and cached.

        transformers will not quantize straight from a GGUF, so the dequantized model is
        rebuilt from its config, saved, and quantized from there on every later load.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        stat = self.source.stat()
        if self._cache_dir is None:
            raise BackendError("quantizing a GGUF needs a cache directory")
        target = self._cache_dir / f"{self.source.stem}-{stat.st_size}-{stat.st_mtime_ns}"
        if (target / "config.json").exists():
            return target
        report(0.1, "dequantizing")
        parent, name = self.source.parent, self.source.name
        loaded = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(parent, gguf_file=name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=False)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
        log.info("cached dequantized %s in %s", name, target)
        return target

    def _require_model(self):
        if self._model is None:
            raise BackendError(f"{self.source.name} is not loaded")
        return self._model

    def _require_tokenizer(self):
        if self._tokenizer is None:
            raise BackendError(f"{self.source.name} is not loaded")
        return self._tokenizer


def _model_type(directory: Path) -> str:
    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError):
        return ""


@contextmanager
def _falcon_linears_as_plain_linears():
    """Let bitsandbytes see Falcon's layers.

    transformers 5.24 swaps in quantized layers only where `type(module) is nn.Linear`;
    Falcon builds `FalconLinear`, an `nn.Linear` with the same arithmetic, so an 8-bit or
    4-bit Falcon would silently stay unquantized. Building it from plain `nn.Linear` fixes
    that; the patch lasts only while the model is constructed.
    """
    from torch import nn
    from transformers.models.falcon import modeling_falcon

    with _CLASS_PATCH:
        original = modeling_falcon.FalconLinear
        modeling_falcon.FalconLinear = nn.Linear
        try:
            yield
        finally:
            modeling_falcon.FalconLinear = original


def _placement(model) -> str:
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        devices = sorted({str(d) for d in device_map.values()})
        return ", ".join(devices)
    return str(model.device)
