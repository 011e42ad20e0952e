"""Scaling refinement out: several workers on one RDB-backed (SQLite here) Optuna study."""

from __future__ import annotations

import multiprocessing
from collections import Counter

import optuna
import pytest
import yaml

from guide_opt.errors import InputError
from guide_opt.problem import Problem
from guide_opt.refine import open_storage, redact_storage_url, refine_solution, run_worker
from problem_fixtures import small_problem_data
from guide_opt.solvers import get_solver

NUM_REQUESTS = 200
PROBLEM = small_problem_data(name="small shared")


@pytest.fixture
def problem_file(tmp_path):
    path = tmp_path / "problem.yaml"
    path.write_text(yaml.safe_dump(PROBLEM))
    return path


def test_two_worker_processes_share_one_sqlite_study(tmp_path, problem_file):
    url = f"sqlite:///{tmp_path / 'refine.db'}"
    problem = Problem.from_yaml(problem_file)
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    # Create the study once (schema, fingerprint, enqueued incumbent) before the workers start.
    prepared = refine_solution(problem, solution, trials=0, seed=0, storage=url, study_name="shared", num_requests=NUM_REQUESTS)
    assert prepared.trials_total == 0

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=run_worker, args=(url, "shared", 4),
                               kwargs={"problem": str(problem_file), "seed": 100 + k, "num_requests": NUM_REQUESTS}) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    study = optuna.load_study(study_name="shared", storage=url)
    finished = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(finished) == 8
    by_worker = Counter(t.user_attrs["guide_opt.worker"] for t in finished)
    assert len(by_worker) == 2 and sorted(by_worker.values()) == [4, 4]
    assert sum(bool(t.user_attrs.get("guide_opt.incumbent")) for t in study.get_trials()) == 1  # enqueued once, run by one worker

    # A later run on the same study sees every worker's trials.
    again = refine_solution(problem, solution, trials=2, seed=5, storage=url, study_name="shared", num_requests=NUM_REQUESTS)
    assert again.trials_run == 2 and again.trials_total == 10


def test_a_study_of_other_settings_is_refused(tmp_path, problem_file):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    problem = Problem.from_yaml(problem_file)
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    refine_solution(problem, solution, trials=1, seed=0, storage=url, study_name="s", num_requests=NUM_REQUESTS)
    with pytest.raises(InputError, match="another problem"):
        refine_solution(problem, solution, trials=1, seed=0, storage=url, study_name="s", num_requests=NUM_REQUESTS + 1)


def test_default_study_name_is_shared_by_identical_runs(tmp_path, problem_file):
    url = f"sqlite:///{tmp_path / 'named.db'}"
    problem = Problem.from_yaml(problem_file)
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    a = refine_solution(problem, solution, trials=1, seed=0, storage=url, num_requests=NUM_REQUESTS)
    b = refine_solution(problem, solution, trials=1, seed=1, storage=url, num_requests=NUM_REQUESTS)
    assert a.study_name == b.study_name and a.study_name.startswith("guide-opt-refine-")
    assert b.trials_total == 2


def test_storage_urls():
    assert isinstance(open_storage(None), optuna.storages.InMemoryStorage)
    with pytest.raises(InputError, match="unsupported storage URL"):
        open_storage("redis://localhost/0")
    assert "secret" not in redact_storage_url("postgresql://alice:secret@db.example:5432/optuna")
    assert redact_storage_url(None) == "in-memory"


def _worker_report(url: str, problem_file: str, seed: int) -> tuple[int, int]:
    """One spawned worker: 3 trials on the shared study; returns (trials it reports as its own, its pid)."""
    import os

    report = run_worker(url, "four", 3, problem=problem_file, seed=seed, num_requests=NUM_REQUESTS)
    return report.trials_run, os.getpid()


def test_four_workers_each_report_exactly_their_own_trials(tmp_path, problem_file):
    # Expected counts by construction: 4 workers x 3 trials each = 12 finished trials in the study,
    # each worker's report says 3 (not the trials its neighbours finished meanwhile).
    url = f"sqlite:///{tmp_path / 'four.db'}"
    problem = Problem.from_yaml(problem_file)
    solution = get_solver("cpsat").solve(problem, alternatives=False)
    refine_solution(problem, solution, trials=0, seed=0, storage=url, study_name="four", num_requests=NUM_REQUESTS)

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        reports = pool.starmap(_worker_report, [(url, str(problem_file), 200 + k) for k in range(4)])

    assert [run for run, _pid in reports] == [3, 3, 3, 3]
    study = optuna.load_study(study_name="four", storage=url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == sum(run for run, _pid in reports) == 12  # nothing lost, nothing counted twice
    assert len({t.number for t in finished}) == 12  # no duplicated trial
    runs = Counter(t.user_attrs["guide_opt.run"] for t in finished)
    assert sorted(runs.values()) == [3, 3, 3, 3]  # each trial belongs to exactly one worker's run
    workers = Counter(t.user_attrs["guide_opt.worker"] for t in finished)
    assert len(workers) == 4


def test_heartbeat_interval_comes_from_the_environment(monkeypatch):
    from guide_opt.refine import HEARTBEAT_INTERVAL_S, heartbeat_interval_s

    monkeypatch.delenv("GUIDE_OPT_HEARTBEAT_S", raising=False)
    assert heartbeat_interval_s() == HEARTBEAT_INTERVAL_S
    monkeypatch.setenv("GUIDE_OPT_HEARTBEAT_S", "5")
    assert heartbeat_interval_s() == 5
    monkeypatch.setenv("GUIDE_OPT_HEARTBEAT_S", "0")
    with pytest.raises(InputError, match="GUIDE_OPT_HEARTBEAT_S"):
        open_storage("postgresql://u:p@127.0.0.1:1/x")
