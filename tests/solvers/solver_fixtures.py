"""Helpers shared by the solver tests: the problem library folder and small problems built in code.

A module of its own (not conftest.py) so that ``from solver_fixtures import ...`` resolves to
this file whichever test folders pytest collects first."""

from __future__ import annotations

from pathlib import Path

from guide_opt.problem import Problem

PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "problems"


def small_problem(**overrides) -> Problem:
    """A quick single-LLM problem (Llama-3.1-8B on two GPU types); keyword arguments replace top-level keys."""
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
    return Problem.from_dict(data)
