"""LoRA adapters found on disk: a PEFT folder read from adapter_config.json and its
weights' header, and each adapter matched to the scanned model it names as its base, so
the library offers "base + adapter" as one entry instead of listing the adapter as a model.
(Adapter GGUFs are read with the other GGUFs, model_files.py, by `general.type`.)"""
from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from backends.hf_memory import safetensors_header
from chatcore.library.model_files import (FoundModel, _gguf_reason, _safetensors_params,
                                          _size, read_json, scan_id_of, slug)

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def peft_adapter_model(source: str, name: str, directory: Path) -> FoundModel:
    """A PEFT adapter folder: adapter_config.json names its base; the weights' header is
    read to catch a cut download."""
    config = read_json(directory / "adapter_config.json")
    weights = directory / "adapter_model.safetensors"
    problem = None
    if not isinstance(config, dict):
        problem, config = f"unreadable: {directory / 'adapter_config.json'}: not a JSON object", {}
    try:
        n_params = _safetensors_params(weights)
        if gap := _safetensors_missing(weights):
            problem = problem or f"unreadable: {weights}: truncated ({gap:,} bytes of tensor data missing)"
    except Exception as exc:  # noqa: BLE001 - any bytes may arrive
        n_params, problem = None, problem or f"unreadable: {weights}: {_gguf_reason(exc)}"
    base = config.get("base_model_name_or_path")
    return FoundModel(
        scan_id=scan_id_of(directory), source=source, name=name, path=directory,
        format="checkpoint", architecture=None, n_params=n_params,
        quantization=str(config.get("peft_type") or "") or None, size_bytes=_size(weights),
        context_length=None, has_chat_template=None, problem=problem,
        suggested_id=slug(name), adapter_for=str(base)[:200] if base else "unknown")


def _safetensors_missing(path: Path) -> int:
    """Bytes of tensor data the header promises beyond the file's end."""
    header = safetensors_header(path)
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    end = 8 + length + max((max(t.get("data_offsets", [0, 0])) for k, t in header.items()
                            if k != "__metadata__"), default=0)
    return max(0, end - os.stat(path).st_size)



def with_bases(models: Sequence[FoundModel]) -> list[FoundModel]:
    """Each adapter with `base_path` set to the scanned model it names (same format, the
    base's name within the model's name or file name; a PEFT base given as a local folder
    is taken as it is), or a problem saying the base was not found."""
    plain = [m for m in models if not m.adapter_for and not m.problem]
    out = []
    for model in models:
        if not model.adapter_for or model.problem:
            out.append(model)
            continue
        named = Path(model.adapter_for)
        if model.format == "checkpoint" and named.is_absolute() and (named / "config.json").exists():
            out.append(replace(model, base_path=named))
            continue
        wanted = slug(model.adapter_for.rsplit("/", 1)[-1])
        match = next((m for m in plain if m.format == model.format and wanted != "unknown"
                      and (wanted in slug(m.name) or wanted in slug(m.path.name))), None)
        if match is None:
            out.append(replace(model, problem=f"adapter for {model.adapter_for}: that base "
                               "model is not among the scanned models (add it, or write the "
                               "entry by hand with 'adapters:')"))
        else:
            out.append(replace(model, base_path=match.path))
    return out
