"""The steady-state serving model against the discrete-event simulator on a grid of shapes, loads and lengths.

Usage::

    python benchmarks/bench_steady_state.py [--requests 2000] [--seed 0] [--runs 1] [--write-results]

For each shape (LLM, GPU, TP, engine, max-num-seqs) and lengths (prompt / output tokens):

- open loop at 20%, 50% and 80% of the model's capacity
  (:func:`guide_opt.perf.steady_state.capacity_request_rate_per_s`), Poisson arrivals, equal
  lengths;
- closed loop of 4 and 32 users with zero think time; output lengths drawn from nine values
  spread over 0.53-1.47x the nominal length at uneven steps, the model given their mean. Equal
  lengths keep a closed loop in lock-step forever (all users start together, so their prompts
  keep arriving together: a repeated burst, not a steady state), and so do lengths on an even
  grid (multiples of a common step re-align the users); real request lengths do not.

The simulator (:func:`guide_opt.simulate.simulate`, same step-time model, an independent
implementation of the engine rules) serves ``--requests`` requests in each of ``--runs`` runs
(seeds ``--seed``, ``--seed + 1``, ...), pooled; the first 10% by arrival of each run are a
warm-up and left out. Where the sequence slots bind (80% of capacity with 32 slots), the number
of requests in the system has a long memory and one run of a few thousand requests understates
the waits it causes (section 13); pooled runs do not. Reported: the model's error on mean, p90
and p99 TTFT and TPOT (per-request TPOT, as ``vllm bench serve`` reports it), relative to the simulator, and how many
cases meet the targets (|error| <= 10% on means, <= 20% on p90 / p99). ``--write-results``
replaces the body of section 11 of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench_common import cpu_model, replace_results_section  # noqa: E402
from guide_opt.catalog import load_catalog  # noqa: E402
from guide_opt.perf import ServingConfig  # noqa: E402
from guide_opt.perf import steady_state as ss  # noqa: E402
from guide_opt.simulate import FixedLengths, HistogramLengths, Workload, simulate  # noqa: E402

SECTION = "## 11. Steady-state serving model vs the simulator"
#: (LLM, GPU, TP, engine, max-num-seqs)
SHAPES = (
    ("llama-3.1-8b", "h100-sxm", 1, "vllm", 256),
    ("llama-3.1-70b", "h100-sxm", 4, "vllm", 128),
    ("qwen3-32b", "h200", 2, "sglang", 256),
    ("llama-3.1-8b", "a100-80gb-sxm", 1, "tensorrt-llm", 32),
)
#: (prompt tokens, output tokens)
LENGTHS = ((512, 128), (2048, 256), (128, 512))
UTILIZATIONS = (0.2, 0.5, 0.8)
USERS = (4, 32)
#: Output lengths of the closed loops, as multiples of the mean (mean 0.983; uneven steps: see the module docstring).
SPREAD = (0.53, 0.61, 0.77, 0.89, 1.0, 1.07, 1.19, 1.31, 1.47)
WARMUP_FRACTION = 0.1
TARGET_MEAN, TARGET_TAIL = 0.10, 0.20


def _config(catalog, llm: str, gpu: str, tp: int, engine: str, seqs: int, prompt: int, output: int) -> ServingConfig:
    return ServingConfig(llm=catalog.llm(llm), gpu=catalog.gpu(gpu), framework=catalog.framework(engine), quantization=catalog.quantization("bf16"),
                         tp=tp, batch=seqs, input_tokens=prompt, output_tokens=output)


def _simulated(results) -> dict[str, float]:
    """Mean, p90 and p99 of TTFT and TPOT (ms) of the requests after each run's warm-up, the runs pooled."""
    ttft, tpot = [], []
    for result in results:
        r = result.requests
        order = np.argsort(r.arrival_s)[int(len(r.arrival_s) * WARMUP_FRACTION):]
        ttft.append(r.ttft_s[order] * 1e3)
        tpot.append(r.tpot_s[order] * 1e3)
    ttft, tpot = np.concatenate(ttft), np.concatenate(tpot)
    ttft, tpot = ttft[np.isfinite(ttft)], tpot[np.isfinite(tpot)]
    return {"ttft_mean": ttft.mean(), "ttft_p90": np.percentile(ttft, 90), "ttft_p99": np.percentile(ttft, 99),
            "tpot_mean": tpot.mean(), "tpot_p90": np.percentile(tpot, 90), "tpot_p99": np.percentile(tpot, 99)}


def _modelled(state: ss.SteadyState) -> dict[str, float]:
    return {"ttft_mean": state.ttft.mean_s * 1e3, "ttft_p90": state.ttft.p90_s * 1e3, "ttft_p99": state.ttft.p99_s * 1e3,
            "tpot_mean": state.tpot.mean_s * 1e3, "tpot_p90": state.tpot.p90_s * 1e3, "tpot_p99": state.tpot.p99_s * 1e3}


KEYS = ("ttft_mean", "ttft_p90", "ttft_p99", "tpot_mean", "tpot_p90", "tpot_p99")


