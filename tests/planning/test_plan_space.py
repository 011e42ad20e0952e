"""Faster space evaluation gives the same candidates: shared evaluations and forked workers."""

from __future__ import annotations

import concurrent.futures

import guide_opt.parallel as parallel_module
import guide_opt.space as space_module
from guide_opt.problem import Problem
from guide_opt.space import build_space


def _figures(space):
    return [[(c.shape.key, c.batch, c.fits, c.memory_used_gib, c.ttft_s, c.tpot_s, c.batch_latency_s, c.replicas_min, c.violations,
              c.served_share_per_replica) for c in ms.candidates] for ms in space.models]


def test_parallel_evaluation_equals_serial(fleet_dict, monkeypatch):
    problem = Problem.from_dict(fleet_dict())
    serial = build_space(problem, workers=1)
    monkeypatch.setattr(space_module, "PARALLEL_MIN_EVALUATIONS", 1)
    # earlier tests may leave helper threads (tqdm's monitor, storage heartbeats) that would make
    # build_space stay serial; the guard itself is not what this test checks
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    used = []
    real = parallel_module._call  # the forked map's worker body

    class CountingPool(concurrent.futures.ProcessPoolExecutor):
        def map(self, fn, *iterables, **kwargs):
            used.append(fn is real)
            return super().map(fn, *iterables, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountingPool)
    parallel = build_space(problem, workers=2)
    assert used == [True], "the forked path ran"
    assert _figures(parallel) == _figures(serial)


def test_llms_with_the_same_architecture_and_lengths_share_evaluations_but_not_slo_checks(fleet_dict):
    data = fleet_dict()
    twin = {**data["models"][1], "slo": {"ttft_ms": 100, "tpot_ms": 10}}
    data["models"] = [data["models"][1], twin]
    space = build_space(Problem.from_dict(data))
    a, b = space.models
    # Shared: memory and the static burst figures; the steady-state latencies depend on each LLM's SLO (its load).
    assert [(c.shape.key, c.batch, c.memory_used_gib, c.batch_latency_s) for c in a.candidates] == \
        [(c.shape.key, c.batch, c.memory_used_gib, c.batch_latency_s) for c in b.candidates]
    assert sum(c.feasible for c in a.candidates) > sum(c.feasible for c in b.candidates)
    alone = build_space(Problem.from_dict({**data, "models": [twin]}))
    assert _figures(alone)[0] == _figures(space)[1]


def test_pre_quantized_llm_is_served_in_its_own_format_whatever_the_tolerance():
    # DeepSeek-V3's published checkpoint is FP8 (config.json quantization_config): with precision_tolerance
    # none, FP8 is still its reference precision, while bf16 cannot load it. 8 x H200 holds it (SGLang guide).
    problem = Problem.from_dict({
        "name": "deepseek", "objective": "min_cost", "frameworks": ["sglang"],
        "models": [{"id": "deepseek-v3", "workload": {"input_tokens": 1024, "output_tokens": 256, "request_rate_per_s": 1},
                    "slo": {"ttft_ms": 10000, "tpot_ms": 500}, "precision_tolerance": "none"}],
        "hardware": {"gpus": ["h200"], "max_gpus": 8},
        "search": {"tp": [8], "batch_sizes": [4]},
    })
    ms = build_space(problem).models[0]
    assert {s.quantization.id for s in ms.shapes} == {"fp8"}
    assert any("serve it with quantization fp8" in reason for reason in ms.pruned)
