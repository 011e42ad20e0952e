"""Fit MI300X's kernel curves end to end on LLM-Inference-Bench and score them (RESULTS.md section 1.8).

Run from the repository root::

    python benchmarks/fit_end_to_end.py            # fit, score and print the section as Markdown
    python benchmarks/fit_end_to_end.py --write    # also write hardware_db/kernels/mi300x.yaml and section 1.8

MI300X has no measured kernel tables, so it used the NVIDIA-pooled ``generic-nvlink`` curves.
This fits the parameters of :mod:`guide_opt.validation.profile_fit` on its vLLM (ROCm) rows of
LLM-Inference-Bench (``validation_data/llm_inference_bench/Plots/All_results.csv``) and reports:
the error by LLM, TP degree and batch before and after; the fitted values beside the generic
ones; in-sample and leave-one-LLM-out accuracy; a prefill-only check on the batches of
``Plots/Fig_21`` (not fitted). ``--write`` ships the fit on all rows as a ``scope: gpu`` profile.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import yaml

from bench_common import cpu_model, replace_results_subsection  # noqa: E402
from guide_opt.catalog import kernel_profile_for, load_catalog, load_kernel_profiles
from guide_opt.data_files import data_dir
from guide_opt.kernel_profile import KernelProfile
from guide_opt.perf import StepShape, estimate, step_time
from guide_opt.validation.accuracy import Comparison, error_stats, evaluate, measurement_config
from guide_opt.validation.calibration import prepare_rows, weight_stream_time_s
from guide_opt.validation.datasets import default_data_dir, load_llm_inference_bench_prefill, load_source
from guide_opt.validation.profile_fit import (FITTED_METRIC, PARAMETER_NAMES, EndToEndParams, batch_latency_quality,
                                              end_to_end_profile, fit_end_to_end, leave_one_llm_out, rounded, with_gpu_kernels)

GPU = "mi300x"
FRAMEWORK = "vllm"
SECTION = "## 1. Prediction accuracy"
HEADING = "### 1.8 MI300X: curves fitted end to end on LLM-Inference-Bench"
SOURCE = ("end-to-end fit, not kernel tables: batch latencies of LLM-Inference-Bench (Argonne, BSD-3-Clause; vLLM on ROCm, fp16, "
          "offline static batches, 2024) on AMD MI300X, fitted through guide-opt's step model with the vllm profile's default factors "
          "and host costs (guide_opt.validation.profile_fit); GEMM, attention and all-reduce shapes of generic-nvlink")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def data_version(root: Path) -> str:
    """The data's identity: the copied repository commit and the sha256 of the fitted CSV."""
    csv = root / "llm_inference_bench" / "Plots" / "All_results.csv"
    return (f"validation_data/llm_inference_bench (github.com/argonne-lcf/LLM-Inference-Bench @ 4211f5d4e9bc), Plots/All_results.csv sha256 "
            f"{hashlib.sha256(csv.read_bytes()).hexdigest()[:12]}")


def latency(comparisons: list[Comparison]) -> list[Comparison]:
    """The batch-latency comparisons."""
    return [c for c in comparisons if c.metric == FITTED_METRIC]


def stats(comparisons: list[Comparison]) -> str:
    """``MAPE / bias`` in percent."""
    mape, _, bias = error_stats(comparisons)
    return f"{mape:.1f} / {bias:+.1f}"


def by_regime(columns: dict[str, list[Comparison]], key) -> list[list[str]]:
    """One row per value of ``key(measurement)``: the measured / predicted median ratio before, then MAPE / bias per column."""
    values = sorted({key(c.measurement) for c in next(iter(columns.values()))})
    rows = []
    for value in values:
        cells = [str(value)]
        for name, comps in columns.items():
            chosen = [c for c in comps if key(c.measurement) == value]
            if name == "before":
                cells.append(f"{statistics.median(c.measured / c.predicted for c in chosen):.2f}")
            cells.append(stats(chosen))
        cells.append(str(len(chosen)))
        rows.append(cells)
    return rows


