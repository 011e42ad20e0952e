"""Fit kernel-efficiency curves (:class:`~guide_opt.kernel_profile.KernelProfile`) to measured kernel tables.

Input: a folder laid out like NVIDIA aiconfigurator-core's ``systems/data`` converted to CSV
(``<data-dir>/aiconfigurator/<gpu>/{gemm,context_attention,generation_attention,nccl}.csv.gz``
plus ``INDEX.csv`` naming each table's version and the columns dropped because they were
constant). Only :func:`fit_all` and the benchmark script read files; the planner never does.

What is fitted, per GPU (``scope: gpu``) and pooled (``scope: generic``), by
``scipy.optimize.least_squares`` on ``ln(predicted / measured)`` of kernel time (so a 5 us
and a 50 ms kernel weigh alike):

- GEMM per dtype (``bfloat16`` rows -> ``bf16``; per-tensor ``fp8`` rows -> ``fp8``; block-scaled
  and FP4 kernels are not used): ``peak_fraction``, ``half_tokens``, ``bandwidth_fraction``, ``latency_us``.
- Attention (head_dim 128, no sliding window; the engine's default kernel: the source with
  the most rows, Triton excluded): prefill and decode rows jointly -- ``prefill_peak_fraction``,
  ``prefill_half_tokens``, ``latency_us``, ``per_sequence_us`` and one HBM fraction per KV-cache
  dtype: ``decode_bandwidth_fraction`` on the 16-bit-cache rows, ``fp8_kv_decode_bandwidth_fraction``
  on the FP8-cache rows where the GPU has them (H100, H200, B200; pooled over all, one fraction let
  the 16-bit decodes be predicted 10-13% slow on H100/H200 and the FP8 ones fast). Generic profiles
  fit both but keep only the 16-bit one (:func:`fit_profile` says why).
- All-reduce (``half`` elements) per GPU count: ``latency_us``, ``bus_bandwidth_fraction``.
  The generic PCIe profile (:func:`generic_all_reduce`) keeps a GPU count's bus bandwidth only
  where at least :data:`MIN_SYSTEMS_PER_COUNT` measured PCIe systems have rows at that count;
  elsewhere it takes the 2-GPU (smallest count's) bus bandwidth with that count's latency.

Generalization (:func:`leave_one_gpu_out`): each measured GPU's rows are predicted by the
profile an unmeasured GPU would get -- the generic fit of the other GPUs (collectives from the
other GPUs with the same link kind, else the NVLink ones) -- and scored against its own in-sample fit.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guide_opt.catalog import Catalog
from guide_opt.errors import InputError
from guide_opt.hardware import GpuSpec
from guide_opt.kernel_profile import AttentionFit, CollectiveFit, FitQuality, GemmFit, KernelProfile

#: The data's GPU folder -> guide-opt GPU id.
DATA_GPU_IDS: dict[str, str] = {
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200",
    "b200_sxm": "b200",
    "a100_sxm": "a100-80gb-sxm",
    "l40s": "l40s",
}
#: GEMM dtype in the tables -> guide-opt compute dtype.
GEMM_DTYPES: dict[str, str] = {"bfloat16": "bf16", "fp8": "fp8"}
#: GEMM rows fitted have at least this many input and output features: the projections of
#: the catalog's LLMs sharded over up to 8 GPUs (a 4096-wide layer at TP 8 has 512 columns).
GEMM_MIN_FEATURES = 512
#: ... and at most this many tokens: an engine step's token budget (vLLM's default
#: max_num_batched_tokens is 8192 offline); larger sweeps run into clock throttling that no
#: serving step sees.
GEMM_MAX_TOKENS = 16384
#: Upper bound of the serialized input pass, in bytes per byte of GEMM input: an FP8 input
#: quantization reads the 16-bit input twice (amax, then scale) and writes it once in FP8,
#: 2 + 2 + 1 = 5 bytes per 1-byte input element. Unbounded, the fit uses this term to absorb
#: the inefficiency of tiny-N GEMMs and overstates it for large ones.
MAX_INPUT_PASS_BYTES = 5.0
#: Bytes per element of a KV-cache dtype in the attention tables.
KV_DTYPE_BYTES: dict[str, float] = {"bfloat16": 2.0, "fp8": 1.0}
#: Bytes per element of the all-reduce rows fitted (``nccl_dtype == half``).
ALL_REDUCE_ELEMENT_BYTES = 2.0
#: Attention rows fitted: the head size of the catalog's Llama/Qwen/Mistral LLMs, full attention.
ATTENTION_HEAD_DIM = 128
SOURCE = "NVIDIA aiconfigurator-core 0.12.0 systems/data (Apache-2.0), kernel tables collected with vLLM kernels and NCCL"
#: A PCIe profile's all-reduce bus bandwidth at a GPU count is kept from the measured systems only
#: where at least this many systems have rows at that count. NCCL's bus bandwidth is normalised for
#: the ring, so on a flat topology it stays roughly constant in the GPU count; a drop seen on a
#: single box (the measured L40S system: about 20 GB/s at 2 GPUs, 5 at 4, 1.5 at 8, consistent with
#: a ring crossing CPU sockets or PCIe root complexes) is a property of that box, not of its link
#: kind -- nor of its GPU: NVIDIA's own L40S systems run TensorRT-LLM at TP 8 about as fast as at
#: TP 4 (benchmarks/RESULTS.md section 14), which that box's 8-GPU bandwidth would make 5x slower.
MIN_SYSTEMS_PER_COUNT = 2
#: Link kinds whose multi-GPU bus bandwidth depends on the box's topology (the host's PCIe tree),
#: unlike a GPU fabric (NVLink/NVSwitch, XGMI) that joins every GPU of the node alike.
TOPOLOGY_DEPENDENT_LINKS = ("pcie",)
KINDS = ("gemm_bf16", "gemm_fp8", "attention_prefill", "attention_decode", "attention_decode_bf16_kv", "attention_decode_fp8_kv", "all_reduce")
MS = 1e-3


# ---- reading ------------------------------------------------------------------------------------
def _index(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(gpu, table) -> {'version': ..., constant column: value}."""
    path = root / "INDEX.csv"
    if not path.is_file():
        raise InputError("--data-dir", f"'{path}' not found", "point --data-dir at the folder holding aiconfigurator/INDEX.csv")
    out = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            constants = dict(part.strip().split("=", 1) for part in row["constant_columns"].split(";") if "=" in part)
            out[(row["gpu"], row["table"])] = {"version": row["version"], **constants}
    return out


