"""Predicted TPOT by tensor-parallel degree and batch (RESULTS.md section 12.2).

Run from the repository root::

    python benchmarks/bench_tp.py            # print the table as Markdown
    python benchmarks/bench_tp.py --write    # also replace section 12.2 of benchmarks/RESULTS.md

For Llama-3.1-8B and Llama-3.1-70B on H100 SXM and B200 (vLLM profile, bf16, default factors,
512 prompt + 128 output tokens), the burst-batch TPOT of ``guide_opt.perf.estimate`` (what
``guide-opt estimate --batch B`` reports) at TP 1/2/4/8 and batch 1/8/64, and the all-reduce
share of the decode step; and where the batch-1 decode step of Llama-3.1-70B goes (by operator,
with the weight-streaming floor at the datasheet HBM bandwidth). Pure model evaluation: no data is read.
"""

from __future__ import annotations

import argparse
import sys

from bench_common import replace_results_subsection  # noqa: E402
from guide_opt.catalog import load_catalog
from guide_opt.perf import ServingConfig, StepShape, estimate, step_time
from guide_opt.perf.memory import weight_bytes_per_gpu
from guide_opt.perf.step import layer_operator_times, lm_head_time

HEADING = "## 12. Kernel efficiency curves: fitted, shipped and used by the step model"
SUBHEADING = "### 12.2 Predicted TPOT by TP degree and batch"
LLMS = ("llama-3.1-8b", "llama-3.1-70b")
GPUS = ("h100-sxm", "b200")
TPS = (1, 2, 4, 8)
BATCHES = (1, 8, 64)
INPUT_TOKENS, OUTPUT_TOKENS = 512, 128


def tpot_cell(config: ServingConfig) -> str:
    """``TPOT ms (network share %)``, or why there is none."""
    est = estimate(config)
    if not est.fits or est.phases is None:
        return "does not fit"
    decode = step_time(config, StepShape.decode(config.batch, config.input_tokens + config.output_tokens / 2))
    return f"{est.phases.tpot_s * 1e3:.2f} ({100 * decode.network_s / decode.time_s:.0f}%)"


def table() -> str:
    """The Markdown table: one row per (LLM, GPU, batch), one column per TP degree."""
    catalog = load_catalog()
    lines = ["| LLM | GPU | batch | " + " | ".join(f"TP {tp}" for tp in TPS) + " |", "|" + " --- |" * (3 + len(TPS))]
    for llm in LLMS:
        for gpu in GPUS:
            for batch in BATCHES:
                cells = []
                for tp in TPS:
                    config = ServingConfig(catalog.llm(llm), catalog.gpu(gpu), catalog.framework("vllm"), catalog.quantization("bf16"),
                                           tp=tp, batch=batch, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
                    cells.append(tpot_cell(config))
                lines.append(f"| {llm} | {gpu} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decomposition() -> str:
    """Batch-1 decode step of Llama-3.1-70B (context 575) on B200 and H100 at TP 2 and 8: ms per part of the step."""
    catalog = load_catalog()
    llm = catalog.llm("llama-3.1-70b")
    header = ["GPU", "weights", "TP", "GEMMs", "attention", "elementwise", "LM head", "all-reduces", "host", "step",
              "weights at datasheet HBM", "kernel floors (latencies)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for gpu_id in ("b200", "h100-sxm"):
        gpu = catalog.gpu(gpu_id)
        for quant in ("bf16", "fp8"):
            for tp in (2, 8):
                config = ServingConfig(llm, gpu, catalog.framework("vllm"), catalog.quantization(quant), tp=tp, batch=1,
                                       input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
                shape = StepShape.decode(1, INPUT_TOKENS + OUTPUT_TOKENS / 2)
                ops = layer_operator_times(config, shape)
                step = step_time(config, shape)
                layers = llm.num_layers
                gemms = layers * sum(ops[k].time_s for k in ("qkv_projection", "output_projection", "mlp"))
                floor_s = weight_bytes_per_gpu(config) / gpu.hbm_bandwidth_bytes_per_s
                curve = gpu.kernels.gemm_curve(config.quantization.compute_dtype)
                latencies_s = layers * (4 * curve.latency_us + 4 * gpu.kernels.gemm_curve("bf16").latency_us + gpu.kernels.attention.latency_us) * 1e-6
                cells = [gemms, layers * ops["attention"].time_s, layers * ops["elementwise"].time_s, lm_head_time(config, shape).time_s,
                         step.network_s, step.overhead_s, step.time_s, floor_s, latencies_s]
                lines.append(f"| {gpu_id} | {quant} | {tp} | " + " | ".join(f"{c * 1e3:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table; with ``--write`` replace section 12.2 of RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace section 12.2 of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    text = table()
    text += ("\n\nWhere the batch-1 decode step of Llama-3.1-70B goes (vLLM profile, default factors, context 575; ms per step). "
             "`weights at datasheet HBM`: the GPU's weight shard read once at the datasheet bandwidth, a floor no bf16/fp8 "
             "decode step can beat; `kernel floors`: the fitted per-kernel latencies the step pays (4 GEMMs, 4 elementwise "
             "kernels, attention per layer), included in the operator columns.\n\n" + decomposition())
    print(text)
    if args.write:
        intro = ("`python benchmarks/bench_tp.py --write` (pure model evaluation, no data read; any machine). Burst-batch TPOT in ms of "
                 "`guide_opt.perf.estimate` (vLLM profile, bf16, default factors, 512 + 128 tokens) and, in brackets, the all-reduce "
                 "share of the decode step at the mean context.")
        replace_results_subsection(HEADING, SUBHEADING, intro + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
