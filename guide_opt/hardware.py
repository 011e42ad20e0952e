"""GPU specifications (:class:`GpuSpec`), one YAML file per GPU in ``hardware_db/gpus/``.

Units are decided once for the whole project: capacities in GiB (2**30 bytes), bandwidths in
decimal GB/s (10**9 bytes/s), compute peaks in decimal TFLOP/s (10**12 FLOP/s; TOP/s for
integer math), latencies in microseconds. Peaks are *dense* tensor-core figures (no
structured sparsity). Every figure carries a source in ``sources``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from guide_opt.kernel_profile import KernelProfile

GIB_BYTES = 2**30
GB_BYTES = 10**9
TERA = 10**12

#: Fields of :class:`GpuSpec` that are measured figures and therefore need a source.
FIGURE_FIELDS = (
    "memory_gib",
    "hbm_bandwidth_gbps",
    "bf16_dense_tflops",
    "fp8_dense_tflops",
    "int8_dense_tops",
    "int4_dense_tops",
    "link_bandwidth_gbps",
    "link_latency_us",
    "gpus_per_node",
)


class GpuSpec(BaseModel):
    """One accelerator model as the performance model sees it.

    ``bf16_dense_tflops`` is the 16-bit tensor peak: bf16 where the GPU supports it, fp16 on
    GPUs without bf16 (V100, T4; see ``supports_bf16``). Missing low-precision peaks (``None``)
    mean the GPU has no such tensor-core path and quantizations needing it are unavailable.
    ``link_*`` describe the intra-node GPU-to-GPU link per GPU and per direction.
    ``kernels`` holds the fitted kernel-efficiency curves; the catalog attaches them from
    ``hardware_db/kernels/`` (see :func:`guide_opt.catalog.kernel_profile_for` for which file a GPU gets).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    name: str
    vendor: Literal["nvidia", "amd"]
    architecture: str
    memory_gib: PositiveFloat
    hbm_bandwidth_gbps: PositiveFloat
    bf16_dense_tflops: PositiveFloat
    supports_bf16: bool = True
    fp8_dense_tflops: PositiveFloat | None = None
    int8_dense_tops: PositiveFloat | None = None
    int4_dense_tops: PositiveFloat | None = None
    link_kind: Literal["nvlink", "xgmi", "pcie"]
    link_bandwidth_gbps: PositiveFloat
    link_latency_us: PositiveFloat
    gpus_per_node: PositiveInt
    sources: dict[str, str]
    kernels: KernelProfile | None = None

    @model_validator(mode="after")
    def _every_figure_has_a_source(self) -> "GpuSpec":
        missing = [f for f in FIGURE_FIELDS if getattr(self, f) is not None and not self.sources.get(f)]
        if missing:
            raise ValueError(f"sources is missing an entry for {', '.join(missing)}; cite where each figure comes from")
        unknown = sorted(set(self.sources) - set(FIGURE_FIELDS))
        if unknown:
            raise ValueError(f"sources names unknown figures {', '.join(unknown)}; use one of {', '.join(FIGURE_FIELDS)}")
        return self

    @property
    def memory_bytes(self) -> float:
        """Total device memory in bytes."""
        return self.memory_gib * GIB_BYTES

    @property
    def hbm_bandwidth_bytes_per_s(self) -> float:
        """Peak device-memory bandwidth in bytes/s."""
        return self.hbm_bandwidth_gbps * GB_BYTES

    @property
    def link_bandwidth_bytes_per_s(self) -> float:
        """Intra-node link bandwidth per GPU and direction in bytes/s."""
        return self.link_bandwidth_gbps * GB_BYTES

    def peak_flops_per_s(self, compute_dtype: str) -> float | None:
        """Dense tensor peak in FLOP/s (or OP/s) for ``compute_dtype`` (bf16, fp8, int8, int4); None if unsupported."""
        tera = {
            "bf16": self.bf16_dense_tflops,
            "fp8": self.fp8_dense_tflops,
            "int8": self.int8_dense_tops,
            "int4": self.int4_dense_tops,
        }[compute_dtype]
        return None if tera is None else tera * TERA
