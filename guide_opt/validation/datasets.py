"""Measured public data as :class:`Measurement` rows guide-opt can predict.

Each loader reads one source of the measured-data folder (``validation_data/``, see its ``SCHEMA.md`` files) and maps every row to
catalog ids (LLM, GPU, framework, quantization), one static-batch configuration (TP, batch,
input and output tokens) and the measured metrics in guide-opt's units:

- ``ttft_ms``                 -- time to first token (ms);
- ``tpot_ms``                 -- time per output token after the first / inter-token latency (ms);
- ``batch_latency_s``         -- time to finish a whole static batch (s);
- ``throughput_tokens_per_s`` -- generated tokens per second of one replica.

Rows that cannot be mapped (an LLM or GPU missing from the catalog, an engine guide-opt does
not model, an encoder-decoder LLM, ...) are *skipped and counted* with the reason, never
silently dropped: :class:`SourceData` carries both. Mapping choices that are judgement calls
are stated next to the mapping tables below.

Sources (:data:`SOURCES`):

``lmdeploy``
    LMDeploy TurboMind, A100-80G SXM, Llama-2 7B/13B/70B, batch 1-64, TP 1-4. TurboMind is
    predicted with the ``tensorrt-llm`` profile (:data:`LMDEPLOY_FRAMEWORK`): both are C++
    engines of the FasterTransformer lineage with fused kernels, no Python scheduler in the
    step loop, and whole-prompt (not chunked) prefill, which is what the ``tensorrt-llm``
    profile models; vLLM's profile models a Python scheduler and chunked prefill.
    ``FTL_avg_s`` is the mean first-token latency over the requests of LMDeploy's
    ``profile_generation.py`` (``batch`` threads, 6 requests each): predicted with TurboMind's
    own rule of taking waiting prompts together (:mod:`guide_opt.validation.turbomind`), not
    as one batch prefilled prompt by prompt. ``token_latency_p50_s`` is the median per-token
    decode latency (compared with ``tpot_s``).
    Rows with a 1-token prompt keep TPOT and throughput but not TTFT: their "first token" is a
    decode step, not a prefill.
``llm-inference-bench``
    Argonne LLM-Inference-Bench ``Plots/All_results.csv``, vLLM and TensorRT-LLM rows, fp16,
    ISL = OSL. ``Latency`` is the whole static batch (``batch_latency_s``); throughput is
    re-derived as output tokens / latency (the file's column counts input tokens too), so it
    carries the same information as the latency and is *report-only* (not fitted twice).
    Duplicate keys are merged by their mean. Its A100 is Polaris's A100 40GB SXM4 (NVLink),
    mapped to ``a100-40gb-sxm``; its H100 to ``h100-sxm`` (form factor not stated).
``llm-pilot``
    IBM LLM-Pilot aggregate (``llm_pilot_aggregate.csv``), decoder-only LLMs only. Closed-loop
    ``u`` users are predicted with the static estimator as a batch of ``u`` requests with the
    row's mean input and output lengths; TGIS is predicted with the ``vllm`` profile (continuous
    batching, paged KV, flash attention as listed in ``llm_features.csv``). Median TTFT is
    compared with the predicted mean TTFT; median ITL with the batch's cycle time per output
    token (``closed_loop=True``: in a closed loop every user's next prompt is prefilled while the
    others decode, so a request's tokens are spread over prefills and decode steps alike).
    Throughput (successful output tokens / 120 s) is report-only: it also contains each
    request's client-side first-message time and the failed requests, which the model does not see.
    Its A100 is the 40 GB PCIe card (``gpu_features.csv``: sxm False, nvlink False), mapped
    to ``a100-40gb``. Rows where more than :data:`LLM_PILOT_MAX_FAIL_FRACTION`
    of the requests failed are skipped: their medians cover a biased subset of short requests.
``trtllm-perf``
    TensorRT-LLM v0.5.0 performance tables: the static-batch throughput table and the batch-1
    first-token latency table. The in-flight-batching max-throughput tables (v0.13, v1.0) are
    not a static batch: they are the ``trtllm-serving`` source.
``trtllm-serving``
    TensorRT-LLM's in-flight-batching max-throughput tables (performance overview v0.13, and
    v1.0 with the PyTorch backend): output tokens/s of offline ``trtllm-bench throughput`` runs
    (every request queued at once; fixed input and output lengths) on H100 / H200 / A100 SXM /
    L40S, FP16 and FP8 (FP8 weights with an FP8 KV cache), TP 1-8. Each row is an *offline*
    measurement: its ``batch`` is the max batch size trtllm-bench builds and its token budget
    the max num tokens (:func:`guide_opt.validation.trtllm_bench.engine_settings`); the
    requests running at once are the fewer of that batch and what the KV cache holds. FP4 rows
    (B200, GB200, RTX Pro 6000) are skipped: guide-opt has no FP4 quantization. Llama-3-8B is
    predicted as Llama-3.1-8B and Llama-3-70B / Llama-3.3-70B as Llama-3.1-70B (same shapes;
    only the context length and RoPE scaling differ). Throughput is report-only: calibration
    fits static-batch figures, these rows test the steady-state serving model.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from guide_opt.catalog import Catalog
from guide_opt.data_files import data_dir
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig
from guide_opt.validation.physics import batch_latency_floor_s

#: Metric names compared by the validation, in guide-opt's units.
METRICS: tuple[str, ...] = ("ttft_ms", "tpot_ms", "batch_latency_s", "throughput_tokens_per_s")

#: Human-readable metric names for tables (GUIDE's Tables 1-2 wording where it exists).
METRIC_LABELS: dict[str, str] = {
    "ttft_ms": "TTFT",
    "tpot_ms": "TPOT / ITL",
    "batch_latency_s": "Batch latency",
    "throughput_tokens_per_s": "Throughput",
}

#: Environment variable naming another measured-data folder laid out like ``validation_data/``.
DATA_DIR_ENV = "GUIDE_OPT_VALIDATION_DATA"

#: First-token rules of static rows (:attr:`Measurement.first_token_rule`).
SEQUENTIAL_PREFILL = "sequential-prefill"
TURBOMIND_PROFILE_GENERATION = "turbomind-profile-generation"
#: Framework profile used for LMDeploy TurboMind rows (see the module docstring for why).
LMDEPLOY_FRAMEWORK = "tensorrt-llm"
#: Framework profile used for LLM-Pilot's TGIS server rows.
LLM_PILOT_FRAMEWORK = "vllm"
#: LLM-Pilot rows with a larger fraction of failed requests are skipped.
LLM_PILOT_MAX_FAIL_FRACTION = 0.10


@dataclass(frozen=True)
class Measurement:
    """One measured static-batch configuration and what was measured on it.

    llm / gpu / framework / quantization: catalog ids.
    tp: tensor-parallel degree; batch: concurrent sequences; input_tokens / output_tokens:
    per-request lengths (tokens). measured: metric name (see :data:`METRICS`) -> value in that
    metric's unit. report_only: metrics compared in reports but not fitted by calibration
    (derived from another measured metric of the row, or including effects outside the model).
    closed_loop: the row measured a closed loop of ``batch`` users rather than one static batch
    (see :func:`guide_opt.validation.accuracy.predicted_metrics`). key: the row's identity in its source.
    statistic: what the latencies of a closed-loop row are: ``mean`` (mean TTFT and mean TPOT, as
    ``vllm bench serve`` reports) or ``median`` (median TTFT and median inter-token latency, as
    LLM-Pilot reports). kv_cache_dtype: the KV cache's element type in the measured engine
    (``fp16``, or ``fp8`` where the source's build stored the cache in FP8).
    offline: the row measured an offline max-throughput run -- every request queued at once, the
    engine keeping as many running as ``batch`` (its max batch size) and its KV cache allow --
    and only its output throughput (see
    :func:`guide_opt.validation.accuracy.offline_throughput_metrics`).
    max_num_batched_tokens: the measured engine's token budget per step (None: the profile's).
    median_lengths: (median input, median output) tokens of a closed-loop row whose request
    lengths varied around the means ``input_tokens`` / ``output_tokens`` (LLM-Pilot's levels);
    None: every request had the mean lengths.
    first_token_rule: how the measured first-token latency of a static row came about:
    :data:`SEQUENTIAL_PREFILL` (one batch, each prompt's first token after its own prefill, the
    static estimator's reading) or :data:`TURBOMIND_PROFILE_GENERATION` (LMDeploy's harness on
    TurboMind v0.1, :mod:`guide_opt.validation.turbomind`).
    """

    source: str
    llm: str
    gpu: str
    framework: str
    quantization: str
    tp: int
    batch: int
    input_tokens: int
    output_tokens: int
    measured: dict[str, float]
    report_only: frozenset[str] = frozenset()
    flash_attention: bool = True
    closed_loop: bool = False
    key: str = ""
    statistic: str = "mean"
    kv_cache_dtype: str = "fp16"
    offline: bool = False
    max_num_batched_tokens: int | None = None
    median_lengths: tuple[int, int] | None = None
    first_token_rule: str = SEQUENTIAL_PREFILL

    @property
    def group(self) -> tuple[str, str]:
        """The calibration group of this row: (GPU id, framework id)."""
        return (self.gpu, self.framework)


@dataclass
class SourceData:
    """The usable rows of one source and the count of skipped rows per reason."""

    source: str
    rows: list[Measurement] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rows skipped for ``reason``."""
        self.skipped[reason] += count


# ---- locating and reading the data ------------------------------------------------------------
def default_data_dir() -> Path:
    """The measured-data folder: ``$GUIDE_OPT_VALIDATION_DATA``, else the copy shipped with guide-opt.

    The shipped copy is ``validation_data/`` of the repository (``guide_opt/_data/validation_data``
    in a wheel). Raises :class:`InputError` (field ``$GUIDE_OPT_VALIDATION_DATA``) when the
    variable names something that is not a folder.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise InputError(DATA_DIR_ENV, f"'{env}' is not a folder", "point it at a folder laid out like guide-opt's validation_data/")
        return path
    return data_dir("validation_data")


def read_csv_file(path: Path) -> tuple[dict[str, str], ...]:
    """All rows of a CSV file as dicts (read every call)."""
    try:
        with open(path, newline="") as handle:
            return tuple(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(str(path), f"cannot read the file ({exc.strerror})", "check the path") from None


@functools.cache
def read_csv_rows(path: Path) -> tuple[dict[str, str], ...]:
    """All rows of a shipped-data CSV file as dicts (cached per path for the life of the process)."""
    return read_csv_file(path)


def resolve_id(names: Iterable[str], known: Iterable[str]) -> str | None:
    """The first of ``names`` that is a known catalog id, or None."""
    known = set(known)
    for name in names:
        if name in known:
            return name
    return None


def slug(name: str) -> str:
    """Lower-case last path component of a HuggingFace name, e.g. ``Qwen/Qwen2-7B`` -> ``qwen2-7b``."""
    return re.sub(r"[^a-z0-9.\-]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-")


# ---- name mappings (dataset name -> catalog id candidates, first present wins) ----------------
#: LMDeploy model names. internlm-20b has no catalog entry (skipped).
LMDEPLOY_LLMS: dict[str, tuple[str, ...]] = {
    "llama2-7b": ("llama-2-7b",),
    "llama2-13b": ("llama-2-13b",),
    "llama2-70b": ("llama-2-70b",),
    "internlm-20b": ("internlm-20b",),
}

#: LLM-Inference-Bench model names. Llama-3 and Llama-3.1 of the same size have identical layer
#: shapes (hidden, layers, heads, KV heads, MLP, vocabulary); they differ in RoPE scaling and
#: context length only, which a static batch of <= 4096 tokens does not exercise.
BENCH_LLMS: dict[str, tuple[str, ...]] = {
    "meta-llama/Llama-2-7b-hf": ("llama-2-7b",),
    "meta-llama/Llama-2-70b-hf": ("llama-2-70b",),
    "meta-llama/Meta-Llama-3-8B": ("llama-3-8b", "llama-3.1-8b"),
    "meta-llama/Meta-Llama-3-70B": ("llama-3-70b", "llama-3.1-70b"),
    "mistralai/Mistral-7B-v0.1": ("mistral-7b", "mistral-7b-v0.1"),
    "mistralai/Mixtral-8x7B-v0.1": ("mixtral-8x7b",),
    "Qwen/Qwen2-7B": ("qwen2-7b",),
    "Qwen/Qwen2-72B": ("qwen2-72b",),
    "huggyllama/llama-7b": ("llama-7b",),
    "facebook/opt-6.7b": ("opt-6.7b",),
    "EleutherAI/gpt-j-6b": ("gpt-j-6b",),
}

#: LLM-Inference-Bench hardware. Argonne's A100 nodes (Polaris) carry 4 x A100 40GB SXM4 joined
#: by NVLink, so its A100 rows are predicted on ``a100-40gb-sxm`` (NVLink links for TP > 1), not on
#: the catalog's PCIe ``a100-40gb``. The H100 form factor is not stated; SXM is assumed.
BENCH_GPUS: dict[str, tuple[str, ...]] = {
    "Nvidia A100 GPU": ("a100-40gb-sxm",),
    "Nvidia H100 GPU": ("h100-sxm",),
    "AMD MI300X GPU": ("mi300x",),
}
BENCH_FRAMEWORKS: dict[str, str] = {"vLLM": "vllm", "TensorRT-LLM": "tensorrt-llm"}

#: LLM-Pilot decoder-only models. The T5 family (flan-t5-xl/xxl, flan-ul2, mt0-xxl) is
#: encoder-decoder and out of scope.
LLM_PILOT_LLMS: dict[str, tuple[str, ...]] = {
    "llama-7b": ("llama-7b",),
    "llama-13b": ("llama-13b",),
    "EleutherAI/gpt-neox-20b": ("gpt-neox-20b",),
    "bigcode/starcoder": ("starcoder-15b", "starcoder"),
    "ibm/mpt-7b-instruct2": ("mpt-7b",),
    "Salesforce/codegen2-16B": ("codegen2-16b",),
}
LLM_PILOT_ENCODER_DECODER = frozenset({"google/flan-t5-xl", "google/flan-t5-xxl", "google/flan-ul2", "bigscience/mt0-xxl"})
#: LLM-Pilot GPU types: its A100 is the 40 GB PCIe card without NVLink (``gpu_features.csv``: sxm
#: False, nvlink False), hence ``a100-40gb`` and not ``a100-40gb-sxm``; its A10 is the 24 GB card.
LLM_PILOT_GPUS: dict[str, tuple[str, ...]] = {
    "H100": ("h100-sxm",),
    "A100": ("a100-40gb",),
    "A10": ("a10", "a10g"),
    "T4": ("t4",),
    "V100": ("v100-16gb",),
}

#: TensorRT-LLM v0.5.0 names. "LLaMA 7B" is Llama(-1) 7B, identical in shape to Llama-2-7B.
TRTLLM_LLMS: dict[str, tuple[str, ...]] = {
    "LLaMA 7B": ("llama-7b", "llama-2-7b"),
    "LLaMA 70B": ("llama-2-70b",),
    "GPT-J 6B": ("gpt-j-6b",),
    "Falcon 180B": ("falcon-180b",),
}
#: TensorRT-LLM v0.5.0 GPUs: its A100 FP16 numbers come from DGX A100 80GB (SXM), H100 from SXM.
TRTLLM_GPUS: dict[str, tuple[str, ...]] = {"A100": ("a100-80gb-sxm",), "H100": ("h100-sxm",), "L40S": ("l40s",)}
TRTLLM_PRECISIONS: dict[str, str] = {"FP16": "bf16", "FP8": "fp8"}
#: The KV cache of each TensorRT-LLM release-0.5 table precision: its FP8 engines were built with
#: ``--enable_fp8 --fp8_kv_cache`` (NVIDIA/TensorRT-LLM docs/source/performance.md, "Benchmarking per
#: Model": every FP8 build command, and "to run the benchmarks below on A100, you will need to remove
#: the --enable_fp8 --fp8_kv_cache options"), so their cache holds FP8 values.
TRTLLM_KV_CACHE_DTYPES: dict[str, str] = {"FP16": "fp16", "FP8": "fp8"}


#: TensorRT-LLM performance-overview names (v0.13 and v1.0) of the LLMs in the catalog.
TRTLLM_SERVING_LLMS: dict[str, tuple[str, ...]] = {
    "LLaMA v2 7B": ("llama-2-7b",),
    "LLaMA v3 8B": ("llama-3.1-8b",),
    "LLaMA v3.1 8B": ("llama-3.1-8b",),
    "Llama 3.1 8B": ("llama-3.1-8b",),
    "Mistral 7B": ("mistral-7b",),
    "LLaMA v2 70B": ("llama-2-70b",),
    "LLaMA v3 70B": ("llama-3.1-70b",),
    "LLaMA v3.1 70B": ("llama-3.1-70b",),
    "Llama 3.3 70B": ("llama-3.1-70b",),
    "Mixtral 8x7B": ("mixtral-8x7b",),
    "GPTJ 6B": ("gpt-j-6b",),
    "LLaMA v3.1 405B": ("llama-3.1-405b",),
    "Llama 3.1 405B": ("llama-3.1-405b",),
}
#: Their GPUs (every one an SXM part where there is a choice: HBM3 H100 / H200 are SXM modules).
TRTLLM_SERVING_GPUS: dict[str, tuple[str, ...]] = {
    "H100 80GB HBM3": ("h100-sxm",),
    "H100 SXM 80GB": ("h100-sxm",),
    "H200 141GB HBM3": ("h200",),
    "H200 SXM 141GB": ("h200",),
    "A100-SXM4-80GB": ("a100-80gb-sxm",),
    "L40S": ("l40s",),
    "GH200 120GB": ("gh200",),
    "B200 180GB": ("b200",),
}
#: Their precisions as (quantization, KV cache dtype): "If you specify FP8 quantization, the KV
#: cache will automatically be set to FP8 as well" (performance overview, "Engine Building").
TRTLLM_SERVING_PRECISIONS: dict[str, tuple[str, str]] = {"FP16": ("bf16", "fp16"), "FP8": ("fp8", "fp8")}


def _map_ids(data: SourceData, catalog: Catalog, *, llm_name: str, llm_candidates: tuple[str, ...],
             gpu_name: str, gpu_candidates: tuple[str, ...], framework: str, count: int = 1) -> tuple[str, str] | None:
    """Resolve LLM and GPU ids (and check the framework exists); count a skip and return None when one is missing."""
    llm = resolve_id(llm_candidates or (slug(llm_name),), catalog.llms)
    if llm is None:
        data.skip(f"LLM '{llm_name}' not in the catalog", count)
        return None
    gpu = resolve_id(gpu_candidates, catalog.gpus)
    if gpu is None:
        data.skip(f"GPU '{gpu_name}' not in the catalog", count)
        return None
    if framework not in catalog.frameworks:
        data.skip(f"framework profile '{framework}' not in the catalog", count)
        return None
    return llm, gpu


def measurement_config(m: Measurement, catalog: Catalog, efficiency: EfficiencyFactors | None = None) -> ServingConfig:
    """The :class:`ServingConfig` of measurement ``m`` (``efficiency`` None: the framework's defaults)."""
    return ServingConfig(
        llm=catalog.llms[m.llm],
        gpu=catalog.gpus[m.gpu],
        framework=catalog.frameworks[m.framework],
        quantization=catalog.quantization(m.quantization),
        tp=m.tp,
        batch=m.batch,
        input_tokens=m.input_tokens,
        output_tokens=m.output_tokens,
        flash_attention=m.flash_attention,
        kv_cache_dtype=m.kv_cache_dtype,
        efficiency=efficiency,
        max_num_batched_tokens=m.max_num_batched_tokens,
    )


# ---- loaders ----------------------------------------------------------------------------------
def load_lmdeploy(data_dir: Path, catalog: Catalog) -> SourceData:
    """LMDeploy TurboMind A100-80G static inference (``lmdeploy/a100_fp16_static_inference.csv``)."""
    data = SourceData("lmdeploy")
    for row in read_csv_rows(data_dir / "lmdeploy" / "a100_fp16_static_inference.csv"):
        name = row["model"]
        ids = _map_ids(data, catalog, llm_name=name, llm_candidates=LMDEPLOY_LLMS.get(name, ()), gpu_name="A100-80G",
                       gpu_candidates=("a100-80gb-sxm",), framework=LMDEPLOY_FRAMEWORK)
        if ids is None:
            continue
        prompt, output, batch = int(row["prompt_tokens"]), int(row["output_tokens"]), int(row["batch"])
        measured = {
            "ttft_ms": float(row["FTL_avg_s"]) * 1e3,
            "tpot_ms": float(row["token_latency_p50_s"]) * 1e3,
            "throughput_tokens_per_s": float(row["throughput_out_tok_s"]),
        }
        if prompt <= 1:
            del measured["ttft_ms"]
            data.skip("TTFT not used: 1-token prompt (its first token is a decode step)")
        data.rows.append(Measurement("lmdeploy", ids[0], ids[1], LMDEPLOY_FRAMEWORK, "bf16", int(row["tp"]), batch, prompt, output,
                                     measured, key=f"{name} b{batch} tp{row['tp']} {prompt}/{output}",
                                     first_token_rule=TURBOMIND_PROFILE_GENERATION))
    return data


def load_llm_inference_bench(data_dir: Path, catalog: Catalog) -> SourceData:
    """LLM-Inference-Bench ``Plots/All_results.csv``: vLLM / TensorRT-LLM fp16 static batches (duplicates merged)."""
    data = SourceData("llm-inference-bench")
    groups: dict[tuple, list[float]] = {}
    for row in read_csv_rows(data_dir / "llm_inference_bench" / "Plots" / "All_results.csv"):
        framework = BENCH_FRAMEWORKS.get(row["Framework"])
        if framework is None:
            data.skip(f"framework {row['Framework']} not modelled (or a different throughput convention)")
            continue
        if row["Hardware"] not in BENCH_GPUS:
            data.skip(f"hardware '{row['Hardware']}' out of scope")
            continue
        try:
            latency_s = float(row["Latency"])
        except ValueError:
            data.skip("latency missing")
            continue
        key = (row["Hardware"], int(row["Num of Hardware"]), framework, row["Model"], int(row["Input Output Length"]), int(row["Batch Size"]))
        groups.setdefault(key, []).append(latency_s)
    for (hardware, tp, framework, name, length, batch), latencies in sorted(groups.items()):
        if len(latencies) > 1:
            data.skip("duplicate measurement merged into its key's mean", len(latencies) - 1)
        ids = _map_ids(data, catalog, llm_name=name, llm_candidates=BENCH_LLMS.get(name, ()), gpu_name=hardware,
                       gpu_candidates=BENCH_GPUS[hardware], framework=framework)
        if ids is None:
            continue
        latency_s = statistics.fmean(latencies)
        measured = {"batch_latency_s": latency_s, "throughput_tokens_per_s": batch * length / latency_s}
        row = Measurement("llm-inference-bench", ids[0], ids[1], framework, "bf16", tp, batch, length, length, measured,
                          report_only=frozenset({"throughput_tokens_per_s"}), key=f"{name} {hardware} x{tp} {framework} b{batch} {length}/{length}")
        if latency_s < batch_latency_floor_s(measurement_config(row, catalog), static_batch=True):
            data.skip("faster than streaming the weights and the batch's prompt KV cache once per output token at peak bandwidth "
                      "(physically impossible; likely stopped early at EOS)", len(latencies))
            continue
        data.rows.append(row)
    return data


def load_llm_inference_bench_prefill(data_dir: Path, catalog: Catalog) -> SourceData:
    """LLM-Inference-Bench ``Plots/Fig_21/all_results_TTFT.csv``: batches run for one output token (the whole prefill).

    Each row is a static batch (16 prompts of 1024 tokens) generating one token, so its latency is
    the batch's prefill plus one step: a prefill-only check beside ``All_results.csv``, whose rows
    all have as many output tokens as prompt tokens. Not part of :func:`load_source`.
    """
    data = SourceData("llm-inference-bench-prefill")
    for row in read_csv_rows(data_dir / "llm_inference_bench" / "Plots" / "Fig_21" / "all_results_TTFT.csv"):
        framework = BENCH_FRAMEWORKS.get(row["Framework"])
        if framework is None or row["Hardware"] not in BENCH_GPUS:
            data.skip(f"{row['Framework']} on {row['Hardware']} not modelled")
            continue
        ids = _map_ids(data, catalog, llm_name=row["Model"], llm_candidates=BENCH_LLMS.get(row["Model"], ()), gpu_name=row["Hardware"],
                       gpu_candidates=BENCH_GPUS[row["Hardware"]], framework=framework)
        if ids is None:
            continue
        tp, batch, prompt, output = int(row["Num of Hardware"]), int(row["Batch Size"]), int(row["Input Length"]), int(row["Output Length"])
        data.rows.append(Measurement(data.source, ids[0], ids[1], framework, "bf16", tp, batch, prompt, output, {"batch_latency_s": float(row["Latency"])},
                                     key=f"{row['Model']} {row['Hardware']} x{tp} {framework} b{batch} {prompt}/{output}"))
    return data


def llm_pilot_profile(profile: str) -> tuple[int, str]:
    """Split an LLM-Pilot GPU profile such as ``"2 x A100"`` into (GPU count, GPU type)."""
    count, _, gpu_type = profile.partition(" x ")
    return int(count), gpu_type.strip()


@functools.cache
def _llm_pilot_flash_attention(features_path: Path) -> dict[str, bool]:
    return {r["model"]: r["model_is_flash_attention"].strip().upper() == "TRUE" for r in read_csv_rows(features_path)}


def llm_pilot_flash_attention(data_dir: Path) -> dict[str, bool]:
    """LLM-Pilot model name -> whether TGIS served it with flash attention (``llm_features.csv``)."""
    return _llm_pilot_flash_attention(data_dir / "llm_pilot" / "llm_features.csv")


def load_llm_pilot(data_dir: Path, catalog: Catalog) -> SourceData:
    """LLM-Pilot aggregate points of decoder-only LLMs as static batches of ``num_users`` requests."""
    data = SourceData("llm-pilot")
    flash = llm_pilot_flash_attention(data_dir)
    for row in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv"):
        name = row["model"]
        if name in LLM_PILOT_ENCODER_DECODER:
            data.skip("encoder-decoder LLM (out of scope for a decoder-only model)")
            continue
        count, gpu_type = llm_pilot_profile(row["gpu"])
        ids = _map_ids(data, catalog, llm_name=name, llm_candidates=LLM_PILOT_LLMS.get(name, ()), gpu_name=gpu_type,
                       gpu_candidates=LLM_PILOT_GPUS.get(gpu_type, ()), framework=LLM_PILOT_FRAMEWORK)
        if ids is None:
            continue
        if float(row["fail_frac"]) > LLM_PILOT_MAX_FAIL_FRACTION:
            data.skip(f"more than {LLM_PILOT_MAX_FAIL_FRACTION:.0%} of requests failed (medians over a biased subset)")
            continue
        users = int(row["num_users"])
        measured = {
            "ttft_ms": float(row["median_ttft_ms"]),
            "tpot_ms": float(row["median_itl_ms"]),
            "throughput_tokens_per_s": float(row["throughput_tok_s"]),
        }
        data.rows.append(Measurement(
            "llm-pilot", ids[0], ids[1], LLM_PILOT_FRAMEWORK, "bf16", count, users,
            max(1, round(float(row["mean_input_tokens"]))), max(1, round(float(row["mean_output_tokens"]))), measured,
            report_only=frozenset({"throughput_tokens_per_s"}), flash_attention=flash.get(name, True), closed_loop=True, key=f"{name} {row['gpu']} u{users}",
            statistic="median", median_lengths=(max(1, round(float(row["median_input_tokens"]))), max(1, round(float(row["median_output_tokens"])))),
        ))
    return data


def _trtllm_table_rows(data: SourceData, catalog: Catalog, data_dir: Path, *, kept: Callable[[str], bool], other: str,
                       precisions: dict, llms: dict[str, tuple[str, ...]], gpus: dict[str, tuple[str, ...]]):
    """The rows of TensorRT-LLM's performance tables whose scenario is ``kept``, each with its ``precisions`` entry and
    (LLM, GPU) catalog ids; the others are counted in ``data.skipped`` (other scenarios under ``other``)."""
    for row in read_csv_rows(data_dir / "trtllm_perf" / "trtllm_perf_overview_long.csv"):
        if not kept(row["scenario"]):
            data.skip(other)
            continue
        precision = precisions.get(row["precision"])
        if precision is None:
            data.skip(f"precision {row['precision']} not modelled")
            continue
        name, gpu_name = row["model"], row["gpu"]
        ids = _map_ids(data, catalog, llm_name=name, llm_candidates=llms.get(name, ()), gpu_name=gpu_name,
                       gpu_candidates=gpus.get(gpu_name, ()), framework="tensorrt-llm")
        if ids is not None:
            yield row, precision, ids


def load_trtllm_perf(data_dir: Path, catalog: Catalog) -> SourceData:
    """TensorRT-LLM v0.5.0 static-batch throughput and batch-1 first-token latency tables."""
    data = SourceData("trtllm-perf")
    for row, quantization, ids in _trtllm_table_rows(
            data, catalog, data_dir, kept=lambda scenario: scenario in ("static_batch_throughput", "batch1_first_token_latency"),
            other="in-flight-batching max-throughput table (the trtllm-serving source)", precisions=TRTLLM_PRECISIONS,
            llms=TRTLLM_LLMS, gpus=TRTLLM_GPUS):
        name, gpu_name, scenario = row["model"], row["gpu"], row["scenario"]
        tp, batch, isl = int(row["tp"]), int(row["batch_size"]), int(row["isl"])
        if scenario == "static_batch_throughput":
            osl = int(row["osl"])
            measured = {"throughput_tokens_per_s": float(row["output_tok_s"])}
        else:
            osl = 1
            measured = {"ttft_ms": float(row["first_token_latency_ms"])}
        data.rows.append(Measurement("trtllm-perf", ids[0], ids[1], "tensorrt-llm", quantization, tp, batch, isl, osl, measured,
                                     key=f"{name} {gpu_name} {row['precision']} tp{tp} b{batch} {isl}/{osl} {scenario}",
                                     kv_cache_dtype=TRTLLM_KV_CACHE_DTYPES[row["precision"]]))
    return data


def load_trtllm_serving(data_dir: Path, catalog: Catalog) -> SourceData:
    """TensorRT-LLM in-flight-batching max-throughput tables (v0.13, v1.0): offline runs, output tokens/s."""
    from guide_opt.validation.trtllm_bench import engine_settings

    data = SourceData("trtllm-serving")
    for row, (quantization, kv_cache_dtype), ids in _trtllm_table_rows(
            data, catalog, data_dir, kept=lambda scenario: scenario.startswith("max_throughput_inflight_batching"),
            other="static-batch or first-token table (the trtllm-perf source)", precisions=TRTLLM_SERVING_PRECISIONS,
            llms=TRTLLM_SERVING_LLMS, gpus=TRTLLM_SERVING_GPUS):
        name, gpu_name = row["model"], row["gpu"]
        tp, pp, isl, osl = int(row["tp"]), int(row["pp"]), int(row["isl"]), int(row["osl"])
        if pp != 1:
            data.skip("pipeline-parallel row (the offline predictions model TP only)")
            continue
        if isl + osl > catalog.llms[ids[0]].max_position_embeddings:
            data.skip("input + output tokens exceed the LLM's context (the planner refuses such requests)")
            continue
        settings = engine_settings(catalog.llms[ids[0]], catalog.gpus[ids[1]], tp=tp, pp=pp, fp8_weights=quantization == "fp8",
                                   kv_cache_dtype=kv_cache_dtype, input_tokens=isl, output_tokens=osl)
        version = row["trtllm_version"].split(" ", 1)[0]
        data.rows.append(Measurement(
            "trtllm-serving", ids[0], ids[1], "tensorrt-llm", quantization, tp, settings.max_batch_size, isl, osl,
            {"throughput_tokens_per_s": float(row["output_tok_s"])}, report_only=frozenset({"throughput_tokens_per_s"}),
            key=f"{name} {gpu_name} {row['precision']} tp{tp} {isl}/{osl} v{version}", kv_cache_dtype=kv_cache_dtype,
            offline=True, max_num_batched_tokens=settings.max_num_tokens,
        ))
    return data


#: Source name -> loader(data_dir, catalog).
SOURCES: dict[str, Callable[[Path, Catalog], SourceData]] = {
    "lmdeploy": load_lmdeploy,
    "llm-inference-bench": load_llm_inference_bench,
    "llm-pilot": load_llm_pilot,
    "trtllm-perf": load_trtllm_perf,
    "trtllm-serving": load_trtllm_serving,
}


def load_source(name: str, catalog: Catalog, data_dir: Path | None = None) -> SourceData:
    """Load the source ``name`` (see :data:`SOURCES`) from ``data_dir`` (default :func:`default_data_dir`)."""
    try:
        loader = SOURCES[name]
    except KeyError:
        raise InputError("--source", f"unknown source '{name}'", f"use one of {', '.join(SOURCES)}") from None
    return loader(data_dir or default_data_dir(), catalog)


def finite_positive(value: float) -> bool:
    """True for a finite number above zero (a usable measurement)."""
    return math.isfinite(value) and value > 0


def llm_id_for_hf_name(name: str, catalog: Catalog) -> str | None:
    """Catalog id for a HuggingFace model name or path (``meta-llama/Llama-2-7b-hf``), or None.

    Tried in order: a catalog id as given, a catalog LLM whose ``name`` is ``name``, the
    dataset alias tables of this module, and the lower-cased last path component with and
    without a ``-hf`` suffix.
    """
    if name in catalog.llms:
        return name
    for llm in catalog.llms.values():
        if llm.name == name:
            return llm.id
    for table in (BENCH_LLMS, LLM_PILOT_LLMS):
        if name in table:
            found = resolve_id(table[name], catalog.llms)
            if found:
                return found
    base = slug(name)
    return resolve_id((base, base.removesuffix("-hf")), catalog.llms)


# ---- a user's own benchmark data ----------------------------------------------------------------
#: Columns every row of a user's CSV must have.
USER_CSV_REQUIRED = ("model", "gpu", "framework", "tp", "batch", "input_tokens", "output_tokens")
#: Optional configuration columns of a user's CSV (defaults: bf16 weights, a static batch).
USER_CSV_OPTIONAL = ("quantization", "closed_loop")


def _int_cell(row: dict[str, str], column: str, where: str) -> int:
    try:
        value = int(float(row[column]))
    except (TypeError, ValueError, OverflowError):  # OverflowError: "inf"
        raise InputError(f"{where}: {column}", f"expected a whole number, got {row.get(column)!r}", "fix the cell") from None
    if value < 1:
        raise InputError(f"{where}: {column}", f"must be at least 1, got {value}", "fix the cell")
    return value


def _catalog_id(value: str, known: Iterable[str], where: str, column: str, kind: str) -> str:
    from guide_opt.errors import unknown_id_error

    value = (value or "").strip()
    if value not in set(known):
        raise unknown_id_error(f"{where}: {column}", value, list(known), kind)
    return value


def load_user_csv(path: str | Path, catalog: Catalog) -> SourceData:
    """A user's benchmark CSV as measurements (source ``user:<file name>``).

    Columns: ``model`` (catalog LLM id), ``gpu`` (catalog GPU id), ``framework`` (catalog
    framework id), ``tp``, ``batch`` (concurrent sequences), ``input_tokens``, ``output_tokens``
    (per request), optional ``quantization`` (default ``bf16``) and ``closed_loop`` (``true``
    when ``batch`` users re-sent requests continuously, as ``vllm bench serve
    --max-concurrency`` does, rather than one static batch), and at least one of the metrics
    ``ttft_ms`` (mean time to first token), ``tpot_ms`` (mean time per output token after the
    first), ``batch_latency_s`` (whole static batch) and ``throughput_tokens_per_s`` (generated
    tokens per second). Empty metric cells are allowed. Unknown ids or malformed numbers raise
    :class:`InputError` naming the row and column: a user's own data is never silently skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("--data", f"file '{path}' not found", "give a CSV or a vllm bench serve JSON file")
    with open(path, newline="") as handle:
        header = [c.strip() for c in next(csv.reader(handle), [])]
    missing = [c for c in USER_CSV_REQUIRED if c not in header]
    if missing:
        raise InputError(str(path), f"missing column(s) {', '.join(missing)}", f"the header needs {', '.join(USER_CSV_REQUIRED)} and at least one of {', '.join(METRICS)}")
    if not any(m in header for m in METRICS):
        raise InputError(str(path), "no metric column", f"add at least one of {', '.join(METRICS)}")
    rows = [{k.strip(): v for k, v in row.items() if k is not None} for row in read_csv_file(path)]
    if not rows:
        raise InputError(str(path), "no data rows", "add one row per measured configuration under the header")
    data = SourceData(f"user:{path.name}")
    for i, row in enumerate(rows, start=2):
        where = f"{path.name} line {i}"
        measured = {}
        for metric in METRICS:
            cell = (row.get(metric) or "").strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise InputError(f"{where}: {metric}", f"expected a number, got {cell!r}", "fix the cell or leave it empty") from None
            if not finite_positive(value):
                raise InputError(f"{where}: {metric}", f"must be a positive number, got {cell}", "fix the cell or leave it empty")
            measured[metric] = value
        if not measured:
            data.skip("no metric measured in the row")
            continue
        quantization = (row.get("quantization") or "bf16").strip() or "bf16"
        catalog.quantization(quantization, field=f"{where}: quantization")
        closed = (row.get("closed_loop") or "").strip().lower() in ("1", "true", "yes")
        data.rows.append(Measurement(
            data.source,
            _catalog_id(row["model"], catalog.llms, where, "model", "LLM"),
            _catalog_id(row["gpu"], catalog.gpus, where, "gpu", "GPU"),
            _catalog_id(row["framework"], catalog.frameworks, where, "framework", "framework"),
            quantization,
            _int_cell(row, "tp", where), _int_cell(row, "batch", where), _int_cell(row, "input_tokens", where), _int_cell(row, "output_tokens", where),
            measured, closed_loop=closed, key=f"{where}",
        ))
    return data


#: ``vllm bench serve --save-result`` keys read by :func:`load_vllm_bench_json`.
VLLM_BENCH_KEYS = ("completed", "total_input_tokens", "total_output_tokens", "mean_ttft_ms", "mean_tpot_ms", "output_throughput",
                   "max_concurrency", "request_rate", "num_prompts", "model_id")


def _json_records(path: Path) -> list[dict]:
    import json

    text = path.read_text()
    try:
        payload = json.loads(text)
        return payload if isinstance(payload, list) else [payload]
    except json.JSONDecodeError:
        records = []
        for n, line in enumerate(text.splitlines(), start=1):  # --append-result writes one JSON object per line
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path.name} line {n}", f"not valid JSON ({exc.msg})", "give the file vllm bench serve --save-result wrote") from None
        return records


def load_vllm_bench_json(path: str | Path, catalog: Catalog, *, model: str | None = None, gpu: str | None = None, tp: int | None = None,
                         framework: str | None = None, batch: int | None = None, quantization: str | None = None) -> SourceData:
    """The result file of ``vllm bench serve --save-result`` (one JSON object, or one per line) as measurements.

    Read keys: ``completed``, ``total_input_tokens``, ``total_output_tokens`` (mean lengths per
    request), ``mean_ttft_ms``, ``mean_tpot_ms``, ``output_throughput`` (tokens/s),
    ``max_concurrency``, ``request_rate``, ``num_prompts``, ``model_id``. The file does not say
    which GPU, TP or catalog LLM was used: give them as options (``model``, ``gpu``, ``tp``,
    ``framework`` default ``vllm``, ``quantization`` default ``bf16``) or record them with
    ``vllm bench serve --metadata gpu=h100-sxm tp=2 model=llama-3.1-8b``; options win. The batch
    is ``max_concurrency`` (or ``batch``); a run with more prompts than that is a closed loop
    of ``batch`` users. A Poisson-rate run without a concurrency cap is no fixed batch and
    needs ``batch`` explicitly. In a closed loop the static model reads TTFT as the mean over
    one batch whose prompts are all prefilled together, which is pessimistic for an engine
    whose users arrive spread out (``guide-opt calibrate --ignore-metric ttft_ms`` leaves it
    out of the fit); runs with ``--num-prompts`` equal to ``--max-concurrency`` are one static
    batch and have no such bias.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("--data", f"file '{path}' not found", "give a CSV or a vllm bench serve JSON file")
    data = SourceData(f"vllm-bench:{path.name}")
    for n, record in enumerate(_json_records(path), start=1):
        where = f"{path.name} result {n}"
        if not isinstance(record, dict) or "mean_ttft_ms" not in record or "completed" not in record:
            raise InputError(where, "not a vllm bench serve result (no mean_ttft_ms / completed)", "give the file --save-result wrote")

        def pick(option, *keys, default=None):
            if option is not None:
                return option
            for key in keys:
                if record.get(key) not in (None, ""):
                    return record[key]
            return default

        llm_id = pick(model, "model", "guide_opt_model") or llm_id_for_hf_name(str(record.get("model_id", "")), catalog) or str(record.get("model_id", ""))
        gpu_id = pick(gpu, "gpu")
        if gpu_id is None:
            raise InputError("--gpu", f"{where} does not say which GPU ran it", "pass --gpu ID or record --metadata gpu=ID")
        completed = int(record["completed"])
        if completed < 1:
            data.skip("no completed request")
            continue
        users = pick(batch, "max_concurrency")
        if users is None:
            if str(record.get("request_rate")) != "inf":
                raise InputError("--batch", f"{where} is a Poisson-rate run without --max-concurrency", "pass --batch N (the typical number of running requests)")
            users = int(record.get("num_prompts") or completed)
        users = int(users)
        measured = {k: float(record[src]) for k, src in (("ttft_ms", "mean_ttft_ms"), ("tpot_ms", "mean_tpot_ms"),
                                                           ("throughput_tokens_per_s", "output_throughput")) if record.get(src) not in (None, "")}
        measured = {k: v for k, v in measured.items() if finite_positive(v)}
        q = str(pick(quantization, "quantization", default="bf16"))
        catalog.quantization(q, field="--quantization")
        data.rows.append(Measurement(
            data.source,
            _catalog_id(str(llm_id), catalog.llms, where, "model (--model)", "LLM"),
            _catalog_id(str(gpu_id), catalog.gpus, where, "gpu (--gpu)", "GPU"),
            _catalog_id(str(pick(framework, "framework", default="vllm")), catalog.frameworks, where, "framework (--framework)", "framework"),
            q, int(pick(tp, "tp", "tensor_parallel_size", default=1)), users,
            max(1, round(int(record["total_input_tokens"]) / completed)), max(1, round(int(record["total_output_tokens"]) / completed)),
            measured, closed_loop=int(record.get("num_prompts") or completed) > users, key=where,
        ))
    return data


def load_user_data(path: str | Path, catalog: Catalog, **vllm_options) -> SourceData:
    """A user's benchmark file: ``.json`` / ``.jsonl`` -> :func:`load_vllm_bench_json`, anything else -> :func:`load_user_csv`.

    The file must be UTF-8 text within :data:`~guide_opt.limits.MAX_INPUT_FILE_BYTES` (checked first).
    """
    from guide_opt.limits import read_text_file

    read_text_file(path, f"--data {Path(path).name}")
    if Path(path).suffix.lower() in (".json", ".jsonl"):
        return load_vllm_bench_json(path, catalog, **vllm_options)
    return load_user_csv(path, catalog)
