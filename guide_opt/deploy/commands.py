"""Engine launch commands and the SLO benchmark command for one planned deployment (pure functions).

:func:`engine_settings` reads what the plan decided (TP, PP, max batch, precision) and what the
plan assumed (the framework profile's memory fraction and batched-token budget, the request
lengths) into :class:`EngineSettings`; :func:`launch_argv` writes them with the engine's own
argument names (from ``hardware_db/deploy/engine_cli.yaml``); :func:`bench_argv` writes the
``vllm bench serve`` run that checks the SLOs on the running server and records the metadata
``guide-opt calibrate`` reads back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guide_opt.deploy.tables import engine_cli_table

#: Port every emitted server listens on (and the Service exposes).
SERVE_PORT = 8000
#: Port of the multi-node rendezvous (vLLM --master-port, SGLang --dist-init-addr).
RENDEZVOUS_PORT = 29500
#: Where the TensorRT-LLM extra LLM-API options file is mounted in a container.
TRTLLM_OPTIONS_PATH = "/etc/guide-opt/extra-llm-api-options.yaml"
#: Engines guide-opt writes launch commands for.
LAUNCHABLE_ENGINES = ("vllm", "sglang", "tensorrt-llm")
#: Benchmark length: LLM-Pilot runs each load level for 2 minutes (Sec. III-C); at least this many prompts.
BENCH_DURATION_S = 120.0
MIN_BENCH_PROMPTS = 100


@dataclass(frozen=True)
class EngineSettings:
    """Everything a launch command needs, in guide-opt's terms.

    model_path: the checkpoint (HuggingFace repo id or path); served_name: the name clients
    use (the catalog id); memory_fraction: the framework profile's GPU memory fraction the plan
    assumed; max_batched_tokens: its per-step token budget; max_model_len: the longest request
    (prompt + output tokens) the server must accept. TensorRT-LLM reads its fraction as the
    share of the memory left after the weights for the KV cache, vLLM and SGLang as the share
    of the whole GPU; guide-opt passes the profile's figure to each as its profile states it.
    """

    engine: str
    model_path: str
    served_name: str
    tp: int
    pp: int
    max_num_seqs: int
    max_batched_tokens: int
    memory_fraction: float
    quantization: str
    kv_cache_dtype: str
    max_model_len: int
    port: int = SERVE_PORT


@dataclass(frozen=True)
class NodeRole:
    """This process's place in a multi-node replica: ``rank`` may be a ``$(VAR)`` reference."""

    nnodes: int
    rank: str
    leader_host: str

    @property
    def is_leader(self) -> bool:
        """True for rank 0 (the node that serves the API)."""
        return self.rank == "0"


def checkpoint_note(settings: EngineSettings) -> str:
    """What the model path must hold for this quantization ('' for the published weights)."""
    return engine_cli_table().quantization[settings.engine][settings.quantization].checkpoint


def trtllm_options_yaml(settings: EngineSettings) -> str | None:
    """The ``--extra_llm_api_options`` file TensorRT-LLM needs (an fp8 KV cache), or None."""
    kv = engine_cli_table().kv_cache_dtype["tensorrt-llm"][settings.kv_cache_dtype]
    return None if kv == "auto" else f"kv_cache_config:\n  dtype: {kv}\n"


def _quantization_args(settings: EngineSettings) -> list[str]:
    args = engine_cli_table().quantization[settings.engine][settings.quantization].args
    return [word for name, value in args.items() for word in (name, value)]


def _vllm(s: EngineSettings, node: NodeRole | None) -> list[str]:
    argv = ["vllm", "serve", s.model_path, "--served-model-name", s.served_name, "--host", "0.0.0.0", "--port", str(s.port),
            "--tensor-parallel-size", str(s.tp), "--pipeline-parallel-size", str(s.pp),
            "--max-num-seqs", str(s.max_num_seqs), "--max-num-batched-tokens", str(s.max_batched_tokens),
            "--gpu-memory-utilization", f"{s.memory_fraction:g}", "--max-model-len", str(s.max_model_len),
            *_quantization_args(s), "--kv-cache-dtype", engine_cli_table().kv_cache_dtype["vllm"][s.kv_cache_dtype]]
    if node is not None:
        argv += ["--nnodes", str(node.nnodes), "--node-rank", node.rank, "--master-addr", node.leader_host,
                 "--master-port", str(RENDEZVOUS_PORT)]
        if not node.is_leader:
            argv.append("--headless")  # workers run engine processes only; the leader serves the API
    return argv


def _sglang(s: EngineSettings, node: NodeRole | None) -> list[str]:
    argv = ["python3", "-m", "sglang.launch_server", "--model-path", s.model_path, "--served-model-name", s.served_name,
            "--host", "0.0.0.0", "--port", str(s.port), "--tp-size", str(s.tp), "--pp-size", str(s.pp),
            "--max-running-requests", str(s.max_num_seqs), "--chunked-prefill-size", str(s.max_batched_tokens),
            "--mem-fraction-static", f"{s.memory_fraction:g}", "--context-length", str(s.max_model_len),
            *_quantization_args(s), "--kv-cache-dtype", engine_cli_table().kv_cache_dtype["sglang"][s.kv_cache_dtype]]
    if node is not None:
        argv += ["--nnodes", str(node.nnodes), "--node-rank", node.rank, "--dist-init-addr", f"{node.leader_host}:{RENDEZVOUS_PORT}"]
    return argv


