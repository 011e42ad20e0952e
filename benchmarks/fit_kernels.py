"""Fit the kernel-efficiency curves of ``hardware_db/kernels/`` and score them (RESULTS.md section 12).

Run from the repository root::

    python benchmarks/fit_kernels.py                       # fit and print the section as Markdown
    python benchmarks/fit_kernels.py --write               # also write hardware_db/kernels/*.yaml and section 12.1
    python benchmarks/fit_kernels.py --data-dir PATH       # the folder holding aiconfigurator/ (default: shared/data/kernels
                                                           # beside the checkout, or $GUIDE_OPT_VALIDATION_DATA/kernels)

Reads ``<data-dir>/aiconfigurator`` (NVIDIA aiconfigurator-core kernel tables, see its SCHEMA.md),
fits one profile per measured GPU and the generic profiles unmeasured GPUs get, and scores each
measured GPU's curves in-sample and with that GPU left out of the fit (the generic profile of
the other GPUs, as an unmeasured GPU would get it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import textwrap
import time
from pathlib import Path

import yaml

from bench_common import cpu_model, replace_results_subsection  # noqa: E402
from guide_opt.catalog import load_catalog
from guide_opt.data_files import data_dir
from guide_opt.errors import InputError
from guide_opt.validation.datasets import DATA_DIR_ENV
from guide_opt.perf.kernels import gemm_time
from guide_opt.validation.kernel_fit import DATA_GPU_IDS, fit_all, read_table

#: Llama-style projection shapes (n, k) present in the GEMM grid: 8B QKV and O, 70B QKV and O.
FP8_SHAPES = ((6144, 4096), (4096, 4096), (10240, 8192), (8192, 8192))
FP8_TOKENS = (1024, 4096, 8192)

HEADING = "## 12. Kernel efficiency curves: fitted, shipped and used by the step model"
SUBHEADING = "### 12.1 Fitted kernel curves: in-sample and leave-one-GPU-out"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def default_kernel_dir() -> Path:
    """``$GUIDE_OPT_VALIDATION_DATA/kernels`` when that variable is set, else ``shared/data/kernels`` beside the checkout."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) / "kernels" if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "kernels"


def data_label(root: Path) -> str:
    """The data's identity: the source release and the sha256 of its INDEX.csv (which names every table's version)."""
    index = root / "INDEX.csv"
    if not index.is_file():
        raise InputError("--data-dir", f"'{index}' not found", "point --data-dir at the folder holding aiconfigurator/INDEX.csv")
    digest = hashlib.sha256(index.read_bytes()).hexdigest()[:12]
    return f"shared/data/kernels/aiconfigurator (aiconfigurator-core 0.12.0), INDEX.csv sha256 {digest}"


def write_profiles(profiles: dict, folder: Path, rules: dict[str, str] | None = None) -> None:
    """One YAML file per profile, validated on the way (the catalog reads them back); ``rules``
    (file stem -> sentence) goes into the header comment of the generic profiles."""
    folder.mkdir(exist_ok=True)
    for stem, profile in profiles.items():
        header = ("# Fitted by benchmarks/fit_kernels.py from measured kernel tables; do not edit by hand.\n"
                  "# Fields: guide_opt/kernel_profile.py. Refit: python benchmarks/fit_kernels.py --write\n")
        if rules and stem in rules:
            header += "".join(f"# {line}\n" for line in textwrap.wrap(rules[stem], 130))
        (folder / f"{stem}.yaml").write_text(header + yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, width=140))


def cache_text(cache_served: dict[str, dict[str, tuple[int, float]]]) -> str:
    """The sentence naming the rows left out as served from a GPU's cache (kernel_fit.beyond_cache_reach)."""
    parts = [f"{data_gpu} {kind.replace('_', ' ')} {left_out:,} rows (up to {reach / 1e6:.0f} MB)"
             for data_gpu, kinds in cache_served.items() for kind, (left_out, reach) in kinds.items() if left_out]
    clean = [data_gpu for data_gpu, kinds in cache_served.items() if not any(n for n, _ in kinds.values())]
    return ("Memory-bound rows (GEMMs, decode attention) are fitted where the DRAM served them: the tables repeat one kernel on the "
            "same tensors, so a working set the L2 holds is read from it, which a serving step (every layer once) never sees; the "
            "largest working set moved faster than the DRAM's peak marks the cache's reach, and the rows up to it are left out: "
            + ("; ".join(parts) or "none") + (f" ({', '.join(clean)}: no row faster than the DRAM)." if clean else "."))


