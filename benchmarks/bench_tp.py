"""Predicted TPOT by tensor-parallel degree and batch (RESULTS.md section 12.2).

Run from the repository root::

    python benchmarks/bench_tp.py            # print the table as Markdown
    python benchmarks/bench_tp.py --write    # also replace section 12.2 of benchmarks/RESULTS.md

For Llama-3.1-8B and Llama-3.1-70B on H100 SXM and B200 (vLLM profile, bf16, default factors,
512 prompt + 128 output tokens), the burst-batch TPOT of ``guide_opt.perf.estimate`` (what
``guide-opt estimate --batch B`` reports) at TP 1/2/4/8 and batch 1/8/64, and the all-reduce
share of the decode step. Pure model evaluation: no data is read.
"""

from __future__ import annotations

import argparse
import sys

from bench_common import replace_results_subsection  # noqa: E402
from guide_opt.catalog import load_catalog
from guide_opt.perf import ServingConfig, StepShape, estimate, step_time

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


def main(argv: list[str] | None = None) -> int:
    """Print the table; with ``--write`` replace section 12.2 of RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace section 12.2 of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    text = table()
    print(text)
    if args.write:
        intro = ("`python benchmarks/bench_tp.py --write` (pure model evaluation, no data read; any machine). Burst-batch TPOT in ms of "
                 "`guide_opt.perf.estimate` (vLLM profile, bf16, default factors, 512 + 128 tokens) and, in brackets, the all-reduce "
                 "share of the decode step at the mean context.")
        replace_results_subsection(HEADING, SUBHEADING, intro + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
