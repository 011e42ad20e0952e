"""Refinement spread over worker processes through a real PostgreSQL server (the README's recipe).

The server comes from ``$GUIDE_OPT_TEST_POSTGRES_URL`` (``.ci/run`` installs PostgreSQL from the
distribution's packages, starts it and sets the variable). Each worker is a separate
``guide-opt solve --refine --storage URL --study-name NAME --seed K`` process, exactly as the
README tells a user to run one per machine, after ``optuna create-study``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import optuna
import pytest

from problem_fixtures import PROBLEMS_DIR

URL = os.environ.get("GUIDE_OPT_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set GUIDE_OPT_TEST_POSTGRES_URL to a PostgreSQL database (.ci/run does)")

#: A bundled single-LLM problem whose refinement trials take a fraction of a second each.
PROBLEM = PROBLEMS_DIR / "quickstart.yaml"
TRIALS_PER_WORKER = 3
WORKERS = 4
#: Short heartbeats so that a killed worker's trial is failed within seconds (default: 60 s).
HEARTBEAT_S = 1


def _worker(study_name: str, seed: int, trials: int) -> subprocess.Popen:
    """One worker: the README's command line, in its own process."""
    env = dict(os.environ, GUIDE_OPT_HEARTBEAT_S=str(HEARTBEAT_S))
    argv = [sys.executable, "-m", "guide_opt.cli", "solve", str(PROBLEM), "--refine", "--trials", str(trials),
            "--storage", URL, "--study-name", study_name, "--seed", str(seed), "--format", "json"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _running_trials_of(study: optuna.Study, pid: int) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if str(t.user_attrs.get("guide_opt.worker", "")).endswith(f":{pid}")]


def test_four_workers_share_one_postgresql_study_and_a_killed_worker_fails_only_its_trial():
    study_name = f"guide-opt-test-{uuid.uuid4().hex[:10]}"
    optuna_cli = shutil.which("optuna", path=os.path.dirname(sys.executable)) or shutil.which("optuna")
    created = subprocess.run([optuna_cli, "create-study", "--storage", URL, "--study-name", study_name,
                              "--direction", "minimize"], capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name=study_name, storage=URL)

    # A worker that dies mid-trial: SIGKILL while one of its trials is RUNNING.
    victim = _worker(study_name, seed=99, trials=30)
    deadline = time.monotonic() + 120
    while not _running_trials_of(study, victim.pid):
        assert victim.poll() is None, victim.communicate()[1]
        assert time.monotonic() < deadline, "the worker never started a trial"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    orphaned = _running_trials_of(study, victim.pid)
    assert orphaned, "the worker was killed between trials; no trial was left running"
    time.sleep(3 * HEARTBEAT_S)  # past the grace period (2 heartbeats): the orphan is now stale

    survivors = [_worker(study_name, seed=k, trials=TRIALS_PER_WORKER) for k in range(WORKERS)]
    reports = []
    for proc in survivors:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out)["refinement"])

    # Each report counts the trials its own process ran, and the study holds exactly those,
    # the victim's trials and nothing else: no trial lost, none run twice. (Warm starts the
    # victim enqueued but never reached stay WAITING for a later worker, as Optuna keeps them.)
    assert [r["trials"]["run"] for r in reports] == [TRIALS_PER_WORKER] * WORKERS
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
    by_worker = Counter(str(t.user_attrs.get("guide_opt.worker")).rsplit(":", 1)[-1] for t in trials)
    survivor_pids = {str(p.pid) for p in survivors}
    assert {pid: n for pid, n in by_worker.items() if pid in survivor_pids} == {pid: TRIALS_PER_WORKER for pid in survivor_pids}
    assert set(by_worker) <= survivor_pids | {str(victim.pid)}
    states = {t.number: t.state for t in trials}
    assert all(states[n] == optuna.trial.TrialState.FAIL for n in orphaned)
    assert not [n for n, s in states.items() if s == optuna.trial.TrialState.RUNNING]
    assert len({t.number for t in trials}) == len(trials)
    assert sum(bool(t.user_attrs.get("guide_opt.incumbent")) for t in trials) == 1  # enqueued once, run once
