"""Time GEMM and attention kernels on this machine's GPU with PyTorch, in the aiconfigurator tables' format.

Run on a machine with an NVIDIA GPU and PyTorch (not needed by guide-opt itself)::

    python benchmarks/measure_kernels_torch.py --out DIR

Writes ``DIR/gemm.csv``, ``DIR/context_attention.csv`` and ``DIR/generation_attention.csv`` with
the columns of ``shared/data/kernels/aiconfigurator`` (latency in milliseconds per call) and
``DIR/machine.json`` (GPU, clocks, library versions). ``benchmarks/bench_device_kernels.py``
then scores guide-opt's kernel curves against them on any machine.

Method, as the aiconfigurator tables were collected (its vLLM GEMM collector): after warm-up
calls, a run of calls is captured in a CUDA graph (so that Python's launch time does not pace
small kernels) and replayed between two CUDA events; the time is divided by the calls, and the
median of five replays is kept. A GEMM call runs six layers' weights of the shape in turn, as
the collector does, so that no weight stays in the L2 cache from one call to the next.

- GEMMs: ``torch.nn.functional.linear`` in bf16 (the tables' bf16 kernel source) and
  ``torch._scaled_mm`` with per-tensor scales in FP8 e4m3 (cuBLASLt; the tables' FP8 rows are
  vLLM's CUTLASS kernel, so only the bf16 rows repeat the same library call), each with two
  kinds of weights (column ``weights``): ``randn`` (normally distributed, as real weights are)
  and ``zeros``. The collector leaves its layers' weights as allocated (``torch.empty``), which
  on a fresh allocation reads zeros; a GPU at its power limit clocks higher on zeros. The SM
  clock and the board power are read after each timing (columns ``sm_mhz``, ``power_w``).
- Attention: ``torch.nn.functional.scaled_dot_product_attention`` on contiguous bf16 tensors
  with grouped-query heads, causal for a prefill, one query per sequence for a decode; the
  backend that ran is written as the kernel source (the tables' rows are vLLM's FlashAttention 3,
  a different kernel, on a paged cache).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

#: GEMM grid: points of the aiconfigurator grid (m tokens, n x k weights), Llama-like widths.
GEMM_TOKENS = (1, 8, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
GEMM_WEIGHTS = ((4096, 4096), (6144, 4096), (16384, 4096), (4096, 16384), (8192, 8192), (10240, 8192), (1024, 8192))
#: Attention grid: (query heads, KV heads) of Llama-3.1-8B and -70B, head dim 128.
HEADS = ((32, 8), (64, 8))
PREFILL_TOKENS = (128, 512, 1024, 2048, 4096, 8192, 16384)
DECODE_BATCHES = (1, 8, 32, 128)
DECODE_CONTEXTS = (127, 1023, 4095, 16383)
HEAD_DIM = 128
RUNS = 5


def time_ms(fn, min_total_ms: float = 20.0) -> float:
    """Median over :data:`RUNS` graph replays of the milliseconds per call of ``fn``, each replay long enough to time."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    torch.cuda.synchronize()
    calls = max(3, min(500, int(min_total_ms / max(start.elapsed_time(end) / 3, 1e-3))))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(RUNS):
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        per_call.append(start.elapsed_time(end) / calls)
    del graph
    return statistics.median(per_call)


def clocks() -> dict:
    """The SM clock (MHz) and board power (W) now, where NVML answers."""
    try:
        return {"sm_mhz": torch.cuda.clock_rate(), "power_w": round(torch.cuda.power_draw() / 1000, 1)}
    except Exception:  # noqa: BLE001 -- no NVML: the columns stay empty
        return {"sm_mhz": "", "power_w": ""}


#: Layers' weights a GEMM call runs in turn (the collector's ``outside_loop_count``).
LAYERS = 6


def gemm_rows() -> list[dict]:
    rows = []
    fp8 = torch.float8_e4m3fn
    one = torch.ones((), device="cuda", dtype=torch.float32)
    for n, k in GEMM_WEIGHTS:
        for weights in ("randn", "zeros"):
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 if weights == "randn"
                  else torch.zeros(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(LAYERS)]
            w8s = [w.to(fp8) for w in ws]
            for m in GEMM_TOKENS:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                x8 = x.to(fp8)

                def bf16_call():
                    for w in ws:
                        F.linear(x, w)

                def fp8_call():
                    for w8 in w8s:
                        torch._scaled_mm(x8, w8.t(), one, one, out_dtype=torch.bfloat16)

                for dtype, source, call in (("bfloat16", "torch.nn.functional.linear", bf16_call), ("fp8", "torch._scaled_mm", fp8_call)):
                    try:
                        latency = time_ms(call) / LAYERS
                    except RuntimeError as exc:  # a shape a kernel does not take
                        print(f"{dtype} m={m} n={n} k={k}: {str(exc).splitlines()[0][:120]}")
                        continue
                    rows.append({"kernel_source": source, "gemm_dtype": dtype, "m": m, "n": n, "k": k, "latency": latency,
                                 "weights": weights, **clocks()})
            del ws, w8s
            torch.cuda.empty_cache()
        print(f"gemm n={n} k={k} done", flush=True)
    return rows


def _sdpa_call(q, k, v, causal: bool) -> tuple[str, object]:
    """The first SDPA backend that runs these tensors (FlashAttention, cuDNN, memory-efficient), and a call of it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        def call(backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        try:
            call()
            torch.cuda.synchronize()
            return f"torch_sdpa_{backend.name.lower()}", call
        except RuntimeError:
            continue
    raise RuntimeError("no SDPA backend runs these tensors")


def attention_rows() -> tuple[list[dict], list[dict]]:
    prefill, decode = [], []
    for heads, kv_heads in HEADS:
        for s in PREFILL_TOKENS:
            q = torch.randn(1, heads, s, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            kv = [torch.randn(1, kv_heads, s, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            source, call = _sdpa_call(q, *kv, True)
            prefill.append({"kernel_source": source, "batch_size": 1, "isl": s, "num_heads": heads, "num_key_value_heads": kv_heads,
                            "head_dim": HEAD_DIM, "kv_cache_dtype": "bfloat16", "window_size": 0, "latency": time_ms(call)})
        for b in DECODE_BATCHES:
            for ctx in DECODE_CONTEXTS:
                q = torch.randn(b, heads, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                kv = [torch.randn(b, kv_heads, ctx + 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                source, call = _sdpa_call(q, *kv, False)
                decode.append({"kernel_source": source, "batch_size": b, "num_heads": heads, "num_key_value_heads": kv_heads, "head_dim": HEAD_DIM,
                               "kv_cache_dtype": "bfloat16", "step": ctx, "window_size": 0, "latency": time_ms(call)})
                del q, kv
        torch.cuda.empty_cache()
        print(f"attention heads={heads}/{kv_heads} done", flush=True)
    return prefill, decode


def machine() -> dict:
    props = torch.cuda.get_device_properties(0)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return {"gpu": props.name, "multiprocessors": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cublas": torch.backends.cuda.preferred_blas_library().name
            if hasattr(torch.backends.cuda, "preferred_blas_library") else None, "nvidia_smi": smi.stdout.strip(),
            "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    (args.out / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    started = time.perf_counter()
    write_csv(args.out / "gemm.csv", gemm_rows())
    prefill, decode = attention_rows()
    write_csv(args.out / "context_attention.csv", prefill)
    write_csv(args.out / "generation_attention.csv", decode)
    print(f"measured in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
