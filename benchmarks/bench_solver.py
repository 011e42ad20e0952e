"""Benchmark: CP-SAT vs exhaustive enumeration, and CP-SAT parameters.

Run: ``python benchmarks/bench_solver.py [--repeats N] [--quick]`` (prints Markdown tables).

A. Median wall time over the bundled single-deployment problems (``problems/``), split into
   space evaluation and optimization, for both solvers.
B. Growing spaces: n LLMs sharing one budget and inventory x GPU types x TP x batch sizes x
   engines x quantizations. The exhaustive solver is stopped at 60 s (then it reports no
   proof); CP-SAT runs with the ``fast`` preset.
C. CP-SAT parameters (workers, linearization level) on the largest space of B.

Timings are medians of ``--repeats`` runs in one process; the machine is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cpu_model, median_time  # noqa: E402
from guide_opt.presets import SolverPreset, load_preset  # noqa: E402
from guide_opt.problem import Problem  # noqa: E402
from guide_opt.solvers import get_solver  # noqa: E402
from guide_opt.solvers.cpsat import CpSatSolver  # noqa: E402
from guide_opt.space import build_space  # noqa: E402

EXHAUSTIVE_LIMIT_S = 60.0
LLMS = ["llama-3.1-8b", "qwen2-7b", "llama-2-13b"]
ALL_GPUS = ["a10g", "l4", "l40s", "a100-80gb-sxm", "h100-sxm", "h200", "a100-40gb", "a6000", "rtx-4090", "v100-32gb",
            "h100-pcie", "a100-80gb-pcie", "t4", "a10", "b200", "mi300x"]


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def part_a(repeats: int) -> None:
    print("### A. Bundled problems (single deployment), median of", repeats, "runs\n")
    print("| problem | space build s | CP-SAT solve s | CP-SAT total s (with alternatives) | exhaustive solve s | same objective |")
    print("|---|---|---|---|---|---|")
    totals_cp, totals_ex, totals_full = [], [], []
    for path in sorted((ROOT / "problems").glob("*.yaml")):
        problem = Problem.from_yaml(path)
        if problem.objective not in ("min_cost", "max_throughput", "min_latency") or len(problem.models) != 1:
            continue
        build_s, space = median_time(lambda: build_space(problem), repeats)
        cp_s, cp = median_time(lambda: get_solver("cpsat").solve(problem, space=space, alternatives=False), repeats)
        full_s, _ = median_time(lambda: get_solver("cpsat").solve(problem), repeats)
        ex_s, ex = median_time(lambda: get_solver("exhaustive").solve(problem, space=space, alternatives=False), repeats)
        same = cp.objective == ex.objective or (cp.objective is not None and abs(cp.objective - ex.objective) <= 1e-6 * abs(ex.objective))
        totals_cp.append(cp_s + build_s)
        totals_ex.append(ex_s + build_s)
        totals_full.append(full_s)
        print(f"| {path.stem} | {build_s:.3f} | {cp_s:.3f} | {full_s:.3f} | {ex_s:.3f} | {'yes' if same else 'NO'} |")
    print(f"\nMedian over {len(totals_cp)} problems: CP-SAT proven optimum {statistics.median(totals_cp):.3f} s "
          f"(space build included), with the top-3 and the two picks {statistics.median(totals_full):.3f} s; "
          f"exhaustive {statistics.median(totals_ex):.3f} s.\n")


def fleet_problem(n_models: int, n_gpus: int, n_quant: int) -> Problem:
    models = []
    for i in range(n_models):
        llm = LLMS[i % 3]
        models.append({"id": llm, "workload": {"input_tokens": 512 + 256 * i, "output_tokens": 128, "request_rate_per_s": 2.0 + i},
                       "slo": {"ttft_ms": 1500, "tpot_ms": 50}, "precision_tolerance": "20%" if n_quant > 1 else "none"})
    gpus = ALL_GPUS[:n_gpus]
    return Problem.from_dict({
        "name": f"fleet {n_models}x{n_gpus}",
        "models": models,
        "hardware": {"gpus": gpus, "inventory": {gpus[0]: 4, gpus[-1]: 8}, "max_gpus": 24},
        "frameworks": ["vllm", "sglang"],
        "budget_per_hour": 60,
        "quantizations": ["bf16", "fp8", "w8a8", "w4a16"][:n_quant],
        "objective": "min_cost",
        "search": {"tp": [1, 2, 4], "batch_sizes": [4, 16, 32, 64, 128]},
    })


def part_b(repeats: int, quick: bool) -> tuple[Problem, object]:
    print("### B. Growing spaces: n LLMs sharing budget and inventory\n")
    print("| LLMs | GPU types | quantizations | candidates | space build s | CP-SAT s | status | exhaustive s | exhaustive status | ratio ex/CP-SAT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    grid = [(1, 4, 1), (1, 16, 4), (2, 4, 1), (2, 8, 2), (3, 4, 1), (3, 8, 2), (4, 8, 2), (6, 16, 4)]
    if quick:
        grid = grid[:4]
    largest = None
    for n_models, n_gpus, n_quant in grid:
        problem = fleet_problem(n_models, n_gpus, n_quant)
        build_s, space = median_time(lambda: build_space(problem), 1)
        cp_s, cp = median_time(lambda: get_solver("cpsat").solve(problem, space=space, alternatives=False), repeats)
        ex_s, ex = median_time(lambda: get_solver("exhaustive").solve(problem, space=space, alternatives=False, time_limit_s=EXHAUSTIVE_LIMIT_S), 1)
        ex_text = f">{EXHAUSTIVE_LIMIT_S:.0f}" if ex.status.value != "OPTIMAL" and ex_s >= EXHAUSTIVE_LIMIT_S else f"{ex_s:.3f}"
        print(f"| {n_models} | {n_gpus} | {n_quant} | {space.candidate_count} | {build_s:.2f} | {cp_s:.3f} | {cp.status.value} | {ex_text} | "
              f"{ex.status.value} | {ex_s / cp_s:.1f} |")
        largest = (problem, space)
    print()
    return largest


def part_c(largest, repeats: int) -> None:
    problem, space = largest
    print(f"### C. CP-SAT parameters on the largest space of B ({space.candidate_count} candidates)\n")
    print("| dominance pruning | num_workers | linearization_level | median s | status |")
    print("|---|---|---|---|---|")
    for prune in (True, False):
        for workers in (1, 2, 8):
            for level in (0, 1, 2):
                preset = SolverPreset(time_limit_s=60, num_workers=workers, cp_sat={"linearization_level": level})
                solver = CpSatSolver(preset, prune_dominated=prune)
                t, sol = median_time(lambda: solver.solve(problem, space=space, alternatives=False), repeats)
                print(f"| {'on' if prune else 'off'} | {workers} | {level} | {t:.3f} | {sol.status.value} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small grid (for a smoke run)")
    parser.add_argument("--parts", default="abc", help="which parts to run, e.g. 'c' (C uses the largest space of B's grid)")
    args = parser.parse_args()
    print(f"Machine: {machine()}; preset fast = {load_preset('fast').model_dump()}\n")
    if "a" in args.parts:
        part_a(args.repeats)
    if "b" in args.parts:
        largest = part_b(args.repeats, args.quick)
    else:
        problem = fleet_problem(6, 16, 4) if not args.quick else fleet_problem(2, 8, 2)
        largest = (problem, build_space(problem))
    if "c" in args.parts:
        part_c(largest, 3)


if __name__ == "__main__":
    main()
