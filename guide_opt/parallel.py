"""Independent pure computations spread over forked worker processes, with the serial results.

The planner's expensive steps are pure functions of their inputs: evaluating one shape's
candidates (:mod:`guide_opt.space`) or simulating one plan (:mod:`guide_opt.simcheck`).
:func:`forked_map` runs such a function over its items in ``fork``-started processes, which
inherit the function and the items, so only an index goes out and a result comes back; the
answer is the list a serial ``map`` gives, in the same order.

Forking is only safe from a single-threaded process (a thread holding a lock at fork time
leaves the child's copy locked forever), and a daemonic process may not have children, so a
multi-threaded caller, a daemonic one -- the web planner solves in daemonic worker processes
-- and platforms without ``fork`` run serially. So does a map started inside a worker of
another map (a plan check inside a simulated alternative): the machine's cores are already
taken, and the worker keeps serving its own map.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The function and items of the map in progress (inherited by the forked workers).
_FORKED: list = []
#: True in a worker process of a map (set by the pool's initializer): maps started there run serially.
_IN_WORKER: list[bool] = [False]


def default_workers() -> int:
    """The machine's cores (at least 1): what a caller that does not choose gets."""
    return os.cpu_count() or 1


def can_fork(workers: int) -> bool:
    """True when ``workers`` > 1 forked processes may be started from here (see the module doc)."""
    import multiprocessing
    import threading

    return (workers > 1 and not _IN_WORKER[0] and threading.active_count() == 1 and not multiprocessing.current_process().daemon
            and "fork" in multiprocessing.get_all_start_methods())


def workers_used(workers: int | None, items: int) -> int:
    """Processes :func:`forked_map` runs ``items`` items on with ``workers`` asked for (1: serially, here)."""
    workers = min(default_workers() if workers is None else workers, items)
    return workers if can_fork(workers) else 1


def _mark_worker() -> None:
    _IN_WORKER[0] = True


def _call(index: int):
    function, items = _FORKED
    return function(items[index])


def forked_map(function: Callable[[T], R], items: Sequence[T], workers: int | None = None, *, chunksize: int = 1,
               on_done: Callable[[int], None] | None = None) -> list[R]:
    """``[function(x) for x in items]``, spread over up to ``workers`` forked processes when that is possible.

    ``workers`` defaults to :func:`default_workers`; fewer than two items, one worker, or a
    process where :func:`can_fork` is False run serially. ``function`` must be pure (the
    workers' side effects are lost) and its results picklable. ``on_done(k)``, when given, is
    called in this process as the results arrive, in order, with ``k`` results in so far
    (progress reports).
    """
    items = list(items)
    workers = workers_used(workers, len(items))
    if workers == 1:
        return _gathered(map(function, items), on_done)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _FORKED[:] = [function, items]
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=_mark_worker) as pool:
            return _gathered(pool.map(_call, range(len(items)), chunksize=max(1, chunksize)), on_done)
    finally:
        _FORKED.clear()


def _gathered(results: Iterable[R], on_done: Callable[[int], None] | None) -> list[R]:
    """``list(results)``, telling ``on_done`` the count so far after each one arrives."""
    out: list[R] = []
    for result in results:
        out.append(result)
        if on_done is not None:
            on_done(len(out))
    return out
