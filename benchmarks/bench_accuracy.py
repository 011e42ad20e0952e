"""Prediction accuracy of guide-opt against measured public data (RESULTS.md section 1).

Run from the repository root::

    python benchmarks/bench_accuracy.py            # print the section as Markdown
    python benchmarks/bench_accuracy.py --write    # also replace section 1 of benchmarks/RESULTS.md
    python benchmarks/bench_accuracy.py --llm-pilot-only --write   # only subsection 1.5 (LLM-Pilot's recommendation)
    python benchmarks/bench_accuracy.py --only 1.2,1.7   # just those subsections (printed, never written)

What it measures (no timing assertions; wall times are informative only):

1. LMDeploy TurboMind on A100-80G (Llama-2 7B/13B/70B) with the *default* efficiency factors
   of the ``tensorrt-llm`` profile (the profile chosen for TurboMind, see
   ``guide_opt/validation/datasets.py``), and, as a sensitivity check, the ``vllm`` profile.
2. Every source with the default factors, per source, GPU and metric (GUIDE Tables 1-2 form).
3. Calibration scored leave-one-LLM-out per source: factors fitted per (GPU, framework) on
   the other LLMs' rows of the same source, held-out rows predicted with them.
4. LLM-Pilot's recommendation benchmark (Eq. 1-7), calibrated on the other decoder-only LLMs.
5. The engines' host costs per step (section 1.7): fitted on LLM-Inference-Bench, scored
   leave-one-GPU-out and leave-one-LLM-out, and the batch-latency bias by batch and TP degree.
6. MI300X's curves fitted end to end on its LLM-Inference-Bench rows (section 1.8, by
   ``benchmarks/fit_end_to_end.py``; ``fit_end_to_end.py --write`` also ships them), scored
   in-sample and leave-one-LLM-out.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace

from bench_common import cpu_model, replace_results_section, replace_results_subsection  # noqa: E402
from guide_opt.catalog import load_catalog
from guide_opt.validation.accuracy import AccuracyRow, evaluate, measurement_config, summarize
from guide_opt.validation.calibration import leave_one_llm_out, prepare_rows
from guide_opt.validation.datasets import METRIC_LABELS, METRICS, SOURCES, default_data_dir, load_source
from guide_opt.validation.host_costs import fit_per_framework, fitted_rows, held_out_comparisons, residuals_by_exponent, shipped_differences
from guide_opt.validation.llm_pilot import run_benchmark, tgis_held_out_comparisons
from guide_opt.validation.pilot_predictors import DEFAULT_PREDICTOR, PREDICTOR_LABELS, PREDICTORS



def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def detail_rows(rows: list[AccuracyRow]) -> list[list[str]]:
    return [[r.source, r.gpu, METRIC_LABELS[r.metric], f"{r.mape:.1f}", f"{r.median_ape:.1f}", f"{r.bias:+.1f}", str(r.count)] for r in rows]


def guide_form(rows: list[AccuracyRow]) -> str:
    """GUIDE's Tables 1-2 layout: metric lines, one MAPE column per (source, GPU)."""
    cols = sorted({(r.source, r.gpu) for r in rows})
    cells = {(r.source, r.gpu, r.metric): r for r in rows}
    body = []
    for metric in METRICS:
        if any((s, g, metric) in cells for s, g in cols):
            body.append([METRIC_LABELS[metric]] + [f"{cells[(s, g, metric)].mape:.1f}" if (s, g, metric) in cells else "-" for s, g in cols])
    return md_table(["Error metric (MAPE %)"] + [f"{s}<br>{g}" for s, g in cols], body)


def _so_values(rows: list[list[str]]) -> list[float]:
    return [float(r[-1]) for r in rows if r[0].startswith("guide-opt")]


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _bench_a100_by_tp(comparisons, catalog) -> list[str]:
    """LLM-Inference-Bench A100 batch latency at default factors per TP degree and LLM size (a generated paragraph)."""
    groups: dict[tuple[int, bool], list] = {}
    for c in comparisons:
        m = c.measurement
        if c.metric == "batch_latency_s" and m.gpu.startswith("a100"):
            groups.setdefault((m.tp, catalog.llms[m.llm].total_params < 10e9), []).append(c)
    if not groups:
        return []
    parts = [f"{'<' if small else '>='} 10B params, TP {tp}: MAPE {statistics.fmean(c.ape_percent for c in cs):.1f}%, "
             f"bias {statistics.fmean(c.signed_error_percent for c in cs):+.1f}% (n {len(cs)})"
             for (tp, small), cs in sorted(groups.items(), key=lambda kv: (not kv[0][1], kv[0][0]))]
    gpu = next(iter(groups.values()))[0].measurement.gpu
    return [f"LLM-Inference-Bench on `{gpu}`, batch latency by LLM size and TP degree (default factors): " + "; ".join(parts) + ".",
            "TP > 1 steps carry the engines' host hand-off to the other ranks (`tp_step_overhead_ms`) and every step a host cost per",
            "running sequence (`sequence_overhead_us`), and a 16-bit grouped-query KV cache is read more than once per query group",
            "(`gqa_kv_reread_exponent`), all fitted on these rows (section 1.7, with held-out scores); without them the TP > 1 and",
            "large-batch rows were predicted 15-45% too fast.", ""]


