"""Score the H200 kernel curves against an independent run of PyTorch kernels on a real H200 (RESULTS.md 12.7).

Run from the repository root (CPU only; the measurements were taken with
``benchmarks/measure_kernels_torch.py`` on a GPU machine and are kept in
``benchmarks/measured/h200-torch/``)::

    python benchmarks/bench_device_kernels.py            # print the subsection as Markdown
    python benchmarks/bench_device_kernels.py --write    # also write it into RESULTS.md

The same kernels are scored three ways, each as (predicted or tabled - measured) / measured:

- the aiconfigurator table's own H200 time at the identical shape (bf16 GEMMs: the same
  ``torch.nn.functional.linear`` call, so this checks the data the curves were fitted on; FP8
  GEMMs and attention: a different kernel of the same shape);
- the shipped H200 curves (``hardware_db/kernels/h200.yaml``, fitted on that table);
- the curves an unmeasured GPU of the H200's specs gets: the generic profile fitted on the
  other measured GPUs, H200 left out (as in 12.1's held-out column).

GEMMs are scored apart for the run's two kinds of weights (normally distributed and zero): a
GPU at its power limit clocks lower on real weights. A second table puts the shipped A100 and
H100 bf16 curves against vidur's per-operator profiles (shared data, random weights), the same
question on the shared data. Nothing here is fitted to the run: it is kept aside as a check.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
from pathlib import Path

import numpy as np

from bench_common import cpu_model, markdown_table, replace_results_subsection  # noqa: E402
from fit_kernels import data_label, default_kernel_dir  # noqa: E402
from guide_opt.catalog import load_catalog
from guide_opt.perf.kernels import gemm_time
from guide_opt.validation.kernel_fit import (DATA_GPU_IDS, CollectiveRows, GpuKernelData, KernelRows, decode_rows, error_pct, gemm_rows, generic_for,
                                             load_gpu, prefill_rows, read_table, score)

MEASURED = Path(__file__).resolve().parent / "measured" / "h200-torch"
DATA_GPU = "h200_sxm"
SECTION = "## 12. Kernel efficiency curves: fitted, shipped and used by the step model"
HEADING = "### 12.7 An independent run on a real H200: PyTorch's kernels against the table and the curves"
#: Columns that name one kernel shape in each table (latency and kernel source aside).
KEYS = {"gemm": ("gemm_dtype", "m", "n", "k"),
        "context_attention": ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype", "window_size"),
        "generation_attention": ("batch_size", "step", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype", "window_size")}


def read_measured(table: str, weights: str | None = None) -> list[dict[str, str]]:
    """Rows of one CSV of the device run (GEMMs: those run with ``weights``, ``randn`` or ``zeros``)."""
    with (MEASURED / f"{table}.csv").open() as fh:
        return [r for r in csv.DictReader(fh) if weights is None or r.get("weights") == weights]


def _key(row: dict[str, str], table: str) -> tuple:
    return tuple(row[c] if c in ("gemm_dtype", "kv_cache_dtype") else str(int(float(row.get(c, 0) or 0))) for c in KEYS[table])


def matched_with_table(root: Path, table: str, measured: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The ``measured`` rows whose shape the aiconfigurator H200 table has, and the same rows with the table's latency
    (GEMMs: the same dtype; attention: the table's default kernel source)."""
    rows = read_table(root, DATA_GPU, table)
    if table != "gemm":
        sources = sorted({r["kernel_source"] for r in rows})
        default = max(sources, key=lambda src: sum(r["kernel_source"] == src for r in rows))
        rows = [r for r in rows if r["kernel_source"] == default]
    tabled = {_key(r, table): r["latency"] for r in rows}
    here = [r for r in measured if _key(r, table) in tabled]
    return here, [{**r, "latency": tabled[_key(r, table)]} for r in here]


def kernel_rows(kind: str, raw: list[dict[str, str]], gpu) -> KernelRows:
    """The fit's rows (the step model's FLOPs and bytes per kernel) of one kind."""
    if kind.startswith("gemm_"):
        return gemm_rows(raw, gpu, DATA_GPU, "bfloat16" if kind == "gemm_bf16" else "fp8")
    return (prefill_rows if kind == "attention_prefill" else decode_rows)(raw, gpu, DATA_GPU)


