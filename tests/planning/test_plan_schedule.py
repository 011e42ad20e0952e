"""Offline batch jobs on a limited pool: CP-SAT equals brute force, schedules verify, infeasibility explains itself."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guide_opt.cli import main
from guide_opt.problem import Problem
from guide_opt.scheduling import (Schedule, brute_force_schedule, job_duration_s, job_options, solve_schedule, verify_schedule)
from guide_opt.solution import Status
from guide_opt.space import build_space

#: problem file -> (status, objective window); hours for min_makespan, total $ for min_cost.
GOLDEN = {
    # With the elementwise kernels and the engines' host costs per step the 8-H100 pool could not finish the night
    # (CP-SAT's explanation: the 70B deadline would need 12.6 h, or 12 H100s), so the scenarios now hold 16 H100s.
    # Windows: +-3% of CP-SAT's proven optimum on the new pool (6.75 h, $392.07); brute_force_schedule cannot
    # enumerate 5 jobs x 5-10k options, so it cross-checks CP-SAT only on the small problems below.
    # Moved again with the host costs refitted with the KV re-read exponent (RESULTS.md 1.7): 7.58 h, $425.06.
    # And with one attention HBM fraction per KV-cache dtype and the host costs refitted over it: 7.42 h, $419.83.
    "batch-overnight-5-jobs.yaml": (Status.OPTIMAL, (7.20, 7.64)),      # h
    "batch-overnight-cheapest.yaml": (Status.OPTIMAL, (407.2, 432.4)),  # $
    "batch-infeasible-deadline.yaml": (Status.INFEASIBLE, None),
}


def small_jobs(objective: str = "min_makespan", **overrides) -> Problem:
    data = {
        "name": "small jobs",
        "models": [
            {"id": "llama-3.2-1b", "workload": {"input_tokens": 512, "output_tokens": 128, "requests": 400000, "deadline_h": 4}},
            {"id": "llama-3.1-8b", "workload": {"input_tokens": 1024, "output_tokens": 256, "requests": 60000, "deadline_h": 4}},
        ],
        "hardware": {"gpus": ["l40s", "a100-80gb-sxm"], "inventory": {"l40s": 2, "a100-80gb-sxm": 2}},
        "frameworks": ["vllm"],
        "objective": objective,
        "scheduling": {"enabled": True, "time_quantum_s": 600},
        "search": {"tp": [1, 2], "batch_sizes": [16, 64], "max_replicas": 4},
    }
    data.update(overrides)
    return Problem.from_dict(data)


@pytest.fixture(scope="module")
def solved(problem_file):
    cache = {}

    def get(name):
        if name not in cache:
            problem = problem_file(name)
            cache[name] = (problem, *solve_schedule(problem))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_schedules(solved, name):
    problem, solution, schedule, space = solved(name)
    status, window = GOLDEN[name]
    assert solution.status is status
    if window is None:
        e = solution.explanation
        assert any("models[2] (llama-3.1-70b)" in r and "deadline_h" in r for r in e["reasons"])
        assert e["conflicting_constraints"] and e["relaxations"]
        # the cheapest single relaxations: more GPUs of a type (the 70B job alone outlasts its deadline)
        assert any("deadline_h" in r["text"] or "instead of" in r["text"] for r in e["relaxations"])
        return
    assert window[0] <= solution.objective <= window[1]
    assert len(schedule.jobs) == len(problem.models) == 5
    assert verify_schedule(problem, schedule, space) == []


def test_schedule_respects_capacity_and_deadlines(solved):
    problem, _, schedule, _ = solved("batch-overnight-5-jobs.yaml")
    for t in {j.start_quanta for j in schedule.jobs}:
        for gpu, limit in problem.hardware.inventory.items():
            assert sum(j.option.gpus for j in schedule.jobs if j.option.gpu_id == gpu and j.start_quanta <= t < j.end_quanta) <= limit
    for j in schedule.jobs:
        assert j.finish_h <= j.end_h <= problem.models[j.option.job].workload.deadline_h


def test_duration_definition():
    assert job_duration_s(1000, 16, 4, 2.0) == math.ceil(1000 / 64) * 2.0
    assert job_duration_s(64, 16, 4, 2.0) == 2.0
    assert job_duration_s(65, 16, 4, 2.0) == 4.0


def test_options_are_exactly_pruned():
    problem = small_jobs()
    space = build_space(problem)
    all_options, _ = job_options(space, 1, prune=False)
    kept, pruned = job_options(space, 1)
    assert pruned == len(all_options) - len(kept) > 0
    for o in all_options:
        assert any(k.gpu_id == o.gpu_id and k.duration_quanta <= o.duration_quanta and k.gpus <= o.gpus and k.cost_quanta <= o.cost_quanta
                   for k in kept)
    with_prune, *_ = solve_schedule(problem, space=space)
    without, *_ = solve_schedule(problem, space=space, prune=False)
    assert with_prune.objective == pytest.approx(without.objective)


def test_verification_catches_an_overcommitted_pool_and_a_missed_deadline():
    problem = small_jobs()
    solution, schedule, space = solve_schedule(problem)
    assert verify_schedule(problem, schedule, space) == []
    first = schedule.jobs[0]
    twin = dataclasses.replace(first, start_quanta=0, option=dataclasses.replace(first.option, job=1))
    crowded = Schedule(schedule.status, schedule.objective_name, 0.0, None, (dataclasses.replace(first, start_quanta=0), twin), schedule.quantum_s)
    doubled_problem = problem.model_copy(update={"models": [problem.models[0]] * 2,
                                                 "hardware": problem.hardware.model_copy(update={"inventory": {first.option.gpu_id: first.option.gpus}})})
    texts = [v.text for v in verify_schedule(doubled_problem, crowded, space)]
    assert any(t.startswith(f"inventory[{first.option.gpu_id}]") for t in texts), texts
    late = tuple(dataclasses.replace(j, start_quanta=j.start_quanta + 10_000) for j in schedule.jobs)
    texts = [v.text for v in verify_schedule(problem, Schedule(schedule.status, schedule.objective_name, 0.0, None, late, schedule.quantum_s), space)]
    assert any("deadline" in t for t in texts)


@st.composite
def job_problems(draw):
    n = draw(st.integers(2, 3))
    llms = ["llama-3.2-1b", "llama-3.1-8b", "qwen2-7b"]
    models = []
    for i in range(n):
        models.append({"id": draw(st.sampled_from(llms)),
                       "workload": {"input_tokens": draw(st.sampled_from([256, 1024])), "output_tokens": draw(st.sampled_from([64, 256])),
                                    "requests": draw(st.sampled_from([20000, 100000, 300000])), "deadline_h": draw(st.sampled_from([3.0, 8.0]))},
                       "slo": {"tpot_ms": draw(st.sampled_from([30.0, 200.0]))}})
    gpus = draw(st.lists(st.sampled_from(["l4", "l40s", "a100-80gb-sxm"]), min_size=1, max_size=2, unique=True))
    hardware = {"gpus": gpus, "inventory": {g: draw(st.sampled_from([2, 3, 4])) for g in gpus}}
    if draw(st.booleans()):
        hardware["max_gpus"] = draw(st.sampled_from([3, 4]))
    data = {"name": "random jobs", "models": models, "hardware": hardware, "frameworks": ["vllm"],
            "objective": draw(st.sampled_from(["min_makespan", "min_cost"])),
            "scheduling": {"enabled": True, "time_quantum_s": 900},
            "search": {"tp": [1, 2], "batch_sizes": [16, 128], "max_replicas": 3}}
    if draw(st.booleans()):
        data["budget_per_hour"] = draw(st.sampled_from([3.0, 6.0]))
    return Problem.from_dict(data)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(job_problems())
def test_cpsat_schedule_equals_brute_force(problem):
    space = build_space(problem)
    solution, schedule, _ = solve_schedule(problem, space=space)
    brute = brute_force_schedule(space, problem.objective)
    assert solution.status is brute.status
    if brute.status is Status.OPTIMAL:
        assert math.isclose(solution.objective, brute.objective, rel_tol=1e-9, abs_tol=1e-9)
        assert verify_schedule(problem, schedule, space) == []
    else:
        assert solution.explanation["reasons"] or solution.explanation["conflicting_constraints"]


def test_min_cost_schedule_costs_no_more_than_the_makespan_schedule():
    fastest, *_ = solve_schedule(small_jobs("min_makespan"))
    cheapest, cheap_schedule, _ = solve_schedule(small_jobs("min_cost"))
    assert cheapest.objective <= fastest.stats["cost_usd"] + 1e-6
    assert cheap_schedule.makespan_h >= fastest.objective - 1e-9


def test_min_makespan_needs_batch_jobs():
    from guide_opt.errors import InputError

    with pytest.raises(InputError, match="not a batch job"):
        small_jobs(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 10, "output_tokens": 10, "request_rate_per_s": 1}}])


def test_cli_schedule_json_table_and_gantt(tmp_path, capsys):
    path = tmp_path / "jobs.yaml"
    path.write_text(json.dumps(small_jobs().model_dump(exclude_defaults=True)))
    chart = tmp_path / "gantt.png"
    assert main(["solve", str(path), "--format", "json", "--plot", str(chart)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["verified"] and payload["objective_unit"] == "h"
    row = payload["schedule"][0]
    assert {"job", "model", "shape", "start_h", "end_h", "gpus"} <= set(row)
    assert len(payload["deployments"]) == 2
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert main(["solve", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Schedule" in out and "deadline" in out and "verified with the full model" in out


def test_cli_infeasible_schedule_exit_code(capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "problems" / "batch-infeasible-deadline.yaml"
    assert main(["solve", str(path)]) == 2
    out = capsys.readouterr().out
    assert "Why it is infeasible" in out and "models[2]" in out and "deadline_h" in out


def test_scheduling_switch_is_explicit_and_validated():
    from guide_opt.errors import InputError

    assert small_jobs("min_makespan").is_schedule
    assert small_jobs("min_cost").is_schedule
    steady = small_jobs("min_cost", scheduling={"enabled": "auto"})
    assert not steady.is_schedule, "auto schedules only min_makespan; min_cost stays the steady fleet plan"
    with pytest.raises(InputError, match="min_cost or min_makespan"):
        small_jobs("max_throughput", budget_per_hour=10)
    with pytest.raises(InputError, match="remove scheduling.enabled"):
        small_jobs("min_makespan", scheduling={"enabled": False})
