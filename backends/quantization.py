"""The bitsandbytes settings a transformers entry may give in models.yaml, one bounded
schema (as backends/sampling.py is for sampling), so the registry only names it."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Quantization(BaseModel):
    """bitsandbytes settings: 8-bit is LLM.int8; 4-bit is nf4 or fp4."""

    model_config = ConfigDict(extra="forbid")

    bits: Literal[4, 8]
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @property
    def label(self) -> str:
        return f"{self.bits}bit" if self.bits == 8 else f"4bit {self.quant_type}"