def read_table(root: Path, gpu: str, table: str) -> list[dict[str, str]]:
    """Rows of ``<root>/<gpu>/<table>.csv.gz`` with the constant columns of ``INDEX.csv`` filled in."""
    constants = _index(root).get((gpu, table), {})
    with gzip.open(root / gpu / f"{table}.csv.gz", "rt") as fh:
        return [{**constants, **row} for row in csv.DictReader(fh)]


def _default_kernel(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows of the kernel source with the most rows (Triton fallbacks excluded)."""
    counts: dict[str, int] = {}
    for r in rows:
        src = r.get("kernel_source", "")
        if "triton" not in src:
            counts[src] = counts.get(src, 0) + 1
    best = max(counts, key=counts.__getitem__)
    return [r for r in rows if r.get("kernel_source", "") == best]


# ---- rows as arrays: work, bytes, peaks, measured time --------------------------------------------
@dataclass(frozen=True)
class KernelRows:
    """Measured kernels of one kind, as arrays: FLOPs, weight (or KV) bytes, activation bytes,
    size for the efficiency curve, whether an attention row's KV cache is FP8, peaks of the GPU
    each row ran on, and the measured time (s)."""

    flops: np.ndarray
    bytes_moved: np.ndarray
    activation_bytes: np.ndarray
    input_bytes: np.ndarray
    weight_elements: np.ndarray
    size: np.ndarray
    sequences: np.ndarray
    fp8_kv: np.ndarray
    peak_flops_per_s: np.ndarray
    hbm_bytes_per_s: np.ndarray
    measured_s: np.ndarray
    gpu: np.ndarray

    def __len__(self) -> int:
        return len(self.measured_s)

    @property
    def working_set_bytes(self) -> np.ndarray:
        """Bytes each row's kernel streams: weights (or KV cache) plus activations."""
        return self.bytes_moved + self.activation_bytes

    def where(self, mask: np.ndarray) -> "KernelRows":
        """The rows selected by boolean ``mask``."""
        return KernelRows(*(getattr(self, f)[mask] for f in FIELDS))

    @staticmethod
    def concat(parts: list["KernelRows"]) -> "KernelRows":
        """All rows of ``parts``."""
        return KernelRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


FIELDS = ("flops", "bytes_moved", "activation_bytes", "input_bytes", "weight_elements", "size", "sequences", "fp8_kv", "peak_flops_per_s", "hbm_bytes_per_s",
          "measured_s", "gpu")


def _rows(flops, bytes_moved, activation_bytes, input_bytes, weight_elements, size, sequences, gpu: GpuSpec, peak_dtype: str, measured_ms,
          data_gpu: str, fp8_kv=None) -> KernelRows:
    n = len(measured_ms)
    peak = gpu.peak_flops_per_s(peak_dtype)
    return KernelRows(np.asarray(flops, float), np.asarray(bytes_moved, float), np.asarray(activation_bytes, float), np.asarray(input_bytes, float),
                      np.asarray(weight_elements, float), np.asarray(size, float),
                      np.asarray(sequences, float), np.zeros(n, bool) if fp8_kv is None else np.asarray(fp8_kv, bool), np.full(n, peak),
                      np.full(n, gpu.hbm_bandwidth_bytes_per_s), np.asarray(measured_ms, float) * MS, np.full(n, data_gpu, dtype=object))


def gemm_rows(raw: list[dict[str, str]], gpu: GpuSpec, data_gpu: str, dtype: str) -> KernelRows:
    """GEMM rows of ``dtype`` (``bfloat16``/``fp8``): 2mnk FLOPs; weights n x k plus inputs and outputs, as the step model counts them."""
    sel = [r for r in raw if r["gemm_dtype"] == dtype and int(r["n"]) >= GEMM_MIN_FEATURES and int(r["k"]) >= GEMM_MIN_FEATURES
           and int(r["m"]) <= GEMM_MAX_TOKENS]
    m = np.array([float(r["m"]) for r in sel])
    n = np.array([float(r["n"]) for r in sel])
    k = np.array([float(r["k"]) for r in sel])
    elem = 2.0 if dtype == "bfloat16" else 1.0
    return _rows(2 * m * n * k, n * k * elem, m * (n + k) * elem, m * k * elem, n * k, m, 0 * m, gpu, GEMM_DTYPES[dtype], [float(r["latency"]) for r in sel], data_gpu)


def _attention_selection(raw: list[dict[str, str]]) -> list[dict[str, str]]:
    rows = [r for r in raw if int(r["head_dim"]) == ATTENTION_HEAD_DIM and int(r.get("window_size", 0) or 0) == 0 and r.get("kv_cache_dtype", "bfloat16") in KV_DTYPE_BYTES]
    return _default_kernel(rows)


def prefill_rows(raw: list[dict[str, str]], gpu: GpuSpec, data_gpu: str) -> KernelRows:
    """Prefill attention rows: causal FLOPs 4 b h d s(s+1)/2; Q, K, V, O read/written once; size = s + 1
    (twice the mean context per query token, see :func:`guide_opt.perf.kernels.attention_time`)."""
    sel = _attention_selection(raw)
    b, s, h, kv = (np.array([float(r[c]) for r in sel]) for c in ("batch_size", "isl", "num_heads", "num_key_value_heads"))
    d = ATTENTION_HEAD_DIM
    kvb = np.array([KV_DTYPE_BYTES[r.get("kv_cache_dtype", "bfloat16")] for r in sel])
    flops = 4 * b * h * d * s * (s + 1) / 2
    bytes_moved = b * s * (2 * h * d * 2 + 2 * kv * d * kvb)
    return _rows(flops, bytes_moved, 0 * flops, 0 * flops, 0 * flops, s + 1, b, gpu, "bf16", [float(r["latency"]) for r in sel], data_gpu, kvb == 1.0)


def decode_rows(raw: list[dict[str, str]], gpu: GpuSpec, data_gpu: str) -> KernelRows:
    """Decode attention rows (one new token per sequence, context ``step``): KV read b x step; size = 2 x step."""
    sel = _attention_selection(raw)
    b, ctx, h, kv = (np.array([float(r[c]) for r in sel]) for c in ("batch_size", "step", "num_heads", "num_key_value_heads"))
    d = ATTENTION_HEAD_DIM
    kvb = np.array([KV_DTYPE_BYTES[r.get("kv_cache_dtype", "bfloat16")] for r in sel])
    flops = 4 * b * h * d * ctx
    bytes_moved = b * ctx * 2 * kv * d * kvb + b * 2 * h * d * 2
    return _rows(flops, bytes_moved, 0 * flops, 0 * flops, 0 * flops, 2 * ctx, b, gpu, "bf16", [float(r["latency"]) for r in sel], data_gpu, kvb == 1.0)


@dataclass(frozen=True)
class CollectiveRows:
    """All-reduce rows: GPU count, message bytes, link bandwidth of the GPU, measured time (s)."""

    num_gpus: np.ndarray
    message_bytes: np.ndarray
    link_bytes_per_s: np.ndarray
    measured_s: np.ndarray
    gpu: np.ndarray

    def where(self, mask: np.ndarray) -> "CollectiveRows":
        """The rows selected by boolean ``mask``."""
        return CollectiveRows(self.num_gpus[mask], self.message_bytes[mask], self.link_bytes_per_s[mask], self.measured_s[mask], self.gpu[mask])

    @staticmethod
    def concat(parts: list["CollectiveRows"]) -> "CollectiveRows":
        """All rows of ``parts``."""
        return CollectiveRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("num_gpus", "message_bytes", "link_bytes_per_s", "measured_s", "gpu")))


