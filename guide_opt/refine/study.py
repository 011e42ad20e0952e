"""The Optuna study: storage (in memory, SQLite, PostgreSQL), creation, warm start, trials.

- :func:`open_storage` / :func:`redact_storage_url` / :func:`heartbeat_interval_s` -- the
  storage a study lives in; server databases (PostgreSQL, MySQL) run a heartbeat so that a
  dead worker's trial is failed instead of left RUNNING, SQLite serializes its transactions.
- :func:`fingerprint` -- what makes two trials comparable; a shared study refuses workers with
  another problem, incumbent or simulated stream.
- :func:`run_study` -- open (or join) the study, enqueue the incumbent and its one-knob moves,
  run the trials with the :class:`~guide_opt.refine.evaluate.Evaluator` as judge, and sort the
  finished trials (:class:`TrialCounts`).

Search: TPE (``optuna.samplers.TPESampler(seed=...)``), warm-started with ``enqueue_trial``:
the incumbent as trial 0, then its one-knob moves. Optuna 5 reads the constraints that each
trial sets with ``trial.set_constraint`` (the sampler's ``constraints_func`` is deprecated
there and is used only on Optuna < 5). ``study.optimize(..., catch=(Exception,))`` turns a
simulator failure into a failed trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from guide_opt.errors import InputError
from guide_opt.objectives import OBJECTIVES
from guide_opt.refine import knobs
from guide_opt.refine.evaluate import Evaluator, finite_or_none

#: Share of the trials spent on the incumbent's one-knob moves (:func:`~guide_opt.refine.knobs.warm_starts`), enqueued after it.
WARM_START_SHARE = 1 / 3
#: Seconds between a running trial's heartbeats on a PostgreSQL / MySQL storage (a trial silent for
#: twice this is failed by the next worker that starts a trial); ``$GUIDE_OPT_HEARTBEAT_S`` overrides it.
HEARTBEAT_INTERVAL_S = 60
#: Environment variable overriding :data:`HEARTBEAT_INTERVAL_S` (whole seconds, at least 1).
HEARTBEAT_ENV = "GUIDE_OPT_HEARTBEAT_S"
#: Distinct failure messages kept in the report.
MAX_ERRORS_REPORTED = 5

ATTR_FINGERPRINT = "guide_opt.fingerprint"
#: A trial's evaluation summary: feasible, confirmed, secondary key, $/h, violations, metrics.
ATTR_EVALUATION = "guide_opt.evaluation"
ATTR_CONSTRAINTS = "guide_opt.constraints"
ATTR_WORKER = "guide_opt.worker"
#: One id per refine_solution call, on every trial that call ran: a report counts its own trials even
#: when other workers of a shared study finish theirs at the same time.
ATTR_RUN = "guide_opt.run"
ATTR_ERROR = "guide_opt.error"
ATTR_PRUNED = "guide_opt.pruned_reason"


# ---- storage -----------------------------------------------------------------------------------
def redact_storage_url(storage: Any) -> str:
    """A storage URL safe to print (password hidden); ``in-memory`` for None."""
    if storage is None:
        return "in-memory"
    if isinstance(storage, optuna.storages.BaseStorage):
        return type(storage).__name__
    try:
        from sqlalchemy.engine import make_url

        return make_url(str(storage)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- a URL SQLAlchemy cannot parse is reported as given, minus credentials
        text = str(storage)
        return text.split("@", 1)[-1] if "@" in text else text


def open_storage(storage: "str | optuna.storages.BaseStorage | None") -> optuna.storages.BaseStorage:
    """Optuna storage for ``storage``: in memory for None, an RDB storage for an ``sqlite:///`` or ``postgresql://`` URL.

    SQLite connections wait up to 60 s on a locked database and take the write lock at the
    start of each transaction (:func:`_serialize_sqlite_transactions`), so several local
    processes can share one file safely. Raises :class:`InputError` for an unsupported or unreachable URL.
    """
    if storage is None:
        return optuna.storages.InMemoryStorage()
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    url = str(storage)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise InputError("--storage", f"unsupported storage URL '{redact_storage_url(url)}'",
                         "use sqlite:///path/to/study.db or postgresql://user:password@host:5432/dbname")
    if scheme == "sqlite" and url.split("://", 1)[-1].strip("/") in ("", ":memory:"):
        # an in-memory SQLite database lives per connection: the study's tables vanish between transactions
        raise InputError("--storage", f"'{url}' names no database file", "use sqlite:///path/to/study.db, or leave --storage out for in-memory")
    if url.split(":", 1)[0].lower() in ("postgres", "postgresql"):
        # No driver named: psycopg 3 (the `postgres` extra), whatever SQLAlchemy's own default is.
        url = "postgresql+psycopg" + url[url.index(":"):]
    # SQLite: pysqlite's own BEGIN is switched off (isolation_level None) so that every
    # transaction can start with BEGIN IMMEDIATE, below.
    engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}} if scheme == "sqlite" else {"pool_pre_ping": True}
    # Server databases serve several machines: a heartbeat lets Optuna mark the trials of a
    # machine that died as FAIL instead of leaving them RUNNING forever.
    interval_s = heartbeat_interval_s()
    heartbeat = {} if scheme == "sqlite" else {"heartbeat_interval": interval_s, "grace_period": 2 * interval_s}
    try:
        with warnings.catch_warnings():  # heartbeat_interval is marked experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        if scheme == "sqlite":
            _serialize_sqlite_transactions(rdb.engine)
        return rdb
    except ModuleNotFoundError as exc:
        raise InputError("--storage", f"the database driver for '{scheme}' is not installed ({exc.name})",
                         "pip install 'guide-opt[postgres]' (PostgreSQL) or use sqlite:///study.db") from None
    except Exception as exc:  # noqa: BLE001 -- any connection failure is the user's URL or server
        raise InputError("--storage", f"cannot open '{redact_storage_url(url)}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                         "check the URL, that the database exists and that this machine can reach it") from None


def heartbeat_interval_s() -> int:
    """Seconds between heartbeats of a running trial on a server database: ``$GUIDE_OPT_HEARTBEAT_S`` or :data:`HEARTBEAT_INTERVAL_S`."""
    value = os.environ.get(HEARTBEAT_ENV)
    if value is None:
        return HEARTBEAT_INTERVAL_S
    if not value.isdigit() or int(value) < 1:
        raise InputError(HEARTBEAT_ENV, f"'{value}' is not a whole number of seconds >= 1", f"unset {HEARTBEAT_ENV} or set it to e.g. 60")
    return int(value)


def _serialize_sqlite_transactions(engine) -> None:
    """Start every SQLite transaction with ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite recipe).

    Optuna pops an enqueued (WAITING) trial by reading its state and writing RUNNING under
    ``SELECT ... FOR UPDATE``, which SQLite ignores: two processes can both read WAITING and
    both run the same trial (optuna/optuna#4621). Taking SQLite's write lock at the start of
    each transaction serializes those read-then-write steps across processes; PostgreSQL
    needs nothing, its row locks already do this.
    """
    from sqlalchemy import event

    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    engine.dispose()  # connections opened while the storage set itself up start afresh


# ---- the study ---------------------------------------------------------------------------------
def fingerprint(evaluator: Evaluator) -> str:
    """Hash of everything that makes two trials comparable: problem, incumbent neighbourhood, simulated stream."""
    payload = {"version": 1, "problem": evaluator.problem.model_dump(mode="json"),
               "incumbent": [[d.gpu, d.pp, d.quantization, d.kv_cache_dtype, s.to_json()]
                             for d, s in zip(evaluator.incumbent, evaluator.incumbent_settings)],
               "num_requests": evaluator.num_requests, "simulation_seed": evaluator.simulation_seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def direction_of(objective: str) -> str:
    """Optuna's direction for a refinement objective: its registry entry's sense."""
    return "minimize" if OBJECTIVES[objective].minimized else "maximize"


def _open_study(storage: optuna.storages.BaseStorage, study_name: str, direction: str, fingerprint: str, seed: int,
                trials: int) -> optuna.Study:
    """Create or load the study, check it holds this problem's trials, and seed its TPE sampler."""
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise InputError("--study-name", f"study '{study_name}' was created to {study.direction.name.lower()}, this refinement must {direction}",
                         "use another --study-name, or create the study with the matching --direction")
    stored = study.user_attrs.get(ATTR_FINGERPRINT)
    if stored is None:
        study.set_user_attr(ATTR_FINGERPRINT, fingerprint)
        stored = study.user_attrs.get(ATTR_FINGERPRINT, fingerprint)
    if stored != fingerprint:
        raise InputError("--study-name", f"study '{study_name}' holds trials of another problem, incumbent, num_requests or simulation seed",
                         "give every worker the same problem file and settings, or use a new --study-name")
    existing = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                                               optuna.trial.TrialState.PRUNED)))
    startup = max(3, min(10, trials // 3)) if trials else 10
    sampler_kwargs: dict[str, Any] = {"seed": seed + existing, "n_startup_trials": startup}
    if not hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna < 5: named constraints travel as user attributes
        sampler_kwargs["constraints_func"] = lambda t: list(t.user_attrs.get(ATTR_CONSTRAINTS, {}).values())
    study.sampler = optuna.samplers.TPESampler(**sampler_kwargs)
    return study


def _objective(evaluator: Evaluator, run_id: str, storage: optuna.storages.BaseStorage):
    """The trial function: sample the knobs, prune a plan that cannot run, simulate and record the named constraints.

    On a storage with heartbeats the trial's first heartbeat is written before anything else:
    Optuna writes it from a thread that may not have run yet, and a RUNNING trial without any
    heartbeat is never failed, so a worker killed in that window would leave it RUNNING forever.
    """
    worker = f"{socket.gethostname()}:{os.getpid()}"
    beats = isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None

    def objective(trial: optuna.Trial) -> float:
        if beats:
            storage.record_heartbeat(trial._trial_id)  # noqa: SLF001 -- Optuna's own heartbeat thread uses the same id
        trial.set_user_attr(ATTR_WORKER, worker)
        trial.set_user_attr(ATTR_RUN, run_id)
        settings = tuple(knobs.suggest(trial, i, n) for i, n in enumerate(evaluator.neighbourhoods))
        reason = evaluator.unsupported(settings)
        if reason:
            trial.set_user_attr(ATTR_PRUNED, reason)
            raise optuna.TrialPruned(reason)
        try:
            evaluation = evaluator.evaluate_confirmed(settings)
        except Exception as exc:
            trial.set_user_attr(ATTR_ERROR, f"{type(exc).__name__}: {exc}")
            raise
        if hasattr(trial, "set_constraint"):
            for name, value in evaluation.constraints.items():
                trial.set_constraint(name, value)
        trial.set_user_attr(ATTR_CONSTRAINTS, evaluation.constraints)
        trial.set_user_attr(ATTR_EVALUATION, {"feasible": evaluation.feasible, "confirmed": evaluation.confirmed,
                                              "secondary": finite_or_none(evaluation.secondary),
                                              "cost_per_hour": evaluation.cost_per_hour, "violations": list(evaluation.violations),
                                              "metrics": [m.to_json() for m in evaluation.metrics]})
        return evaluation.objective

    return objective


def trial_constraints(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """A finished trial's named constraints (Optuna 5's ``trial.constraints``, else the user attribute)."""
    return dict(trial.constraints) if trial.constraints else dict(trial.user_attrs.get(ATTR_CONSTRAINTS, {}))


@dataclass(frozen=True)
class TrialCounts:
    """The study's finished trials, sorted for the report.

    finished: COMPLETE, FAIL or PRUNED (all workers). run_now: those this call ran. complete /
    feasible: COMPLETE ones, and those with a finite value meeting every named constraint.
    failed / pruned: counts. errors: distinct failure messages (at most
    :data:`MAX_ERRORS_REPORTED`). unconfirmed: COMPLETE trials feasible on the search stream
    but not on the confirmation streams.
    """

    finished: tuple[optuna.trial.FrozenTrial, ...]
    run_now: tuple[optuna.trial.FrozenTrial, ...]
    complete: tuple[optuna.trial.FrozenTrial, ...]
    feasible: tuple[optuna.trial.FrozenTrial, ...]
    failed: int
    pruned: int
    errors: tuple[str, ...]
    unconfirmed: int


def run_study(evaluator: Evaluator, storage: optuna.storages.BaseStorage, study_name: str, fingerprint: str, *, seed: int,
              trials: int, timeout_s: float | None, progress: bool) -> TrialCounts:
    """Open or join ``study_name``, enqueue the incumbent and its one-knob moves, run ``trials`` trials and sort the finished ones.

    The incumbent is enqueued as trial 0 (skipped when the study already holds it), then the
    first :data:`WARM_START_SHARE` x ``trials`` one-knob moves. In memory with one worker the
    whole run is deterministic under ``seed``.
    """
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _open_study(storage, study_name, direction_of(evaluator.problem.objective), fingerprint, seed, trials)
        study.enqueue_trial(knobs.params(evaluator.incumbent_settings), user_attrs={"guide_opt.incumbent": True}, skip_if_exists=True)
        for plan in knobs.warm_starts(evaluator.incumbent_settings, evaluator.neighbourhoods)[:int(trials * WARM_START_SHARE)]:
            study.enqueue_trial(knobs.params(plan), user_attrs={"guide_opt.warm_start": True}, skip_if_exists=True)
        run_id = uuid.uuid4().hex
        if trials > 0:
            study.optimize(_objective(evaluator, run_id, storage), n_trials=trials, timeout=timeout_s, n_jobs=1, catch=(Exception,),
                           show_progress_bar=progress)
        all_trials = study.get_trials(deepcopy=False)
    finally:
        optuna.logging.set_verbosity(previous_verbosity)

    states = optuna.trial.TrialState
    finished = tuple(t for t in all_trials if t.state in (states.COMPLETE, states.FAIL, states.PRUNED))
    complete = tuple(t for t in finished if t.state == states.COMPLETE)
    return TrialCounts(
        finished=finished,
        run_now=tuple(t for t in finished if t.user_attrs.get(ATTR_RUN) == run_id),
        complete=complete,
        feasible=tuple(t for t in complete if t.value is not None and math.isfinite(t.value)
                       and all(v <= 0 for v in trial_constraints(t).values())),
        failed=sum(t.state == states.FAIL for t in finished),
        pruned=sum(t.state == states.PRUNED for t in finished),
        errors=tuple(dict.fromkeys(t.user_attrs.get(ATTR_ERROR, "unknown error") for t in finished
                                   if t.state == states.FAIL))[:MAX_ERRORS_REPORTED],
        unconfirmed=sum(1 for t in complete if t.user_attrs.get(ATTR_EVALUATION, {}).get("confirmed") is False),
    )
