"""Benchmark: candidate evaluation of this checkout against a reference checkout, same candidates.

Run::

    git archive <reference commit> guide_opt hardware_db | tar -x -C /tmp/reference
    python benchmarks/bench_candidate_speed.py --reference /tmp/reference [--models 5] [--problem problems/quickstart.yaml]

Builds the search space (``build_space``, one process) of the fleet of ``--models`` services of
``bench_planning.fleet_problem`` (or of ``--problem``) once with the reference's ``guide_opt``
and once with this checkout's, each in a fresh process, one after the other; prints CPU and wall
seconds of each build, their ratio, and how the candidates compare: ``identical``, ``within R
relative`` (R: the largest relative difference of any float figure, every other field -- shape,
batch, fit, replicas, violations -- equal) or what differs first.
"""

from __future__ import annotations

import argparse
import math
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Runs in a fresh process with the chosen checkout first on sys.path; prints "cpu_s wall_s".
CHILD = r"""
import pickle, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])
from guide_opt.problem import Problem
from guide_opt.space import build_space
if sys.argv[3].startswith("fleet:"):
    from bench_planning import fleet_problem
    problem = fleet_problem(int(sys.argv[3][6:]))
else:
    problem = Problem.from_yaml(sys.argv[3])
cpu, wall = time.process_time(), time.perf_counter()
space = build_space(problem, workers=1)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
rows = [[(c.shape.key, c.batch, c.fits, c.ttft_s, c.tpot_s, c.ttft_mean_s, c.tpot_mean_s, c.request_latency_s,
          c.throughput_per_replica_tokens_per_s, c.replicas_min, c.violations, c.demand_served_per_replica, c.load_per_replica,
          c.utilization) for c in m.candidates] for m in space.models]
pickle.dump(rows, open(sys.argv[4], "wb"))
print(cpu, wall, space.candidate_count)
"""


def build(checkout: Path, source: str, out: Path) -> tuple[float, float, int]:
    """CPU s, wall s and candidates of one build with ``checkout``'s guide_opt (a fresh process)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(checkout), str(ROOT / "benchmarks"), source, str(out)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    cpu, wall, count = done.stdout.split()
    return float(cpu), float(wall), int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="a directory holding the reference guide_opt and hardware_db")
    parser.add_argument("--models", type=int, default=5, help="services of the bench_planning fleet")
    parser.add_argument("--problem", help="a problem file instead of the fleet")
    args = parser.parse_args()
    source = str(Path(args.problem).resolve()) if args.problem else f"fleet:{args.models}"
    with tempfile.TemporaryDirectory() as tmp:
        ref = build(args.reference.resolve(), source, Path(tmp) / "ref.pkl")
        new = build(ROOT, source, Path(tmp) / "new.pkl")
        verdict = compare(pickle.loads((Path(tmp) / "ref.pkl").read_bytes()), pickle.loads((Path(tmp) / "new.pkl").read_bytes()))
    print(f"| {source} | {new[2]:,} | {ref[0]:.1f} / {ref[1]:.1f} | {new[0]:.1f} / {new[1]:.1f} | {ref[0] / new[0]:.2f}x | {verdict} |")


def compare(ref: list, new: list) -> str:
    """``identical``, ``within R`` (the largest relative difference of any float figure, every
    other field equal), or what differs first."""
    if len(ref) != len(new) or any(len(a) != len(b) for a, b in zip(ref, new)):
        return "DIFFERENT candidates"
    worst = 0.0
    for rows_a, rows_b in zip(ref, new):
        for a, b in zip(rows_a, rows_b):
            for x, y in zip(a, b):
                if isinstance(x, float) and isinstance(y, float):
                    if x != y and not (math.isinf(x) and x == y):
                        worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
                elif x != y:
                    return f"DIFFERENT ({a[0]} batch {a[1]}: {x!r} vs {y!r})"
    return "identical" if worst == 0.0 else f"within {worst:.1e} relative"


if __name__ == "__main__":
    main()
