"""Static batches the KV cache cannot hold at once: the waves estimate against simulated preemption (RESULTS.md section 16).

Run from the repository root::

    python benchmarks/bench_wave_rows.py            # print the section as Markdown
    python benchmarks/bench_wave_rows.py --write    # also replace section 16 of benchmarks/RESULTS.md

LLM-Inference-Bench queues a static batch of B requests at once. Where guide-opt's memory model
says the KV cache cannot hold all B to their last token, the static estimate
(:func:`guide_opt.perf.estimate`, what ``validate`` and calibration read) runs the batch in
waves of as many as fit, one after the other. That is how an engine admitting a request only
when its whole sequence fits behaves (TensorRT-LLM's ``GUARANTEED_NO_EVICT`` scheduler). vLLM
admits by the blocks a prompt needs now and, when the growing sequences run out of blocks,
preempts the newest by recompute; the serving simulator (:mod:`guide_opt.simulate.engine`)
plays that policy. This script predicts every such row both ways -- the waves estimate, and
the simulator serving the B requests arriving together (same batch, token budget and KV
cache) -- and scores both against the measured batch latency. Nothing is fitted here.
``validate``, calibration and the MI300X fit (section 1.8) read each engine's rows by its own
rule: vLLM's through the simulator (:mod:`guide_opt.validation.preemption`), the others' as waves.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from bench_common import cpu_model, markdown_table, replace_results_section
from guide_opt.catalog import load_catalog
from guide_opt.perf import estimate
from guide_opt.validation.datasets import load_source, measurement_config
from guide_opt.validation.preemption import burst_run

SECTION = "## 16. Batches the KV cache cannot hold at once: waves or preemption"
METRIC = "batch_latency_s"


def wave_rows(catalog) -> list[dict]:
    """Every LLM-Inference-Bench row whose batch the static estimate runs in waves, predicted both ways."""
    out = []
    for m in load_source("llm-inference-bench", catalog).rows:
        config = measurement_config(m, catalog)
        est = estimate(config)
        if est.waves <= 1 or METRIC not in m.measured:
            continue
        run = burst_run(config)
        out.append({"row": m, "waves": est.waves, "measured_s": m.measured[METRIC], "waves_s": est.batch_latency_s,
                    "simulated_s": run.duration_s, "preemptions": run.preemptions})
    return out


def _errors(rows: list[dict], key: str) -> str:
    errors = [(r[key] / r["measured_s"] - 1) * 100 for r in rows]
    return f"{statistics.fmean(abs(e) for e in errors):.1f} / {statistics.fmean(errors):+.1f}"


def section(catalog) -> str:
    """Section 16 as Markdown."""
    started = time.perf_counter()
    rows = wave_rows(catalog)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["row"].gpu, r["row"].framework), []).append(r)
    summary = [[gpu, framework, str(len(g)), _errors(g, "waves_s"), _errors(g, "simulated_s"), f"{statistics.fmean(r['preemptions'] for r in g):.1f}"]
               for (gpu, framework), g in sorted(groups.items())]
    per_row = [[r["row"].key, str(r["waves"]), f"{r['measured_s']:.2f}", f"{r['waves_s']:.2f}", f"{r['simulated_s']:.2f}", str(r["preemptions"])]
               for r in rows]
    by_engine = {engine: [r for r in rows if r["row"].framework == engine] for engine in ("vllm", "tensorrt-llm")}
    shows = [f"- {engine}: waves estimate {_errors(g, 'waves_s')}, simulated with recompute preemption {_errors(g, 'simulated_s')} "
             f"(MAPE / bias %, {len(g)} rows)." for engine, g in by_engine.items() if g]
    wall = time.perf_counter() - started
    return "\n".join([
        f"Command: `python benchmarks/bench_wave_rows.py --write` on {cpu_model()}, `nproc` = {os.cpu_count()}, Python {platform.python_version()}, "
        f"CPU only ({wall:.0f} s).",
        "",
        __doc__.split("\n\n", 3)[3].strip().replace("This script", "The script (`benchmarks/bench_wave_rows.py`)"),
        "",
        f"{len(rows)} LLM-Inference-Bench rows run in waves. Batch latency, MAPE / bias % (bias > 0: predicted slower than measured):",
        "",
        *markdown_table(["gpu", "engine", "rows", "waves estimate", "simulated, recompute preemption", "preemptions per row (simulated)"], summary),
        "",
        "What it shows, by engine over all GPUs:",
        "",
        *shows,
        "- Each engine's rows read best by its own admission rule: vLLM's by the simulator's recompute preemption,",
        "  TensorRT-LLM's by waves (its no-evict scheduler never preempts), and that is how they are read since 2026-12-04",
        "  (`guide_opt/validation/preemption.py`; before, every engine's as waves, and MI300X's curves were fitted through",
        "  that reading, section 1.8). TensorRT-LLM's 70B rows on four A100-40GBs measured two to four times slower than",
        "  either reading predicts (per-row table), which neither admission rule explains. The planner itself never proposes",
        "  a batch the cache cannot hold, so its plans depend on neither.",
        "",
        "<details><summary>Per row (seconds)</summary>",
        "",
        *markdown_table(["row", "waves", "measured", "waves estimate", "simulated", "preemptions"], per_row),
        "",
        "</details>",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"replace '{SECTION}' in benchmarks/RESULTS.md")
    args = parser.parse_args()
    body = section(load_catalog())
    print(SECTION + "\n\n" + body)
    if args.write:
        replace_results_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
