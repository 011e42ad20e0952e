"""The answers every front-end gives: a solved problem's JSON and one configuration's estimate.

``guide-opt solve`` and the web planner (:mod:`guide_opt.web`) both call :func:`solve_answer`,
so a web session and the CLI run of its downloaded problem file answer with the same JSON
(``solve --format json``). The dispatch is the CLI's: ``objective: pareto`` computes the
frontier (:mod:`guide_opt.pareto`), batch-job schedules go to :mod:`guide_opt.scheduling`,
everything else (single deployments and fleets) to the chosen solver, then verification and,
when asked, the binding-constraint report. Rendering (tables, charts, refinement) stays with
the front-ends. :func:`estimate_payload` is the JSON of ``guide-opt estimate`` (a burst) and
:func:`steady_payload` that of ``estimate --concurrency / --rate`` (a steady state).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from guide_opt.catalog import load_catalog
from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig
from guide_opt.presets import SolverPreset
from guide_opt.problem import Problem
from guide_opt.solution import Solution

if TYPE_CHECKING:
    from guide_opt.deadline import Deadline
    from guide_opt.pareto import Frontier
    from guide_opt.perf import Estimate
    from guide_opt.perf.steady_state import SteadyState
    from guide_opt.scheduling import Schedule
    from guide_opt.space import SearchSpace

#: A progress sink: receives one short sentence per stage of a solve.
Progress = Callable[[str], None]


def _silent(_message: str) -> None:
    """The default :data:`Progress` sink: says nothing."""


@dataclass
class Answer:
    """A solved problem: the :class:`Solution`, the JSON payload, and what renderers need.

    payload: the object ``solve --format json`` prints (the front-ends may add keys such as
        ``plot`` or ``refinement``).
    space: the evaluated search space (None when the solver built its own and did not return it).
    frontier / schedule: the Pareto frontier or batch-job schedule, for those objectives.
    """

    solution: Solution
    payload: dict[str, Any]
    space: "SearchSpace | None" = None
    frontier: "Frontier | None" = None
    schedule: "Schedule | None" = None

    @property
    def exit_code(self) -> int:
        """0 when an answer was found, 2 otherwise (the CLI's exit codes)."""
        return 0 if self.solution.status.found else 2


def solve_answer(problem: Problem, *, solver_name: str = "cpsat", preset: SolverPreset, time_limit_s: float | None = None,
                 seed: int | None = None, explain: bool = True, workers: int | None = None, progress: Progress = _silent) -> Answer:
    """Solve ``problem`` and build the JSON answer of ``guide-opt solve --format json``.

    ``workers`` bounds the processes that evaluate candidates (None: the machine's cores;
    a server running several solves at once passes 1). ``progress`` receives a sentence at
    each stage. Bad input raises :class:`~guide_opt.errors.InputError`; infeasibility does not
    raise (the payload carries the explanation).
    """
    from guide_opt.space import build_space

    if problem.objective == "pareto":
        return with_artifacts(problem, _pareto_answer(problem, solver_name, preset, time_limit_s, seed, workers, progress))
    if problem.is_schedule:
        return with_artifacts(problem, _schedule_answer(problem, solver_name, preset, time_limit_s, seed, workers, progress))
    from guide_opt.deadline import Deadline
    from guide_opt.plan import verification_problem
    from guide_opt.solvers import get_solver
    from guide_opt.verify import verify

    solver = get_solver(solver_name, preset)
    started = time.perf_counter()
    progress(f"evaluating the candidates of {len(problem.models)} LLM(s) with the performance model ...")
    space = build_space(problem, workers=workers)
    build_s = time.perf_counter() - started
    deadline = Deadline(time_limit_s if time_limit_s is not None else preset.time_limit_s)
    progress(f"{space.candidate_count:,} candidates in {build_s:.1f} s; solving with {solver_name} "
             "(then the top-3 and the best-throughput / minimum-latency picks) ...")
    solution = solver.solve(problem, seed=seed, space=space, deadline=deadline)
    violations = verify(verification_problem(problem, solution.deployments), solution) if solution.status.found else []
    binding = []
    if explain and solution.status.found:
        progress("explaining which constraints bind (one relaxed solve each; --no-explain skips this) ...")
        deadline.phase("explanation")
        binding = binding_constraints(problem, solution, preset, space, deadline=deadline, seed=seed)
        deadline.phase(None)
    payload = solved_payload(problem, solution, violations)
    payload["stats"]["timing"] = deadline.timing(space_build_s=build_s) | {"total_s": round(time.perf_counter() - started, 4)}
    if binding:
        payload["binding_constraints"] = binding
    if problem.objective == "max_served" and solution.status.found:
        from guide_opt.plan import served_percent

        payload["served_percent"] = [served_percent(req, d) for req, d in zip(problem.models, solution.deployments)]
    return with_artifacts(problem, Answer(solution, payload, space=space))


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


def binding_constraints(problem: Problem, solution: Solution, preset: SolverPreset, space: "SearchSpace | None" = None, *,
                        deadline: "Deadline | float | None" = None, seed: int | None = None) -> list[dict]:
    """Which constraints bind at ``solution`` and what relaxing each would gain (:func:`~guide_opt.explain.explain_binding`).

    ``deadline``: the solve's, so that the report shares ``--time-limit-s`` (None: a budget of its own).
    """
    from guide_opt.explain import explain_binding
    from guide_opt.plan import Pick
    from guide_opt.solvers.cpsat import CpSatSolver
    from guide_opt.space import build_space

    space = space or build_space(problem)
    plan = []
    for ms, dep in zip(space.models, solution.deployments):
        match = next(c for c in ms.candidates if c.shape.key == (dep.gpu, dep.tp, dep.pp, dep.framework, dep.quantization, dep.kv_cache_dtype) and c.batch == dep.max_batch)
        plan.append(Pick(match, dep.replicas))
    return explain_binding(space, tuple(plan), CpSatSolver(preset), deadline, seed=seed)


def _pareto_answer(problem: Problem, solver_name: str, preset: SolverPreset, time_limit_s, seed, workers, progress: Progress) -> Answer:
    """``objective: pareto``: the exact frontier, its points and the cheapest point as the solution."""
    from guide_opt.pareto import frontier_json, solve_pareto
    from guide_opt.space import build_space

    progress(f"evaluating the candidates of {len(problem.models)} LLM(s) with the performance model ...")
    space = build_space(problem, workers=workers) if workers is not None else None
    progress("computing the exact Pareto frontier (one CP-SAT solve per point) ...")
    solution, frontier, space = solve_pareto(problem, solver=solver_name, preset=preset, time_limit_s=time_limit_s, seed=seed, space=space)
    payload = solved_payload(problem, solution)
    payload.update(frontier_json(space, frontier))
    return Answer(solution, payload, space=space, frontier=frontier)


def _schedule_answer(problem: Problem, solver_name: str, preset: SolverPreset, time_limit_s, seed, workers, progress: Progress) -> Answer:
    """Batch jobs scheduled on the GPU pool: the schedule, verified."""
    from guide_opt.scheduling import schedule_json, solve_schedule, verify_schedule
    from guide_opt.space import build_space

    progress(f"evaluating the candidates of {len(problem.models)} batch job(s) with the performance model ...")
    space = build_space(problem, workers=workers) if workers is not None else None
    progress("scheduling the jobs on the GPU pool with CP-SAT ...")
    solution, schedule, space = solve_schedule(problem, solver=solver_name, preset=preset, time_limit_s=time_limit_s, seed=seed, space=space)
    violations = verify_schedule(problem, schedule, space) if solution.status.found else []
    payload = solved_payload(problem, solution, violations)
    payload["objective_unit"] = "h" if problem.objective == "min_makespan" else "$"
    payload.update(schedule_json(schedule))
    return Answer(solution, payload, space=space, schedule=schedule)


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
