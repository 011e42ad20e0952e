"""Shared helpers of the planning tests: problem files, small problems built in code, a cached space builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from guide_opt.problem import Problem
from guide_opt.space import build_space

PLANNING_PROBLEMS = Path(__file__).resolve().parents[2] / "problems"


@pytest.fixture(scope="session")
def problem_file():
    """``problem_file(name)`` -> the :class:`Problem` of ``problems/<name>``."""
    return lambda name: Problem.from_yaml(PLANNING_PROBLEMS / name)


@pytest.fixture(scope="session")
def space_of():
    """``space_of(problem)`` -> its search space, built once per problem (by identity) in the session."""
    cache: dict[int, tuple] = {}

    def get(problem: Problem):
        key = id(problem)
        if key not in cache:
            cache[key] = (problem, build_space(problem))
        return cache[key][1]

    return get


@pytest.fixture(scope="session")
def fleet_dict():
    """``fleet_dict(**overrides)`` -> a small 2-LLM fleet problem as a dict (Llama-3.2-1B + Llama-3.1-8B on L4 / L40S / A100)."""

    def make(**overrides) -> dict:
        data = {
            "name": "small fleet",
            "models": [
                {"id": "llama-3.2-1b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 6},
                 "slo": {"ttft_ms": 1000, "tpot_ms": 40}},
                {"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "concurrent_users": 40},
                 "slo": {"ttft_ms": 2000, "tpot_ms": 50}},
            ],
            "hardware": {"gpus": ["l4", "l40s", "a100-80gb-sxm"], "inventory": {"a100-80gb-sxm": 2}, "max_gpus": 8},
            "frameworks": ["vllm"],
            "budget_per_hour": 10,
            "objective": "min_cost",
            "search": {"tp": [1, 2], "batch_sizes": [4, 16, 64], "max_replicas": 8},
        }
        data.update(overrides)
        return data

    return make
