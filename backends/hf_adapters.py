"""LoRA adapters on transformers, through `peft`: checked against the base checkpoint before
loading, injected into the one shared base model under a name each, and switched per
generation.

PEFT puts its LoRA layers into the base model's own modules, so every entry that shares
that base model (backends/shared_weights.py) runs through them: each generation first sets
which adapters apply (none for the plain base) while holding the shared model's lock, and
keeps holding it until `generate` ends. Replies of entries on one shared base take turns.
"""
from __future__ import annotations

from pathlib import Path

from backends.gguf import GGUFHeaderError, read_gguf_header
from backends.lora import (Adapter, AdapterError, BaseShape, check_fits,
                           checkpoint_base_shape, gguf_base_shape, read_peft_adapter)
from backends.shared_weights import Held


def check_peft_adapters(source: Path, adapters: tuple[Adapter, ...]) -> None:
    """Refuse, naming both, an adapter made for another architecture or size, or one that
    changes projections the base does not have."""
    if not adapters:
        return
    base = _base_shape(source)
    for adapter in adapters:
        if not adapter.path.is_dir():
            raise AdapterError(f"adapter {adapter.path} is a file: a transformers entry takes "
                               "a PEFT folder (adapter_config.json and "
                               "adapter_model.safetensors)")
        check_fits(read_peft_adapter(adapter.path), base)


def _base_shape(source: Path) -> BaseShape:
    if source.is_dir():
        return checkpoint_base_shape(source)
    try:
        metadata, _ = read_gguf_header(source)
    except (GGUFHeaderError, ValueError, OSError) as exc:
        raise AdapterError(f"cannot read the base model {source}: {exc}") from None
    return gguf_base_shape(source, metadata)


def add_adapters(held: Held, adapters: tuple[Adapter, ...]) -> None:
    """Load each adapter into the shared model once, under its name, at its scale."""
    if not adapters:
        return
    try:
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
    except ImportError as exc:
        raise AdapterError("peft is not installed: pip install -r requirements.txt") from exc
    model = held.value[0]
    with held.lock:
        peft_model = held.extra.get("peft")
        for adapter in adapters:
            if peft_model is not None and adapter.name in peft_model.peft_config:
                continue
            try:
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(model, str(adapter.path),
                                                           adapter_name=adapter.name)
                    held.extra["peft"] = peft_model
                else:
                    peft_model.load_adapter(str(adapter.path), adapter_name=adapter.name)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise AdapterError(f"peft could not load adapter {adapter.path}: {exc}") from exc
            for module in model.modules():
                if isinstance(module, LoraLayer) and adapter.name in module.scaling:
                    module.set_scale(adapter.name, adapter.scale)
        peft_model.eval()


def activate(held: Held, adapters: tuple[Adapter, ...]) -> None:
    """Make these adapters (none: the plain base) the ones that apply; hold `held.lock`."""
    peft_model = held.extra.get("peft")
    if peft_model is None:
        return
    tuner = peft_model.base_model
    if adapters:
        tuner.enable_adapter_layers()
        tuner.set_adapter([a.name for a in adapters], inference_mode=True)
    else:
        tuner.disable_adapter_layers()
