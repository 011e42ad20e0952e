"""Helpers shared by the solver, refinement and planning tests: the problem library folder and
small problems built in code.

A module of its own (not conftest.py) so that ``from problem_fixtures import ...`` resolves to
this file whichever test folders pytest collects first (``tests/`` is on sys.path through its
conftest.py)."""

from __future__ import annotations

from pathlib import Path

from guide_opt.problem import Problem

PROBLEMS_DIR = Path(__file__).resolve().parents[1] / "problems"


def small_problem_data(**overrides) -> dict:
    """The dict of :func:`small_problem` (for tests that write it to a file)."""
    data = {
        "name": "small",
        "models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                    "slo": {"ttft_ms": 800, "tpot_ms": 40}}],
        "hardware": {"gpus": ["a100-80gb-sxm", "l40s"], "max_gpus": 8},
        "frameworks": ["vllm"],
        "budget_per_hour": 20,
        "objective": "min_cost",
        "search": {"tp": [1, 2], "batch_sizes": [4, 16, 64]},
    }
    data.update(overrides)
    return data


def small_problem(**overrides) -> Problem:
    """A quick single-LLM problem (Llama-3.1-8B at 4 requests/s on A100 / L40S); keyword arguments replace top-level keys."""
    return Problem.from_dict(small_problem_data(**overrides))


def tpot_p99_problem() -> Problem:
    """Llama-3.1-8B on H100s with vLLM (TP 1, 128 slots), 2048 / 256 tokens at 15.5 requests/s, p99 TPOT <= 30 ms: three
    replicas meet the SLO in pooled simulator runs, two miss it (tests/planning/test_plan_steady_state.py)."""
    return Problem.from_dict({
        "name": "tpot-p99", "models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 2048, "output_tokens": 256, "request_rate_per_s": 15.5},
                                        "slo": {"tpot_ms": 30, "percentile": 99}}],
        "hardware": {"gpus": ["h100-sxm"], "max_gpus": 8}, "frameworks": ["vllm"], "search": {"tp": [1], "batch_sizes": [128]},
    })