def _profile_scores(profile, kind: str, rows: KernelRows, gpu) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, measured) seconds of ``profile`` on ``rows`` of ``kind`` (kernel_fit.score on a GPU of these rows alone)."""
    empty = kernel_rows("gemm_bf16", [], gpu)
    gemm = {"bf16": rows if kind == "gemm_bf16" else empty, "fp8": rows if kind == "gemm_fp8" else empty}
    data = GpuKernelData(DATA_GPU, gpu, "device", gemm, rows if kind == "attention_prefill" else empty,
                         rows if kind == "attention_decode" else empty, CollectiveRows(*(np.array([]) for _ in range(5))), {})
    return score(profile, [data])[kind]


def _cell(predicted: np.ndarray, measured: np.ndarray) -> str:
    return "-" if not len(measured) else "{:.1f} / {:+.1f}".format(*error_pct(predicted, measured))


#: GEMM regimes reported apart: memory-bound decode sizes, the middle, prefill sizes.
REGIMES = (("m <= 64", 1, 64), ("m 128-1024", 128, 1024), ("m >= 2048", 2048, 1 << 30))
TABLES = {"gemm_bf16": "gemm", "gemm_fp8": "gemm", "attention_prefill": "context_attention", "attention_decode": "generation_attention"}
NAMES = {"gemm_bf16": "GEMM bf16 (F.linear in both)", "gemm_fp8": "GEMM fp8 (torch._scaled_mm here, vLLM's CUTLASS kernel in the table)",
         "attention_prefill": "prefill attention (SDPA's FlashAttention 2 here, FA3 in the table)",
         "attention_decode": "decode attention (SDPA, contiguous cache here; FA3 on a paged cache in the table)"}


#: vidur's GPU folders -> catalog ids, and its four projection operators -> (n, k) of one TP shard.
VIDUR_GPUS = {"a100": "a100-80gb-sxm", "h100": "h100-sxm"}
VIDUR_GEMMS = {
    "attn_pre_proj": lambda h, kv, e, ff, gated, tp: ((h + 2 * kv) * (e // h) // tp, e),
    "attn_post_proj": lambda h, kv, e, ff, gated, tp: (e, h * (e // h) // tp),
    "mlp_up_proj": lambda h, kv, e, ff, gated, tp: (ff * (2 if gated else 1) // tp, e),
    "mlp_down_proj": lambda h, kv, e, ff, gated, tp: (e, ff // tp),
}
#: Smallest weight matrix (n x k) compared: the curves are fitted from n, k >= 512, and small matrices are launch-bound.
VIDUR_MIN_WEIGHT_ELEMENTS = 4096 * 1024


def vidur_rows(kernel_root: Path) -> list[list[str]]:
    """The shipped A100 / H100 bf16 GEMM curves against vidur's projection operators (random weights), by regime."""
    catalog = load_catalog()
    out = []
    for folder, gpu_id in VIDUR_GPUS.items():
        gpu = catalog.gpu(gpu_id)
        errors: dict[str, list[float]] = {label: [] for label, _, _ in REGIMES}
        for path in sorted((kernel_root / "vidur" / "compute" / folder).glob("*/*/mlp.csv.gz")):
            with gzip.open(path, "rt") as fh:
                for r in csv.DictReader(fh):
                    m = int(r["num_tokens"])
                    shape = (int(r["n_head"]), int(r["n_kv_head"]), int(r["n_embd"]), int(r["n_expanded_embd"]), r["use_gated_mlp"] == "True",
                             int(r["num_tensor_parallel_workers"]))
                    for op, weights in VIDUR_GEMMS.items():
                        n, k = weights(*shape)
                        if n * k < VIDUR_MIN_WEIGHT_ELEMENTS:
                            continue
                        predicted_ms = gemm_time(2 * m * n * k, 2 * n * k, 2 * m * k, 2 * m * n, m, n * k, "bf16", gpu.peak_flops_per_s("bf16"),
                                                 gpu.hbm_bandwidth_bytes_per_s, gpu.kernels, 1.0, 1.0).time_s * 1e3
                        for label, lo, hi in REGIMES:
                            if lo <= m <= hi:
                                errors[label].append(predicted_ms / float(r[f"time_stats.{op}.median"]) - 1)
        for label, errs in errors.items():
            if errs:
                e = np.array(errs)
                out.append([gpu_id, label, f"{len(e):,}", f"{np.mean(np.abs(e)) * 100:.1f} / {np.mean(e) * 100:+.1f}", f"{np.median(e) * 100:+.1f}"])
    return out


