"""One time limit for the whole solve (:class:`~guide_opt.deadline.Deadline`), and the same answer on every run.

Expected values come from the definitions: a deadline of T seconds on a clock that reads t has
T - t left; a pick asked for and not found must still be listed (with its status); two runs of
the same command with the same seed print the same JSON once wall times are removed.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from guide_opt.deadline import MIN_CALL_S, MIN_SEARCH_SHARE, Deadline
from guide_opt.plan import objective_value
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.space import build_space
from problem_fixtures import small_problem, small_problem_data

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A clock that reads ``now`` (s); tests move it by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline_counts_down_and_charges_phases():
    clock = FakeClock()
    deadline = Deadline(10.0, clock=clock)
    deadline.phase("space_build")
    clock.now += 5.0  # the build spends half of the 10 s: 5 s are left, more than the 2 s share the search is owed
    deadline.start_search()
    clock.now += 2.0
    # 10 s budget, 5 + 2 s spent: 3 s left; a call capped at 1 s gets 1 s
    assert deadline.remaining_s() == pytest.approx(3.0) and deadline.call_limit_s(1.0) == pytest.approx(1.0)
    deadline.phase("alternatives")
    clock.now += 4.0
    assert deadline.expired and deadline.call_limit_s() == MIN_CALL_S  # overrun: the floor, never a negative limit
    deadline.add_cp_sat_call(0.25)
    deadline.add_cp_sat_call(0.5)
    timing = deadline.timing()
    assert timing == {"space_build_s": 5.0, "solve_s": 2.0, "alternatives_s": 4.0, "cp_sat_s": 0.75, "cp_sat_calls": 2,
                      "time_limit_s": 10.0, "used_s": 11.0}


def test_a_build_that_overruns_the_limit_leaves_the_search_its_share():
    # 5 s limit, the build takes 7 s: the search is still owed MIN_SEARCH_SHARE x 5 s, so the budget grows
    # by 7 - 5 + 0.2 x 5 = 3 s (hand computation from the definition), reported as extended_s.
    clock = FakeClock()
    deadline = Deadline(5.0, clock=clock)
    deadline.phase("space_build")
    clock.now += 7.0
    deadline.start_search()
    assert MIN_SEARCH_SHARE == 0.2
    assert deadline.remaining_s() == pytest.approx(1.0) and not deadline.expired
    assert deadline.limit_s == 5.0 and deadline.total_s == pytest.approx(8.0)
    clock.now += 1.0
    assert deadline.expired
    assert deadline.phase_s("space_build") == 7.0 and deadline.phase_s("solve") == pytest.approx(1.0)  # running: up to now
    assert deadline.phase_s("alternatives") == 0.0
    assert deadline.timing() == {"space_build_s": 7.0, "solve_s": 1.0, "cp_sat_s": 0.0, "cp_sat_calls": 0, "time_limit_s": 5.0,
                                 "extended_s": 3.0, "used_s": 8.0}


def test_solve_counts_the_candidate_build_in_its_time_limit():
    # Solver.solve building its own space: the build is the first phase of the one deadline, and the
    # phases add up to the time used (each phase is a slice of the same wall clock).
    solution = get_solver("cpsat").solve(small_problem(), time_limit_s=60.0, seed=0)
    timing = solution.stats["timing"]
    assert timing["space_build_s"] > 0.0 and list(timing)[0] == "space_build_s"
    phases = sum(v for k, v in timing.items() if k.endswith("_s") and k not in ("cp_sat_s", "time_limit_s", "used_s", "extended_s"))
    assert phases == pytest.approx(timing["used_s"], abs=2e-3)


def test_picks_cut_short_by_the_deadline_are_reported_not_dropped():
    problem = small_problem()
    solver = get_solver("cpsat")
    space = build_space(problem)
    ranked = solver.best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=30.0, seed=0)
    clock = FakeClock()
    spent = Deadline(1.0, clock=clock)
    clock.now += 2.0  # the whole budget is gone before the picks
    alternatives = solver._alternatives(space, ranked, spent, seed=0)
    kinds = {a["kind"]: a for a in alternatives}
    # asked for: top-1 (already solved) and the two GUIDE picks a min_cost problem adds
    assert set(kinds) == {"top-1", "best-throughput", "min-latency"}
    assert kinds["top-1"]["status"] == "OPTIMAL" and kinds["top-1"]["deployments"]
    for kind in ("best-throughput", "min-latency"):
        assert kinds[kind]["status"] == Status.UNKNOWN.value and kinds[kind]["deployments"] == [] and kinds[kind]["objective"] is None


def test_tie_break_in_one_solve_is_lexicographic():
    # Brute force over every plan of the small problem (exhaustive solver): the cheapest cost, and among
    # the cheapest plans the least latency, must be what CP-SAT's single combined solve returns.
    problem = small_problem()
    space = build_space(problem)
    exact = get_solver("exhaustive").best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=120.0, seed=0).plans[0]
    combined = get_solver("cpsat").best_plans(space, "min_cost", k=1, forbidden=frozenset(), deadline=30.0, seed=0).plans[0]
    assert objective_value("min_cost", combined) == pytest.approx(objective_value("min_cost", exact), rel=1e-9)
    assert objective_value("min_latency", combined) == pytest.approx(objective_value("min_latency", exact), rel=1e-9)


def _without_timing(payload):
    """``payload`` without what measures time: wall times and the timing breakdown."""
    if isinstance(payload, dict):
        return {k: _without_timing(v) for k, v in payload.items() if k not in ("wall_time_s", "timing")}
    if isinstance(payload, list):
        return [_without_timing(v) for v in payload]
    return payload


@pytest.mark.parametrize("objective", ["min_cost", "max_throughput"])
def test_same_seed_same_json_across_processes(tmp_path, objective):
    # A two-LLM fleet with two engines whose figures tie often (equal-objective plans exist), solved in
    # two fresh processes with one seed: the JSON must be identical apart from timings.
    data = small_problem_data(
        models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                 "slo": {"ttft_ms": 800, "tpot_ms": 40}},
                {"id": "llama-2-7b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 2},
                 "slo": {"ttft_ms": 800, "tpot_ms": 50}}],
        frameworks=["vllm", "sglang"], objective=objective, prediction={"serving_model": "burst"})
    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    command = [sys.executable, "-m", "guide_opt.cli", "solve", str(path), "--seed", "7", "--format", "json", "--no-cache"]  # both build
    runs = [subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["status"] == "OPTIMAL"
    assert _without_timing(first) == _without_timing(second)


@pytest.mark.parametrize("objective", ["max_throughput", "min_latency"])
def test_combined_tie_break_equals_two_solves(monkeypatch, objective):
    # Two ways to the same lexicographic optimum: one solve of primary x W + secondary, and the
    # fallback (primary first, then the tie-break on a copy of the model). Each rank must agree on
    # both the objective and the tie-break (cost).
    import guide_opt.solvers.cpsat as cpsat

    space = build_space(small_problem(objective=objective))
    combined = cpsat.CpSatSolver().best_plans(space, objective, k=3, forbidden=frozenset(), deadline=30.0, seed=0)
    original = cpsat.lexicographic
    monkeypatch.setattr(cpsat, "lexicographic", lambda form: dataclasses.replace(original(form), weight=None))
    two_solves = cpsat.CpSatSolver().best_plans(space, objective, k=3, forbidden=frozenset(), deadline=30.0, seed=0)
    assert len(combined.plans) == len(two_solves.plans) >= 2
    for a, b in zip(combined.plans, two_solves.plans):
        assert objective_value(objective, a) == pytest.approx(objective_value(objective, b), rel=1e-9)
        assert objective_value("min_cost", a) == pytest.approx(objective_value("min_cost", b), rel=1e-9)


def test_the_command_line_counts_its_start_in_the_time_limit(tmp_path, capsys):
    # guide-opt solve through its entry point: the limit counts from the command's start, so the
    # breakdown opens with startup_s (reading the problem), the phases tile the time used (each is a
    # slice of one wall clock), and no command start is left behind for the next call in this process.
    from guide_opt.cli import main
    from guide_opt.cli.app import command_started_s

    path = tmp_path / "small.yaml"
    path.write_text(json.dumps(small_problem_data()))  # JSON is YAML
    assert main(["solve", str(path), "--format", "json", "--time-limit-s", "60", "--seed", "0"]) == 0
    timing = json.loads(capsys.readouterr().out)["stats"]["timing"]
    assert list(timing)[:2] == ["startup_s", "space_build_s"] and timing["startup_s"] > 0.0
    phases = sum(v for k, v in timing.items() if k.endswith("_s") and k not in ("cp_sat_s", "time_limit_s", "used_s", "extended_s", "total_s"))
    assert phases == pytest.approx(timing["used_s"], abs=2e-3)
    assert command_started_s() is None
