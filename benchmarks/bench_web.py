"""The web planner under load: every bundled problem solved through ``POST /api/solve`` at once.

Starts the app of ``guide-opt serve`` (default settings: one solve per core at a time, the
rest queued) on a free local port, sends the problem files of ``problems/`` concurrently (one
client thread each), and checks every answer against ``guide-opt solve FILE --format json``
run serially beforehand in this process: the same status, objective, bound, deployments and
relaxations. Reports per-request latency (send to answer, queueing included) and writes the
section of ``benchmarks/RESULTS.md``.

    python benchmarks/bench_web.py            # all bundled problems (20), at once
    python benchmarks/bench_web.py --copies 2 # each problem twice (40 requests)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from bench_common import cpu_model, replace_results_section  # noqa: E402
HEADING = "## 8. Web planner: concurrent API solves (section written by the web work)"


def cli_answer(path: Path) -> dict:
    """``guide-opt solve PATH --format json``, in this process."""
    from guide_opt.cli import main

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["solve", str(path), "--format", "json"])
    assert code in (0, 2), f"{path.name}: exit {code}"
    return json.loads(buffer.getvalue())


def essentials(payload: dict) -> dict:
    """What must agree between two runs of one solve (timings and solver statistics left out)."""
    explanation = payload.get("explanation") or {}
    return {
        "status": payload["status"], "objective": payload["objective"], "bound": payload["bound"],
        "deployments": [d["summary"] for d in payload["deployments"]],
        "alternatives": [(a["kind"], a["objective"]) for a in payload.get("alternatives", [])],
        "points": [(p["cost_per_hour"], p["latency_ms"]) for p in payload.get("points", [])],
        "relaxations": [r["text"] for r in explanation.get("relaxations", [])],
    }


def start_server():
    """The planner app under uvicorn on a free port (in a thread); returns (url, server, thread, job runner)."""
    import uvicorn

    from guide_opt.web.app import create_app
    from guide_opt.web.jobs import JobRunner

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = JobRunner()  # the defaults of guide-opt serve
    server = uvicorn.Server(uvicorn.Config(create_app(runner), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread, runner


def post_solve(url: str, path: Path) -> tuple[float, int, dict]:
    """POST the problem file's text; (seconds to the answer, HTTP status, body)."""
    request = urllib.request.Request(url + "/api/solve", data=json.dumps({"problem_yaml": path.read_text()}).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=900) as response:
        body = json.loads(response.read())
        return time.perf_counter() - started, response.status, body


def ping_catalog(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """GET /api/catalog every 0.5 s until ``stop``, recording each answer's latency (s)."""
    while not stop.wait(0.5):
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/api/catalog", timeout=60) as response:
            response.read()
        latencies.append(time.perf_counter() - started)


def nearest_rank(values: list[float], q: float) -> float:
    """The q-th percentile by the nearest-rank method (p99 of 20 samples is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1, help="requests per problem file")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    problems = sorted((ROOT / "problems").glob("*.yaml"))
    print(f"reference answers: guide-opt solve on {len(problems)} problem files, serially ...", flush=True)
    reference = {p.name: essentials(cli_answer(p)) for p in problems}
    url, server, thread, runner = start_server()
    requests = [p for p in problems for _ in range(args.copies)]
    load_before = os.getloadavg()[0]
    print(f"{len(requests)} concurrent POST /api/solve to {url} ...", flush=True)
    started = time.perf_counter()
    pings: list[float] = []
    stop = threading.Event()
    pinger = threading.Thread(target=ping_catalog, args=(url, stop, pings), daemon=True)
    pinger.start()
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        results = list(pool.map(lambda p: (p, *post_solve(url, p)), requests))
    total_s = time.perf_counter() - started
    stop.set()
    pinger.join()
    server.should_exit = True
    thread.join(timeout=10)
    latencies = [r[1] for r in results]
    wrong = [p.name for p, _, status, body in results if status != 200 or essentials(body["result"]) != reference[p.name]]
    workers = runner.max_workers
    jobs = [job.to_json() for job in runner._jobs.values()]
    queued = [j["queued_s"] for j in jobs]
    running = [j["running_s"] for j in jobs]
    rows = "\n".join(f"| {p.name} | {body['result']['status']} | {s:.1f} |" for p, s, _, body in sorted(results, key=lambda r: r[1]))
    body = f"""Every problem file of `problems/` sent at once to `POST /api/solve` of the app `guide-opt serve`
runs (default settings: {workers} solves at a time, one per core, the rest queued; each solve in its own
process), {len(requests)} requests from {len(requests)} client threads. Each answer is compared with `guide-opt solve FILE
--format json` run serially beforehand: status, objective, bound, deployments, alternatives, Pareto
points and relaxations.

Machine: {cpu_model()}, {os.cpu_count()} cores, no GPU, shared with other work (1-minute load
average {load_before:.1f} when the requests were sent). Command: `python benchmarks/bench_web.py` (one run; every figure below is of its {len(requests)} requests).

- answers identical to the CLI: **{len(requests) - len(wrong)} of {len(requests)}**{' (differing: ' + ', '.join(wrong) + ')' if wrong else ''}
- latency per request, send to answer, queueing included: p50 **{statistics.median(latencies):.1f} s**, p99 **{nearest_rank(latencies, 99):.1f} s**
  (nearest rank: the slowest of {len(requests)}), fastest {min(latencies):.1f} s
- all {len(requests)} answered in {total_s:.1f} s of wall time

Where the time goes (the server's own job records): waiting for a free worker, median {statistics.median(queued):.1f} s
(at most {max(queued):.1f} s); solving in the worker process, median {statistics.median(running):.1f} s (at most {max(running):.1f} s).
The server stays responsive meanwhile: `GET /api/catalog`, polled every 0.5 s during the run, answered
{len(pings)} times with median {statistics.median(pings) * 1e3:.0f} ms and at most {max(pings) * 1e3:.0f} ms (the event loop never solves).

| problem | status | latency s |
|---|---|---|
{rows}
"""
    print(body)
    if not args.no_write:
        from bench_common import RESULTS

        if HEADING not in RESULTS.read_text():
            RESULTS.write_text(RESULTS.read_text().rstrip("\n") + f"\n\n{HEADING}\n\n")
        replace_results_section(HEADING, body)
    if wrong:
        raise SystemExit(f"answers differ from the CLI: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