def _trtllm(s: EngineSettings, node: NodeRole | None) -> list[str]:
    if node is not None:
        raise ValueError("multi-node TensorRT-LLM runs under MPI (mpirun / Slurm), which guide-opt does not emit")
    argv = ["trtllm-serve", s.model_path, "--served_model_name", s.served_name, "--host", "0.0.0.0", "--port", str(s.port),
            "--backend", "pytorch", "--tp_size", str(s.tp), "--pp_size", str(s.pp), "--max_batch_size", str(s.max_num_seqs),
            "--max_num_tokens", str(s.max_batched_tokens), "--max_seq_len", str(s.max_model_len),
            "--kv_cache_free_gpu_memory_fraction", f"{s.memory_fraction:g}", *_quantization_args(s)]
    if trtllm_options_yaml(s) is not None:
        argv += ["--extra_llm_api_options", TRTLLM_OPTIONS_PATH]
    return argv


_BUILDERS = {"vllm": _vllm, "sglang": _sglang, "tensorrt-llm": _trtllm}


def launch_argv(settings: EngineSettings, node: NodeRole | None = None) -> tuple[str, ...]:
    """The engine's launch command (one node of a multi-node replica when ``node`` is given).

    Raises ``ValueError`` for an engine or a multi-node form guide-opt does not emit.
    """
    try:
        build = _BUILDERS[settings.engine]
    except KeyError:
        raise ValueError(f"no launch command for engine '{settings.engine}' (guide-opt emits {', '.join(LAUNCHABLE_ENGINES)})") from None
    return tuple(build(settings, node))


@dataclass(frozen=True)
class BenchSettings:
    """The load the SLO benchmark replays: lengths, arrival (rate or users) and the SLOs to check.

    request_rate_per_s: Poisson arrivals (None: as fast as ``max_concurrency`` allows);
    max_concurrency: users in flight (closed loop); ttft_ms / tpot_ms: the SLOs (goodput);
    percentile: the SLO percentile; metadata: ``KEY=VALUE`` pairs for ``guide-opt calibrate``;
    range_ratio: the spread of the lengths (``--random-range-ratio``; 0: exactly the stated ones).
    """

    base_url: str
    served_name: str
    tokenizer: str
    input_tokens: int
    output_tokens: int
    request_rate_per_s: float | None
    max_concurrency: int | None
    ttft_ms: float | None
    tpot_ms: float | None
    percentile: int
    metadata: tuple[tuple[str, str], ...]
    result_file: str
    seed: int = 0
    range_ratio: float = 0.0

    @property
    def num_prompts(self) -> int:
        """Enough prompts for about :data:`BENCH_DURATION_S` of load (at least :data:`MIN_BENCH_PROMPTS`)."""
        if self.request_rate_per_s is not None:
            return max(MIN_BENCH_PROMPTS, math.ceil(self.request_rate_per_s * BENCH_DURATION_S))
        return max(MIN_BENCH_PROMPTS, 10 * (self.max_concurrency or 1))


def bench_argv(b: BenchSettings) -> tuple[str, ...]:
    """``vllm bench serve`` against the running server with the plan's lengths, load and SLOs.

    Poisson arrivals replay the stated lengths exactly; users in a closed loop get lengths spread by
    ``range_ratio`` (:func:`~guide_opt.simulate.closed_loop_range_ratio`: equal lengths keep them in
    lock-step, a repeated burst), as the plan check simulates them. ``--ignore-eos`` makes every
    answer as long as drawn; ``--goodput`` counts the requests
    that meet the SLOs; ``--save-result`` writes the JSON that ``guide-opt calibrate --data``
    reads, with the GPU, TP, engine and LLM recorded as ``--metadata``.
    """
    argv = ["vllm", "bench", "serve", "--backend", "openai", "--base-url", b.base_url, "--endpoint", "/v1/completions",
            "--model", b.served_name, "--tokenizer", b.tokenizer, "--dataset-name", "random",
            "--random-input-len", str(b.input_tokens), "--random-output-len", str(b.output_tokens),
            "--random-range-ratio", f"{b.range_ratio:g}",
            "--num-prompts", str(b.num_prompts),
            "--request-rate", "inf" if b.request_rate_per_s is None else f"{b.request_rate_per_s:g}"]
    if b.max_concurrency is not None:
        argv += ["--max-concurrency", str(b.max_concurrency)]
    percentiles = sorted({50, 90, 99, b.percentile})
    argv += ["--ignore-eos", "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", ",".join(map(str, percentiles))]
    goodput = [f"{key}:{value:g}" for key, value in (("ttft", b.ttft_ms), ("tpot", b.tpot_ms)) if value is not None]
    if goodput:
        argv += ["--goodput", *goodput]
    argv += ["--save-result", "--result-filename", b.result_file, "--seed", str(b.seed),
             "--metadata", *(f"{k}={v}" for k, v in b.metadata)]
    return tuple(argv)