def all_reduce_rows(raw: list[dict[str, str]], gpu: GpuSpec, data_gpu: str) -> CollectiveRows:
    """NCCL all-reduce rows of 16-bit elements."""
    sel = [r for r in raw if r["op_name"] == "all_reduce" and r["nccl_dtype"] == "half"]
    n = len(sel)
    return CollectiveRows(np.array([int(r["num_gpus"]) for r in sel]), np.array([float(r["message_size"]) * ALL_REDUCE_ELEMENT_BYTES for r in sel]),
                          np.full(n, gpu.link_bandwidth_bytes_per_s), np.array([float(r["latency"]) for r in sel]) * MS, np.full(n, data_gpu, dtype=object))


# ---- predictions (vectorized forms of guide_opt.perf.kernels) ----------------------------------------
def predict_roofline_s(rows: KernelRows, peak_fraction: float, half: float, bandwidth_fraction: float, latency_us: float,
                       activation_scale: float = 0.0, per_sequence_us: float = 0.0, half_weights_m: float = 0.0,
                       fp8_kv_bandwidth_fraction: float | None = None) -> np.ndarray:
    """Predicted seconds per row, the formulas of :func:`guide_opt.perf.kernels.gemm_time` and
    :func:`~guide_opt.perf.kernels.attention_time`::

        compute = FLOPs / (peak x peak_fraction x size / (size + half) x w / (w + half_weights))   (w: weight elements, GEMMs only)
        memory  = latency + sequences x per_sequence + (bytes + activation bytes) / (bandwidth_fraction x HBM)
        time    = max(compute, memory) + activation_scale x input bytes / (bandwidth_fraction x HBM)

    Rows with an FP8 KV cache stream at ``fp8_kv_bandwidth_fraction`` when it is given.
    """
    size = np.maximum(rows.size, 1.0)
    weights = rows.weight_elements / 1e6
    by_weights = np.where(weights > 0, weights / np.maximum(weights + half_weights_m, 1e-30), 1.0)
    compute = rows.flops / (rows.peak_flops_per_s * np.minimum(1.0, peak_fraction * size / (size + half) * by_weights))
    fraction = bandwidth_fraction if fp8_kv_bandwidth_fraction is None else np.where(rows.fp8_kv, fp8_kv_bandwidth_fraction, bandwidth_fraction)
    rate = rows.hbm_bytes_per_s * np.minimum(1.0, fraction)
    memory = (latency_us + per_sequence_us * rows.sequences) * 1e-6 + (rows.bytes_moved + rows.activation_bytes) / rate
    return np.maximum(compute, memory) + activation_scale * rows.input_bytes / rate


