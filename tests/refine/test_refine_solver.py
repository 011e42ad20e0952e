"""The registered ``optuna`` solver: CP-SAT incumbent, then refinement (``--solver optuna``)."""

from __future__ import annotations

import json

import yaml

from guide_opt.cli import main
from guide_opt.presets import SolverPreset
from guide_opt.problem import Problem
from guide_opt.solution import Status
from problem_fixtures import small_problem_data
from guide_opt.solvers import SOLVERS, get_solver, load_all
from guide_opt.solvers.optuna_solver import OptunaSolver

PROBLEM = small_problem_data(name="small optuna")


def test_optuna_is_registered():
    load_all()
    assert SOLVERS["optuna"] is OptunaSolver
    assert not OptunaSolver.proves_optimality


def test_solution_holds_the_refined_plan_and_the_report():
    problem = Problem.from_dict(PROBLEM)
    solution = OptunaSolver(SolverPreset(trials=6), num_requests=200).solve(problem, seed=0)
    assert solution.status is Status.FEASIBLE and solution.solver == "optuna"
    assert solution.bound is None and solution.gap is None
    report = solution.stats["refinement"]
    assert report["trials"]["run"] == 6
    assert [d.to_json()["summary"] for d in solution.deployments] == [d["summary"] for d in report["refined"]["deployments"]]
    assert solution.objective == report["refined"]["objective"] == solution.total_cost_per_hour
    assert solution.stats["cp_sat_status"] == "OPTIMAL"


def test_infeasible_problem_is_returned_as_cp_sat_answered_it():
    problem = Problem.from_dict({**PROBLEM, "budget_per_hour": 0.5})
    solution = get_solver("optuna", SolverPreset(trials=3)).solve(problem, alternatives=False)
    assert solution.status is Status.INFEASIBLE and solution.explanation


def test_solve_cli_with_solver_optuna(tmp_path, capsys):
    problem = tmp_path / "p.yaml"
    problem.write_text(yaml.safe_dump(PROBLEM))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump({"description": "test", "trials": 4, "time_limit_s": 5}))
    code = main(["solve", str(problem), "--solver", "optuna", "--preset", str(preset), "--format", "json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert payload["solver"] == "optuna" and payload["status"] == "FEASIBLE"
    assert payload["stats"]["refinement"]["trials"]["run"] == 4
