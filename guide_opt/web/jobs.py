"""Solves as jobs: each in its own process, at most ``max_workers`` at once, bounded in time, cancellable.

A solve is CPU-bound Python and CP-SAT; running it in the web server's process would stall
every other user. :class:`JobRunner` starts one child process per running job (from a
``forkserver`` that has imported guide-opt once, so a child starts in milliseconds and never
inherits the server's threads), streams its progress sentences back through a pipe, and
kills it when the user cancels or when it exceeds ``max_solve_s``. Jobs beyond
``max_workers`` wait in a queue, so twenty users at once share the cores instead of
oversubscribing them. Finished jobs are kept for ``keep_s`` seconds for the page to fetch.
"""

from __future__ import annotations

import enum
import multiprocessing
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

#: Module the fork server imports once, so every job's process starts with guide-opt loaded.
_PRELOAD = "guide_opt.web.worker"


class JobState(str, enum.Enum):
    """Where a job is."""

    QUEUED = "queued"
    """Waiting for a free worker."""
    RUNNING = "running"
    """Its process is solving."""
    DONE = "done"
    """Finished: ``result`` holds the answer (found, infeasible, or bad input)."""
    CANCELLED = "cancelled"
    """Cancelled by the user; its process was stopped."""
    TIMED_OUT = "timed_out"
    """Ran past the server's wall-clock limit and was stopped; ``error`` says so."""
    FAILED = "failed"
    """Crashed (a bug); ``error`` says how."""


@dataclass
class Job:
    """One solve request and what is known about it so far (times in ``time.monotonic()`` seconds)."""

    id: str
    request: dict
    state: JobState = JobState.QUEUED
    progress: list[str] = field(default_factory=list)
    result: dict | None = None
    error: str | None = None
    submitted_s: float = field(default_factory=time.monotonic)
    started_s: float | None = None
    finished_s: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def over(self) -> bool:
        """True once the job can change no more."""
        return self.state in (JobState.DONE, JobState.CANCELLED, JobState.TIMED_OUT, JobState.FAILED)

    def to_json(self, queue_position: int | None = None) -> dict[str, Any]:
        """The job as ``GET /api/jobs/{id}`` returns it."""
        now = time.monotonic()
        payload: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "progress": list(self.progress),
            "queued_s": round((self.started_s or self.finished_s or now) - self.submitted_s, 3),
            "running_s": round((self.finished_s or now) - self.started_s, 3) if self.started_s else 0.0,
        }
        if queue_position is not None:
            payload["queue_position"] = queue_position
        if self.result is not None:
            payload["result"] = self.result
        if self.error is not None:
            payload["error"] = self.error
        return payload


def _child(request: dict, conn, max_time_limit_s: float) -> None:
    """Body of a job's process: solve, sending ``("progress", text)`` lines then ``("done", answer)``."""
    try:
        from guide_opt.web.worker import run_solve

        answer = run_solve(request, lambda text: conn.send(("progress", text)), max_time_limit_s=max_time_limit_s)
        conn.send(("done", answer))
    except BaseException as exc:  # a bug: report it in one line rather than a silent dead process
        conn.send(("failed", f"internal error: {type(exc).__name__}: {exc} (please report it)"))
    finally:
        conn.close()