def parameter_rows(base, shipped: EndToEndParams, held: dict[str, EndToEndParams], no_all_reduce: EndToEndParams | None) -> list[list[str]]:
    """Generic value, fitted value and the range over the leave-one-LLM-out fits, per parameter."""
    start = EndToEndParams.start(base)
    units = {"compute_scale": "x generic", "half_tokens": "tokens", "hbm_fraction": "of 5.3 TB/s", "kernel_latency_us": "us per kernel",
             "all_reduce_latency_us": "us", "all_reduce_bus_fraction": "of 448 GB/s"}
    rows = []
    for name in PARAMETER_NAMES:
        values = [getattr(p, name) for p in held.values()]
        generic = getattr(start, name)
        if name == "all_reduce_latency_us":
            generic_text = "/".join(f"{c.latency_us:g}" for c in base.all_reduce) + " (2/4/8 GPUs)"
        elif name == "all_reduce_bus_fraction":
            generic_text = "/".join(f"{c.bus_bandwidth_fraction:g}" for c in base.all_reduce)
        else:
            generic_text = f"{generic:g}"
        other = "-" if no_all_reduce is None or getattr(no_all_reduce, name) is None else f"{getattr(no_all_reduce, name):g}"
        rows.append([name, units[name], generic_text, f"{getattr(shipped, name):g}", f"{min(values):g} - {max(values):g}", other])
    return rows


#: Decode steps whose predicted split section 1.8 shows: (LLM, TP, batch), at prompt = output = 1024 tokens.
SPLIT_CASES = (("llama-2-7b", 1, 1), ("llama-2-7b", 8, 1), ("llama-2-7b", 1, 64), ("llama-3.1-70b", 1, 1), ("llama-3.1-70b", 1, 64),
               ("llama-3.1-70b", 8, 64), ("llama-3.1-70b", 8, 256))
SPLIT_TOKENS = 1024


def step_split_rows(rows, curves: dict[str, object]) -> list[list[str]]:
    """Per case of :data:`SPLIT_CASES`: measured ms per output token, then per set of ``curves`` (label -> catalog) the
    predicted ms per output token and its decode step (at the mean context) split into compute / memory (kernel latencies
    included) / all-reduce / host ms."""
    out = []
    for llm, tp, batch in SPLIT_CASES:
        m = next((r for r in rows if (r.llm, r.tp, r.batch, r.input_tokens) == (llm, tp, batch, SPLIT_TOKENS)), None)
        if m is None:
            continue
        cells = [f"{llm} TP{tp} b{batch}", f"{m.measured[FITTED_METRIC] / m.output_tokens * 1e3:.1f}"]
        for cat in curves.values():
            config = measurement_config(m, cat)
            per_token = estimate(config).phases.batch_latency_s / m.output_tokens * 1e3
            step = step_time(config, StepShape.decode(batch, SPLIT_TOKENS * 1.5))
            cells.append(f"{per_token:.1f} = {step.compute_s * 1e3:.1f} / {step.memory_s * 1e3:.1f} / {step.network_s * 1e3:.1f} / "
                         f"{step.overhead_s * 1e3:.1f}")
        out.append(cells)
    return out


def per_token_ms(rows, llm: str, tp: int, batch: int, tokens: int) -> float:
    """Measured batch latency per output token (ms) of the row (``llm``, ``tp``, ``batch``, prompt = output = ``tokens``)."""
    m = next(r for r in rows if (r.llm, r.tp, r.batch, r.input_tokens) == (llm, tp, batch, tokens))
    return m.measured[FITTED_METRIC] / m.output_tokens * 1e3


def added_sequence_ms(rows, llm: str, tp: int) -> float:
    """Measured cost of one more sequence in a step (ms): per-token latency from batch 64 to 256 at 128 + 128 tokens, over 192."""
    return (per_token_ms(rows, llm, tp, 256, 128) - per_token_ms(rows, llm, tp, 64, 128)) / 192