def _tgis_host_held_out(rows, catalog) -> tuple[list[str], dict]:
    """Held-out scores of TGIS's fitted host costs (section 1.2.1's second table) and, per (GPU, metric), the rows of each column."""
    from guide_opt.validation import tgis_host

    profile = catalog.framework("tgis")
    shipped = profile.eager_launch
    in_sample = tgis_host.predict_rows(rows, catalog)
    columns = {
        "before": summarize(tgis_host.predict_rows(rows, catalog, tgis_host.TgisHostFit(0.0, 0.0, 0.0, 0.0, 1.0))),
        "in-sample": summarize(in_sample),
    }
    fits = {}
    for by in ("llm", "gpu"):
        comps, fits[by] = tgis_host.held_out(rows, catalog, by)
        columns[f"leave one {by.upper()} out"] = summarize(comps)
    cells = {(name, r.gpu, r.metric): r for name, rs in columns.items() for r in rs}
    table = []
    for gpu, metric in sorted({(r.gpu, r.metric) for r in columns["in-sample"]}):
        table.append([gpu, METRIC_LABELS[metric]] + [f"{cells[(n, gpu, metric)].mape:.1f} / {cells[(n, gpu, metric)].bias:+.1f}"
                                                     if (n, gpu, metric) in cells else "-" for n in columns] + [str(cells[("in-sample", gpu, metric)].count)])
    def efficiencies(shared: float, by_architecture) -> str:
        return f"{shared:.2f} ({', '.join(f'{a} {e:.2f}' for a, e in by_architecture)})"

    fit_table = [[f"{by} {group} left out", f"{f.launch_us:.1f}", f"{f.rank_sync_us:.1f}",
                  efficiencies(f.compute_efficiency, f.compute_efficiency_by_architecture),
                  f"{f.prefill_host_ms:.1f}", f"{f.sequence_host_ms:.2f}"]
                 for by, groups in fits.items() for group, f in groups.items()]
    from guide_opt.validation.tgis import PREFILL_HOST_MS, SEQUENCE_HOST_MS

    fit_table.insert(0, ["shipped (tgis.yaml eager_launch and compute_efficiency; tgis.py PREFILL_HOST_MS, SEQUENCE_HOST_MS)",
                         f"{shipped.launch_us:.1f}", f"{shipped.rank_sync_us:.1f}",
                         efficiencies(profile.efficiency.compute_efficiency,
                                      sorted((a, e.compute_efficiency) for a, e in profile.efficiency_by_architecture.items())),
                         f"{PREFILL_HOST_MS:.1f}",
                         f"{SEQUENCE_HOST_MS:.2f}"])
    lines = [
        "TGIS's host time, fitted and held out (`guide_opt/validation/tgis_host.py`; command: `python benchmarks/bench_accuracy.py",
        "--only 1.2`). TGIS runs eager PyTorch (no CUDA graphs): every pass launches its kernels from Python, so a pass takes",
        "max(GPU work, launch time), launch time = layers x (12 kernels x launch_us + [TP > 1] x 2 all-reduces x rank_sync_us),",
        "12 = the kernels of TGIS's flash Llama layer (`tgis.yaml` `eager_launch`, source cited there); the step model's host",
        "overhead adds outside the max. Then the profile's compute efficiency (the multiplier on the kernels' compute",
        "curves), a host time per prefill pass and one per running sequence per decode step. Every level is played with",
        "its own request lengths: log-normal around the row's mean and median input and output tokens, so users fall out",
        "of step and TGIS's add-on rule sets their wait. Fitted in stages on LLM-Pilot's rows only: launch and sync on the",
        "one-user median ITL (grid, mean |log error|); the compute efficiency on every level's median TTFT and median ITL",
        "(sum of the two mean |log errors|; grid 0.2-1, coarse 0.1 then fine 0.05), with at each value the prefill host",
        "time re-fitted as the median one-user (TTFT - predicted prefill pass at the median prompt); then each GPU",
        "architecture's own efficiency, fitted the same way on its rows alone; the per-sequence time",
        "on the loaded levels' median ITL (grid 0-1.5 ms). `before` = the batcher without any of them (compute efficiency",
        "1, no host time), `in-sample` = the shipped values (the",
        "`tgis` column above), then each LLM (GPU) predicted with every stage fitted on the others. MAPE / bias %:",
        "",
        md_table(["gpu", "metric"] + list(columns) + ["n"], table),
        "",
        md_table(["fit", "launch us / kernel", "sync us / all-reduce", "compute efficiency (by architecture)", "prefill host ms / pass",
                  "host ms / sequence / step"], fit_table),
        "",
        "Bias % of the shipped defaults (in-sample) by GPU, TP degree and users, TTFT / ITL (n rows in brackets):",
        "",
    ] + _bias_by_load(in_sample) + [
        "",
        "What is left (measured LLM-Pilot medians; IBM/text-generation-inference@9b4aea8 is the image LLM-Pilot ran):",
        "- One launch time for every host: the one-user ITL floors are about 0.31 ms per layer at TP > 1 on the H100",
        "  hosts and 0.44 on the A100 hosts (llama-7b: 10 vs 14 ms), and the one-user TTFT exceeds the prefill pass by",
        "  about 8 ms on the H100 hosts against 15-20 on the A100 hosts (llama-7b, llama-13b); the router's first message",
        "  (`median_ttft_incl_first_msg_ms - median_ttft_ms`: about 6 vs 12 ms) shows the same 2x in host speed. Engine",
        "  defaults cannot tell the hosts apart: H100 one-user TTFT comes out high, A100 TP > 1 one-user ITL low.",
        "- Multi-GPU PCIe rows (A100 40GB PCIe, A10, T4) at one user are slower than predicted by about 25-55 us per",
        "  all-reduce (median 42 us over the 17 rows; the H100 NVLink rows -21 to +1 us), whether launch- or GPU-bound",
        "  (A10, T4): the all-reduce itself (GPU time, not host launch) costs more on LLM-Pilot's PCIe hosts than the",
        "  generic PCIe curve (section 12.4) says; that is the GPU profiles' link model, not TGIS's.",
        "- H100 TTFT under load: measured, H100 is about 1.7-1.9x faster than the A100 in both TTFT and ITL (llama-7b,",
        "  32 users: 195 / 24 ms against 329 / 38 ms; llama-13b, 8 users: 93 / 18 against 170 / 32 ms), while the add-on",
        "  prefill passes are compute-bound, and even at the fitted compute efficiency predicted faster there. One",
        "  efficiency for every GPU leaves the H100's loaded TTFT low and its one-user TTFT high (the H100 hosts' faster host,",
        "  above); which part of TGIS's prefill is slow on H100 is not identified. With the same host cost per sequence",
        "  on every host, the H100's TP > 1 ITL under load comes out high.",
        "- The batch-limited padded LLMs (mpt-7b, codegen2-16B) keep large TTFT and ITL errors under load (the add-on",
        "  re-padding cost that the `tgis-kv` predictor fits is not among the defaults).",
        "",
    ]
    return lines, columns


#: User ranges of the bias-by-load table.
LOAD_BANDS = ((1, 1), (2, 8), (16, 128))


def _bias_by_load(comparisons) -> list[str]:
    """A Markdown table of the mean signed error of TTFT / ITL by (GPU, one or several GPUs) and band of users."""
    cells: dict[tuple, list[float]] = {}
    for c in comparisons:
        m = c.measurement
        band = next(b for b in LOAD_BANDS if b[0] <= m.batch <= b[1])
        cells.setdefault((m.gpu, "1" if m.tp == 1 else "2-4", band, c.metric), []).append(c.signed_error_percent)
    table = []
    for gpu, tp in sorted({k[:2] for k in cells}):
        row = [gpu, tp]
        for band in LOAD_BANDS:
            t, i = cells.get((gpu, tp, band, "ttft_ms"), []), cells.get((gpu, tp, band, "tpot_ms"), [])
            row.append(f"{statistics.fmean(t):+.0f} / {statistics.fmean(i):+.0f} ({len(t)})" if t and i else "-")
        table.append(row)
    return [md_table(["gpu", "TP", *(f"users {a}" if a == b else f"users {a}-{b}" for a, b in LOAD_BANDS)], table)]


