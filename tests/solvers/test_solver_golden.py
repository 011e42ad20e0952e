"""Golden tests: every bundled problem solves to its expected status and objective window,
with both the CP-SAT and the exhaustive solver, and the two agree exactly.

Windows are +-3% around the value the current performance model gives; a change of the
model or the catalog that moves an answer further must update this table deliberately.
These are the static model's optima (``check_by_simulation=False``); what the simulation
check does to them is tested in ``test_solver_simcheck.py``.
(Updated when candidates moved to the steady-state serving model: replicas from the load each
takes within its SLO percentile and 80% of capacity, instead of a burst at full load; the
GUIDE grid problems keep ``serving_model: burst`` and their values.)
Updated again when the step model moved onto the measured kernel curves (hardware_db/kernels):
each new value is the optimum of the exhaustive enumeration of the candidate table, which
CP-SAT matched exactly (test_cpsat_equals_exhaustive); the GUIDE grid values equal those of an
earlier, separate wiring of the same curves.
Updated again when the step model gained the elementwise kernels and the engines' host costs per
step (per running sequence, per multi-GPU step): the eight values that moved (quickstart, the four
GUIDE grids, batch-job-deadline, max-throughput-budget, min-latency-codegen) are the optima of the
exhaustive solver (get_solver("exhaustive"), check_by_simulation=False) over the new candidate table
(the GUIDE grids after deepspeed-fastgen took the vllm profile's host costs too: vllm now wins them).
Updated again when the host costs were refitted with the engines' KV re-read exponent (vllm 66 us / 1.07 ms / 0.375,
tensorrt-llm 10 us / 0.77 ms / 0.375 on 16-bit caches; RESULTS.md 1.7): the seven values that moved (the four GUIDE
grids, the two Llama-3.1-70B problems, min-latency-codegen) are again the exhaustive solver's optima over the new
table. The 70B ones moved most: Llama-3.1-70B has 8 query heads per KV head, so its 16-bit cache is read 8 ** 0.375 =
2.2 times per decode step, and the bf16 pair of H200s at $7.98/h (TPOT 55 ms of the 60 allowed before) gave way to
four H100s at TP 4 ($11.96/h); with quantization allowed, the FP8-weight pair of H100s with a 16-bit cache ($5.98/h)
to a pair of H200s ($7.98/h). TensorRT-LLM's measured bf16 runs at TP 2 on H100 (29 runs: Llama-2/3.1-70B, Mixtral)
were predicted 18% faster than measured before and 12% after (RESULTS.md section 14): the old plans leaned on the
optimistic side.
Updated again when the attention curve took one HBM fraction per KV-cache dtype (RESULTS.md section 12.1: H100's
16-bit-cache decodes read at 0.92 of the peak, not the 0.83 pooled with the FP8-cache ones) and the host costs were
refitted over it (vllm 71 us / 1.05 ms, tensorrt-llm 15 us / 0.75 ms): only max-throughput-budget moved, the same
six H100s with SGLang at TPOT 22.7 instead of 23.5 ms, 65,267 -> 67,454 tokens/s, the exhaustive solver's optimum.
Updated again when the kernel fit left out the rows the GPU's cache served (RESULTS.md section 12.3: the L40S's
decode attention read its KV cache at 0.80 of the GDDR6 peak instead of 0.92): quickstart's three pairs of L40S
($5.16/h) now need a fourth pair to hold the 40 ms TPOT at 20 requests/s, and three single A100-80GBs ($5.67/h) are
the exhaustive solver's optimum. TensorRT-LLM's measured L40S runs were predicted 16% faster than measured before
and 12% after (section 14).
Updated again when the host costs were refitted on those curves (vllm 71 -> 68 us per sequence, 1.05 -> 1.0 ms per
multi-GPU step; tensorrt-llm 15 -> 14 us, 0.75 -> 0.65 ms; RESULTS.md 1.7): the same plans everywhere, and the five
values are again the exhaustive solver's optima over the new table (against the optima before the refit, which had
drifted within the window: the four GUIDE grids on vLLM 0.3-0.6% more tokens/s, min-latency-codegen on TensorRT-LLM
at TP 4 977.2 -> 969.7 ms).
"""

