"""The JSON every front-end gives: a solved problem's payload and one configuration's estimate.

:func:`solved_payload` and :func:`with_artifacts` build the object ``solve --format json``
prints from a solution (the orchestrator, :func:`guide_opt.api.solve`, calls them);
:func:`check_contexts` and :func:`in_problem_file` are the input checks and error phrasing
the CLI and the web planner share. :func:`estimate_payload` is the JSON of ``guide-opt
estimate`` (a burst) and :func:`steady_payload` that of ``estimate --concurrency / --rate``
(a steady state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from guide_opt.catalog import load_catalog
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig
from guide_opt.presets import SolverPreset
from guide_opt.problem import Problem
from guide_opt.solution import Solution

if TYPE_CHECKING:
    from guide_opt.perf import Estimate
    from guide_opt.perf.steady_state import SteadyState


def solved_payload(problem: Problem, solution: Solution, violations: list | None = None) -> dict[str, Any]:
    """The solution's JSON with the problem's name and its verification verdict (``verified``, ``verification_failures``).

    ``violations``: what the full-model check found (:class:`~guide_opt.verify.Violation`);
    None takes the failures the solver recorded in ``stats["verification_failures"]`` (Pareto).
    """
    payload = solution.to_json()
    payload["problem"] = problem.name
    failures = [v.text for v in violations] if violations is not None else solution.stats.get("verification_failures", [])
    payload["verified"] = solution.status.found and not failures
    if failures and violations is not None:
        payload["verification_failures"] = failures
    return payload


def with_artifacts(problem: Problem, answer: Answer) -> Answer:
    """``answer`` with each found deployment's ``artifacts``: launch commands, Kubernetes objects and the SLO
    benchmark (:mod:`guide_opt.deploy`), so that every front-end gives them."""
    if answer.solution.status.found:
        from guide_opt.deploy import build_artifacts

        built = build_artifacts(problem.models, answer.solution.deployments, load_catalog())
        for entry, artifacts in zip(answer.payload["deployments"], built):
            entry["artifacts"] = artifacts.to_json()
    return answer


def check_contexts(problem: Problem) -> None:
    """Refuse (exit 1) a problem whose requests are longer than an LLM's context: bad input, not infeasibility."""
    from guide_opt.catalog import load_catalog

    catalog = load_catalog()
    for i, req in enumerate(problem.models):
        llm = catalog.llm(req.id, field=f"models[{i}].id")
        input_tokens, output_tokens = req.workload.token_lengths()
        if input_tokens + output_tokens > llm.max_position_embeddings:
            raise InputError(f"models[{i}].workload", f"{input_tokens:,.0f} input + {output_tokens:,.0f} output tokens exceed the context of "
                                                      f"{llm.id} ({llm.max_position_embeddings:,} tokens)",
                             "give shorter requests or an LLM with a longer context")


def in_problem_file(exc: InputError, source: str) -> InputError:
    """``exc`` phrased for the problem file ``source``, as ``guide-opt solve SOURCE`` phrases it.

    Errors found while the space is built name a field of the problem (``hardware.gpus[1]``);
    the CLI prefixes the file name. Errors that already name a file or an option stay as they are.
    """
    if exc.field.startswith(("-", source)) or ": " in exc.field:
        return exc
    return InputError(f"{source}: {exc.field}", exc.problem, exc.fix)


def estimate_payload(est: Estimate) -> dict:
    """The JSON object of ``guide-opt estimate --format json`` (and the web API's ``/api/estimate``)."""
    c = est.config
    payload = {
        "model": c.llm.id,
        "gpu": c.gpu.id,
        "tp": c.tp,
        "pp": c.pp,
        "batch": c.batch,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "framework": c.framework.id,
        "quantization": c.quantization.id,
        "kv_cache_dtype": c.kv_cache_dtype,
        "estimator": est.estimator,
        "fits": est.fits,
        "runs": est.runs,
        "waves": est.waves,
        "metrics": est.metrics(),
        "decode_throughput_tokens_per_s": est.decode_throughput_tokens_per_s,
        "bounds": {"prefill": est.phases.prefill_bound.value, "decode": est.phases.decode_bound.value} if est.phases else None,
        "memory": est.memory.as_gib(),
        "max_batch": est.max_batch,
        "max_sequence_length": est.max_sequence_length,
    }
    payload["mode"] = "burst"
    if not est.fits:
        payload["reason"] = not_fitting_reason(est)
    return payload