def _steady_state_section(sources: dict, catalog, data_dir) -> tuple[list[str], list]:
    """Section 1.2.1: closed-loop rows predicted as a static batch of u, as a steady-state closed loop and by TGIS's batching rule.

    Also returns the ``tgis`` column's summary rows (section 1.4 scores LLM-Pilot with them).
    """
    held_out, _fits = tgis_held_out_comparisons(data_dir, catalog)
    fitted = {(r.gpu, r.metric): r for r in summarize(held_out)}
    table, tgis_rows, host_lines = [], [], []
    for name, data in sources.items():
        closed = [m for m in data.rows if m.closed_loop]
        if not closed:
            continue
        static = summarize(evaluate(closed, catalog).comparisons)
        steady = summarize(evaluate(closed, catalog, serving="steady_state", closed_loop_framework="tgis").comparisons)
        batcher = summarize(evaluate(closed, catalog, serving="tgis", closed_loop_framework="tgis").comparisons)
        if name == "llm-pilot":
            host_lines, host_columns = _tgis_host_held_out(closed, catalog)
            before = {(r.gpu, r.metric): r for r in host_columns["before"]}
        for a, b, c in zip(static, steady, batcher):
            if a.metric not in ("ttft_ms", "tpot_ms"):
                continue
            tgis_rows.append(c)
            met = "-" if not a.gpu.startswith(("a100", "h100")) else ", ".join(
                label for label, r in (("static", a), ("steady", b), ("tgis", c)) if r.mape <= 25) or "none"
            f = fitted.get((a.gpu, a.metric)) if name == "llm-pilot" else None
            o = before.get((a.gpu, a.metric)) if name == "llm-pilot" else None
            table.append([name, a.gpu, METRIC_LABELS[a.metric], f"{a.mape:.1f}", f"{a.bias:+.1f}", f"{b.mape:.1f}", f"{b.bias:+.1f}",
                          f"{o.mape:.1f} / {o.bias:+.1f}" if o else "-", f"{c.mape:.1f}", f"{c.bias:+.1f}", met, str(c.count),
                          f"{f.mape:.1f} / {f.bias:+.1f}" if f else "-"])
    if not table:
        return [], []

    def bias_range(column: int, metric: str) -> str:
        biases = [float(r[column]) for r in table if r[2] == METRIC_LABELS[metric]]
        return f"{min(biases):+.0f}% to {max(biases):+.0f}%"

    return [
        "#### 1.2.1 Closed-loop rows: static batch vs steady-state serving model vs TGIS's batching rule (default factors)",
        "",
        "LLM-Pilot measured TGIS under a closed loop of u users (zero think time); it reports median TTFT and median ITL.",
        "`static`: the `vllm` profile, a batch of u prompts arriving at once, TTFT = the batch's mean TTFT, ITL = the batch",
        "cycle time per output token (1.2 above). `steady`: `guide_opt.perf.steady_state.closed_loop` with u users,",
        "max-num-seqs u and the row's mean lengths on the `tgis` profile (`hardware_db/frameworks/tgis.yaml`, default",
        "factors); predicted median TTFT and median ITL. `tgis`: the same profile, request lengths log-normal around the",
        "row's mean and median input and output tokens, TGIS's own batching played step by step",
        "(`guide_opt/validation/tgis.py`: a prefill pass of its own for each add-on batch, pulled only once",
        "max(1, b (12 - w) / 12) requests wait, 12 = fmperf's max_waiting_tokens; batch limit 256, 12 for padded LLMs) with",
        "TGIS's defaults (the eager launch floor, the profile's compute efficiency and the host time per prefill pass and",
        "per running sequence, fitted on these rows: second table, with held-out scores); `tgis before`: the same batcher",
        "without them (compute efficiency 1, no host time). Medians over 80 or more requests. `guide-opt validate --source llm-pilot --serving",
        "static|steady-state|tgis` prints each. Static-batch sources are predicted statically in every column.",
        "Target: TTFT and ITL MAPE <= 25% on A100 and H100 with default factors (column `<= 25%`: which models meet it).",
        "Last column, not default factors: the `tgis` model with its memory efficiency, step overhead and host costs fitted",
        "per GPU type on the *other* decoder-only LLMs (`guide_opt.validation.llm_pilot.tgis_held_out_comparisons`, the",
        "fit of the `tgis` recommendation predictor), each LLM's rows predicted with the fit that never saw them.",
        "",
        md_table(["source", "gpu", "metric", "static MAPE %", "static bias %", "steady MAPE %", "steady bias %", "tgis before: MAPE / bias %",
                  "tgis MAPE %", "tgis bias %", "<= 25%", "n", "tgis fitted LOO: MAPE / bias %"], table),
        "",
        f"Bias ranges over GPUs: steady TTFT {bias_range(6, 'ttft_ms')}, ITL {bias_range(6, 'tpot_ms')}; tgis TTFT "
        f"{bias_range(9, 'ttft_ms')}, ITL {bias_range(9, 'tpot_ms')}.",
        "",
    ] + host_lines, tgis_rows


LLM_PILOT_HEADING = "### 1.5 LLM-Pilot GPU recommendation benchmark"


def _first_violation(levels: dict, failed: dict, model: str, profile: str) -> str:
    """Which limit the measured levels break first (the level after u_max), and that level's failed requests."""
    from guide_opt.validation.llm_pilot import ITL_LIMIT_MS, NTTFT_LIMIT_MS_PER_TOKEN, USER_LEVELS

    for users in USER_LEVELS:
        if users not in levels:
            return "not measured beyond"
        nttft, itl = levels[users]
        broken = [f"nTTFT {nttft:.0f}"] if nttft > NTTFT_LIMIT_MS_PER_TOKEN else []
        broken += [f"ITL {itl:.0f}"] if itl > ITL_LIMIT_MS else []
        if broken:
            share = failed.get((model, profile, users), 0.0)
            return f"{' and '.join(broken)} at u={users}" + (f" ({share:.0%} failed)" if share > 0.01 else "")
    return "none up to 128"


def _with_pods(users: int | None) -> str:
    """``u_max (pods)``: a per-pod user limit and the pods LLM-Pilot's rule then deploys for U users; "-" when not predicted."""
    from guide_opt.validation.llm_pilot import pods_needed

    if users is None:
        return "-"
    pods = pods_needed(users)
    return f"{users} ({pods if pods is not None else '-'})"


def _miss_levels(details, points: dict, failed: dict, prices: dict, name: str) -> list[list[str]]:
    """Per level, predicted / measured median ITL of predictor ``name`` on the profiles of each LLM it did not get right.

    The profiles shown: its pick and the truly cheapest one. A measured level with more than 1%
    failed requests is marked with its share (its medians are those of the surviving requests).
    """
    from guide_opt.validation.llm_pilot import USER_LEVELS, outcome

    rows = []
    for model, rec in details.predicted.get(name, {}).items():
        truth = details.truth[model]
        o = outcome(model, rec.choice, truth, prices)
        if o.success and not o.overspend:
            continue
        for profile in dict.fromkeys(c.profile for c in (rec.choice, truth.best) if c is not None):
            levels, measured = rec.levels.get(profile, {}), points[model].get(profile, {})
            cells = []
            for users in USER_LEVELS:
                if users in levels and users in measured:
                    share = failed.get((model, profile, users), 0.0)
                    cells.append(f"{users}: {levels[users][1]:.0f} / {measured[users][1]:.0f}" + (f" ({share:.0%} failed)" if share > 0.01 else ""))
            rows.append([model, profile, _with_pods(rec.predicted_u_max.get(profile)), _with_pods(truth.u_max_by_profile.get(profile)),
                         "; ".join(cells)])
    return rows


def _failing_levels_line(points: dict, failed: dict, models: list[str]) -> list[str]:
    """A paragraph: the measured levels of ``models`` where more than 10% of requests failed, and which of them meet both limits."""
    from guide_opt.validation.llm_pilot import ITL_LIMIT_MS, NTTFT_LIMIT_MS_PER_TOKEN

    heavy = [(m, p, u) for (m, p, u), share in sorted(failed.items()) if m in models and share > 0.10 and u in points[m].get(p, {})]
    passing = [(m, p, u) for m, p, u in heavy if points[m][p][u][0] <= NTTFT_LIMIT_MS_PER_TOKEN and points[m][p][u][1] <= ITL_LIMIT_MS]
    pairs = dict.fromkeys((m, p) for m, p, _u in passing)
    where = "; ".join(f"{m} on {p}, whose levels above 10% failed read " + ", ".join(
        f"u = {u}: {failed[(m2, p2, u)]:.0%} failed, ITL {points[m][p][u][1]:.0f} ms" for m2, p2, u in heavy if (m2, p2) == (m, p))
        for m, p in pairs)
    return [f"Of the {len(heavy)} measured levels of these LLMs where more than 10% of the requests failed, {len(passing)} meet both",
            f"limits{', all of one (LLM, profile)' if len(pairs) == 1 else ''}: {where or 'none'}. A fold without that LLM sees only",
            "failing levels that break a limit, so no rule fitted or chosen on the training LLMs alone says such a level can",
            "pass. Nor does a memory capacity explain the pattern: a cap on the running batch at what memory holds would keep",
            "the ITL near its value at the cap at every load above it, 128 users included, where the measured ITL rises again.", ""]


def reliable_lines(details, n: int) -> list[str]:
    """The reliable-levels reading of 1.5: the same recommendations, a level with too many failed requests failing."""
    from guide_opt.validation.llm_pilot import RELIABLE_MAX_FAILED_FRACTION

    rows = [[PREDICTOR_LABELS.get(name) or f"static policy 4 x (1 x A100), same {n} LLMs", pct(s.success_rate), pct(s.mean_overspend),
             f"{s.so_score:.3f}"] for name, s in details.reliable.items()]
    return [
        f"Reliable-levels reading (the same recommendations, candidates measured): Eq. (3) reads the medians of the requests that",
        "completed, so a level where most requests failed passes when its survivors were fast -- llama-13b on 1 x A100 passes",
        "32 and 64 users with 49% and 80% of its requests failed (status 408; the survivors are the short ones: median 15",
        f"input tokens at 64 users against 85). Here a level with more than {RELIABLE_MAX_FAILED_FRACTION:.0%} failed requests misses the SLOs",
        "(`RELIABLE_MAX_FAILED_FRACTION`; `validate --llm-pilot` prints this table under the paper's):",
        "",
        md_table(["method", "success", "mean overspend", "S/O"], rows),
        "",
    ]


