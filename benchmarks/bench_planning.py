"""Benchmark: fleet planning scale, Pareto frontiers and batch-job schedules.

Run: ``python benchmarks/bench_planning.py [--models 5,10,20,30,200,1000] [--gpus a,b,...] [--frameworks a,b]
[--workers N] [--full] [--objectives ...] [--repeats N] [--explain] [--quick]`` (prints Markdown tables for
``benchmarks/RESULTS.md`` section 3).

A. Fleet scale: n LLM services x 16 GPU types (or the ``--gpus`` given) sharing per-type
   inventory, ``max_gpus`` and a budget (:func:`fleet_problem`), objectives ``min_cost`` and
   ``max_served``. Per n: the space build (candidate evaluation with the full model, ``--workers``
   processes, 1 by default), the CP-SAT solve of the optimum alone (``alternatives=False``,
   ``fast`` preset, 10 s limit, 2 workers; it includes building the CP-SAT model, pruning, the
   tie-break pass and full-model verification) -- or with ``--full`` the whole answer ``guide-opt
   solve`` gives (the plan checked by simulation, alternatives found and simulated) under a
   :data:`FULL_LIMIT_S` limit --, the binding-constraint explanation of ``min_cost``
   (``--explain``), the peak memory of the process (``ru_maxrss``) and the status.
B. Pareto frontiers of the bundled pareto problem and of growing search spaces: points, CP-SAT
   solves, wall time, and the brute-force cross-check where it is small enough.
C. Batch-job schedules: the bundled 5-job problems, and n jobs on a 3-type pool.

Timings are medians of ``--repeats`` runs in one process; the machine is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cpu_model, median_time  # noqa: E402
from guide_opt.errors import InputError  # noqa: E402
from guide_opt.pareto import brute_force_frontier, pareto_frontier  # noqa: E402
from guide_opt.problem import Problem  # noqa: E402
from guide_opt.scheduling import solve_schedule  # noqa: E402
from guide_opt.solvers.cpsat import CpSatSolver  # noqa: E402
from guide_opt.space import build_space  # noqa: E402

#: 16 of the catalog's GPU types (v100-16gb and a100-40gb-sxm, added after these timings, left out).
GPUS = ["a10", "a10g", "a100-40gb", "a100-80gb-pcie", "a100-80gb-sxm", "a6000", "b200", "h100-pcie", "h100-sxm", "h200", "l4",
        "l40s", "mi300x", "rtx-4090", "t4", "v100-32gb"]
#: LLMs cycled through by the services (catalog ids), small to large.
LLMS = ["llama-3.2-1b", "llama-3.1-8b", "qwen2-7b", "llama-2-7b", "mpt-7b", "chatglm3-6b", "opt-6.7b", "llama-7b", "llama-2-13b",
        "llama-13b", "starcoder-15b", "codegen2-16b", "gpt-neox-20b", "mixtral-8x7b", "qwen3-32b", "llama-3.1-70b", "llama-2-70b"]
#: Time limit of a ``--full`` solve (s): long enough that every phase finishes on the sizes measured.
FULL_LIMIT_S = 3600.0
#: Request profiles: (input tokens, output tokens, TTFT SLO ms, TPOT SLO ms).
PROFILES = [(1024, 256, 1500, 60), (512, 512, 2000, 50), (2048, 256, 4000, 80)]


def profile_for(i: int, context_tokens: int) -> tuple[int, int, int, int]:
    """Profile i mod 3, or the next one (cyclically) whose prompt and answer fit the LLM's context."""
    for j in range(len(PROFILES)):
        profile = PROFILES[(i + j) % len(PROFILES)]
        if profile[0] + profile[1] <= context_tokens:
            return profile
    raise ValueError(f"no request profile fits a context of {context_tokens} tokens")


def machine() -> str:
    return f"{cpu_model()}, nproc {os.cpu_count()}, Python {platform.python_version()}"