def diagnosis(params: EndToEndParams, base: KernelProfile, catalog, rows, prefill_slowdown: float, before: list[Comparison]) -> list[str]:
    """What the fitted numbers say about the gap, as Markdown lines (figures computed from ``params``, the rows, the comparisons
    with the generic curves ``before`` and the datasheet)."""

    def ratio(batch: int) -> float:
        return statistics.median(c.measured / c.predicted for c in before if c.measurement.batch == batch)

    gpu = catalog.gpus[GPU]
    host = catalog.frameworks[FRAMEWORK].efficiency
    gemm_tflops = base.gemm["bf16"].peak_fraction * params.compute_scale * gpu.bf16_dense_tflops
    batch_one = [per_token_ms(rows, "llama-2-7b", tp, 1, n) for tp in (1, 2, 4, 8) for n in (256, 512, 1024, 2048)]
    tp8 = next(r for r in rows if (r.llm, r.tp) == ("llama-2-7b", 8))
    stream_ms = weight_stream_time_s(measurement_config(tp8, catalog)) * 1e3
    return [
        "What the gap was, by cause (from the fit and the rows above):",
        "",
        f"- Compute, the part of the gap that grows with the batch (measured / predicted {ratio(1):.2f} at batch 1, {ratio(256):.2f} at batch",
        f"  256, medians above): the fitted GEMM curve reaches {params.compute_scale:.3f} of the generic",
        f"  one, about {gemm_tflops:.0f} TFLOP/s of the {gpu.bf16_dense_tflops:g} TFLOP/s bf16 datasheet peak, and saturates by",
        f"  {params.half_tokens:.0f} tokens, so decode steps and prefills alike run at that rate. The rows show it directly: the cost of",
        "  one more sequence in a decode step (128 + 128 tokens, batch 64 to 256) grows with the LLM's FLOPs per token and falls",
        f"  with TP (Llama-3-70B {added_sequence_ms(rows, 'llama-3.1-70b', 1):.2f} ms at TP 1, {added_sequence_ms(rows, 'llama-3.1-70b', 8):.2f} ms "
        f"at TP 8; Llama-2-7B {added_sequence_ms(rows, 'llama-2-7b', 1):.2f} ms at TP 1),",
        f"  which a host cost per sequence would not (the `vllm` profile already adds {host.sequence_overhead_us:g} us per sequence per step, fitted on",
        f"  A100/H100, section 1.7); and the prefill-only batches below were measured {prefill_slowdown:.0f}x slower than the generic",
        "  curves predicted.",
        f"- Per-kernel latency, most of the gap at batch 1: {params.kernel_latency_us:.1f} us per kernel (generic "
        f"{base.gemm['bf16'].latency_us:g} us GEMM, {base.attention.latency_us:g} us",
        f"  attention), about {9 * params.kernel_latency_us:.0f} us per layer of 9 kernels (4 GEMMs, 4 elementwise, attention): at batch 1",
        f"  Llama-2-7B takes {min(batch_one):.1f}-{max(batch_one):.1f} ms per token at TP 1, 2, 4 and 8 alike (256-2048 tokens), although at",
        f"  TP 8 its weights stream in {stream_ms:.2f} ms at the datasheet bandwidth: the launch floor of a vLLM on ROCm of that period",
        "  without HIP graphs.",
        f"  HBM streaming reaches {params.hbm_fraction:.2f} of 5.3 TB/s (generic {base.gemm['bf16'].bandwidth_fraction:g}).",
        "- All-reduce: " + ("not fitted (generic kept)." if not params.fits_all_reduce else
                            f"{params.all_reduce_latency_us:.0f} us per all-reduce (generic NVLink "
                            f"{min(c.latency_us for c in base.all_reduce):.0f}-{max(c.latency_us for c in base.all_reduce):.0f} us) and "
                            f"{params.all_reduce_bus_fraction:.2f} of the 448 GB/s xGMI link; a smaller part, at TP > 1 only."),
        f"- The `vllm` host costs ({host.sequence_overhead_us:g} us per sequence per step, {host.tp_step_overhead_ms:g} ms per multi-GPU step) and its",
        f"  KV re-read exponent ({host.gqa_kv_reread_exponent:g}) are kept as fitted on NVIDIA and the",
        "  NVIDIA GPUs' curves are not touched, so their predictions do not move.",
        "- AMD MI250 (its LLM-Inference-Bench rows are skipped as out of scope) is not in the catalog (`hardware_db/gpus`), so",
        "  it is left as it is.",
        "",
    ]


#: The bundled problem whose plan used MI300X before this fit: problems/mixtral-moe.yaml (5 requests/s of 1024 + 256 tokens),
#: planned on 1 x MI300X, SGLang, fp8, max-num-seqs 96 ($1.85/h) with the generic curves.
PLAN_CASE = {"llm": "mixtral-8x7b", "framework": "sglang", "quantization": "fp8", "batch": 96, "input_tokens": 1024, "output_tokens": 256}
PLAN_RATE_PER_S = 5.0


