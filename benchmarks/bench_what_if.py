"""Benchmark: a what-if on a bundled problem (another request rate, another SLO) built from the kept step tables.

Run::

    python benchmarks/bench_what_if.py [--runs 3] [--write]

For each problem and what-if, ``guide-opt solve --format json`` runs in fresh processes: first the
bundled problem in an empty cache folder (it keeps its candidate table and its step tables), then,
alternating, the what-if in a copy of that folder (no table of its own: built from the kept step
tables, ``guide_opt/table_cache.py``) and in a folder holding only the parsed catalog (a fresh build). Reports the median
wall seconds end to end (process start included), the JSON's ``space_build_s`` of the median run,
what ``candidate_table`` said, and whether every answer from kept step tables equals the fresh one
apart from timings. With ``--write`` the table replaces the subsection "What-ifs from kept step
tables" of RESULTS.md section 3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from bench_common import cpu_model, markdown_table, replace_results_subsection
from bench_table_cache import ROOT, _comparable, _solve

#: (problem, what-if label, the change to models[0]): the demand scaled, or an SLO tightened.
WHAT_IFS = (
    ("quickstart.yaml", "1.5x the request rate", ("workload", "request_rate_per_s", 1.5)),
    ("quickstart.yaml", "TTFT SLO x 0.6", ("slo", "ttft_ms", 0.6)),
    ("chat-p99-slo.yaml", "1.5x the request rate", ("workload", "request_rate_per_s", 1.5)),
    ("mixtral-moe.yaml", "1.5x the request rate", ("workload", "request_rate_per_s", 1.5)),
    ("min-latency-codegen.yaml", "2x the users", ("workload", "concurrent_users", 2.0)),
)
SECTION = "## 3. Pareto, fleet and batch-job planning scale"
HEADING = "### What-ifs from kept step tables (2026-12-04)"


def what_if_file(problem: str, change: tuple[str, str, float], folder: Path) -> Path:
    """The bundled ``problem`` with ``change`` applied to its first LLM, written into ``folder``."""
    data = yaml.safe_load((ROOT / "problems" / problem).read_text())
    part, field, factor = change
    value = data["models"][0][part][field] * factor
    data["models"][0][part][field] = round(value) if isinstance(data["models"][0][part][field], int) else value
    path = folder / f"what-if-{problem}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure(problem: str, change: tuple[str, str, float], runs: int) -> dict:
    """Median wall and build seconds of the what-if from kept step tables and fresh, and whether the answers agree."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        seeded = scratch / "seeded"
        _solve(problem, str(seeded))
        variant = str(what_if_file(problem, change, scratch))
        kept, fresh = [], []
        for k in range(runs):
            folder = scratch / f"kept-{k}"
            shutil.copytree(seeded, folder)
            kept.append(_solve(variant, str(folder)))
            clean = scratch / f"fresh-{k}"
            shutil.copytree(seeded / "catalog", clean / "catalog")  # the parsed catalog, as a user's cache has it either way
            fresh.append(_solve(variant, str(clean)))
    def median_run(runs_: list) -> tuple[float, dict]:
        return sorted(runs_, key=lambda r: r[0])[len(runs_) // 2]
    same = all(_comparable(k[1]) == _comparable(fresh[0][1]) for k in kept) and all(_comparable(f[1]) == _comparable(fresh[0][1]) for f in fresh)
    (kept_wall, kept_json), (fresh_wall, fresh_json) = median_run(kept), median_run(fresh)
    return {"kept_wall": statistics.median(r[0] for r in kept), "fresh_wall": statistics.median(r[0] for r in fresh),
            "kept_build": kept_json["stats"]["timing"]["space_build_s"], "fresh_build": fresh_json["stats"]["timing"]["space_build_s"],
            "source": kept_json["stats"]["timing"]["candidate_table"], "same": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"replace the subsection '{HEADING[4:]}' of RESULTS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for problem, label, change in WHAT_IFS:
        m = measure(problem, change, args.runs)
        rows.append([problem.removesuffix(".yaml"), label, f"{m['fresh_wall']:.2f}", f"{m['kept_wall']:.2f}", f"{m['fresh_wall'] / m['kept_wall']:.1f}x",
                     f"{m['fresh_build']:.2f} -> {m['kept_build']:.2f}", m["source"], "yes" if m["same"] else "NO"])
        print(" | ".join(rows[-1]), flush=True)
    text = "\n".join([
        f"`python benchmarks/bench_what_if.py --runs {args.runs} --write` ({cpu_model()}, `nproc` = {os.cpu_count()}; "
        f"{time.perf_counter() - started:.0f} s). A user who has solved a bundled problem asks what changes with another request rate, "
        "user count or SLO: the what-if has no candidate table of its own, and its build starts from the step tables the first "
        "solve kept (`guide_opt/table_cache.py`: each shape's capacities, SLO-limited rates and evaluated loads, which do not "
        "depend on the demand). Wall seconds of `guide-opt solve --format json` in a fresh process, median of "
        f"{args.runs} runs each, alternating with a fresh build (a cache folder holding only the parsed catalog); build = `stats.timing.space_build_s` "
        "of the median run; same answer = every answer from kept step tables equals the fresh build's apart from timings."
        " What is left of a build: each candidate's figures at its new load (an open loop at the rate per replica), and for a closed loop the search for the most users within the SLOs, which stops at the users asked for and so depends on them; the rest of a what-if's wall time is start-up and the simulated checks of the new plan and its alternatives.",
        "",
        *markdown_table(["problem", "what-if", "fresh s", "from kept step tables s", "ratio", "build s", "candidate_table", "same answer"], rows),
    ])
    print(text)
    if args.write:
        replace_results_subsection(SECTION, HEADING, text)


if __name__ == "__main__":
    main()