def predict_all_reduce_s(rows: CollectiveRows, fits: list[CollectiveFit]) -> np.ndarray:
    """Alpha-beta all-reduce time per row (:func:`guide_opt.perf.kernels.all_reduce_time_s`)."""
    profile_like = KernelProfile.model_construct(all_reduce=fits)
    out = np.empty(len(rows.measured_s))
    for i, (n, b, link) in enumerate(zip(rows.num_gpus, rows.message_bytes, rows.link_bytes_per_s)):
        fit = profile_like.all_reduce_fit(int(n))
        out[i] = fit.latency_us * 1e-6 + 2 * (n - 1) / n * b / (fit.bus_bandwidth_fraction * link)
    return out


# ---- fitting ----------------------------------------------------------------------------------------
def _fit_roofline(rows: KernelRows, start: dict[str, float], upper: dict[str, float]) -> dict[str, float]:
    """Least-squares fit of the named :func:`predict_roofline_s` parameters in ``start`` on log time (all bounded below by 0)."""
    from scipy.optimize import least_squares

    names = list(start)

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(predict_roofline_s(rows, **dict(zip(names, x))) / rows.measured_s)

    lo = np.array([0.01 if n.endswith("fraction") else 0.0 for n in names])
    hi = np.array([upper[n] for n in names])
    x0 = np.clip(np.array([start[n] for n in names]), lo, hi)
    result = least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.2, x_scale=np.maximum(np.abs(x0), 0.1) / 5, max_nfev=300)
    return dict(zip(names, (float(v) for v in result.x)))


