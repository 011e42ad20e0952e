"""The closed-loop load test: LLM-Pilot's characterization of a running inference service (Sec. III-C).

For each user count of the schedule (default 1, 2, 4, ..., 128, "increasing exponentially"),
that many simulated users each send a request, wait for the whole streamed answer, and send
the next one at once (a closed loop), for ``level_duration_s`` (LLM-Pilot: 2 minutes) or until
``max_requests_per_level`` requests were sent. Request lengths come from a
:class:`~guide_opt.simulate.workloads.LengthDistribution` (fixed, a preset, a histogram, or
LLM-Pilot's joint-bin generator fitted to a trace), drawn under a seed.

The run is bounded: per level (duration and request count), in total (``max_total_s``, no
new request after it), and per request (``request_timeout_s``; a stream silent for
``stall_timeout_s`` fails). It stops early -- keeping every record so far -- when the
``stop`` event is set (Ctrl-C), when the endpoint refuses connections, or when every request
of a level failed (the next, heavier level cannot do better: the message says why they failed).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import httpx
import numpy as np

from guide_opt.characterize.client import EndpointDown, RequestRecord, request_body, stream_request
from guide_opt.simulate.workloads import LengthDistribution

#: LLM-Pilot's default user counts: 1, 2, 4, ..., 128 (Sec. III-C).
LLM_PILOT_USERS: tuple[int, ...] = tuple(2 ** k for k in range(8))
#: LLM-Pilot's duration of one load level (Sec. III-C: "for a duration of 2 minutes").
LLM_PILOT_LEVEL_S = 120.0


def user_schedule(max_users: int, min_users: int = 1) -> tuple[int, ...]:
    """Powers of two from ``min_users`` to ``max_users`` (LLM-Pilot's schedule when 1..128)."""
    return tuple(u for u in (2 ** k for k in range(32)) if min_users <= u <= max_users)


@dataclass(frozen=True)
class LoadPlan:
    """What to load-test and the bounds of the run (times in seconds)."""

    completions_url: str
    model: str
    users: tuple[int, ...] = LLM_PILOT_USERS
    level_duration_s: float = LLM_PILOT_LEVEL_S
    max_requests_per_level: int = 1000
    max_total_s: float = 1800.0
    stall_timeout_s: float = 60.0
    request_timeout_s: float = 600.0
    ignore_eos: bool = True
    seed: int = 0


@dataclass(frozen=True)
class LevelResult:
    """One finished (or interrupted) level: its user count, start (s from the run's start) and wall time."""

    users: int
    start_s: float
    duration_s: float


@dataclass
class RunOutcome:
    """The levels run and, when the run ended early, why."""

    levels: list[LevelResult] = field(default_factory=list)
    stopped: str | None = None


def _lengths(distribution: LengthDistribution, n: int, seed: int) -> list[tuple[int, int]]:
    inputs, outputs = distribution.sample(np.random.default_rng(seed), n)
    return [(max(1, int(i)), max(1, int(o))) for i, o in zip(inputs, outputs)]


def _common_error(records: list[RequestRecord]) -> str:
    errors = Counter(r.error for r in records if r.error)
    return errors.most_common(1)[0][0] if errors else "no answer"


async def _run_level(client: httpx.AsyncClient, plan: LoadPlan, users: int, lengths: list[tuple[int, int]], records: list[RequestRecord],
                     run_start: float, stop: asyncio.Event) -> tuple[float, str | None]:
    """Run one level; return its wall time and a reason to stop the run (None to go on)."""
    level_start = time.perf_counter()
    issue_until = min(level_start + plan.level_duration_s, run_start + plan.max_total_s)
    issued = 0
    down: list[str] = []
    mine: list[RequestRecord] = []

    async def user_loop(user: int) -> None:
        nonlocal issued
        while not stop.is_set() and not down and time.perf_counter() < issue_until and issued < len(lengths):
            input_tokens, output_tokens = lengths[issued]
            issued += 1
            record = RequestRecord(users, user, time.perf_counter() - run_start, input_tokens, output_tokens)
            records.append(record)
            mine.append(record)
            # a distinct, reproducible prompt per request (hash of ints is the same in every process)
            body = request_body(plan.model, input_tokens, output_tokens, ignore_eos=plan.ignore_eos,
                                seed=hash((plan.seed, users, issued)) & 0x7FFFFFFF)
            try:
                await asyncio.wait_for(stream_request(client, plan.completions_url, body, record, stall_timeout_s=plan.stall_timeout_s),
                                       timeout=plan.request_timeout_s)
            except asyncio.TimeoutError:
                record.error = f"no complete answer within {plan.request_timeout_s:g} s (--request-timeout-s)"
            except EndpointDown as exc:
                record.error = str(exc)
                down.append(str(exc))

    tasks = [asyncio.create_task(user_loop(u)) for u in range(users)]
    stopper = asyncio.create_task(stop.wait())
    users_done = asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait([stopper, users_done], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in tasks:
        task.cancel()  # only when stopped: otherwise they are all done already
    await users_done
    duration_s = time.perf_counter() - level_start
    for record in mine:
        if not record.success and not record.error:
            record.error = "interrupted before the answer completed"
    if stop.is_set():
        return duration_s, "interrupted"
    if down:
        return duration_s, down[0]
    if mine and not any(r.success for r in mine):
        return duration_s, f"every request at {users} user(s) failed, e.g. {_common_error(mine)}"
    return duration_s, None


async def run_characterization(plan: LoadPlan, distribution: LengthDistribution, records: list[RequestRecord], *,
                               stop: asyncio.Event | None = None, progress: Callable[[LevelResult, list[RequestRecord]], None] | None = None,
                               transport: httpx.AsyncBaseTransport | None = None) -> RunOutcome:
    """Run every level of ``plan`` against the endpoint, appending to ``records`` as requests are sent.

    ``records`` is filled in place so a caller keeps what was measured whatever happens;
    ``progress`` is called after each level with its result and its records.
    """
    stop = stop or asyncio.Event()
    outcome = RunOutcome()
    run_start = time.perf_counter()
    limits = httpx.Limits(max_connections=max(plan.users) + 4, max_keepalive_connections=max(plan.users) + 4)
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        for index, users in enumerate(plan.users):
            if time.perf_counter() - run_start >= plan.max_total_s:
                outcome.stopped = f"the time limit of {plan.max_total_s:g} s (--max-total-s) was reached"
                break
            lengths = _lengths(distribution, plan.max_requests_per_level, plan.seed + index)
            start_s = time.perf_counter() - run_start
            n_before = len(records)
            duration_s, reason = await _run_level(client, plan, users, lengths, records, run_start, stop)
            outcome.levels.append(LevelResult(users, start_s, duration_s))
            if progress is not None:
                progress(outcome.levels[-1], records[n_before:])
            if reason:
                outcome.stopped = reason
                break
    return outcome
