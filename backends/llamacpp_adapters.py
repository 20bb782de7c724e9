"""LoRA adapters on llama.cpp: checked against the base GGUF before loading, loaded into
the model once, and set on a context.

llama.cpp sets adapters on a whole context (`llama_set_adapters_lora(ctx, ...)`), not per
sequence, so the batched engine cannot mix "base" and "base + adapter" in one batch. Each
entry keeps its own context instead, on one shared model: the weights are loaded once.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

from backends.gguf import GGUFHeaderError, read_gguf_header
from backends.lora import (Adapter, AdapterError, AdapterInfo, check_fits, gguf_base_shape,
                           read_gguf_adapter)


def check_gguf_adapters(model_path: Path, adapters: tuple[Adapter, ...]) -> list[AdapterInfo]:
    """Each adapter's declarations, refused (AdapterError naming both files) when it was
    made for another architecture, more layers or another hidden size."""
    if not adapters:
        return []
    try:
        metadata, _ = read_gguf_header(model_path)
    except (GGUFHeaderError, ValueError, OSError) as exc:
        raise AdapterError(f"cannot read the base model {model_path}: {exc}") from None
    base = gguf_base_shape(model_path, metadata)
    infos = []
    for adapter in adapters:
        if adapter.path.is_dir():
            raise AdapterError(f"adapter {adapter.path} is a PEFT folder: a llamacpp entry "
                               "takes a LoRA GGUF (llama.cpp's convert_lora_to_gguf.py "
                               "makes one)")
        info = read_gguf_adapter(adapter.path)
        check_fits(info, base)
        infos.append(info)
    return infos


def apply_adapters(llama_cpp, loaded: dict, model, ctx, adapters: tuple[Adapter, ...]) -> None:
    """Load each adapter into the model (once per model: `loaded` maps paths to handles,
    freed with the model) and set them with their scales on this context."""
    if not adapters:
        return
    handles = []
    for adapter in adapters:
        key = str(adapter.path)
        if key not in loaded:
            handle = llama_cpp.llama_adapter_lora_init(model.model, key.encode("utf-8"))
            if not handle:
                raise AdapterError(f"llama.cpp could not load adapter {adapter.path} onto "
                                   f"{Path(model.path_model).name} (see the log)")
            loaded[key] = handle
        handles.append(loaded[key])
    array = (llama_cpp.llama_adapter_lora_p_ctypes * len(handles))(*handles)
    scales = (ctypes.c_float * len(adapters))(*[a.scale for a in adapters])
    if llama_cpp.llama_set_adapters_lora(ctx.ctx, array, len(handles), scales) != 0:
        raise AdapterError(f"llama.cpp refused the adapters "
                           f"{', '.join(a.path.name for a in adapters)}")
