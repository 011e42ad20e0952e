"""The wait for a sequence slot: the steady-state model against long simulator runs of open loops.

Usage::

    python benchmarks/bench_slot_wait.py [--runs 8] [--requests 3000] [--write-results]

For each case (LLM, GPU, TP, engine, max-num-seqs, prompt / output tokens, load as a share of
the model's capacity) the simulator serves ``--runs`` open loops of ``--requests`` requests
(seeds 0, 1, ...; the first 10% by arrival of each run left out) and the runs are pooled: the
number of requests in the system has a long memory, so one run of a few thousand requests
understates its spread and the waits it causes. Reported per case: the gains of
:func:`guide_opt.perf.steady_state.slot_dispersion` (prefill ``g_p``, decode ``g_d``), the
count's variance / mean (model vs simulator), the share of arrivals that find every slot held,
and the mean, p90 and p99 TTFT (model vs simulator). Cases are prompt-heavy to decode-heavy,
with 16-256 slots, at 30-80% of capacity; at 80% the small slot counts bind.
``--write-results`` replaces the body of section 13 of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import cpu_model, replace_results_section  # noqa: E402
from guide_opt.catalog import load_catalog  # noqa: E402
from guide_opt.perf import ServingConfig  # noqa: E402
from guide_opt.perf import steady_state as ss  # noqa: E402
from guide_opt.simulate import FixedLengths, Workload, simulate  # noqa: E402

SECTION = "## 13. The wait for a sequence slot: steady-state model vs long simulator runs"
#: ((LLM, GPU, TP, engine, max-num-seqs, prompt tokens, output tokens), loads as shares of capacity)
CASES = (
    (("llama-3.1-8b", "h100-sxm", 1, "vllm", 256, 128, 512), (0.5, 0.8)),
    (("qwen3-32b", "h200", 2, "sglang", 256, 128, 512), (0.5, 0.8)),
    (("llama-3.1-8b", "a100-80gb-sxm", 1, "tensorrt-llm", 32, 128, 512), (0.3, 0.5, 0.8)),
    (("llama-3.1-8b", "a100-80gb-sxm", 1, "vllm", 64, 128, 512), (0.5,)),
    (("llama-3.1-70b", "h100-sxm", 4, "vllm", 128, 512, 128), (0.5, 0.8)),
    (("llama-3.1-70b", "h100-sxm", 4, "vllm", 128, 128, 512), (0.5, 0.8)),
    (("llama-3.1-8b", "a100-80gb-sxm", 1, "tensorrt-llm", 32, 512, 128), (0.5, 0.65, 0.8)),
    (("llama-3.1-8b", "a100-80gb-sxm", 1, "tensorrt-llm", 32, 2048, 256), (0.5, 0.65, 0.8)),
    (("llama-3.1-8b", "h100-sxm", 1, "vllm", 16, 512, 128), (0.5, 0.8)),
    (("llama-3.1-8b", "h100-sxm", 1, "vllm", 16, 2048, 256), (0.5, 0.8)),
    (("qwen3-32b", "h200", 2, "sglang", 24, 2048, 256), (0.5, 0.8)),
)


def _config(catalog, llm: str, gpu: str, tp: int, engine: str, seqs: int, prompt: int, output: int) -> ServingConfig:
    return ServingConfig(llm=catalog.llm(llm), gpu=catalog.gpu(gpu), framework=catalog.framework(engine), quantization=catalog.quantization("bf16"),
                         tp=tp, batch=seqs, input_tokens=prompt, output_tokens=output)


def _pooled(config: ServingConfig, rate: float, runs: int, requests: int) -> tuple[np.ndarray, np.ndarray]:
    """Requests in the system as each request arrives (holders and waiters) and its TTFT, after each run's warm-up, pooled."""
    held, ttft = [], []
    for seed in range(runs):
        sim = simulate(config, Workload.open_loop(FixedLengths(config.input_tokens, config.output_tokens), rate),
                       max_num_seqs=config.batch, num_requests=requests, seed=seed)
        order = np.argsort(sim.requests.arrival_s, kind="stable")
        held.append(sim.requests.in_system_at_arrival()[requests // 10:])
        ttft.append(sim.requests.ttft_s[order][requests // 10:])
    return np.concatenate(held), np.concatenate(ttft)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--write-results", action="store_true", help="replace section 13 of benchmarks/RESULTS.md")
    args = parser.parse_args()
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    catalog = load_catalog()
    emit(f"Command: `python benchmarks/bench_slot_wait.py --runs {args.runs} --requests {args.requests} --write-results`. Machine: "
         f"{cpu_model()}, Python {platform.python_version()}; {args.runs} simulator runs x {args.requests} requests per case, pooled "
         "(each run's first 10% by arrival left out). Model / simulator; error in brackets.")
    emit()
    emit("| case | load | g_p | g_d | variance / mean (model / sim) | all slots held (model / sim) | mean TTFT ms | p90 TTFT ms | p99 TTFT ms |")
    emit("|---|---|---|---|---|---|---|---|---|")
    errors: dict[str, list[float]] = {"mean": [], "p90": [], "p99": []}
    dispersion_errors = []
    for shape, loads in CASES:
        config = _config(catalog, *shape)
        table = ss.StepTable(config)
        capacity = ss.capacity_request_rate_per_s(config, table)
        slots, steps = config.batch, config.output_tokens - 1
        for load in loads:
            rate = load * capacity
            state = ss.open_loop(config, rate, table, capacity_per_s=capacity)
            dispersion, waits = state.slot_dispersion, state.slot_wait_probability
            # the gains at the decoders an arrival finds (not counting itself), as the model takes them
            decoders = min(float(slots), rate * steps * ss._open_solution(table, rate, slots, steps).tpot_s)
            prompt_gain, decode_gain = ss.slot_gains(table, slots, steps, rate, decoders)
            held, ttft = _pooled(config, rate, args.runs, args.requests)
            full = float((held >= slots).mean())
            simulated_dispersion = float(held.var() / held.mean())
            if full < 0.02:
                dispersion_errors.append(dispersion / simulated_dispersion - 1.0)
            model = (state.ttft.mean_s, state.ttft.p90_s, state.ttft.p99_s)
            sim = (float(ttft.mean()), float(np.percentile(ttft, 90)), float(np.percentile(ttft, 99)))
            cells = []
            for key, m, s in zip(errors, model, sim):
                errors[key].append(m / s - 1.0)
                cells.append(f"{m * 1e3:.0f} / {s * 1e3:.0f} ({m / s - 1.0:+.0%})")
            label = f"{shape[0]} {shape[1]} TP={shape[2]} {shape[3]} seqs={slots}, {shape[5]}/{shape[6]}"
            emit(f"| {label} | {load:.0%} | {prompt_gain:.3f} | {decode_gain:.3f} | {dispersion:.2f} / {simulated_dispersion:.2f} | "
                 f"{waits:.3f} / {full:.3f} | " + " | ".join(cells) + " |")
    within = {key: sum(abs(e) <= (0.10 if key == "mean" else 0.20) for e in values) for key, values in errors.items()}
    emit()
    emit(f"TTFT within target (mean 10%, p90 / p99 20%): mean {within['mean']}/{len(errors['mean'])}, "
          f"p90 {within['p90']}/{len(errors['p90'])}, p99 {within['p99']}/{len(errors['p99'])}.")
    d = np.abs(dispersion_errors)
    emit(f"Variance / mean below the slot limit (share of arrivals finding every slot held < 2%): {int((d <= 0.10).sum())}/{len(d)} "
          f"within 10%, median {np.median(d):.1%}, worst {d.max():.1%}.")
    if args.write_results:
        replace_results_section(SECTION, "\n" + "\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