def llm_pilot_section(catalog, data_dir, predictors: tuple[str, ...] = PREDICTORS) -> tuple[list[str], list[list[str]], object, int]:
    """Section 1.5 (Markdown lines) with ``predictors``, its method table, the static policy's score on the same LLMs and their count."""
    from guide_opt.validation.llm_pilot import load_failed_fractions, load_points, load_prices, nested_margin_recommendations, outcome, score

    variants = [("measured", True), ("all", True), ("measured", False)]
    rec_table, details = [], None
    for candidates, closed_loop in variants:
        first = details is None
        res = run_benchmark(data_dir, catalog, candidates=candidates, closed_loop=closed_loop, predictors=predictors if first else ())
        itl = "cycle time / token" if closed_loop else "decode step (TPOT)"
        for name, s in res.predictors.items():
            rec_table.append([PREDICTOR_LABELS[name], candidates, "simulated" if name != "learned" else "-", pct(s.success_rate),
                              pct(s.mean_overspend), f"{s.so_score:.3f}"])
        for label, s in (("static estimator (vllm profile), calibrated (leave-one-LLM-out)", res.calibrated),
                         ("static estimator (vllm profile), default factors", res.default)):
            rec_table.append([label, candidates, itl, pct(s.success_rate), pct(s.mean_overspend), f"{s.so_score:.3f}"])
        if details is None:
            details, static_all, static_dec = res, res.static_policy_all, res.static_policy_decoder_only
    margin_line = []
    if DEFAULT_PREDICTOR in details.predicted:  # the safety rule tried on the default predictor, chosen without the held-out LLM
        outer, prices = details.predicted[DEFAULT_PREDICTOR], load_prices(data_dir)
        margin = nested_margin_recommendations(DEFAULT_PREDICTOR, data_dir, catalog, list(outer), details.truth, prices, "measured", outer)
        ms = score([outcome(m, choice, details.truth[m], prices) for m, (_scale, choice) in margin.items()])
        rec_table.insert(len(details.predictors), [f"{DEFAULT_PREDICTOR}, ITL safety scale chosen by nested leave-one-LLM-out", "measured",
                                                   "simulated", pct(ms.success_rate), pct(ms.mean_overspend), f"{ms.so_score:.3f}"])
        margin_line = [
            f"Safety rule tried on `{DEFAULT_PREDICTOR}` (the `ITL safety scale` row): its predicted ITL is multiplied by a scale from",
            "0.8 to 1.2 chosen, per held-out LLM, by the best S/O of the training LLMs' own leave-one-out recommendations (each",
            "predicted by a fit on the other training LLMs, lengths included; `nested_margin_recommendations` in",
            "`guide_opt/validation/llm_pilot.py`). Scales chosen: "
            + ", ".join(f"{m} {scale:g}" for m, (scale, _c) in margin.items())
            + ". Picks: " + ", ".join(f"{m} {c.pods} x ({c.profile})" if c else f"{m} -" for m, (_s, c) in margin.items()) + ".",
            "",
        ]
    n = len(details.calibrated.outcomes)
    rec_table += [
        [f"static policy 4 x (1 x A100), same {n} LLMs", "-", "-", pct(static_dec.success_rate), pct(static_dec.mean_overspend), f"{static_dec.so_score:.3f}"],
        ["static policy 4 x (1 x A100), all 10 LLMs (our ground truth)", "-", "-", pct(static_all.success_rate), pct(static_all.mean_overspend), f"{static_all.so_score:.3f}"],
        ["paper: LLM-Pilot (XGBoost, 10 LLMs)", "-", "-", "80%", "< 20%", "-"],
        ["paper: best static policy (10 LLMs)", "-", "-", "50%", "-", "0.65"],
    ]
    out = [
        LLM_PILOT_HEADING,
        "",
        "`guide-opt validate --llm-pilot` (JSON: `--format json`; `--candidates all` for the second line). U = 200 users,",
        "median nTTFT <= 100 ms/token and median ITL <= 50 ms, u in {1, 2, ..., 128}, pods = ceil(U / u_max), AWS prices of",
        "`llm_pilot/prices.csv`. Ground truth derived from `llm_pilot_aggregate.csv` with the same rule",
        "(`llm_pilot_recommendation_groundtruth.csv` is not in validation_data); it reproduces the paper's best static policy",
        f"(S/O {static_all.so_score:.4f}). Scored: the {n} decoder-only LLMs guide-opt models (the 4 T5-family LLMs are",
        "encoder-decoder, out of scope). Predictions: static estimator, batch = u, the training LLMs' mean lengths",
        f"(about {details.workloads[next(iter(details.workloads))].input_tokens} in / "
        f"{details.workloads[next(iter(details.workloads))].output_tokens} out tokens), TGIS as the `vllm` profile, factors",
        "fitted per GPU type on the other decoder-only LLMs' TTFT and ITL. `candidates measured`: the profiles LLM-Pilot",
        "measured for that LLM; `all`: every priced profile (an unmeasured pick counts as a failure). The ITL reading",
        "`cycle time / token` (batch latency / output tokens) is the default; `decode step` is shown for comparison.",
        "",
        md_table(["method", "candidates", "ITL read as", "success", "mean overspend", "S/O"], rec_table),
        "",
        *reliable_lines(details, n),
        "Predictors of u_max (`--predictor physics|learned|hybrid|tgis|tgis-hybrid|tgis-kv`, candidates measured; see",
        "`guide_opt/validation/pilot_predictors.py`): physics simulates a closed loop of u users on the `tgis` profile",
        "(whole-prompt prefill, 4096-token prefill limit, batch limit 12 for LLMs served without flash attention) with",
        "efficiencies chosen per GPU type from a 27-point grid on the other decoder-only LLMs; learned is the paper's method",
        "(scikit-learn HistGradientBoosting on llm_features / gpu_features / users, trained on the other 9 LLMs);",
        "hybrid multiplies the physics prediction by a learned residual. tgis plays TGIS's own batching step by step",
        "(`guide_opt/validation/tgis.py`: add-on prefill passes pulled once max(1, b (12 - w) / 12) requests wait) with the",
        "memory efficiency, step overhead and host costs (per prefill pass, per running sequence per step) fitted per GPU",
        "type on the other decoder-only LLMs; tgis-hybrid multiplies it by a learned residual. tgis-kv plays",
        "the same batcher with what the measured levels show `tgis` lacks: a step overhead per pod size (TGIS's shard",
        "processes: about 2-3 ms at 1 GPU, 4-6 ms at 2 and 8-10 ms at 4, where `tgis` has one value per GPU type), a host",
        "cost per running sequence per pod size and one per GiB of KV cache the step holds on a GPU (the ITL grows with",
        "load far more for LLMs with a large KV cache: llama-13b's 0.8 MB per token against starcoder's multi-query 20 kB),",
        "fitted by linearized non-negative least squares on the relative ITL error of the training LLMs' levels with at",
        "most 1% failed requests and ITL <= 75 ms (a level where requests failed for lack of memory reports the survivors'",
        "medians), and an add-on cost for padded deployments (LLMs served without flash attention: TGIS re-pads the running",
        "batch to merge an add-on into it) fitted on the other padded LLMs' nTTFT. Every fold of every simulating",
        "predictor simulates request lengths from its training LLMs' rows only: a user planning a new LLM has none of its",
        "measurements, its request lengths included (physics and hybrid read every LLM's lengths, the held-out one's too,",
        "until this measurement: they scored 50.0% / 57.1% / 0.462 and 83.3% / 62.1% / 0.521 with them).",
        f"`validate --llm-pilot` uses `{DEFAULT_PREDICTOR}` unless told otherwise: the best S/O of this table. With six",
        "LLMs one recommendation moves S/O by up to 0.2, and the ranking of the TGIS predictors moved when their workload",
        "stopped including the held-out LLM's lengths: read it as a comparison on six LLMs, not a general ranking.",
        "",
        *margin_line,
        "Per LLM (candidates measured, default ITL reading):",
        "",
    ]
    per = []
    for name, score in [*details.predictors.items(), ("static estimator, calibrated", details.calibrated)]:
        for o in score.outcomes:
            rec, best = o.choice, details.truth[o.model].best
            per.append([name, o.model, f"{rec.pods} x ({rec.profile})" if rec else "-", f"{rec.cost_usd_per_hour:.2f}" if rec else "-",
                        f"{best.pods} x ({best.profile})" if best else "-", f"{best.cost_usd_per_hour:.2f}" if best else "-",
                        "yes" if o.success else "no", pct(o.overspend)])
    out += [md_table(["method", "LLM", "recommended", "$/h", "truly cheapest", "$/h", "success", "overspend"], per), ""]
    points, failed = load_points(data_dir), load_failed_fractions(data_dir)
    shown = [name for name in ("learned", "tgis", "tgis-hybrid", "tgis-kv") if name in details.predicted]
    rows = []
    for model, truth in details.truth.items():
        if model not in details.predicted.get(shown[0], {}):
            continue
        for profile, true_u in sorted(truth.u_max_by_profile.items()):
            rows.append([_with_pods(true_u), _first_violation(points[model][profile], failed, model, profile)]
                        + [_with_pods(details.predicted[name][model].predicted_u_max.get(profile)) for name in shown])
            rows[-1][:0] = [model, profile]
    accuracy = []
    for name, recs in details.predicted.items():
        itl_errors, nttft_errors = [], []
        for model, rec in recs.items():
            for profile, levels in rec.levels.items():
                for users, (nttft, itl) in levels.items():
                    measured = points[model][profile].get(users)
                    if measured is None or failed.get((model, profile, users), 0.0) > 0.01 or not math.isfinite(itl):
                        continue
                    itl_errors.append(abs(itl / measured[1] - 1) * 100)
                    nttft_errors.append(abs(nttft / measured[0] - 1) * 100)
        if itl_errors:
            accuracy.append([name, f"{statistics.median(itl_errors):.1f}", f"{statistics.fmean(itl_errors):.1f}",
                             f"{statistics.median(nttft_errors):.1f}", str(len(itl_errors))])
    out += ["Held-out accuracy of each predictor's levels (every measured level of the candidate profiles with at most 1%",
            "failed requests, each LLM predicted by the fold that left it out; APE %):", "",
            md_table(["predictor", "ITL median APE", "ITL mean APE", "nTTFT median APE", "levels"], accuracy), ""]
    out += [
        "Where the TGIS predictors miss, and why (read with the table below). ITL is the limit that binds almost everywhere;",
        "nTTFT binds only for the padded, batch-limited deployments (mpt-7b-instruct2 on 1 x A100; codegen2-16B on",
        "1 x H100, 99 ms/token at u = 64). `tgis` keeps one step overhead per GPU type, but TGIS's per-step cost grows",
        "with the pod size, so it can over-predict the one-user ITL on one GPU (starcoder on 1 x A100 read u_max 16 for",
        "32 before the step model counted elementwise kernels); its per-sequence cost cannot make llama-7b's ITL on 4 x T4 grow as measured (55 ms at u = 32), so it",
        "picks 7 x (4 x T4) where 4 x T4 holds 16 users. 4 x T4 serves llama-7b with no level above 1% failed requests",
        "(`llm_pilot_capacity_limits.csv`): memory and TGIS's batch-weight limit do not bind there, the ITL growth does.",
        "`tgis-kv`'s remaining overspend is llama-13b on 1 x A100, whose measured u_max of 64 comes from levels where 49%",
        "(u = 32) and 80% (u = 64) of the requests failed with CUDA out-of-memory errors; their medians are those of the",
        "short survivors (mean 6.0 and 1.8 output tokens). The batcher predicts the whole 32-user batch running, over the",
        "ITL limit. It does not model TGIS's out-of-memory failures, and fits only levels where at most 1% of requests",
        "failed.",
        "",
        *_failing_levels_line(points, failed, list(details.predicted[shown[0]]) if shown else []),
    ]
    misses = _miss_levels(details, points, failed, load_prices(data_dir), DEFAULT_PREDICTOR)
    if misses:
        out += [f"Where `{DEFAULT_PREDICTOR}` does not pick the truly cheapest deployment: its pick's and the truly cheapest",
                "profile's u_max (pods for 200 users), predicted and measured, and the median ITL per level, predicted / measured",
                "(ms):", "",
                md_table(["LLM", "profile", f"{DEFAULT_PREDICTOR} u_max (pods)", "true u_max (pods)", "ITL predicted / measured"], misses), ""]
    out += ["Predicted u_max per (LLM, profile), with the pods it gives for 200 users, beside the measured one and the limit",
            "the measured levels break first (the level after u_max; its share of failed requests when above 1%: those levels",
            "report the medians of the requests that survived an out-of-memory error):", "",
            md_table(["LLM", "profile", "true u_max (pods)", "first measured violation", *(f"{name} u_max (pods)" for name in shown)], rows), ""]
    return out, rec_table, static_dec, n