from __future__ import annotations

import math

import pytest

from guide_opt.problem import Problem
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.verify import verify

from problem_fixtures import PROBLEMS_DIR

#: problem file -> (status, objective value); objective in the problem's unit ($/h, tokens/s, ms).
GOLDEN = {
    "quickstart.yaml": (Status.OPTIMAL, 5.67),
    "guide-grid-llama-2-7b.yaml": (Status.OPTIMAL, 7036.5),
    "guide-grid-qwen2-7b.yaml": (Status.OPTIMAL, 6808.8),
    "guide-grid-opt-6.7b.yaml": (Status.OPTIMAL, 3911.9),
    "guide-grid-chatglm3-6b.yaml": (Status.OPTIMAL, 8401.5),
    "llm-pilot-200-users.yaml": (Status.OPTIMAL, 4.096),
    "llama-70b-tight-budget.yaml": (Status.OPTIMAL, 11.96),
    "llama-70b-precision-trade.yaml": (Status.OPTIMAL, 7.98),
    "heterogeneous-inventory.yaml": (Status.OPTIMAL, 5.0),
    "infeasible-tpot.yaml": (Status.INFEASIBLE, None),
    "batch-job-deadline.yaml": (Status.OPTIMAL, 1.72),
    "max-throughput-budget.yaml": (Status.OPTIMAL, 67454.4),
    "min-latency-codegen.yaml": (Status.OPTIMAL, 969.7),
    # one H100 SXM at $2.99/h: one MI300X ($1.85/h) sustains 2.6 of the 5 requests/s on its curves fitted on measured
    # ROCm vLLM latencies (hardware_db/kernels/mi300x.yaml, RESULTS.md section 1.8), two cost $3.70/h
    "mixtral-moe.yaml": (Status.OPTIMAL, 2.99),
    # three H100s, one per replica (4 pooled simulator runs of 3,000 requests at 5 requests/s: p99 TPOT 14.1 ms, within
    # the 15 ms target). The $5.98/h plans miss it there: one H100 pair at 15 requests/s (68% of its capacity) 17.5 ms,
    # two single H100s at 7.5 requests/s each 20.9 ms -- the load each request meets lifts the tail
    # (tests/planning/test_plan_steady_state.py checks the effect against pooled runs in the test itself)
    "chat-p99-slo.yaml": (Status.OPTIMAL, 8.97),
}
WINDOW = 0.03


@pytest.fixture(scope="module")
def solutions(bundled_space):
    cache = {}

    def get(name: str, solver: str):
        if (name, solver) not in cache:
            problem, space = bundled_space(name)
            cache[name, solver] = (problem, get_solver(solver).solve(problem, space=space, alternatives=False, check_by_simulation=False))
        return cache[name, solver]

    return get


@pytest.mark.parametrize("solver", ["cpsat", "exhaustive"])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_status_and_objective_window(solutions, name, solver):
    problem, solution = solutions(name, solver)
    status, value = GOLDEN[name]
    assert solution.status is status
    if value is None:
        assert solution.explanation["relaxations"], "an infeasible problem names a relaxation"
        return
    assert value * (1 - WINDOW) <= solution.objective <= value * (1 + WINDOW)
    assert verify(problem, solution) == []


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_cpsat_equals_exhaustive(solutions, name):
    _, exact = solutions(name, "cpsat")
    _, brute = solutions(name, "exhaustive")
    assert exact.status is brute.status
    if exact.objective is not None:
        assert math.isclose(exact.objective, brute.objective, rel_tol=1e-6)


def test_every_single_deployment_problem_file_is_golden():
    """New problem files must come with an expected answer (here or in the planning tests)."""
    single = []
    for path in sorted(PROBLEMS_DIR.glob("*.yaml")):
        problem = Problem.from_yaml(path)
        if problem.objective in ("min_cost", "max_throughput", "min_latency") and len(problem.models) == 1 \
                and problem.models[0].workload.requests is None or path.name in GOLDEN:
            single.append(path.name)
    assert set(single) <= set(GOLDEN)