def plan_lines(curves: dict[str, object]) -> list[str]:
    """What the fit does to the bundled plan that used MI300X: one replica's capacity (requests/s) on each set of ``curves``."""
    from guide_opt.perf import ServingConfig
    from guide_opt.perf.steady_state import capacity_request_rate_per_s

    capacity = {}
    for label, cat in curves.items():
        config = ServingConfig(llm=cat.llms[PLAN_CASE["llm"]], gpu=cat.gpus[GPU], framework=cat.frameworks[PLAN_CASE["framework"]],
                               quantization=cat.quantization(PLAN_CASE["quantization"]), batch=PLAN_CASE["batch"],
                               input_tokens=PLAN_CASE["input_tokens"], output_tokens=PLAN_CASE["output_tokens"])
        capacity[label] = capacity_request_rate_per_s(config)
    return [
        "Plans: of the bundled problems only `problems/mixtral-moe.yaml` (Mixtral-8x7B, 5 requests/s of 1024 + 256 tokens) used",
        f"MI300X. One MI300X with SGLang, fp8 and max-num-seqs 96 sustains {capacity['generic']:.1f} requests/s on the generic curves and",
        f"{capacity['fitted']:.1f} on the fitted ones, so `guide-opt solve problems/mixtral-moe.yaml` now plans one H100 SXM ($2.99/h)",
        "instead of one MI300X ($1.85/h; two would cost $3.70/h). Every other bundled problem's plan is unchanged (`solve --format",
        "json` before and after). The curves describe the ROCm vLLM stack LLM-Inference-Bench measured (2024); SGLang on MI300X",
        "takes the same curves (a GPU's curves serve every engine), and newer ROCm stacks with HIP graphs and tuned GEMMs are",
        "likely faster: `guide-opt calibrate` on measurements of one fits the engine's multipliers on these curves.",
        "",
    ]


def remaining_lines(after: list[Comparison], held_out: list[Comparison], kept: list[Comparison] | None, prefill_errors: list[float]) -> list[str]:
    """What the fitted curves still miss, as Markdown lines (figures computed from the comparisons)."""
    longest = max(c.measurement.input_tokens for c in after)
    large = [c for c in after if c.measurement.batch >= 128]
    lines = [
        "What is left:",
        "",
        f"- The longest batches (prompt = output = {longest} tokens) are predicted {error_stats([c for c in after if c.measurement.input_tokens == longest])[2]:+.1f}%"
        f" on average, batches of 128-256 sequences with MAPE {error_stats(large)[0]:.1f}%: one curve per GPU cannot follow",
        "  every regime of a stack whose GEMMs run at a few percent of the datasheet peak.",
        f"- Prefill-only batches are over-predicted by {statistics.fmean(prefill_errors):+.0f}% (below): with prompt = output in every fitted",
        "  row, prefill and decode GEMMs are confounded in the fit, and the rows say decode steps of 16-256 tokens are relatively",
        "  slower than prefills on this stack, which a single saturating curve cannot express; TTFT on MI300X is pessimistic.",
    ]
    if kept is not None:
        lines.append(f"- The xGMI all-reduce is supported by the data, weakly: held out {error_stats(held_out)[0]:.1f}% with it, "
                     f"{error_stats(kept)[0]:.1f}% with the generic NVLink all-reduce kept (whose kernel latency then absorbs it).")
    return lines + [""]