#: Subsections --only can pick; 1.4 needs 1.2 and 1.3, 1.6 needs all the others.
def lmdeploy_first_token_table(rows: list, catalog) -> list[str]:
    """TTFT of LMDeploy's rows under TurboMind's first-token rule, with and without the wait for cache blocks, and read as one
    sequentially prefilled batch, split by whether the benchmark's KV cache holds the batch to its last token."""
    from guide_opt.validation import turbomind
    from guide_opt.validation.accuracy import Comparison
    from guide_opt.validation.datasets import SEQUENTIAL_PREFILL

    def holds(m) -> bool:
        config = measurement_config(m, catalog)
        return m.batch * turbomind.blocks_to_finish(config) <= turbomind.cache_blocks_of(config)

    def rounds_only(subset) -> list:
        return [Comparison(m, "ttft_ms", turbomind.first_token_latency_s(measurement_config(m, catalog), cache_block_wait_s=0.0) * 1e3,
                           m.measured["ttft_ms"]) for m in subset]

    def ttft(subset) -> list:
        return [c for c in evaluate(subset, catalog).comparisons if c.metric == "ttft_ms"]

    rows = [m for m in rows if "ttft_ms" in m.measured]
    table = []
    for label, subset in (("all", rows), ("KV cache holds the batch to its last token", [m for m in rows if holds(m)]),
                          ("KV cache does not", [m for m in rows if not holds(m)])):
        readings = (("TurboMind's rule + wait for cache blocks (primary)", ttft(subset)), ("TurboMind's rule, no wait", rounds_only(subset)),
                    ("one batch, prompts prefilled in turn", ttft([replace(m, first_token_rule=SEQUENTIAL_PREFILL) for m in subset])))
        for reading, comparisons in readings:
            for r in summarize(comparisons):
                table.append([label, reading, f"{r.mape:.1f}", f"{r.bias:+.1f}", str(r.count)])
    return ["TTFT by first-token reading (tensorrt-llm profile). The benchmark's engines had a fixed KV cache (`cache_max_entry_count`",
            "1000 / 500 / 4000 blocks of 128 tokens for 7B / 13B / 70B, `benchmark/benchmark_*.sh`); where it cannot hold every",
            "sequence to its last token, TurboMind v0.1 gives blocks in arrival order and preempts the newest, and later requests",
            "wait for blocks. That wait is simulated (`guide_opt/validation/turbomind.py`, `block_wait_s`: the harness's closed loop on",
            "the engine simulator with the cache's blocks, less the same loop with a block for every token); it is zero where the",
            "cache holds the batch:", "",
            md_table(["rows", "first token", "MAPE %", "bias %", "n"], table), ""]


