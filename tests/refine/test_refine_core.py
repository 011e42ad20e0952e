"""Optuna refinement around the CP-SAT incumbent (guide_opt.refine): guarantees, determinism, failures, constraints."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from guide_opt.catalog import load_catalog
from guide_opt.errors import InputError
from guide_opt.perf import ServingConfig
from guide_opt.plan import better
from guide_opt.problem import Problem
from guide_opt.cli.refine_output import print_refinement
from guide_opt.refine import Refinement, evaluate, open_loop_served_share, refine_solution
from guide_opt.simulate import FixedLengths, Workload
from guide_opt.solvers import get_solver
from problem_fixtures import PROBLEMS_DIR, small_problem

#: Small and fast: few simulated requests, few trials (behaviour, not quality, is tested here).
NUM_REQUESTS = 300
TRIALS = 12


def incumbent(problem: Problem):
    return get_solver("cpsat").solve(problem, alternatives=False, check_by_simulation=False)  # the static optimum


@pytest.fixture(scope="module")
def small_run() -> tuple[Problem, Refinement]:
    problem = small_problem()
    return problem, refine_solution(problem, incumbent(problem), trials=TRIALS, seed=0, num_requests=NUM_REQUESTS)


def _comparable(r: Refinement) -> dict:
    payload = r.to_json()
    payload.pop("wall_time_s")
    return payload


# ---- never worse than the incumbent ---------------------------------------------------------
def test_refined_plan_is_never_worse_than_a_feasible_incumbent(small_run):
    problem, r = small_run
    assert r.incumbent_feasible is True
    assert r.refined_feasible is True
    assert not better(problem.objective, r.incumbent_objective, r.refined_objective)
    assert r.refined_cost_per_hour <= r.incumbent_cost_per_hour + 1e-9
    assert r.trials_run == TRIALS and r.trials_complete + r.trials_failed + r.trials_pruned == r.trials_total


@pytest.mark.parametrize("objective", ["max_throughput", "min_latency"])
def test_never_worse_for_the_other_objectives(objective):
    problem = small_problem(objective=objective, models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128},
                                                          "slo": {"tpot_ms": 60}}])
    r = refine_solution(problem, incumbent(problem), trials=8, seed=1, num_requests=200)
    if r.incumbent_feasible:
        assert r.refined_feasible
        assert not better(objective, r.incumbent_objective, r.refined_objective)
    # no demand / max_throughput: the deployment is measured saturated (replicas x max-num-seqs users)
    assert r.refined_metrics[0].arrival.startswith("closed loop of")


def test_reported_metrics_are_what_the_simulator_gives(small_run):
    """Re-simulating the refined plan from its public description reproduces the reported figures."""
    problem, r = small_run
    d, s, m = r.refined[0], r.refined_settings[0], r.refined_metrics[0]
    catalog = load_catalog()
    config = ServingConfig(llm=catalog.llm(d.model), gpu=catalog.gpu(d.gpu), framework=catalog.framework(s.framework),
                           quantization=catalog.quantization(d.quantization), tp=s.tp, pp=d.pp, kv_cache_dtype=d.kv_cache_dtype,
                           max_num_batched_tokens=s.max_num_batched_tokens, gpu_memory_utilization=s.gpu_memory_utilization)
    result = evaluate.simulate(config, Workload.open_loop(FixedLengths(512, 128), 4.0), max_num_seqs=s.max_num_seqs,
                               max_num_batched_tokens=s.max_num_batched_tokens, num_requests=NUM_REQUESTS, seed=r.simulation_seed,
                               replicas=s.replicas, balancer="random")  # the emitted Service balances at random
    assert m.ttft_p50_ms == pytest.approx(result.ttft_s.p50_s * 1e3)
    assert m.tpot_p90_ms == pytest.approx(result.tpot_s.p90_s * 1e3)
    assert m.throughput_tokens_per_s == pytest.approx(result.throughput_tokens_per_s)
    assert d.cost_per_hour == pytest.approx(s.replicas * s.tp * d.pp * catalog.price_table("default").usd_per_gpu_hour()[d.gpu])
    assert (d.tp, d.replicas, d.max_batch, d.framework) == (s.tp, s.replicas, s.max_num_seqs, s.framework)


def test_an_incumbent_that_misses_the_simulated_slo_is_reported_and_repaired():
    """LLM-Pilot's 200 users on half the replicas CP-SAT chose (burst model, which spreads them over
    several replicas): each replica's static figures are unchanged, but under the closed loop twice the
    users share it, so the simulated latencies miss the SLOs."""
    import dataclasses

    problem = Problem.from_yaml(PROBLEMS_DIR / "llm-pilot-200-users.yaml")
    problem = problem.model_copy(update={"prediction": problem.prediction.model_copy(update={"serving_model": "burst"})})
    solution = incumbent(problem)
    (d,) = solution.deployments
    assert d.replicas >= 2
    halved = dataclasses.replace(d, replicas=d.replicas // 2, cost_per_hour=d.cost_per_hour / d.replicas * (d.replicas // 2))
    r = refine_solution(problem, dataclasses.replace(solution, deployments=(halved,)), trials=15, seed=0, num_requests=200)
    assert r.incumbent_feasible is False
    assert any(v.startswith("models[0].") for v in r.incumbent_violations), r.incumbent_violations
    assert any("static model was optimistic" in n for n in r.notes)
    assert r.refined_feasible is True and r.improved and r.changes
    assert r.refined_violations == ()


# ---- determinism ----------------------------------------------------------------------------
def test_same_seed_same_refinement_and_same_trials():
    problem = small_problem()
    solution = incumbent(problem)
    runs = []
    for _ in range(2):
        storage = optuna.storages.InMemoryStorage()
        r = refine_solution(problem, solution, trials=TRIALS, seed=7, num_requests=NUM_REQUESTS, storage=storage, study_name="det")
        trials = optuna.load_study(study_name="det", storage=storage).get_trials()
        runs.append((_comparable(r), [t.params for t in trials], [t.value for t in trials]))
    assert runs[0] == runs[1]


# ---- failures -------------------------------------------------------------------------------
def test_a_simulator_failure_is_a_failed_trial_not_a_crash(monkeypatch):
    original = evaluate.simulate

    def flaky(config, workload, **kwargs):
        if kwargs["max_num_seqs"] == 4:
            raise RuntimeError("simulator crashed on purpose")
        return original(config, workload, **kwargs)

    monkeypatch.setattr(evaluate, "simulate", flaky)
    problem = small_problem()
    storage = optuna.storages.InMemoryStorage()
    r = refine_solution(problem, incumbent(problem), trials=TRIALS, seed=0, num_requests=NUM_REQUESTS, storage=storage, study_name="flaky")
    assert r.trials_failed >= 1 and r.trials_run == TRIALS
    assert any("simulator crashed on purpose" in e for e in r.errors)
    failed = [t for t in optuna.load_study(study_name="flaky", storage=storage).get_trials()
              if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.params["models[0].max_num_seqs"] == 4 for t in failed)
    assert r.refined_settings[0].max_num_seqs != 4


def test_a_simulator_that_always_fails_still_returns_a_report(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no simulator today")

    monkeypatch.setattr(evaluate, "simulate", broken)
    problem = small_problem()
    solution = incumbent(problem)
    r = refine_solution(problem, solution, trials=5, seed=0, num_requests=NUM_REQUESTS)
    assert r.trials_failed == 5 and r.trials_complete == 0
    assert r.incumbent_feasible is None and r.refined_feasible is False and not r.improved
    assert r.refined == tuple(solution.deployments)
    assert any("could not be simulated" in n for n in r.notes)
    json.dumps(r.to_json())


# ---- named constraints ----------------------------------------------------------------------
def test_every_trial_carries_named_constraints():
    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 40, "percentile": 90}}])
    storage = optuna.storages.InMemoryStorage()
    refine_solution(problem, incumbent(problem), trials=6, seed=0, num_requests=NUM_REQUESTS, storage=storage, study_name="named")
    study = optuna.load_study(study_name="named", storage=storage)
    expected = {"models[0].ttft_p90_ms", "models[0].tpot_p90_ms", "models[0].demand", "models[0].memory", "models[0].rejected",
                "budget_per_hour", "max_gpus"}
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for t in complete:
        assert set(t.constraints) == expected  # Optuna 5: trial.set_constraint, one per name
        assert t.user_attrs["guide_opt.constraints"] == pytest.approx(t.constraints)
        feasible = all(v <= 0 for v in t.constraints.values())
        assert t.user_attrs["guide_opt.evaluation"]["feasible"] == feasible
    # the incumbent is trial 0, enqueued with its own parameters
    first = study.trials[0]
    assert first.user_attrs.get("guide_opt.incumbent") is True
    assert first.params["models[0].max_num_seqs"] == incumbent(problem).deployments[0].max_batch


def test_open_loop_served_share_sees_overload():
    import numpy as np

    arrival = np.arange(400) * 0.05  # 20 requests/s
    assert open_loop_served_share(arrival, arrival + 1.0) == pytest.approx(1.0)
    overloaded = arrival + 1.0 + 0.25 * arrival  # latency grows 0.25 s per s: capacity = rate / 1.25
    assert open_loop_served_share(arrival, overloaded) == pytest.approx(0.8)
    assert open_loop_served_share(arrival, np.full(400, math.nan)) == 0.0


# ---- input errors and rendering -------------------------------------------------------------
def test_refinement_refuses_what_it_cannot_refine():
    problem = small_problem(budget_per_hour=0.5)
    with pytest.raises(InputError, match="nothing to refine"):
        refine_solution(problem, incumbent(problem), trials=3, seed=0)
    pareto = small_problem(objective="pareto")
    with pytest.raises(InputError, match="refinement handles"):
        refine_solution(pareto, incumbent(small_problem()), trials=3, seed=0)


def test_json_and_text_report(small_run, capsys):
    _, r = small_run
    payload = json.loads(json.dumps(r.to_json()))
    assert {"incumbent", "refined", "changes", "trials", "notes"} <= payload.keys()
    for side in ("incumbent", "refined"):
        dep = payload[side]["deployments"][0]
        assert {"ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "goodput_fraction",
                "throughput_tokens_per_s", "cost_per_hour"} <= dep["simulated"].keys()
        assert {"max_num_batched_tokens", "gpu_memory_utilization", "max_num_seqs"} <= dep["engine"].keys()
    assert all(": " in c and " -> " in c for c in payload["changes"])
    print_refinement(r)
    out = capsys.readouterr().out
    assert "incumbent (solver)" in out and "refined" in out and "TTFT p50/p90/p99 ms" in out and "changes:" in out


def test_progress_bar_only_when_asked(capsys):
    problem = small_problem()
    solution = incumbent(problem)
    refine_solution(problem, solution, trials=2, seed=0, num_requests=100)
    assert "it/s" not in capsys.readouterr().err
    refine_solution(problem, solution, trials=2, seed=0, num_requests=100, progress=True)
    assert "2/2" in capsys.readouterr().err


def test_deployments_simulated_side_by_side_match_one_after_another():
    # simulate_deployments runs the LLMs' simulations in forked processes; the reference is the same
    # evaluator run in this process, one LLM after the other: every figure must be identical.
    import dataclasses

    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 40}},
                                    {"id": "llama-2-7b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 2},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 50}}], budget_per_hour=40)
    plan = incumbent(problem)
    side_by_side = evaluate.simulate_deployments(problem, plan.deployments, num_requests=300, seed=5)
    reference = evaluate.Evaluator(problem, plan.deployments, 300, 5)
    serial = reference.evaluate(reference.incumbent_settings)
    assert [dataclasses.asdict(m) for m in side_by_side.metrics] == [dataclasses.asdict(m) for m in serial.metrics]
    assert side_by_side.constraints == serial.constraints


def test_plans_sharing_a_deployment_share_its_simulation_and_nothing_else():
    # The memo one solve shares between the plans it checks: an LLM deployed the same way in a second plan is read
    # back, never re-simulated, and a deployment that differs in anything (here the GPU type) is simulated anew.
    # Reference: each plan simulated on its own, without a memo -- every figure must be identical.
    import dataclasses

    problem = small_problem(models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 40}},
                                    {"id": "llama-2-7b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 2},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 50}}], budget_per_hour=40)
    first = incumbent(problem).deployments
    other_gpu = "l40s" if first[1].gpu != "l40s" else "a100-80gb-sxm"
    second = (first[0], dataclasses.replace(first[1], gpu=other_gpu))
    memo: dict = {}
    evaluate.simulate_deployments(problem, first, num_requests=200, seed=3, simulations=memo)
    assert len(memo) == 2
    remembered = dict(memo)
    with_memo = evaluate.simulate_deployments(problem, second, num_requests=200, seed=3, simulations=memo)
    assert len(memo) == 3  # LLM 0 read back; LLM 1 on the other GPU simulated and added
    assert all(memo[k] is v for k, v in remembered.items())
    alone = evaluate.simulate_deployments(problem, second, num_requests=200, seed=3)
    assert [dataclasses.asdict(m) for m in with_memo.metrics] == [dataclasses.asdict(m) for m in alone.metrics]
    assert with_memo.constraints == alone.constraints
    # other requests or another seed are other simulations
    evaluate.simulate_deployments(problem, first, num_requests=100, seed=3, simulations=memo)
    assert len(memo) == 5


def test_services_alike_and_deployed_alike_are_simulated_once(monkeypatch):
    # Two services of one fleet with the same LLM, workload and SLOs, deployed the same way, are the same simulation: it
    # runs once. Reference: each of them as the only service of its own problem -- the figures must be identical.
    import dataclasses

    service = {"id": "llama-2-7b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 2}, "slo": {"ttft_ms": 800, "tpot_ms": 50}}
    other = {"id": "llama-2-7b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 3}, "slo": {"ttft_ms": 800, "tpot_ms": 50}}
    fleet = small_problem(models=[service, other, service], budget_per_hour=60)
    alone = small_problem(models=[service], budget_per_hour=60)
    deployments = incumbent(alone).deployments * 3
    calls = []
    real = evaluate.simulate
    monkeypatch.setattr(evaluate, "simulate", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    monkeypatch.setattr("guide_opt.parallel.default_workers", lambda: 1)
    checked = evaluate.simulate_deployments(fleet, deployments, num_requests=200, seed=3)
    assert len(calls) == 2  # the first and third services share one simulation; the second has its own rate
    reference = evaluate.simulate_deployments(alone, deployments[:1], num_requests=200, seed=3)
    assert dataclasses.asdict(checked.metrics[0]) == dataclasses.asdict(checked.metrics[2]) == dataclasses.asdict(reference.metrics[0])
    assert dataclasses.asdict(checked.metrics[1]) != dataclasses.asdict(checked.metrics[0])
