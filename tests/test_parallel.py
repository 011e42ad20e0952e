"""guide_opt.parallel: forked maps give exactly the serial answer, and stay serial where forking is unsafe."""

import os
import threading

from guide_opt.parallel import can_fork, forked_map


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_forked_map_returns_the_serial_results_in_order():
    # Expected values by hand: the squares of 0..9, in order.
    results = forked_map(_square_and_pid, range(10), workers=2)
    assert [r[0] for r in results] == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    if can_fork(2):  # the work ran in other processes, not in this one
        assert os.getpid() not in {pid for _, pid in results}


def test_closures_cross_into_the_workers():
    # A closure cannot be pickled; the forked workers inherit it instead.
    offset = 7
    assert forked_map(lambda x: x + offset, [1, 2, 3], workers=2) == [8, 9, 10]


def test_a_multithreaded_caller_runs_serially():
    release = threading.Event()
    helper = threading.Thread(target=release.wait)
    helper.start()
    try:
        assert not can_fork(2)
        results = forked_map(_square_and_pid, [3, 4], workers=2)
        assert [r[0] for r in results] == [9, 16]
        assert {pid for _, pid in results} == {os.getpid()}
    finally:
        release.set()
        helper.join()


def test_one_item_or_one_worker_runs_here():
    assert forked_map(_square_and_pid, [5], workers=4) == [(25, os.getpid())]
    assert forked_map(_square_and_pid, [2, 3], workers=1) == [(4, os.getpid()), (9, os.getpid())]


def _map_in_a_daemon(queue) -> None:
    queue.put(forked_map(_square_and_pid, [1, 2, 3], workers=2))


def test_a_daemonic_process_runs_serially():
    # A daemonic process may not start children (multiprocessing refuses); the web planner solves in one.
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_map_in_a_daemon, args=(queue,), daemon=True)
    child.start()
    results = queue.get(timeout=60)
    child.join(timeout=60)
    assert [r[0] for r in results] == [1, 4, 9]
    assert len({pid for _, pid in results}) == 1 and child.pid in {pid for _, pid in results}


def _inner_map(x: int) -> tuple[int, list[tuple[int, int]]]:
    return x, forked_map(_square_and_pid, [x, x + 1], workers=2)


def test_a_map_inside_a_worker_runs_serially_and_the_worker_keeps_serving():
    # Each item of the outer map starts a map of its own (a plan check inside a simulated alternative).
    # Expected by hand: for x in 0..5, the inner squares x^2 and (x+1)^2, computed in the outer worker
    # itself (no nested pool), and every outer item answered (the worker's own map is left intact).
    results = forked_map(_inner_map, range(6), workers=2)
    assert [x for x, _ in results] == [0, 1, 2, 3, 4, 5]
    for x, inner in results:
        assert [r[0] for r in inner] == [x * x, (x + 1) * (x + 1)]
        assert len({pid for _, pid in inner}) == 1
    if can_fork(2):
        assert os.getpid() not in {pid for _, inner in results for _, pid in inner}


def test_on_done_hears_each_result_in_this_process_in_order():
    # Expected by hand: one call per item, counting 1..n, whether the map forked or not.
    for workers in (1, 2):
        heard: list[tuple[int, int]] = []
        results = forked_map(_square_and_pid, range(6), workers=workers, on_done=lambda k: heard.append((k, os.getpid())))
        assert [r[0] for r in results] == [0, 1, 4, 9, 16, 25]
        assert heard == [(k, os.getpid()) for k in range(1, 7)]