def fleet_problem(n: int, objective: str = "min_cost", gpus: list[str] | None = None, frameworks: list[str] | None = None) -> Problem:
    """n services: LLM i mod 17, profile i mod 3 (the next one that fits the LLM's context), demand varying with i; the
    16 GPU types of :data:`GPUS` (or ``gpus``), shared limits.

    Inventory: with 16 types, 8 GPUs per type for n <= 10, growing with n (n // 2 + 4 per
    type), so that the per-type limits bind as the fleet grows; with fewer types, as many GPUs
    in all (each type's share times 16 / types); max_gpus 8n; budget: unlimited for min_cost, a
    tight $1/h per service for max_served.
    """
    gpus, frameworks = gpus or GPUS, frameworks or ["vllm", "sglang"]
    from guide_opt.catalog import load_catalog

    catalog = load_catalog()
    models = []
    for i in range(n):
        inp, out, ttft, tpot = profile_for(i, catalog.llm(LLMS[i % len(LLMS)]).max_position_embeddings)
        workload = {"input_tokens": inp, "output_tokens": out}
        if i % 2:
            workload["concurrent_users"] = 16 * (1 + i % 5)
        else:
            workload["request_rate_per_s"] = 0.5 * (1 + i % 7)
        models.append({"id": LLMS[i % len(LLMS)], "workload": workload, "slo": {"ttft_ms": ttft, "tpot_ms": tpot}})
    per_type = max(8, n // 2 + 4) * len(GPUS) // len(gpus)
    data = {
        "name": f"fleet of {n}",
        "models": models,
        "hardware": {"gpus": gpus, "inventory": {g: per_type for g in gpus}, "max_gpus": 8 * n},
        "frameworks": frameworks,
        "objective": objective,
    }
    if objective == "max_served":
        data["budget_per_hour"] = 1.0 * n
    return Problem.from_dict(data)


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_a(sizes: list[int], repeats: int, explain: bool, gpus: list[str], workers: int, full: bool,
           objectives: list[str] | None = None, frameworks: list[str] | None = None) -> None:
    from guide_opt.api import binding_constraints
    from guide_opt.presets import load_preset

    what = "the whole answer (plan checked by simulation, alternatives)" if full else "the optimum alone"
    print(f"### A. Fleet scale: n services x {len(gpus)} GPU types, {what}, median of {repeats} run(s)\n")
    print("| services | candidates | build s | objective | dominated pruned | CP-SAT variables | solve s | of it CP-SAT s "
          "| alternatives s | explanation s | peak MiB | status | objective value |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for objective in objectives or ("min_cost", "max_served"):
            try:
                problem = fleet_problem(n, objective, gpus, frameworks)
            except InputError as exc:  # beyond the input limits (limits.MAX_MODELS, MAX_CANDIDATES)
                print(f"| {n} | - | - | {objective} | - | - | - | - | - | - | - | refused: {exc} | - |", flush=True)
                continue
            build_s, space = median_time(lambda: build_space(problem, workers=workers), repeats)
            solve_s, solution = median_time(lambda: CpSatSolver().solve(problem, space=space, alternatives=full, check_by_simulation=full,
                                                                        time_limit_s=FULL_LIMIT_S if full else 10), repeats)
            timing = solution.stats.get("timing", {})
            explain_s = "-"
            if explain and objective == "min_cost" and solution.status.found:
                start = time.perf_counter()
                binding_constraints(problem, solution, load_preset("fast"), space)
                explain_s = f"{time.perf_counter() - start:.2f}"
            value = "-" if solution.objective is None else (f"${solution.objective:,.2f}/h" if objective == "min_cost" else f"{solution.objective:.2f}%")
            in_model = solution.stats.get("variables", 0)
            alternatives_s = f"{timing['alternatives_s']:.2f}" if full and "alternatives_s" in timing else "-"
            print(f"| {n} | {space.candidate_count:,} | {build_s:.2f} | {objective} | {solution.stats.get('dominated_pruned', 0):,} "
                  f"| {in_model:,} | {solve_s:.2f} | {timing.get('cp_sat_s', 0.0):.2f} | {alternatives_s} | {explain_s} | {peak_memory_mib():,.0f} "
                  f"| {solution.status.value} | {value} |", flush=True)
    print()


def part_b(repeats: int) -> None:
    print(f"### B. Pareto frontiers (epsilon-constraint over CP-SAT), median of {repeats} run(s)\n")
    print("| problem | candidates | points | CP-SAT solves | answers reused | frontier s | status | brute force |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [("pareto-chat-8b.yaml", Problem.from_yaml(ROOT / "problems" / "pareto-chat-8b.yaml"))]
    base = Problem.from_yaml(ROOT / "problems" / "pareto-chat-8b.yaml")
    for gpus in (["h100-sxm", "a100-80gb-sxm", "l40s", "l4", "a10g", "h200"], GPUS):
        cases.append((f"same, {len(gpus)} GPU types, 2 engines, TP 1-8", base.model_copy(update={"hardware": base.hardware.model_copy(update={"gpus": gpus})})))
    for name, problem in cases:
        space = build_space(problem)
        seconds, frontier = median_time(lambda: pareto_frontier(space), repeats)
        try:
            brute = brute_force_frontier(space, max_plans=300_000)
            check = "equal" if sorted(p.quanta for p in brute.points) == sorted(p.quanta for p in frontier.points) else "DIFFERENT"
        except Exception as exc:  # too large to enumerate
            check = f"skipped ({type(exc).__name__})"
        print(f"| {name} | {space.candidate_count:,} | {len(frontier.points)} | {frontier.solves} | {frontier.reused} | {seconds:.2f} "
              f"| {frontier.status.value} | {check} |", flush=True)
    print()


def job_problem(n: int, objective: str) -> Problem:
    """n batch jobs (LLMs and sizes cycled) on 8 x H100 + 8 x A100-80GB + 8 x L40S, deadlines 6-12 h."""
    llms = ["llama-3.1-8b", "qwen3-32b", "llama-3.1-70b", "mixtral-8x7b", "qwen2-7b", "llama-2-13b"]
    sizes = [1_000_000, 200_000, 60_000, 300_000, 1_500_000, 400_000]
    models = [{"id": llms[i % len(llms)], "workload": {"input_tokens": 1024, "output_tokens": 256, "requests": sizes[i % len(sizes)],
                                                      "deadline_h": 6 + 2 * (i % 4)}} for i in range(n)]
    return Problem.from_dict({"name": f"{n} jobs", "models": models,
                              "hardware": {"gpus": ["h100-sxm", "a100-80gb-sxm", "l40s"], "inventory": {"h100-sxm": 8, "a100-80gb-sxm": 8, "l40s": 8}},
                              "frameworks": ["vllm"], "objective": objective, "scheduling": {"enabled": True, "time_quantum_s": 300}})


def part_c(repeats: int, job_counts: list[int]) -> None:
    print(f"### C. Batch-job schedules (CP-SAT intervals + cumulative), median of {repeats} run(s)\n")
    print("| problem | objective | job options (after pruning) | schedule s (space build excluded) | status | objective value |")
    print("|---|---|---|---|---|---|")
    cases = [(name, Problem.from_yaml(ROOT / "problems" / name)) for name in ("batch-overnight-5-jobs.yaml", "batch-overnight-cheapest.yaml")]
    cases += [(f"{n} jobs, 3 types x 8 GPUs", job_problem(n, objective)) for n in job_counts for objective in ("min_makespan", "min_cost")]
    for name, problem in cases:
        space = build_space(problem)
        seconds, (solution, schedule, _) = median_time(lambda: solve_schedule(problem, space=space, time_limit_s=10), repeats)
        unit = "h" if problem.objective == "min_makespan" else "$"
        value = "-" if solution.objective is None else f"{solution.objective:,.2f} {unit}"
        print(f"| {name} | {problem.objective} | {solution.stats.get('job_options', 0)} | {seconds:.2f} | {solution.status.value} | {value} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="5,10,20,30,40,50", help="fleet sizes of part A")
    parser.add_argument("--jobs", default="5,8,12,16", help="job counts of part C")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--explain", action="store_true", help="time the binding-constraint explanation of min_cost (part A)")
    parser.add_argument("--quick", action="store_true", help="sizes 5,10 and 5 jobs only")
    parser.add_argument("--parts", default="abc")
    parser.add_argument("--gpus", default=",".join(GPUS), help="GPU types of the part A fleets (catalog ids, comma-separated)")
    parser.add_argument("--workers", type=int, default=1, help="processes of the part A candidate build")
    parser.add_argument("--full", action="store_true", help="part A: time the whole answer (simulation checks, alternatives)")
    parser.add_argument("--objectives", default="min_cost,max_served", help="objectives of the part A fleets")
    parser.add_argument("--frameworks", default="vllm,sglang", help="engines of the part A fleets")
    args = parser.parse_args()
    sizes = [5, 10] if args.quick else [int(x) for x in args.models.split(",")]
    jobs = [5] if args.quick else [int(x) for x in args.jobs.split(",")]
    print(f"Machine: {machine()}\n")
    print(f"Command: python benchmarks/bench_planning.py {' '.join(sys.argv[1:])}\n")
    if "a" in args.parts:
        part_a(sizes, args.repeats, args.explain, args.gpus.split(","), args.workers, args.full, args.objectives.split(","),
               args.frameworks.split(","))
    if "b" in args.parts:
        part_b(args.repeats)
    if "c" in args.parts:
        part_c(args.repeats, jobs)


if __name__ == "__main__":
    main()