def steady_payload(est: "Estimate", state: "SteadyState | None", capacity_per_s: float) -> dict:
    """The JSON object of a steady-state estimate (``estimate --concurrency`` / ``--rate``).

    The burst payload's configuration and memory without its burst-only figures, ``mode``
    ``steady_state``, ``max_num_seqs`` and the ``load``; ``metrics.ttft_ms`` / ``tpot_ms`` /
    ``itl_ms`` are means, ``*_percentiles_ms`` hold p50 / p90 / p99. ``state`` None: max-num-seqs
    sequences do not fit (``metrics`` null, ``reason`` says why); an unstable state (beyond
    capacity) also has null ``metrics``.
    """
    payload = {k: v for k, v in estimate_payload(est).items()
               if k not in ("batch", "decode_throughput_tokens_per_s", "bounds", "reason", "runs", "waves")}
    payload |= {"mode": "steady_state", "max_num_seqs": est.config.batch}
    if state is None:
        return payload | {"metrics": None, "reason": not_fitting_reason(est)}
    payload["load"] = ({"loop": "closed", "concurrency": int(state.concurrent_users)} if state.mode == "closed_loop"
                       else {"loop": "open", "request_rate_per_s": state.request_rate_per_s})
    payload["stable"] = state.stable
    payload["capacity_request_rate_per_s"] = capacity_per_s
    if not state.stable:
        return payload | {"metrics": None, "reason": beyond_capacity_reason(state, capacity_per_s)}

    def percentiles(d) -> dict[str, float]:
        return {k: v for k, v in d.as_ms().items() if k != "mean"}

    payload["metrics"] = {
        "ttft_ms": state.ttft.mean_s * 1e3,
        "tpot_ms": state.tpot.mean_s * 1e3,
        "itl_ms": state.itl.mean_s * 1e3,
        "ttft_percentiles_ms": percentiles(state.ttft),
        "tpot_percentiles_ms": percentiles(state.tpot),
        "itl_percentiles_ms": percentiles(state.itl),
        "e2e_mean_ms": state.e2e_mean_s * 1e3,
        "request_throughput_per_s": state.request_rate_per_s,
        "throughput_tokens_per_s": state.output_throughput_tokens_per_s,
        "utilization": None if state.utilization != state.utilization else state.utilization,  # NaN: not computed
        "batch_latency_s": None,
        "memory_utilization": est.memory.utilization,
    }
    return payload


def beyond_capacity_reason(state: "SteadyState", capacity_per_s: float) -> str:
    """One sentence: the offered rate exceeds what one replica sustains."""
    return (f"{state.request_rate_per_s:.4g} requests/s is beyond the capacity of one replica ({capacity_per_s:.4g} requests/s): "
            "queues grow without bound")


def not_fitting_reason(est: Estimate) -> str:
    """One sentence saying by how much the batch overflows memory, and what the engine does about it."""
    gib = est.memory.as_gib()
    overflow = (
        f"the whole batch needs {gib['used_gib']:.1f} GiB per GPU (weights {gib['weights_gib']:.1f}, KV cache {gib['kv_cache_gib']:.1f}, "
        f"activations {gib['activations_gib']:.1f}, reserve {gib['reserve_gib']:.1f}) but only {gib['usable_gib']:.1f} GiB are usable; "
        f"the largest batch that fits is {est.max_batch}"
    )
    if est.runs:
        return f"{overflow}, so the engine runs it in {est.waves} waves of at most {est.max_batch} sequences"
    if est.start_reason:
        return f"{overflow}; the engine cannot serve one request: {est.start_reason}"
    return overflow


def serving_config(
    *,
    model: str,
    gpu: str,
    tp: int = 1,
    pp: int = 1,
    framework: str = "vllm",
    quantization: str = "bf16",
    kv_cache_dtype: str = "fp16",
    batch: int = 1,
    input_tokens: int = 512,
    output_tokens: int = 128,
    flash_attention: bool = True,
    h2o_kept_fraction: float = 1.0,
    expert_parallel: bool = False,
    efficiency: Callable[[], EfficiencyFactors | None] | None = None,
) -> ServingConfig:
    """Resolve ids into a :class:`ServingConfig`; unrunnable settings raise :class:`InputError` naming the option.

    Errors name the ``estimate`` command's options (``--gpu``, ``--tp``, ...), so the CLI and
    the web API say the same thing. ``efficiency``: called once the ids are resolved, it
    returns the efficiency factors to use (None: the framework's defaults).
    """
    catalog = load_catalog()
    llm_spec, gpu_spec = catalog.llm(model, field="--model"), catalog.gpu(gpu, field="--gpu")
    framework_spec = catalog.framework(framework, field="--framework")
    quantization_spec = catalog.quantization(quantization, field="--quantization")
    config = ServingConfig(
        llm=llm_spec,
        gpu=gpu_spec,
        framework=framework_spec,
        quantization=quantization_spec,
        tp=tp,
        pp=pp,
        batch=batch,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        kv_cache_dtype=kv_cache_dtype,
        flash_attention=flash_attention,
        h2o_kept_fraction=h2o_kept_fraction,
        expert_parallel=expert_parallel,
        efficiency=efficiency() if efficiency is not None else None,
    )
    reason = config.unsupported_reason() or config.context_reason()
    if reason:
        engine = reason.startswith(f"{framework_spec.id} ")
        option = ("--kv-cache-dtype" if "KV cache" in reason else "--framework/--quantization" if engine and " runs " in reason
                  else "--framework" if engine else "--tp" if "TP=" in reason else "--pp" if "PP=" in reason
                  else "--quantization" if "tensor cores" in reason or "serve it with quantization" in reason
                  else "--expert-parallel" if "expert parallelism" in reason else "--input-tokens/--output-tokens" if "context" in reason
                  else "options")
        raise InputError(option, reason, "choose a supported value")
    return config