def build(root: Path) -> str:
    catalog = load_catalog()
    gpu = catalog.gpu(DATA_GPU_IDS[DATA_GPU])
    others = [load_gpu(root, g, catalog) for g in DATA_GPU_IDS if g != DATA_GPU and (root / g).is_dir()]
    profiles = (gpu.kernels, generic_for(gpu, others, data_label(root), profile_id="generic-nvlink"))
    machine = json.loads((MEASURED / "machine.json").read_text())

    out = []
    for kind, table in TABLES.items():
        for weights in (("randn", "zeros") if kind.startswith("gemm") else (None,)):
            raw = [r for r in read_measured(table, weights) if not kind.startswith("gemm") or r["gemm_dtype"] == ("bfloat16" if kind == "gemm_bf16" else "fp8")]
            regimes = [(label, [r for r in raw if lo <= int(r["m"]) <= hi]) for label, lo, hi in REGIMES] if kind.startswith("gemm") else []
            for label, part in [("all", raw), *regimes]:
                measured = kernel_rows(kind, part, gpu)
                here, tabled = (kernel_rows(kind, rows, gpu) for rows in matched_with_table(root, table, part))
                clock = [float(r["sm_mhz"]) for r in part if r.get("sm_mhz")]
                power = [float(r["power_w"]) for r in part if r.get("power_w")]
                name = NAMES[kind] if label == "all" else f"&nbsp;&nbsp;{label}"
                out.append([name, weights or "-", str(len(measured)),
                            f"{np.median(clock):.0f} MHz / {np.median(power):.0f} W" if clock and power else "-",
                            f"{_cell(tabled.measured_s, here.measured_s)} ({len(tabled)})",
                            *(_cell(*_profile_scores(p, kind, measured, gpu)) for p in profiles)])

    lines = [f"`python benchmarks/bench_device_kernels.py --write` (machine: {cpu_model()}, {os.cpu_count()} logical CPUs, Python "
             f"{platform.python_version()}; CPU only, nothing fitted). Measured by `python benchmarks/measure_kernels_torch.py --out DIR` on one "
             f"{machine['gpu']} ({machine['multiprocessors']} SMs, {machine['memory_gib']} GiB; nvidia-smi: {machine['nvidia_smi']}), "
             f"PyTorch {machine['torch']}, CUDA {machine['cuda']}, {machine['measured_utc']} (the device's clock); one run. Method of "
             "aiconfigurator's vLLM GEMM collector: warm-up, then calls captured in a CUDA graph and replayed, the median of 5 replays; "
             "a GEMM call runs 6 layers' weights in turn. Inputs are normally distributed; the weights are either normally distributed "
             "(`randn`, as trained weights are) or zero (`zeros`; the collector leaves its layers' weights as allocated, `torch.empty`). "
             "Data: `benchmarks/measured/h200-torch/`. "
             f"Table: {data_label(root)}, the H200 rows at the identical shape. Errors are (table or curves - this run) / this run, in %: "
             "MAPE / bias; clock and power: medians read after each timing.", ""]
    lines += markdown_table(["kernels", "weights", "rows", "SM clock / board power", "aiconfigurator table (rows matched)", "shipped H200 curves",
                             "H200 held out (generic curves of the other GPUs)"], out)
    lines += ["", "The same comparison in the shared data: vidur's profiles (`shared/data/kernels/vidur`, A100 and H100, 2024 software) "
              "time each projection GEMM of real LLM layers (Llama-2/3, CodeLlama, Qwen, InternLM, Phi; every TP shard) with weights "
              "drawn uniformly from +-1e-3 (sarathi's `initialize_dummy_weights`: \"the model weights must be randomly initialized for "
              "accurate performance measurements\"). The shipped curves of the same GPUs, fitted on the aiconfigurator tables, against "
              "vidur's medians (weights of at least 4096 x 1024 elements), (curves - vidur) / vidur in %:", ""]
    lines += markdown_table(["GPU (curves)", "tokens", "operator rows", "MAPE / bias", "median error"], vidur_rows(root.parent))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_kernel_dir(), help="the folder holding aiconfigurator/")
    parser.add_argument("--write", action="store_true", help=f"write the subsection into RESULTS.md ({HEADING[4:]})")
    args = parser.parse_args()
    text = build(args.data_dir / "aiconfigurator")
    print(text)
    if args.write:
        replace_results_subsection(SECTION, HEADING, text)


if __name__ == "__main__":
    main()
