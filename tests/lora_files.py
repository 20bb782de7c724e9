"""Real LoRA adapters made for the tests: a llama.cpp LoRA GGUF written with the `gguf`
package (the layout llama.cpp's convert_lora_to_gguf.py writes), and a PEFT folder for a
transformers checkpoint made with `peft` itself. Random B weights, so the output changes."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def lora_gguf(target: Path, architecture: str = "llama", n_layers: int = 30,
              hidden: int = 576, kv_width: int = 192, rank: int = 8, alpha: float = 16.0,
              base_name: str = "SmolLM2-135M-Instruct", seed: int = 0) -> Path:
    """A LoRA on attn_q and attn_v of every layer. A is (rank, in), B is (out, rank) as
    numpy arrays: GGUF stores them reversed, ne = [in, rank] and [rank, out], as
    llama.cpp's adapter loader checks against the base tensor."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(target, architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_string("general.base_model.0.name", base_name)
    writer.add_uint32("general.base_model.count", 1)
    for layer in range(n_layers):
        for name, out in (("attn_q", hidden), ("attn_v", kv_width)):
            a = rng.normal(0, 1 / np.sqrt(hidden), (rank, hidden)).astype(np.float32)
            b = rng.normal(0, 0.5, (out, rank)).astype(np.float32)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def peft_adapter(base: Path, target: Path, rank: int = 4, seed: int = 0) -> Path:
    """A PEFT LoRA for the checkpoint at `base` on q_proj and v_proj, B set non-zero (peft
    starts B at zero, which would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank,
                                                  target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.save_pretrained(target)
    return target
