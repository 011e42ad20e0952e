"""The step model's elementwise kernels against measured operator times (RESULTS.md section 12.5).

Run from the repository root::

    python benchmarks/bench_elementwise.py            # print the subsection as Markdown
    python benchmarks/bench_elementwise.py --write    # also replace section 12.5 of benchmarks/RESULTS.md

Reads vidur's per-operator profiles of Llama-2-7B (``<kernel data>/vidur/compute/{a100,h100}/meta-llama/
Llama-2-7b-hf/mlp.csv.gz``, medians, TP 1) and compares, per token count, the measured time of the
operators between the projection GEMMs -- ``input_layernorm``, ``attn_rope``,
``post_attention_layernorm``, ``mlp_act`` and two ``add`` -- with the step model's ``elementwise``
operator for the same layer on ``a100-80gb-sxm`` / ``h100-sxm`` (vllm profile, factors 1). Vidur's
profile runs the residual adds as kernels of their own; vLLM fuses them into the norms, which is
what the model counts, so the measured sum is an upper bound. The projection GEMMs' measured time
is shown for scale. Nothing here is fitted.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

from bench_common import replace_results_subsection  # noqa: E402
from fit_kernels import default_kernel_dir, md_table  # noqa: E402
from guide_opt.catalog import load_catalog
from guide_opt.perf import ServingConfig
from guide_opt.perf.step import StepShape, layer_operator_times

HEADING = "## 12. Kernel efficiency curves: fitted, shipped and used by the step model"
SUBHEADING = "### 12.5 Elementwise kernels between the GEMMs: model vs measured operator times"
#: vidur GPU folder -> catalog GPU id.
GPUS = {"a100": "a100-80gb-sxm", "h100": "h100-sxm"}
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add", "add")
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
TOKENS = (1, 16, 128, 512, 2048, 4096)


def measured_ms(path: Path) -> dict[int, tuple[float, float]]:
    """Token count -> (elementwise operators' summed median ms, projection GEMMs' summed median ms), TP 1 rows."""
    out = {}
    with gzip.open(path, "rt") as handle:
        for row in csv.DictReader(handle):
            if int(row["num_tensor_parallel_workers"]) != 1:
                continue
            ops = lambda names: sum(float(row[f"time_stats.{op}.median"]) for op in names)  # noqa: E731
            out.setdefault(int(row["num_tokens"]), (ops(ELEMENTWISE_OPS), ops(GEMM_OPS)))
    return out


def model_ms(gpu_id: str, tokens: int) -> float:
    """The step model's elementwise operator of one Llama-2-7B layer for ``tokens`` prefill tokens, ms."""
    catalog = load_catalog()
    config = ServingConfig(llm=catalog.llms["llama-2-7b"], gpu=catalog.gpus[gpu_id], framework=catalog.frameworks["vllm"],
                           quantization=catalog.quantization("bf16"), tp=1, batch=1, input_tokens=tokens, output_tokens=1)
    return layer_operator_times(config, StepShape.prefill_chunk(1, tokens))["elementwise"].time_s * 1e3


def section(root: Path) -> str:
    """The Markdown body of section 12.5."""
    rows = []
    for folder, gpu_id in GPUS.items():
        measured = measured_ms(root / "vidur" / "compute" / folder / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv.gz")
        for tokens in TOKENS:
            if tokens not in measured:
                continue
            elementwise, gemms = measured[tokens]
            model = model_ms(gpu_id, tokens)
            rows.append([gpu_id, str(tokens), f"{elementwise * 1e3:.0f}", f"{model * 1e3:.0f}", f"{(model - elementwise) / elementwise:+.0%}",
                         f"{gemms * 1e3:.0f}", f"{elementwise / gemms:.0%}"])
    return "\n".join([
        "`python benchmarks/bench_elementwise.py --write` (machine: any; pure model evaluation plus the vidur CSVs, no fitting).",
        "Llama-2-7B, one layer, TP 1: the measured operators between the projection GEMMs (vidur profiling medians: two",
        "RMSNorms, RoPE, SiLU x mul and two residual adds, which vLLM fuses into the norms) against the step model's",
        "`elementwise` operator (two fused add-RMSNorms, RoPE on Q and K, the gated activation; each streamed once at the GPU's",
        "GEMM HBM fraction after its GEMM kernel latency). Times in microseconds.",
        "",
        md_table(["GPU", "tokens", "measured us", "model us", "model vs measured", "projection GEMMs measured us", "measured / GEMMs"], rows),
    ])


def main(argv: list[str] | None = None) -> int:
    """Print, and with ``--write`` store, section 12.5."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding vidur/ (default: shared/data/kernels)")
    parser.add_argument("--write", action="store_true", help="replace section 12.5 of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    text = section(args.data_dir or default_kernel_dir())
    print(text)
    if args.write:
        replace_results_subsection(HEADING, SUBHEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