def fit_gemm(rows: KernelRows) -> GemmFit:
    """A :class:`GemmFit` for the rows of one dtype (one GPU or pooled)."""
    x = _fit_roofline(rows, {"peak_fraction": 0.7, "half": 32.0, "bandwidth_fraction": 0.8, "latency_us": 5.0, "activation_scale": 0.5, "half_weights_m": 1.0},
                      {"peak_fraction": 1.0, "half": 8192.0, "bandwidth_fraction": 1.0, "latency_us": 1000.0, "activation_scale": MAX_INPUT_PASS_BYTES,
                       "half_weights_m": 1000.0})
    return GemmFit(peak_fraction=round(x["peak_fraction"], 4), half_tokens=round(x["half"], 2), bandwidth_fraction=round(x["bandwidth_fraction"], 4),
                   latency_us=round(x["latency_us"], 3), activation_bytes_scale=round(x["activation_scale"], 3),
                   half_weight_elements=round(x["half_weights_m"] * 1e6, -3))


def fit_attention(prefill: KernelRows, decode: KernelRows) -> AttentionFit:
    """An :class:`AttentionFit` for prefill and decode rows together (one GPU or pooled); the FP8-cache
    HBM fraction is its own parameter when any row has an FP8 cache, else it stays ``None``."""
    rows = KernelRows.concat([prefill, decode])
    start = {"peak_fraction": 0.5, "half": 256.0, "bandwidth_fraction": 0.8, "latency_us": 10.0, "per_sequence_us": 0.2}
    upper = {"peak_fraction": 1.0, "half": 65536.0, "bandwidth_fraction": 1.0, "latency_us": 1000.0, "per_sequence_us": 100.0,
             "fp8_kv_bandwidth_fraction": 1.0}
    if rows.fp8_kv.any():
        start["fp8_kv_bandwidth_fraction"] = 0.8
    x = _fit_roofline(rows, start, upper)
    fp8 = x.get("fp8_kv_bandwidth_fraction")
    return AttentionFit(prefill_peak_fraction=round(x["peak_fraction"], 4), prefill_half_tokens=round(x["half"], 2),
                        decode_bandwidth_fraction=round(x["bandwidth_fraction"], 4),
                        fp8_kv_decode_bandwidth_fraction=None if fp8 is None else round(fp8, 4), latency_us=round(x["latency_us"], 3),
                        per_sequence_us=round(x["per_sequence_us"], 4))


def fit_all_reduce(rows: CollectiveRows) -> list[CollectiveFit]:
    """One alpha-beta fit per GPU count (log-time least squares, so small messages count)."""
    from scipy.optimize import least_squares

    fits = []
    for n in sorted(set(int(v) for v in rows.num_gpus)):
        sel = rows.where(rows.num_gpus == n)
        transfer = 2 * (n - 1) / n * sel.message_bytes / sel.link_bytes_per_s

        def residuals(x: np.ndarray, transfer=transfer, measured=sel.measured_s) -> np.ndarray:
            return np.log((x[0] * 1e-6 + transfer / x[1]) / measured)

        r = least_squares(residuals, np.array([10.0, 0.5]), bounds=([0.0, 0.005], [1000.0, 2.0]), x_scale=np.array([5.0, 0.1]))
        fits.append(CollectiveFit(num_gpus=n, latency_us=round(float(r.x[0]), 3), bus_bandwidth_fraction=round(float(r.x[1]), 4)))
    return fits


def systems_per_count(rows: CollectiveRows) -> dict[int, int]:
    """GPU count -> number of distinct measured systems (data GPUs) with all-reduce rows at that count."""
    return {int(n): len(set(rows.gpu[rows.num_gpus == n])) for n in sorted(set(int(v) for v in rows.num_gpus))}


def generic_all_reduce(rows: CollectiveRows, link_kind: str) -> list[CollectiveFit]:
    """All-reduce fits pooled over ``rows`` (the measured systems of ``link_kind``: all of them for a generic
    profile, one for a GPU's own).

    Fabric links (not in :data:`TOPOLOGY_DEPENDENT_LINKS`) keep the pooled fit of every count. On PCIe,
    a GPU count measured on at least :data:`MIN_SYSTEMS_PER_COUNT` systems keeps its pooled fit.
    Any other count keeps its fitted latency (the small-message time, which grows with the count on
    every measured system) but takes the bus-bandwidth fraction of the smallest count (2 GPUs: one
    hop, the case every box of the link kind shares), since one box's multi-GPU bandwidth depends on
    its topology.
    """
    fits = fit_all_reduce(rows)
    if link_kind not in TOPOLOGY_DEPENDENT_LINKS:
        return fits
    systems = systems_per_count(rows)
    base = min(fits, key=lambda f: f.num_gpus)
    return [f if systems[f.num_gpus] >= MIN_SYSTEMS_PER_COUNT or f is base else f.model_copy(update={"bus_bandwidth_fraction": base.bus_bandwidth_fraction})
            for f in fits]