def run(requests: int, seed: int, runs: int = 1) -> tuple[list[dict], float, float]:
    """Every case of the grid: its label, load, the model's and the simulator's figures; and the total model / simulator seconds."""
    catalog = load_catalog()
    cases, model_s, sim_s = [], 0.0, 0.0
    for llm, gpu, tp, engine, seqs in SHAPES:
        for prompt, output in LENGTHS:
            config = _config(catalog, llm, gpu, tp, engine, seqs, prompt, output)
            label = f"{llm} {gpu} TP={tp} {engine} seqs={seqs}, {prompt}/{output}"
            started = time.perf_counter()
            table = ss.StepTable(config)
            capacity = ss.capacity_request_rate_per_s(config, table)
            model_s += time.perf_counter() - started
            for u in UTILIZATIONS:
                rate = u * capacity
                started = time.perf_counter()
                state = ss.open_loop(config, rate, table, capacity_per_s=capacity)
                model_s += time.perf_counter() - started
                started = time.perf_counter()
                sim = [simulate(config, Workload.open_loop(FixedLengths(prompt, output), rate), max_num_seqs=seqs, num_requests=requests, seed=seed + k)
                       for k in range(runs)]
                sim_s += time.perf_counter() - started
                cases.append({"label": label, "load": f"open {u:.0%} ({rate:.3g}/s)", "model": _modelled(state), "sim": _simulated(sim),
                              "runs": [_simulated([one]) for one in sim]})
            spread = HistogramLengths(((prompt, 1),), tuple((max(2, round(output * x)), 1) for x in SPREAD))
            mean_config = dataclasses.replace(config, output_tokens=round(spread.mean_output_tokens))
            for users in USERS:
                started = time.perf_counter()
                state = ss.closed_loop(mean_config, users, capacity_per_s=0.0)
                model_s += time.perf_counter() - started
                started = time.perf_counter()
                sim = [simulate(config, Workload.closed_loop(spread, users), max_num_seqs=seqs, num_requests=requests, seed=seed + k)
                       for k in range(runs)]
                sim_s += time.perf_counter() - started
                cases.append({"label": label, "load": f"closed {users} users", "model": _modelled(state), "sim": _simulated(sim),
                              "runs": [_simulated([one]) for one in sim]})
            print(f"{label}: done ({len(cases)} cases)", flush=True)
    return cases, model_s, sim_s


def _error(case: dict, key: str) -> float:
    return case["model"][key] / case["sim"][key] - 1.0


def report(cases: list[dict], model_s: float, sim_s: float, requests: int, seed: int, runs: int = 1) -> str:
    """The RESULTS.md section body."""
    lines = [
        "Command: `python benchmarks/bench_steady_state.py --requests "
        f"{requests} --seed {seed} --runs {runs} --write-results` on {cpu_model()}, `nproc` = {os.cpu_count()}, Python {platform.python_version()} "
        "(CPU only; the machine is shared, so wall times are indicative).",
        "",
        "The steady-state model (`guide_opt/perf/steady_state.py`) against the simulator on "
        f"{len(SHAPES)} shapes x {len(LENGTHS)} length pairs x ({len(UTILIZATIONS)} open-loop rates + {len(USERS)} closed loops) = {len(cases)} cases. "
        "Open loops run at 20/50/80% of the model's capacity with equal lengths; closed loops (zero think time) with output "
        "lengths drawn from nine uneven values over 0.53-1.47x the nominal length (the model gets their mean; lengths on an even grid "
        "keep simulated users in lock-step, a repeated burst). The simulator serves "
        f"{requests} requests per case in each of {runs} runs (seeds {seed}-{seed + runs - 1}), pooled; the first {WARMUP_FRACTION:.0%} by arrival of each run are a warm-up and left out. Error = model / simulator - 1.",
        "",
        "| metric | target | cases within | median abs. error | bias (median error) | worst |",
        "|---|---|---|---|---|---|",
    ]
    for key in KEYS:
        target = TARGET_MEAN if key.endswith("mean") else TARGET_TAIL
        errors = [_error(c, key) for c in cases]
        within = sum(abs(e) <= target for e in errors)
        worst = max(errors, key=abs)
        lines.append(f"| {key.replace('_', ' ')} | {target:.0%} | {within}/{len(errors)} | {statistics.median(abs(e) for e in errors):.1%} | "
                     f"{statistics.median(errors):+.1%} | {worst:+.1%} |")
    lines += ["", f"Model time for all cases {model_s:.1f} s; simulator time {sim_s:.1f} s.", "",
              "Per case (model / simulator, ms; error in brackets):", "",
              "| shape, prompt/output | load | mean TTFT | p90 TTFT | p99 TTFT | mean TPOT | p90 TPOT | p99 TPOT |",
              "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        cells = [f"{c['model'][k]:.4g} / {c['sim'][k]:.4g} ({_error(c, k):+.0%})" for k in KEYS]
        lines.append(f"| {c['label']} | {c['load']} | " + " | ".join(cells) + " |")
    misses = [(c, k) for c in cases for k in KEYS if abs(_error(c, k)) > (TARGET_MEAN if k.endswith("mean") else TARGET_TAIL)]
    if misses and runs > 1:
        lines += ["", "The misses against the simulator's runs one by one: a percentile of a distribution with an atom (requests "
                  "prefilled together, requests waiting for a slot) jumps by the atom's width where the atom's share crosses the "
                  "percentile's line, and single runs of the simulator fall on either side of it. The range of the runs' own "
                  "values (ms), and the model's error against the nearest of them (0 inside the range):", "",
                  "| shape, prompt/output | load | metric | model | pooled runs | runs one by one (min - max) | model vs nearest run |",
                  "|---|---|---|---|---|---|---|"]
        for c, k in misses:
            values = [r[k] for r in c["runs"]]
            model = c["model"][k]
            nearest = min(max(model, min(values)), max(values))
            lines.append(f"| {c['label']} | {c['load']} | {k.replace('_', ' ')} | {model:.4g} | {c['sim'][k]:.4g} | "
                         f"{min(values):.4g} - {max(values):.4g} | {model / nearest - 1:+.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1, help="simulator runs per case (seeds --seed, --seed + 1, ...), pooled")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    cases, model_s, sim_s = run(args.requests, args.seed, args.runs)
    body = report(cases, model_s, sim_s, args.requests, args.seed, args.runs)
    print(body)
    if args.write_results:
        replace_results_section(SECTION, body)


if __name__ == "__main__":
    main()