def section(catalog, root: Path, *, variant: bool = True) -> tuple[str, KernelProfile, str]:
    """Fit, score and describe: section 1.8's Markdown body, the profile to ship, and its YAML header.

    ``variant``: also score the fit that keeps the generic all-reduce (seven more fits).
    """
    started = time.perf_counter()
    rows = [m for m in load_source("llm-inference-bench", catalog, root).rows if m.gpu == GPU and m.framework == FRAMEWORK]
    prefill_rows = load_llm_inference_bench_prefill(root, catalog).rows
    base = kernel_profile_for(catalog.gpus[GPU], load_kernel_profiles(), own=False)
    prepared = prepare_rows(rows, catalog)

    fit = fit_end_to_end(prepared, base)
    params = rounded(fit.params)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    shipped = end_to_end_profile(base, params, GPU, source=SOURCE, data_version=data_version(root), fitted_utc=stamp,
                                 fitted_on=["AMD MI300X GPU (LLM-Inference-Bench, vLLM)"], quality={})
    fitted = with_gpu_kernels(catalog, GPU, shipped)
    generic = with_gpu_kernels(catalog, GPU, base)
    before = latency(evaluate(rows, generic).comparisons)
    after = latency(evaluate(rows, fitted).comparisons)
    held = leave_one_llm_out(prepared, base, catalog, GPU)
    held_out = latency(held.comparisons)
    kept = leave_one_llm_out(prepared, base, catalog, GPU, all_reduce=False) if variant else None
    kept_fit = fit_end_to_end(prepared, base, all_reduce=False) if variant else None

    quality = {"end_to_end_batch_latency": batch_latency_quality(after)}
    profile = shipped.model_copy(update={"quality": quality})
    loo, ins = batch_latency_quality(held_out), quality["end_to_end_batch_latency"]
    header = (f"# Fitted end to end by benchmarks/fit_end_to_end.py --write on measured serving latencies, NOT on kernel tables; do not edit\n"
              f"# by hand. Fields: guide_opt/kernel_profile.py; method: guide_opt/validation/profile_fit.py. Starts from {base.id} (the curves\n"
              f"# MI300X had) and fits 6 numbers on {fit.rows} batch latencies of vLLM (ROCm) on MI300X, 7 LLMs, TP 1-8, batch 1-256.\n"
              f"# Held out (each LLM predicted by the fit on the other 6): MAPE {loo.mape_pct:.1f}%, bias {loo.bias_pct:+.1f}% (in-sample\n"
              f"# {ins.mape_pct:.1f}% / {ins.bias_pct:+.1f}%; generic curves {error_stats(before)[0]:.1f}% / {error_stats(before)[2]:+.1f}%). "
              "benchmarks/RESULTS.md section 1.8.\n"
              "# The fp8 curve was not measured: it is generic-nvlink's with the same compute scale, half tokens, HBM fraction and\n"
              "# kernel latency. The latencies include the launch cost of a 2024 ROCm vLLM without HIP graphs.\n")

    columns = {"before": before, "after": after, "held out": held_out}
    headers = ["", "measured / predicted before (median)", "before MAPE / bias %", "fitted in-sample MAPE / bias %",
               "leave one LLM out MAPE / bias %", "n"]
    regime = []
    for title, key in (("LLM", lambda m: m.llm), ("TP", lambda m: m.tp), ("batch", lambda m: m.batch), ("prompt = output tokens", lambda m: m.input_tokens)):
        regime += [f"By {title}:", "", md_table([title] + headers[1:], by_regime(columns, key)), ""]
    accuracy = [["generic-nvlink curves (before)", stats(before), str(len(before))],
                ["fitted on all rows (shipped, in-sample)", stats(after), str(len(after))],
                ["leave one LLM out (fit on the other 6 LLMs)", stats(held_out), str(len(held_out))]]
    if kept is not None:
        accuracy.append(["leave one LLM out, generic all-reduce kept (4 parameters)", stats(latency(kept.comparisons)), str(len(latency(kept.comparisons)))])
    prefill, slowdowns = [], []
    for c in latency(evaluate(prefill_rows, fitted).comparisons):
        m = c.measurement
        old = latency(evaluate([m], generic).comparisons)[0]
        if m.gpu == GPU:
            slowdowns.append(c.measured / old.predicted)
        prefill.append([m.llm, m.gpu, m.framework, f"{c.measured:.3f}", f"{old.predicted:.3f}" if m.gpu == GPU else "-", f"{c.predicted:.3f}",
                        f"{c.signed_error_percent:+.1f}"])
    prefill_slowdown = statistics.fmean(slowdowns)
    tp_batch: dict[tuple[int, int], list[Comparison]] = {}
    for c in after:
        tp_batch.setdefault((c.measurement.tp, c.measurement.batch), []).append(c)
    batches = sorted({b for _, b in tp_batch})
    grid = [[str(tp)] + [f"{error_stats(tp_batch[(tp, b)])[2]:+.1f}" if (tp, b) in tp_batch else "-" for b in batches]
            for tp in sorted({t for t, _ in tp_batch})]
    wall = time.perf_counter() - started
    host = catalog.frameworks[FRAMEWORK].efficiency
    out = [
        f"`python benchmarks/fit_end_to_end.py --write` ({cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}; "
        f"CPU only, {wall:.0f} s). MI300X has no kernel tables, so it used the NVIDIA-pooled `{base.id}` curves (77% of the",
        "bf16 datasheet peak at large GEMMs, 81.5% of HBM bandwidth) and was predicted about twice as fast as LLM-Inference-Bench",
        f"measured it. `hardware_db/kernels/{GPU}.yaml` now carries curves fitted end to end on its {len(rows)} vLLM (ROCm) batch latencies",
        "(7 LLMs, TP 1/2/4/8, batch 1-256, prompt = output = 128-2048 tokens; `guide_opt/validation/profile_fit.py`): six numbers",
        "changed on the generic curves, fitted through the step model with the `vllm` profile's default factors and host costs",
        f"({host.sequence_overhead_us:g} us per sequence, {host.tp_step_overhead_ms:g} ms per multi-GPU step, KV re-read exponent {host.gqa_kv_reread_exponent:g},",
        "fitted on A100/H100, section 1.7) by soft-L1 least squares on log errors. The "
        f"{sum(1 for r in prepared if r.wave_slowdown is not None)} batches the KV cache cannot hold at once are read as vLLM runs them,",
        "preempting by recompute (section 16): the simulated batch over the waves estimate, held at the curves the catalog",
        "carried when the fit started, so each fit depends a little on the curves before it (2026-12-04: four passes in a row",
        "moved no parameter by more than 1.5% from one pass to the next, and the errors below not at all).",
        "Held out: each LLM's rows predicted by the fit on the other six LLMs' rows. Default factors throughout; the",
        "NVIDIA GPUs' curves are untouched.",
        "",
        md_table(["batch latency", "MAPE / bias %", "n"], accuracy),
        "",
        "Fitted parameters (generic value, fit on all rows as shipped, range over the seven leave-one-LLM-out fits, and the fit",
        "with the generic all-reduce kept):",
        "",
        md_table(["parameter", "unit", "generic-nvlink", "fitted (shipped)", "leave-one-LLM-out range", "generic all-reduce kept"],
                 parameter_rows(base, params, {k: rounded(f.params) for k, f in held.fits.items()},
                                None if kept_fit is None else rounded(kept_fit.params))),
        "",
        "Where the gap was, before and after (the first column: measured / predicted batch latency with the generic curves):",
        "",
        *regime,
        "Bias (%) of the shipped curves by TP degree (rows) and batch (columns):",
        "",
        md_table(["TP"] + [f"batch {b}" for b in batches], grid),
        "",
        f"Predicted decode steps split by resource (prompt = output = {SPLIT_TOKENS} tokens; predicted ms per output token of the",
        "batch latency, prefill included = compute / memory incl. kernel latencies / all-reduces / host of one decode step at the",
        "mean context, ms):",
        "",
        md_table(["rows", "measured ms per token", f"{base.id} curves", "fitted curves"],
                 step_split_rows(rows, {"generic": generic, "fitted": fitted})),
        "",
        *diagnosis(params, base, catalog, rows, prefill_slowdown, before),
        *plan_lines({"generic": generic, "fitted": fitted}),
        *remaining_lines(after, held_out, None if kept is None else latency(kept.comparisons),
                         [c.signed_error_percent for c in latency(evaluate(prefill_rows, fitted).comparisons) if c.measurement.gpu == GPU]),
        "Prefill-only check, not fitted: LLM-Inference-Bench `Plots/Fig_21` batches of 16 prompts of 1024 tokens generating one",
        "token (latency = the whole prefill and one step; the NVIDIA rows check that reading of the column):",
        "",
        md_table(["LLM", "gpu", "engine", "measured s", "predicted s, generic curves", "predicted s", "error %"], prefill),
        "",
    ]
    return "\n".join(out), profile, header


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write hardware_db/kernels/{GPU}.yaml and replace section 1.8 of RESULTS.md")
    parser.add_argument("--skip-variant", action="store_true", help="leave out the variant that keeps the generic all-reduce (7 more fits)")
    args = parser.parse_args()
    text, profile, header = section(load_catalog(), default_data_dir(), variant=not args.skip_variant)
    print(HEADING + "\n\n" + text)
    if args.write:
        (data_dir("hardware_db") / "kernels" / f"{GPU}.yaml").write_text(header + yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, width=140))
        replace_results_subsection(SECTION, HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