def generic_all_reduce_rule(rows: CollectiveRows, link_kind: str) -> str:
    """One sentence stating which all-reduce fits of a generic profile pooled over ``rows`` are kept and which are borrowed."""
    names = ", ".join(sorted(set(rows.gpu)))
    if link_kind not in TOPOLOGY_DEPENDENT_LINKS:
        return f"all_reduce: pooled over the measured {link_kind} systems ({names}), one fit per GPU count (a GPU fabric: every count kept)."
    systems = systems_per_count(rows)
    borrowed = [n for n in systems if systems[n] < MIN_SYSTEMS_PER_COUNT and n != min(systems)]
    rule = (f"all_reduce: pooled over the measured {link_kind} systems ({names}); a GPU count keeps its own bus-bandwidth fraction "
            f"only where at least {MIN_SYSTEMS_PER_COUNT} measured systems have rows at that count")
    if not borrowed:
        return rule + " (every count here)."
    return (rule + f"; the other counts ({', '.join(map(str, borrowed))} GPUs) keep their fitted latency and take the "
            f"{min(systems)}-GPU bus-bandwidth fraction, because NCCL bus bandwidth is ring-normalised and stays roughly constant "
            "in the GPU count on a flat topology, so one box's multi-GPU drop is a property of that box.")


def error_pct(predicted_s: np.ndarray, measured_s: np.ndarray) -> tuple[float, float]:
    """(MAPE, bias) in percent of ``(predicted - measured) / measured``."""
    err = (predicted_s - measured_s) / measured_s
    return float(np.mean(np.abs(err)) * 100), float(np.mean(err) * 100)


# ---- one GPU's data and the profiles -------------------------------------------------------------------
@dataclass(frozen=True)
class GpuKernelData:
    """Every fitted kind of kernel rows of one measured GPU.

    ``cache_served``: per memory-bound kind (``gemm_bf16``, ``gemm_fp8``, ``attention_decode``) the
    rows left out as served from the GPU's cache (:func:`beyond_cache_reach`) and the reach (bytes).
    """

    data_gpu: str
    gpu: GpuSpec
    version: str
    gemm: dict[str, KernelRows]
    prefill: KernelRows
    decode: KernelRows
    all_reduce: CollectiveRows
    cache_served: dict[str, tuple[int, float]]


def cache_reach_bytes(rows: KernelRows) -> float:
    """The largest working set (bytes moved, activations included) among ``rows`` that a kernel moved faster
    than the GPU's DRAM peak can deliver it; 0.0 when no row did.

    The tables time one kernel repeated on the same tensors, so a working set that fits in the L2
    cache is read from it after the first run. A row faster than DRAM proves it; the largest such
    working set marks how far the cache reaches (on the measured L40S, 92 MB, against its 96 MB of
    L2). In a serving step the same tensors are read once per step, after every other layer's
    weights and cache have passed through the L2, so they come from DRAM.
    """
    working_set = rows.working_set_bytes
    faster = working_set > rows.measured_s * rows.hbm_bytes_per_s
    return float(working_set[faster].max()) if faster.any() else 0.0


def beyond_cache_reach(rows: KernelRows) -> tuple[KernelRows, int, float]:
    """The rows of a memory-bound kernel kind whose working set exceeds :func:`cache_reach_bytes`, the count
    left out and the reach (bytes): the rows whose streaming rate is the DRAM's."""
    reach = cache_reach_bytes(rows)
    kept = rows.where(rows.working_set_bytes > reach)
    return kept, len(rows) - len(kept), reach


