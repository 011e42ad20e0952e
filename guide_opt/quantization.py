"""Quantization schemes (:class:`QuantizationSpec`) and KV-cache dtypes.

Ids: ``bf16`` (alias ``fp16``), ``fp8``, ``w8a8``, ``w4a16``; KV cache ``fp16`` or ``fp8``.
The schemes are defined in ``hardware_db/quantizations.yaml``. Each says how many bytes a
weight takes, which tensor-core path does the math (the GPU peak used), and its quality
class, which maps a problem's ``precision_tolerance`` to the schemes it allows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

#: precision_tolerance value -> the highest quality-loss class it accepts (see quantizations.yaml).
PRECISION_TOLERANCES: dict[str, int] = {"none": 0, "10%": 10, "20%": 20, "50%": 50}

KV_CACHE_DTYPE_BYTES: dict[str, float] = {"fp16": 2.0, "fp8": 1.0}


class QuantizationSpec(BaseModel):
    """A weight/activation precision scheme.

    weight_bytes_per_param: storage per weight (bf16 2, 8-bit 1, 4-bit 0.5 plus scales).
    compute_dtype: the tensor-core path used for matmuls (``bf16``, ``fp8``, ``int8``).
    activation_bytes: bytes per activation element moved between kernels.
    quality_loss_class: the smallest precision_tolerance (in %) that admits this scheme.
    dequant_compute_factor: extra matmul time factor for weight-only schemes that dequantize
        on the fly (1.0 when no dequantization is needed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    aliases: list[str] = []
    description: str
    weight_bytes_per_param: PositiveFloat
    compute_dtype: Literal["bf16", "fp8", "int8"]
    activation_bytes: PositiveFloat
    quality_loss_class: Literal[0, 10, 20, 50]
    dequant_compute_factor: float = Field(default=1.0, ge=1.0)
    source: str


def allowed_by_tolerance(spec: QuantizationSpec, tolerance: str) -> bool:
    """True when ``precision_tolerance`` = ``tolerance`` admits the scheme ``spec``."""
    return spec.quality_loss_class <= PRECISION_TOLERANCES[tolerance]