def section(run, label: str, wall_s: float) -> str:
    """Markdown of the fitted parameters and the in-sample / held-out scores."""
    scores = run.held_out
    body = [f"`python benchmarks/fit_kernels.py --write` (machine: {cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}; "
            f"CPU only, {wall_s:.0f} s). Data: {label}. Kernel time errors are (predicted - measured) / measured: MAPE = mean |error|, "
            "bias = mean signed error. In-sample: the GPU's own profile. Held out: the generic profile fitted on the other GPUs "
            "(GEMM/attention pooled, all-reduce pooled over the other GPUs with the same link kind, else the NVLink ones) -- what an "
            "unmeasured GPU of its specs gets. " + " ".join(f"`{stem}` {rule}" for stem, rule in run.rules.items()) + " Rows: GEMMs with n, k >= 512 and m <= 16384 (bf16, per-tensor fp8), FlashAttention-style prefill "
            "and decode attention with head_dim 128 and full attention, NCCL all-reduce of fp16 messages on 2/4/8 GPUs. " + cache_text(run.cache_served), ""]
    rows = []
    for s in scores:
        rows.append([s.data_gpu, s.kind, str(s.rows), f"{s.in_sample_mape:.1f}", f"{s.in_sample_bias:+.1f}", f"{s.held_out_mape:.1f}", f"{s.held_out_bias:+.1f}"])
    body.append(md_table(["data GPU", "kernel kind", "rows", "in-sample MAPE %", "in-sample bias %", "held-out MAPE %", "held-out bias %"], rows))
    body += ["", "Fitted parameters (`hardware_db/kernels/<id>.yaml`):", ""]
    prow = []
    for stem, p in run.profiles.items():
        b = p.gemm["bf16"]
        f8 = p.gemm.get("fp8")
        a = p.attention
        ar = ", ".join(f"{c.num_gpus}: {c.latency_us:.1f} us / {c.bus_bandwidth_fraction:.2f}" for c in p.all_reduce)
        prow.append([stem, f"{b.peak_fraction:.2f} / {b.half_tokens:.0f} / {b.bandwidth_fraction:.2f} / {b.latency_us:.1f}",
                     "-" if f8 is None else f"{f8.peak_fraction:.2f} / {f8.half_tokens:.0f} / {f8.bandwidth_fraction:.2f} / {f8.latency_us:.1f} / {f8.activation_bytes_scale:.1f}",
                     f"{a.prefill_peak_fraction:.2f} / {a.prefill_half_tokens:.0f} / {a.decode_bandwidth_fraction:.2f}"
                     f"{'' if a.fp8_kv_decode_bandwidth_fraction is None else f' (FP8 {a.fp8_kv_decode_bandwidth_fraction:.2f})'} / {a.latency_us:.1f}", ar])
    body.append(md_table(["profile", "GEMM bf16: peak frac / half m / HBM frac / latency us", "GEMM fp8: same / input-pass bytes",
                          "attention: peak frac / half (s+1) / HBM frac (16-bit cache, FP8 cache where measured) / latency us", "all-reduce n: latency / bus-bandwidth fraction"], prow))
    return "\n".join(body)


def fp8_gain_table(root: Path, profiles: dict) -> str:
    """Measured vs modelled bf16 / fp8 time ratio of prefill-sized GEMMs on the GPUs with FP8 rows."""
    catalog = load_catalog()
    rows = []
    for data_gpu in ("h100_sxm", "b200_sxm"):
        gpu = catalog.gpu(DATA_GPU_IDS[data_gpu])
        profile = profiles[gpu.id]
        wanted = {(m, n, k) for m in FP8_TOKENS for n, k in FP8_SHAPES}
        measured = {}
        for r in read_table(root, data_gpu, "gemm"):
            key = (int(r["m"]), int(r["n"]), int(r["k"]))
            if key in wanted and r["gemm_dtype"] in ("bfloat16", "fp8"):
                measured[(key, r["gemm_dtype"])] = float(r["latency"])
        for m, n, k in sorted(wanted, key=lambda x: (x[1] * x[2], x[0])):
            if ((m, n, k), "bfloat16") not in measured or ((m, n, k), "fp8") not in measured:
                continue

            def model_s(dtype: str, elem: int) -> float:
                return gemm_time(2 * m * n * k, n * k * elem, m * k * elem, m * n * elem, m, n * k, dtype, gpu.peak_flops_per_s(dtype),
                                 gpu.hbm_bandwidth_bytes_per_s, profile, 1.0, 1.0).time_s

            rows.append([data_gpu, f"{m} x {n} x {k}", f"{measured[((m, n, k), 'bfloat16')] / measured[((m, n, k), 'fp8')]:.2f}",
                         f"{model_s('bf16', 2) / model_s('fp8', 1):.2f}"])
    return md_table(["data GPU", "GEMM m x n x k", "measured bf16 / fp8 time", "model bf16 / fp8 time"], rows)


def main(argv: list[str] | None = None) -> int:
    """Fit, print, and with ``--write`` store the profiles and the RESULTS subsection."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding aiconfigurator/ (default: shared/data/kernels)")
    parser.add_argument("--write", action="store_true", help="write hardware_db/kernels/*.yaml and RESULTS.md section 12.1")
    args = parser.parse_args(argv)
    root = (args.data_dir or default_kernel_dir()) / "aiconfigurator"
    try:
        label = data_label(root)
        start = time.perf_counter()
        run = fit_all(root, load_catalog(), label, list(DATA_GPU_IDS))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wall_s = time.perf_counter() - start
    text = section(run, label, wall_s)
    text += ("\n\nFP8 gain of prefill-sized GEMMs (Llama-3.1-8B / 70B projection shapes in the grid), measured and as the "
             "fitted curves give it (the old model: exactly 2.00):\n\n" + fp8_gain_table(root, run.profiles))
    print(text)
    if args.write:
        write_profiles(run.profiles, data_dir("hardware_db") / "kernels", run.rules)
        replace_results_subsection(HEADING, SUBHEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