def load_gpu(root: Path, data_gpu: str, catalog: Catalog) -> GpuKernelData:
    """Read and convert the four tables of ``data_gpu`` (a folder name of :data:`DATA_GPU_IDS`)."""
    gpu = catalog.gpu(DATA_GPU_IDS[data_gpu])
    index = _index(root)
    gemm_raw = read_table(root, data_gpu, "gemm")
    gemm = {GEMM_DTYPES[d]: gemm_rows(gemm_raw, gpu, data_gpu, d) for d in GEMM_DTYPES if any(r["gemm_dtype"] == d for r in gemm_raw)}
    if gpu.fp8_dense_tflops is None:
        gemm.pop("fp8", None)
    versions = sorted({index[(data_gpu, t)]["version"] for t in ("gemm", "context_attention", "generation_attention", "nccl")})
    # Memory-bound kinds are fitted on the rows their DRAM served (beyond_cache_reach); prefill
    # attention is compute-bound, where the cache does not change what is measured.
    cache_served = {}
    for dtype, rows in list(gemm.items()):
        gemm[dtype], left_out, reach = beyond_cache_reach(rows)
        cache_served[f"gemm_{dtype}"] = (left_out, reach)
    decode, left_out, reach = beyond_cache_reach(decode_rows(read_table(root, data_gpu, "generation_attention"), gpu, data_gpu))
    cache_served["attention_decode"] = (left_out, reach)
    return GpuKernelData(
        data_gpu, gpu, "; ".join(f"{t} {index[(data_gpu, t)]['version']}" for t in ("gemm", "context_attention", "generation_attention", "nccl")) if len(versions) > 1 else versions[0],
        gemm,
        prefill_rows(read_table(root, data_gpu, "context_attention"), gpu, data_gpu),
        decode,
        all_reduce_rows(read_table(root, data_gpu, "nccl"), gpu, data_gpu),
        cache_served,
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def profile_quality(profile: KernelProfile, data: list[GpuKernelData]) -> dict[str, FitQuality]:
    """MAPE and bias of ``profile`` on ``data``, per kernel kind."""
    out = {}
    for kind, (pred, meas) in score(profile, data).items():
        mape, bias = error_pct(pred, meas)
        out[kind] = FitQuality(rows=len(meas), mape_pct=round(mape, 2), bias_pct=round(bias, 2))
    return out


def fit_profile(profile_id: str, scope: str, data: list[GpuKernelData], collective_data: list[GpuKernelData], data_commit: str) -> KernelProfile:
    """Fit one profile on ``data`` (GEMM, attention) and ``collective_data`` (all-reduce; by
    :func:`generic_all_reduce`'s rule for ``scope: generic`` pooled over one link kind, and for a
    PCIe GPU's own profile, whose multi-GPU bandwidth is its measured box's topology).

    A generic profile keeps no FP8-cache HBM fraction (its 16-bit one is still fitted with the FP8
    rows as their own parameter, so they do not pull it down): those rows are FlashAttention-3 on
    H100/H200 and trtllm-gen on B200, kernels the GPUs without tables (Ampere, Ada, Turing, Volta;
    H100 PCIe aside) do not run. vLLM reads their FP8 caches with other kernels, as on the measured
    A100 and L40S, whose profiles have one fraction for both caches.
    """
    gemm = {}
    for dtype in ("bf16", "fp8"):
        parts = [d.gemm[dtype] for d in data if dtype in d.gemm]
        if parts:
            gemm[dtype] = fit_gemm(KernelRows.concat(parts))
    attention = fit_attention(KernelRows.concat([d.prefill for d in data]), KernelRows.concat([d.decode for d in data]))
    if scope == "generic":
        attention = attention.model_copy(update={"fp8_kv_decode_bandwidth_fraction": None})
    collectives = CollectiveRows.concat([d.all_reduce for d in collective_data])
    link_kinds = {d.gpu.link_kind for d in collective_data}
    link_kind = link_kinds.pop() if len(link_kinds) == 1 else None
    by_rule = link_kind is not None and (scope == "generic" or link_kind in TOPOLOGY_DEPENDENT_LINKS)
    all_reduce = generic_all_reduce(collectives, link_kind) if by_rule else fit_all_reduce(collectives)
    versions = "; ".join(f"{d.data_gpu}: {d.version}" for d in data)
    profile = KernelProfile(id=profile_id, scope=scope, source=SOURCE, data_version=f"{data_commit}; tables {versions}", fitted_utc=_now(),
                            fitted_on=sorted(d.data_gpu for d in data), gemm=gemm, attention=attention, all_reduce=all_reduce)
    return profile.model_copy(update={"quality": profile_quality(profile, data)})


def score(profile: KernelProfile, data: list[GpuKernelData]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per kernel kind: (predicted, measured) seconds of ``profile`` on every row of ``data``.

    Each GPU's rows are predicted with its own peaks and link bandwidth.
    """
    out: dict[str, tuple[list, list]] = {k: ([], []) for k in KINDS}
    for d in data:
        for dtype, rows in d.gemm.items():
            if dtype in profile.gemm:
                c = profile.gemm[dtype]
                out[f"gemm_{dtype}"][0].append(predict_roofline_s(rows, c.peak_fraction, c.half_tokens, c.bandwidth_fraction, c.latency_us, c.activation_bytes_scale,
                                                                     half_weights_m=c.half_weight_elements / 1e6))
                out[f"gemm_{dtype}"][1].append(rows.measured_s)
        a = profile.attention
        fp8_decode = d.decode.fp8_kv
        for kind, rows in (("attention_prefill", d.prefill), ("attention_decode", d.decode),
                           ("attention_decode_bf16_kv", d.decode.where(~fp8_decode)), ("attention_decode_fp8_kv", d.decode.where(fp8_decode))):
            if len(rows):
                out[kind][0].append(predict_roofline_s(rows, a.prefill_peak_fraction, a.prefill_half_tokens, a.decode_bandwidth_fraction, a.latency_us,
                                                       per_sequence_us=a.per_sequence_us, fp8_kv_bandwidth_fraction=a.fp8_kv_decode_bandwidth_fraction))
                out[kind][1].append(rows.measured_s)
        out["all_reduce"][0].append(predict_all_reduce_s(d.all_reduce, profile.all_reduce))
        out["all_reduce"][1].append(d.all_reduce.measured_s)
    return {k: (np.concatenate(p), np.concatenate(m)) for k, (p, m) in out.items() if p}


def generic_for(gpu: GpuSpec, others: list[GpuKernelData], data_commit: str, profile_id: str = "generic-nvlink") -> KernelProfile:
    """The profile an unmeasured ``gpu`` gets from ``others``: GEMM/attention pooled over all of
    them, collectives pooled over those with ``gpu``'s link kind (else over the NVLink ones, as
    :func:`guide_opt.catalog.kernel_profile_for` falls back to ``generic-nvlink``)."""
    same_link = ([d for d in others if d.gpu.link_kind == gpu.link_kind] or [d for d in others if d.gpu.link_kind == "nvlink"] or others)
    return fit_profile(profile_id, "generic", others, same_link, data_commit)


@dataclass(frozen=True)
class HeldOutScore:
    """MAPE and bias (percent) of one GPU's kernel kind: in-sample (own fit) and held out (generic of the others)."""

    data_gpu: str
    kind: str
    rows: int
    in_sample_mape: float
    in_sample_bias: float
    held_out_mape: float
    held_out_bias: float


def leave_one_gpu_out(data: list[GpuKernelData], own: dict[str, KernelProfile], data_commit: str) -> list[HeldOutScore]:
    """Score each GPU's rows with its own profile and with the generic profile fitted without it."""
    out = []
    for d in data:
        others = [o for o in data if o.data_gpu != d.data_gpu]
        held = generic_for(d.gpu, others, data_commit)
        mine = score(own[d.data_gpu], [d])
        theirs = score(held, [d])
        for kind in KINDS:
            if kind in mine and kind in theirs:
                ins, ho = error_pct(*mine[kind]), error_pct(*theirs[kind])
                out.append(HeldOutScore(d.data_gpu, kind, len(mine[kind][1]), ins[0], ins[1], ho[0], ho[1]))
    return out


@dataclass(frozen=True)
class FitRun:
    """Profiles fitted by :func:`fit_all` (file stem -> profile), the leave-one-GPU-out scores,
    per generic profile the sentence stating its all-reduce rule (file stem -> text), and per data
    GPU the rows left out as served from its cache (:attr:`GpuKernelData.cache_served`)."""

    profiles: dict[str, KernelProfile]
    held_out: list[HeldOutScore]
    rules: dict[str, str]
    cache_served: dict[str, dict[str, tuple[int, float]]]


def fit_all(root: Path, catalog: Catalog, data_commit: str, gpus: list[str] | None = None) -> FitRun:
    """Fit every measured GPU under ``root`` (the ``aiconfigurator`` folder), the generic profiles, and score them."""
    if not root.is_dir():
        raise InputError("--data-dir", f"'{root}' is not a folder", "point it at the kernel tables (shared/data/kernels)")
    names = gpus or [g for g in DATA_GPU_IDS if (root / g).is_dir()]
    data = [load_gpu(root, g, catalog) for g in names]
    own = {d.data_gpu: fit_profile(d.gpu.id, "gpu", [d], [d], data_commit) for d in data}
    profiles = {own[d.data_gpu].id: own[d.data_gpu] for d in data}
    rules = {own[d.data_gpu].id: generic_all_reduce_rule(d.all_reduce, d.gpu.link_kind)
             for d in data if d.gpu.link_kind in TOPOLOGY_DEPENDENT_LINKS}
    for kind in sorted({d.gpu.link_kind for d in data}):
        same = [d for d in data if d.gpu.link_kind == kind]
        profiles[f"generic-{kind}"] = fit_profile(f"generic-{kind}", "generic", data, same, data_commit)
        rules[f"generic-{kind}"] = generic_all_reduce_rule(CollectiveRows.concat([d.all_reduce for d in same]), kind)
    return FitRun(profiles, leave_one_gpu_out(data, own, data_commit), rules, {d.data_gpu: d.cache_served for d in data})