SECTIONS = ("1.1", "1.2", "1.3", "1.5", "1.7", "1.8")


#: Metrics compared for report only (1.2): LLM-Inference-Bench's throughput is its latency again, LLM-Pilot's includes client time.
REPORT_ONLY = {("llm-inference-bench", "throughput_tokens_per_s"), ("llm-pilot", "throughput_tokens_per_s")}


def _host_cost_section(catalog, data_dir) -> list[str]:
    """Section 1.7: the host costs per step fitted on LLM-Inference-Bench, held out by GPU and by LLM, and the bias by regime."""
    data = load_source("llm-inference-bench", catalog, data_dir)
    rows = fitted_rows(data.rows)
    residuals = residuals_by_exponent(rows, catalog)  # shared by the fit and both held-out splits
    fits = fit_per_framework(rows, catalog, residuals)

    def shipped(f: str) -> str:
        e = catalog.frameworks[f].efficiency
        return f"{e.sequence_overhead_us:g} / {e.tp_step_overhead_ms:g} / {e.gqa_kv_reread_exponent:g}"

    names = {"sequence_overhead_us": "us per sequence", "tp_step_overhead_ms": "ms per multi-GPU step", "gqa_kv_reread_exponent": "KV re-read exponent"}
    stale = shipped_differences(catalog, fits)
    shipped_text = ("The shipped profiles carry the fit on all rows, rounded (last column)." if not stale else
                    "The shipped profiles (last column) differ from the fit on all rows: "
                    + "; ".join(f"{f} " + ", ".join(f"{names[n]} {s:g} against {v:.3g}" for n, s, v in found) for f, found in stale.items())
                    + ". They were fitted on the kernel curves before their last refit (section 12) and are kept until they are refitted"
                    " together with the defaults fitted through them (MI300X's end-to-end curves, section 1.8).")
    fit_table = [[f, "all rows", f"{c.sequence_overhead_us:.1f}", f"{c.tp_step_overhead_ms:.2f}", f"{c.gqa_kv_reread_exponent:g}", str(c.rows),
                  shipped(f)] for f, c in fits.items()]
    scores = []
    for key in ("gpu", "llm"):
        comps, held_fits = held_out_comparisons(rows, catalog, key, residuals)
        if key == "gpu":
            for value, per in held_fits.items():
                fit_table += [[f, f"without {value}", f"{c.sequence_overhead_us:.1f}", f"{c.tp_step_overhead_ms:.2f}",
                               f"{c.gqa_kv_reread_exponent:g}", str(c.rows), "-"] for f, c in per.items()]
        else:
            exponents = sorted({c.gqa_kv_reread_exponent for per in held_fits.values() for c in per.values()})
            llm_exponents = f"{exponents[0]:g}-{exponents[-1]:g}" if len(exponents) > 1 else f"{exponents[0]:g}"
        for r in summarize([c for c in comps if c.metric == "batch_latency_s"]):
            scores.append([f"leave one {key.upper() if key == 'llm' else 'GPU'} out", r.gpu, f"{r.mape:.1f}", f"{r.bias:+.1f}", str(r.count)])
    default = evaluate(rows, catalog).comparisons
    for r in summarize([c for c in default if c.metric == "batch_latency_s"]):
        scores.append(["shipped defaults (in-sample)", r.gpu, f"{r.mape:.1f}", f"{r.bias:+.1f}", str(r.count)])
    regime: dict[tuple[str, str, int, int], list[float]] = {}
    for c in default:
        if c.metric == "batch_latency_s":
            m = c.measurement
            regime.setdefault((m.gpu, m.framework, m.tp, m.batch), []).append(c.signed_error_percent)
    batches = sorted({k[3] for k in regime})
    regime_table = [[g, f, str(tp)] + [f"{statistics.fmean(regime[(g, f, tp, b)]):+.1f}" if (g, f, tp, b) in regime else "-" for b in batches]
                    for g, f, tp in sorted({k[:3] for k in regime})]
    return [
        "### 1.7 Host costs per step: fitted, held out, and the bias by regime",
        "",
        "Decode steps of the LLM-Inference-Bench rows (A100 40GB SXM and H100 SXM, vLLM and TensorRT-LLM, batch 1-64, TP 1-4)",
        "take longer than the kernels account for, by an amount that grows with the running sequences and appears at TP > 1",
        "already at batch 1: host work (scheduler, per-request input tensors, sampling, detokenization; handing each step to",
        "the other ranks). On grouped-query LLMs it grows with the context as well, and not on Llama-2-7B (one query head per",
        "KV head): both engines' 2024 decode kernels loaded a shared KV head more than once per query group. `guide_opt.validation.host_costs`",
        "fits it per engine: the rows are predicted with the host costs at zero and a KV re-read exponent x (a 16-bit cache read",
        "(query heads per KV head) ** x times per step), the measured excess per decode step ((measured - predicted batch",
        "latency) / (output tokens - 1)) of every resident batch is fitted as `batch x us + [TP > 1] x ms` by soft-L1 least",
        f"squares, and the x of 0, 1/8, ..., 1 whose fit has the lowest loss is kept. {shipped_text}",
        "Held out: each GPU (or LLM) predicted with the costs and exponent fitted on the others",
        f"(without any one LLM the exponent comes out {llm_exponents}).",
        "",
        md_table(["engine", "fitted on", "us per sequence per step", "ms per multi-GPU step", "KV re-read exponent", "rows",
                  "shipped (us / ms / exponent)"], fit_table),
        "",
        md_table(["batch latency", "gpu", "MAPE %", "bias %", "n"], scores),
        "",
        "Batch-latency bias (%) of the shipped defaults by GPU, engine, TP degree (rows) and batch (columns):",
        "",
        md_table(["gpu", "engine", "TP"] + [f"batch {b}" for b in batches], regime_table),
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace section 1 of benchmarks/RESULTS.md")
    parser.add_argument("--llm-pilot-only", action="store_true",
                        help="measure only section 1.5 (LLM-Pilot's recommendation benchmark); with --write replace only that subsection")
    parser.add_argument("--predictors", default=",".join(PREDICTORS),
                        help="with --llm-pilot-only: comma-separated u_max predictors to run (default: all; physics and hybrid take longest)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated subsections to compute ({', '.join(SECTIONS)}; default all). 1.4 is added when 1.2 and 1.3 "
                             "are, 1.6 when all are. Not with --write (section 1 is replaced whole)")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown subsection(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.write and wanted != set(SECTIONS):
        parser.error("--write replaces the whole of section 1: run it without --only")
    catalog, data_dir = load_catalog(), default_data_dir()
    if args.llm_pilot_only:
        started = time.perf_counter()
        chosen = tuple(name for name in args.predictors.split(",") if name)
        unknown = sorted(set(chosen) - set(PREDICTORS))
        if unknown:
            parser.error(f"--predictors: unknown {', '.join(unknown)} (choose from {', '.join(PREDICTORS)})")
        section = llm_pilot_section(catalog, data_dir, chosen)[0]
        flag = "" if chosen == PREDICTORS else f" --predictors {','.join(chosen)}"
        section += [f"Produced by `python benchmarks/bench_accuracy.py --llm-pilot-only{flag} --write` ({cpu_model()}, {os.cpu_count()} "
                    f"logical CPUs, Python {platform.python_version()}; CPU only) in {time.perf_counter() - started:.0f} s.", ""]
        text = "\n".join(section)
        print(text)
        if args.write:
            heading, body = text.split("\n", 1)
            replace_results_subsection("## 1. Prediction accuracy", heading, body)
        return 0
    out: list[str] = ["## 1. Prediction accuracy", ""]
    started = time.perf_counter()
    machine = f"{cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
    out += [
        "Produced by `python benchmarks/bench_accuracy.py --write` (machine: " + machine + "; CPU only, no GPU involved).",
        "Data: `validation_data/` (see its README and SCHEMA files). Errors are (predicted - measured) / measured:",
        "MAPE = mean |error|, median APE, bias = mean signed error (positive: guide-opt predicts too high), n = compared",
        "(row, metric) pairs. Default efficiency factors are the documented, unfitted values of `hardware_db/frameworks/*.yaml`.",
        "",
    ]

    # ---- 1.1 LMDeploy, default factors -------------------------------------------------------
    if "1.1" in wanted:
        lmdeploy = load_source("lmdeploy", catalog, data_dir)
        primary = evaluate(lmdeploy.rows, catalog)
        vllm_rows = [replace(m, framework="vllm") for m in lmdeploy.rows]
        alt = evaluate(vllm_rows, catalog)
        out += [
            "### 1.1 First table: LMDeploy TurboMind, Llama-2 7B/13B/70B on A100-80G SXM, default factors",
            "",
            "`guide-opt validate --source lmdeploy` (TurboMind predicted with the `tensorrt-llm` profile: a C++ engine of the",
            "FasterTransformer lineage with whole-prompt prefill and no Python scheduler, like TensorRT-LLM; chosen before",
            "looking at errors. The `vllm` profile is shown as a sensitivity check only). Batch 1-64, TP 1 (7B, 13B) and 4 (70B),",
            "prompt 1/128/2048 and output 128/2048 tokens. TTFT = `FTL_avg_s`, the mean first-token latency of LMDeploy's",
            "`profile_generation.py` (one thread per batch slot, 6 requests each), predicted with TurboMind v0.1's own rule",
            "(`guide_opt/validation/turbomind.py`, from lmdeploy's source: every round one request alone, the others' prompts",
            "prefilled together, each first token out of the decode step after the prefill), plus the simulated wait for",
            "KV-cache blocks where the benchmark's fixed cache cannot hold the batch (the last table of this subsection); TPOT =",
            "`token_latency_p50_s` (transcribed to 1 ms resolution, so 7B TPOTs carry about +-5% rounding); 1-token prompts",
            "keep TPOT/throughput but not TTFT.",
            "",
        ]
        table = []
        for label, result in (("tensorrt-llm profile (primary)", primary), ("vllm profile (sensitivity)", alt)):
            for r in summarize(result.comparisons):
                table.append([label, METRIC_LABELS[r.metric], f"{r.mape:.1f}", f"{r.median_ape:.1f}", f"{r.bias:+.1f}", str(r.count)])
        out += [md_table(["profile", "metric", "MAPE %", "median APE %", "bias %", "n"], table), ""]
        per_llm = []
        for llm in sorted({m.llm for m in lmdeploy.rows}):
            rows = summarize([c for c in primary.comparisons if c.measurement.llm == llm])
            per_llm.append([llm] + [next((f"{r.mape:.1f}" for r in rows if r.metric == metric), "-") for metric in ("ttft_ms", "tpot_ms", "throughput_tokens_per_s")])
        out += ["Per LLM (tensorrt-llm profile, MAPE %):", "", md_table(["LLM", "TTFT", "TPOT", "Throughput"], per_llm), ""]
        skipped = dict(lmdeploy.skipped) | dict(primary.skipped)
        out += ["Skipped: " + "; ".join(f"{v} x {k}" for k, v in skipped.items()) + ".", ""]
        out += lmdeploy_first_token_table(lmdeploy.rows, catalog)

    # ---- 1.2 every source, default factors ---------------------------------------------------
    if "1.2" in wanted:
        all_rows, all_skipped, sources, evaluations = [], {}, {}, {}
        for name in sorted(SOURCES):
            data = load_source(name, catalog, data_dir)
            sources[name] = data
            result = evaluate(data.rows, catalog)
            evaluations[name] = result
            all_rows += summarize(result.comparisons)
            all_skipped[name] = dict(data.skipped) | dict(result.skipped)
        out += [
            "### 1.2 Every source, default factors",
            "",
            "`guide-opt validate` (JSON: `guide-opt validate --format json`). Mappings: LLM-Inference-Bench A100 = `a100-40gb-sxm`",
            "(Argonne's Polaris nodes: 4 x A100 40GB SXM4 on NVLink, so TP > 1 rows get NVLink links), H100 = `h100-sxm` (form",
            "factor not stated), vLLM -> `vllm`, TensorRT-LLM -> `tensorrt-llm`; its throughput is output tokens / batch latency,",
            "i.e. the latency again (report-only, not fitted). LLM-Pilot's A100 = `a100-40gb` (the PCIe card: its",
            "`gpu_features.csv` says sxm False, nvlink False). LLM-Pilot (TGIS) -> `vllm` profile,",
            "closed loop of u users = static batch of u with the row's mean lengths, TTFT = predicted mean TTFT vs median TTFT,",
            "ITL = predicted batch cycle time per output token vs median ITL; rows with > 10% failed requests skipped; its",
            "throughput (successful output tokens / 120 s, client-side time included) is report-only, not fitted.",
            "TensorRT-LLM perf: v0.5.0 static-batch throughput and batch-1 first-token latency tables only.",
            "",
            guide_form(all_rows),
            "",
            "<details><summary>Per source, GPU and metric: MAPE, median APE, bias, n</summary>",
            "",
            md_table(["source", "gpu", "metric", "MAPE %", "median APE %", "bias %", "n"], detail_rows(all_rows)),
            "",
            "</details>",
            "",
            "Skipped rows (reason: count):",
            "",
        ]
        for name, reasons in all_skipped.items():
            out.append(f"- **{name}**: " + "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
        out.append("")
        out += _bench_a100_by_tp(evaluations["llm-inference-bench"].comparisons, catalog)
        closed_lines, tgis_rows = _steady_state_section(sources, catalog, data_dir)
        out += closed_lines

    # ---- 1.3 calibration, leave-one-LLM-out ----------------------------------------------------
    if "1.3" in wanted:
        out += [
            "### 1.3 Calibrated, scored on held-out LLMs (leave-one-LLM-out within each source)",
            "",
            "For each source and each LLM L: factors fitted per (GPU, framework) on the other LLMs' rows of that source",
            "(`scipy.optimize.least_squares` on log errors, soft-L1 loss, bounds 0.05-1.0 and 0-20 ms, weak prior towards the",
            "defaults), then L's rows predicted with them. Same held-out rows in both columns. Reproduce one source's fit with",
            "`guide-opt calibrate --source NAME --out cal.yaml` (its table prints the same held-out comparison).",
            "",
        ]
        cal_table, pooled, bench_cal = [], {"default": {}, "calibrated": {}}, {}
        for name, data in sources.items():
            prepared = prepare_rows(data.rows, catalog)
            held = leave_one_llm_out(prepared, catalog)
            for d, c in zip(summarize(held.default), summarize(held.calibrated)):
                cal_table.append([name, d.gpu, METRIC_LABELS[d.metric], f"{d.mape:.1f}", f"{c.mape:.1f}", f"{d.bias:+.1f}", f"{c.bias:+.1f}", str(c.count)])
                if name == "llm-inference-bench" and c.metric == "batch_latency_s":
                    bench_cal[c.gpu] = c.mape
            for kind, comps in (("default", held.default), ("calibrated", held.calibrated)):
                for c in comps:
                    if c.metric not in c.measurement.report_only:
                        pooled[kind].setdefault((name, c.metric), []).append(c.ape_percent)
            if held.no_training_rows:
                out.append(f"- {name}: held-out rows without training data for their (GPU, framework) keep the defaults: "
                           + "; ".join(f"{k} ({v})" for k, v in held.no_training_rows.items()))
        out += ["", md_table(["source", "gpu", "metric", "MAPE default", "MAPE calibrated", "bias default", "bias calibrated", "n"], cal_table), ""]

    # ---- 1.4 targets --------------------------------------------------------------------------
    if {"1.2", "1.3"} <= wanted:
        target_rows = []
        for r in all_rows:
            if r.metric in ("ttft_ms", "tpot_ms") and r.gpu.startswith(("a100", "h100")):
                target_rows.append([r.source, r.gpu, METRIC_LABELS[r.metric], f"{r.mape:.1f}", "yes" if r.mape <= 30 else "no"])
        out += ["### 1.4 Against the targets", "",
                "Uncalibrated TTFT / TPOT MAPE <= 30% on A100/H100 sources (LLM-Inference-Bench has neither metric):", "",
                md_table(["source", "gpu", "metric", "MAPE %", "<= 30%"], target_rows), ""]
        held_rows = []
        for (name, metric), apes in sorted(pooled["calibrated"].items()):
            mape = statistics.fmean(apes)
            held_rows.append([name, METRIC_LABELS[metric], f"{statistics.fmean(pooled['default'][(name, metric)]):.1f}", f"{mape:.1f}",
                              "yes" if mape <= 15 else "no", str(len(apes))])
        out += ["Calibrated held-out MAPE <= 15% (all GPUs of a source pooled, fitted metrics only):", "",
                md_table(["source", "metric", "default", "calibrated", "<= 15%", "n"], held_rows), ""]
    if "1.2" in wanted:
        if "1.3" not in wanted:
            out += ["### 1.4 Against the targets (the issue 9 table; 1.3 adds the others)", ""]
        # LLM-Pilot measured a closed loop of TGIS: its rows are scored with the TGIS batcher (1.2.1's tgis column)
        scored = [r for r in all_rows if r.source != "llm-pilot"] + [r for r in tgis_rows if r.source == "llm-pilot"]
        scored.sort(key=lambda r: (r.source, r.gpu, METRICS.index(r.metric)))
        issue_rows = []
        for r in scored:
            if (r.source, r.metric) in REPORT_ONLY:
                continue
            limit = {("llm-inference-bench", "batch_latency_s"): 15.0, ("llm-pilot", "ttft_ms"): 25.0, ("llm-pilot", "tpot_ms"): 25.0}.get(
                (r.source, r.metric)) if r.gpu.startswith(("a100", "h100")) else None
            mape_ok = "-" if limit is None else ("yes" if r.mape <= limit else "no")
            model = ("TGIS batcher, closed loop" if r.source == "llm-pilot" else
                     "static, TurboMind's first-token rule (1.1)" if (r.source, r.metric) == ("lmdeploy", "ttft_ms") else "static")
            issue_rows.append([r.source, r.gpu, METRIC_LABELS[r.metric], model, f"{r.mape:.1f}", "-" if limit is None else f"<= {limit:.0f}%",
                               mape_ok, f"{r.bias:+.1f}", "yes" if abs(r.bias) <= 15 else "no"])
        out += ["Issue 9's targets, default factors: LLM-Inference-Bench batch latency MAPE <= 15% and LLM-Pilot (closed-loop TGIS)",
                "TTFT / ITL MAPE <= 25% on A100 and H100, and |bias| <= 15% for every source, GPU and fitted metric. LLM-Pilot's rows",
                "are scored with the TGIS batcher and its default host time (the `tgis` column of 1.2.1, where the static batch,",
                "the steady-state model and the batcher before its host time stand beside it); the other sources statically (1.2):", "",
                md_table(["source", "gpu", "metric", "predicted by", "MAPE %", "MAPE target", "met", "bias %", "|bias| <= 15%"], issue_rows), ""]

    # ---- 1.5 LLM-Pilot recommendation ----------------------------------------------------------
    if "1.5" in wanted:
        section, rec_table, static_dec, n = llm_pilot_section(catalog, data_dir)
        out += section

    # ---- 1.6 summary ------------------------------------------------------------------------------
    if wanted == set(SECTIONS):
        lm = {r.metric: r for r in summarize(primary.comparisons)}
        met = [f"{row[0]} {row[1]} {row[2]}" for row in target_rows if row[4] == "yes"]
        missed = [f"{row[0]} {row[1]} {row[2]} ({row[3]}%)" for row in target_rows if row[4] == "no"]
        held_met = [f"{row[0]} {row[1]} ({row[3]}%)" for row in held_rows if row[4] == "yes"]
        out += [
            "### 1.6 Summary",
            "",
            f"- First table (LMDeploy, A100-80G, default `tensorrt-llm` factors): TTFT MAPE {lm['ttft_ms'].mape:.1f}%, "
            f"TPOT {lm['tpot_ms'].mape:.1f}%, throughput {lm['throughput_tokens_per_s'].mape:.1f}%. For scale, GUIDE reports for its own",
            "  simulator (vLLM, Tables 1-2): batch latency 33.0% / 25.2%, TTFT 33.3% / 29.6%, decode throughput 51.4% / 25.0%",
            "  (single / multi GPU).",
            "- Uncalibrated TTFT/TPOT <= 30% met for: " + ", ".join(met) + "; missed for: " + ", ".join(missed) + ".",
            "  LLM-Pilot's TGIS server runs eager PyTorch: at TP > 1 its measured ITL at one user stops falling with the GPU count",
            "  (about 0.3 ms per layer on the H100 hosts, 0.44 ms on the A100 hosts, for 7B to 20B LLMs), a host launch floor",
            "  the `vllm` profile (CUDA graphs) does not have; LMDeploy's TurboMind (FasterTransformer lineage) reports a first",
            "  token about one decode step after the prefill at batch 1, which the `tensorrt-llm` profile it is predicted with",
            "  does not.",
            "- Calibrated held-out <= 15% met for: " + (", ".join(held_met) or "none") + ". LLM-Inference-Bench batch latency",
            "  per GPU, calibrated held-out (1.3): " + ", ".join(f"{g} {v:.1f}%" for g, v in sorted(bench_cal.items())) + ".",
            "  Calibration cannot remove the structural misses (TurboMind's fixed first-token cost at batch 1 and its serialised",
            "  long prefills, TGIS queueing) and, with two or three LLMs per group, a held-out LLM with another TP degree can get",
            "  worse (lmdeploy TPOT, trtllm-perf throughput).",
            f"- LLM-Pilot recommendation: best guide-opt variant S/O {max(r_so for r_so in _so_values(rec_table)):.3f} vs the",
            f"  static policy's {static_dec.so_score:.3f} on the same {n} LLMs and the paper's LLM-Pilot (80% success, < 20% overspend).",
            "  Calibrated factors make the closed-loop ITL pessimistic at 32-64 users (100% success, large overspend); default",
            "  factors are optimistic (failures). The u_max threshold at ITL = 50 ms sits where TGIS's ITL grows with its batch",
            "  and its queue grows behind the add-on rule, which a static batch of u cannot represent; the predictors built on",
            "  TGIS's batching rule (tgis, tgis-hybrid, tgis-kv) model it.",
            "",
        ]
    # ---- 1.7 host costs per step ------------------------------------------------------------------
    if "1.7" in wanted:
        out += _host_cost_section(catalog, data_dir)
    # ---- 1.8 MI300X curves fitted end to end ------------------------------------------------------
    if "1.8" in wanted:
        from fit_end_to_end import HEADING as END_TO_END_HEADING, section as end_to_end_section

        out += [END_TO_END_HEADING, "", end_to_end_section(catalog, data_dir)[0], ""]

    out += [f"Wall time of this script: {time.perf_counter() - started:.0f} s.", ""]

    text = "\n".join(out)
    print(text)
    if args.write:
        heading, body = text.split("\n", 1)
        replace_results_section(heading, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