def _context() -> multiprocessing.context.BaseContext:
    """A ``forkserver`` context preloading guide-opt where available, else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([_PRELOAD])
        return ctx
    return multiprocessing.get_context("spawn")


class JobRunner:
    """Runs solve jobs in child processes (see the module docstring).

    max_workers: jobs solving at once (default: the machine's cores).
    max_solve_s: wall-clock seconds a job may run before it is stopped.
    max_time_limit_s: cap on the CP-SAT time limit a request may ask for.
    keep_s / max_kept: how long, and how many, finished jobs are kept.
    """

    def __init__(self, *, max_workers: int | None = None, max_solve_s: float = 300.0, max_time_limit_s: float = 60.0,
                 keep_s: float = 900.0, max_kept: int = 200) -> None:
        self.max_workers = max_workers or max(1, os.cpu_count() or 1)
        self.max_solve_s = max_solve_s
        self.max_time_limit_s = max_time_limit_s
        self.keep_s = keep_s
        self.max_kept = max_kept
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._ctx = _context()

    def submit(self, request: dict) -> Job:
        """Queue ``request`` (a solve request, see :func:`guide_opt.web.worker.run_solve`) and return its job."""
        job = Job(id=uuid.uuid4().hex, request=request)
        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job ``job_id``, or None when unknown or forgotten."""
        with self._lock:
            return self._jobs.get(job_id)

    def queue_position(self, job: Job) -> int | None:
        """1 for the next queued job to start, ...; None when ``job`` is not queued."""
        if job.state is not JobState.QUEUED:
            return None
        with self._lock:
            queued = sorted((j for j in self._jobs.values() if j.state is JobState.QUEUED), key=lambda j: j.submitted_s)
        return next((i + 1 for i, j in enumerate(queued) if j.id == job.id), None)

    def cancel(self, job_id: str) -> Job | None:
        """Ask job ``job_id`` to stop (a queued job never starts, a running one's process is killed)."""
        job = self.get(job_id)
        if job is not None and not job.over:
            job.cancel_requested.set()
        return job

    def _forget_old(self) -> None:
        now = time.monotonic()
        over = sorted((j for j in self._jobs.values() if j.over), key=lambda j: j.finished_s or 0.0)
        for j in over:
            if now - (j.finished_s or now) > self.keep_s or len(self._jobs) > self.max_kept:
                del self._jobs[j.id]

    def _finish(self, job: Job, state: JobState, *, result: dict | None = None, error: str | None = None) -> None:
        job.result, job.error, job.finished_s = result, error, time.monotonic()
        job.state = state
        job.finished.set()

    def _run(self, job: Job) -> None:
        """Thread body: wait for a slot, run the child, relay its messages, enforce cancel and the time limit."""
        while not self._slots.acquire(timeout=0.1):
            if job.cancel_requested.is_set():
                self._finish(job, JobState.CANCELLED)
                return
        try:
            if job.cancel_requested.is_set():
                self._finish(job, JobState.CANCELLED)
                return
            self._run_child(job)
        except Exception as exc:  # the process could not start: the job fails with one line, the server goes on
            self._finish(job, JobState.FAILED, error=f"internal error: {type(exc).__name__}: {exc} (please report it)")
        finally:
            self._slots.release()

    def _run_child(self, job: Job) -> None:
        parent, child = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_child, args=(job.request, child, self.max_time_limit_s), daemon=True)
        job.started_s = time.monotonic()
        job.state = JobState.RUNNING
        process.start()
        child.close()
        job.request = {}  # the child has its copy; a kept job should not hold an uploaded config
        try:
            while True:
                if job.cancel_requested.is_set():
                    self._finish(job, JobState.CANCELLED)
                    return
                if time.monotonic() - job.started_s > self.max_solve_s:
                    self._finish(job, JobState.TIMED_OUT, error=f"the solve ran past the server's limit of {self.max_solve_s:g} s; "
                                                            "narrow the problem (fewer GPU types, engines) or run guide-opt on your machine")
                    return
                if not parent.poll(0.1):
                    continue
                try:
                    kind, body = parent.recv()
                except EOFError:
                    self._finish(job, JobState.FAILED, error=f"internal error: the solver process stopped (exit code {process.exitcode}); please report it")
                    return
                if kind == "progress":
                    job.progress.append(body)
                elif kind == "done":
                    self._finish(job, JobState.DONE, result=body)
                    return
                else:
                    self._finish(job, JobState.FAILED, error=body)
                    return
        finally:
            parent.close()
            if process.is_alive():
                process.kill()
            process.join(timeout=5)

    def shutdown(self) -> None:
        """Cancel every job that is not over (the server is stopping)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.over:
                job.cancel_requested.set()
