"""Fuzz the CLI with hostile input and count what breaks: the reliability figures of RESULTS.md.

Usage::

    nice python benchmarks/bench_reliability.py [--cases 2500] [--seed 0] [--write-results]

Draws ``--cases`` inputs for each of the four input kinds of ``tests/fuzz/fuzz_harness.py``
(problem files, calibration CSVs, config.json files, command-line flags), runs each through
the CLI in this process and checks the fuzz property (exit code 0/1/2, one line naming a field
on exit 1, no traceback, outputs that pass their checker, each case within its time bound).
Prints the counts, the slowest case and the peak resident memory of the process, and every
case that broke the property. ``--write-results`` replaces section 7 ("Reliability under
hostile input") of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import collections
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
from bench_common import cpu_model, replace_results_section  # noqa: E402
from fuzz_harness import CASE_TIME_BOUND_S, calibration_csvs, cli_argvs, config_jsons, flag_problem_file, problem_texts, run_case  # noqa: E402

HEADING = "## 7. Reliability under hostile input"
KINDS = ("problem", "csv", "config", "flags")


def fuzz(kind: str, cases: int, work: Path, random_seed: int, outcomes: list) -> None:
    """Run ``cases`` hypothesis-drawn inputs of ``kind``, appending each :class:`Outcome` to ``outcomes``."""
    strategy = {"problem": problem_texts(), "csv": calibration_csvs(), "config": config_jsons(), "flags": st.data()}[kind]
    flags_file = flag_problem_file(work)

    @seed(random_seed)
    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(value=strategy)
    def one(value):
        payload = value.draw(cli_argvs(flags_file, str(work))) if kind == "flags" else value
        outcomes.append(run_case(kind, payload, work / kind))

    one()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2500, help="inputs per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    outcomes = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guide-opt-fuzz-") as tmp:
        for kind in KINDS:
            t0, before = time.perf_counter(), len(outcomes)
            fuzz(kind, args.cases, Path(tmp), args.seed, outcomes)
            print(f"{kind}: {len(outcomes) - before} cases in {time.perf_counter() - t0:.0f} s", flush=True)
    total_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = []
    for kind in KINDS:
        mine = [o for o in outcomes if o.kind == kind]
        codes = collections.Counter(o.code if isinstance(o.code, int) else "raised" for o in mine)
        rows.append((kind, len(mine), codes.get(0, 0), codes.get(1, 0), codes.get(2, 0), codes.get(3, 0),
                     sum("traceback printed" in o.problems for o in mine), sum(bool(o.problems) for o in mine)))
    for kind, n, c0, c1, c2, c3, tb, bad in rows:
        print(f"{kind:8} {n:6} cases: exit 0 {c0}, exit 1 {c1}, exit 2 {c2}, exit 3 {c3}, tracebacks {tb}, broke the property {bad}")
    broken = [o for o in outcomes if o.problems]
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(f"{len(outcomes)} cases, {len(broken)} broke the property; slowest {slowest.seconds:.2f} s: {' '.join(slowest.argv)[:160]}")
    for o in broken[:50]:
        print(f"  [{o.kind}] exit {o.code}: {'; '.join(o.problems)[:200]}\n      argv {' '.join(o.argv)[:200]}\n      stderr {o.stderr.strip()[-200:]!r}")
    if args.write_results:
        table = "\n".join(f"| {k} | {n:,} | {c0:,} | {c1:,} | {c2:,} | {c3} | {tb} | {bad} |" for k, n, c0, c1, c2, c3, tb, bad in rows)
        body = f"""Command: `nice python benchmarks/bench_reliability.py --cases {args.cases} --seed {args.seed} --write-results`
Machine: {cpu_model()}, 2 cores shared with other work, no GPU; Python {platform.python_version()}.

Every case runs the CLI in-process on a hypothesis-drawn hostile or edge-case input (generators in
`tests/fuzz/fuzz_harness.py`): problem files (`solve`), calibration benchmark CSVs (`calibrate`),
HuggingFace `config.json` files (`estimate --model PATH`) and command-line flags of `estimate`,
`simulate` and `solve`. The property: exit code 0, 1 or 2; exit 1 prints exactly one line naming the
field; no traceback; exit 0/2 outputs pass their checker (solve deployments re-verified by
`guide_opt.verify.verify_deployments`, infeasible answers explained, finite metrics, a calibration
file that loads back); each case within {CASE_TIME_BOUND_S:.0f} s.

| input kind | cases | exit 0 | exit 1 | exit 2 | exit 3 | tracebacks | broke the property |
|---|---:|---:|---:|---:|---:|---:|---:|
{table}

- inputs fuzzed: {len(outcomes):,} in {total_s:,.0f} s; exit-3 (internal error) count: {sum(r[5] for r in rows)}; tracebacks:
  {sum(r[6] for r in rows)}; wrong exit codes or other property breaks: {len(broken)}.
- slowest case: {slowest.seconds:.2f} s (`{' '.join(slowest.argv)[:120].replace(tmp if False else '', '')}`, exit {slowest.code}).
- peak resident memory of the fuzzing process: {peak_mib:,.0f} MiB (`resource.getrusage(RUSAGE_SELF).ru_maxrss`).
"""
        replace_results_section(HEADING, body)


if __name__ == "__main__":
    main()
