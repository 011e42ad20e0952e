"""The exact Pareto frontier: equal to brute force, non-dominated, verified; CLI points[] and --plot."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guide_opt.cli import main
from guide_opt.errors import InputError
from guide_opt.pareto import brute_force_frontier, nondominated, pareto_frontier, solve_pareto
from guide_opt.problem import Problem
from guide_opt.solution import Status
from guide_opt.solvers import get_solver
from guide_opt.space import build_space
from guide_opt.verify import verify_deployments
from guide_opt.plan import to_deployment


def small_pareto(**overrides) -> Problem:
    data = {
        "name": "small pareto",
        "models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                    "slo": {"ttft_ms": 800, "tpot_ms": 40}}],
        "hardware": {"gpus": ["a100-80gb-sxm", "l40s", "h100-sxm"], "max_gpus": 8},
        "frameworks": ["vllm"],
        "budget_per_hour": 20,
        "objective": "pareto",
        "search": {"tp": [1, 2], "batch_sizes": [4, 16, 64]},
    }
    data.update(overrides)
    return Problem.from_dict(data)


def quanta(frontier) -> list[tuple[int, int, int]]:
    return sorted(p.quanta for p in frontier.points)


def test_frontier_equals_brute_force_on_a_small_problem():
    space = build_space(small_pareto())
    exact = pareto_frontier(space)
    brute = brute_force_frontier(space)
    assert exact.status is brute.status is Status.OPTIMAL
    assert len(exact.points) > 5
    assert quanta(exact) == quanta(brute)


def test_every_point_is_non_dominated_distinct_and_verified():
    problem = small_pareto()
    solution, frontier, space = solve_pareto(problem)
    points = frontier.points
    assert len({p.quanta for p in points}) == len(points)
    for a in points:
        assert not any(b.dominates(a) for b in points)
        assert verify_deployments(problem, [to_deployment(space, p) for p in a.plan]) == []
    assert solution.objective == pytest.approx(frontier.cheapest.cost_per_hour)
    assert solution.objective == pytest.approx(min(p.cost_per_hour for p in points))


def test_two_llm_frontier_equals_brute_force():
    problem = small_pareto(models=[
        {"id": "llama-3.2-1b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 2}, "slo": {"tpot_ms": 30}},
        {"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "concurrent_users": 16}, "slo": {"tpot_ms": 40}},
    ], hardware={"gpus": ["l40s", "h100-sxm"], "max_gpus": 4}, budget_per_hour=10, search={"tp": [1], "batch_sizes": [4, 16]})
    space = build_space(problem)
    assert quanta(pareto_frontier(space)) == quanta(brute_force_frontier(space))


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.lists(st.sampled_from(["l4", "l40s", "a100-80gb-sxm", "h100-sxm"]), min_size=1, max_size=2, unique=True),
       budget=st.sampled_from([4.0, 9.0, 16.0]), tpot=st.sampled_from([15.0, 60.0]), rate=st.sampled_from([1.0, 5.0]),
       batches=st.lists(st.sampled_from([2, 8, 32, 128]), min_size=1, max_size=3, unique=True))
def test_frontier_equals_brute_force_on_random_problems(gpus, budget, tpot, rate, batches):
    problem = small_pareto(hardware={"gpus": gpus, "max_gpus": 6}, budget_per_hour=budget, search={"tp": [1, 2], "batch_sizes": batches},
                           models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": rate},
                                    "slo": {"tpot_ms": tpot}}])
    space = build_space(problem)
    exact, brute = pareto_frontier(space), brute_force_frontier(space)
    assert exact.status is brute.status
    assert quanta(exact) == quanta(brute)


def test_pruning_does_not_change_the_frontier():
    space = build_space(small_pareto(frameworks=["vllm", "sglang"], search={"tp": [1, 2, 4], "batch_sizes": [4, 8, 16, 32, 64]}))
    pruned = pareto_frontier(space)
    assert pruned.stats["dominated_pruned"] > 0
    assert quanta(pruned) == quanta(pareto_frontier(space, prune_dominated=False))


def test_nondominated_filter():
    space = build_space(small_pareto())
    brute = brute_force_frontier(space)
    assert nondominated(list(brute.points) * 2) == list(brute.points)


def test_pareto_needs_a_limit():
    with pytest.raises(InputError, match="pareto"):
        solve_pareto(small_pareto(budget_per_hour=None, hardware={"gpus": ["l40s"]}))


def test_infeasible_pareto_explains_itself():
    solution, frontier, _ = solve_pareto(small_pareto(models=[
        {"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128}, "slo": {"tpot_ms": 0.5}}]))
    assert solution.status is frontier.status is Status.INFEASIBLE
    assert "tpot" in " ".join(solution.explanation["reasons"]).lower()


def test_golden_pareto_problem(problem_file):
    problem = problem_file("pareto-chat-8b.yaml")
    solution, frontier, _ = solve_pareto(problem)
    assert solution.status is Status.OPTIMAL
    # the cheapest point of the frontier is the min-cost optimum, found here by brute force
    cheapest = get_solver("exhaustive").solve(problem.model_copy(update={"objective": "min_cost"}), alternatives=False,
                                              check_by_simulation=False)
    assert solution.objective == pytest.approx(cheapest.objective)
    # brute_force_frontier over the same space (every plan enumerated) gives 23 non-dominated points on the step model
    # with the elementwise kernels and the engines' host costs; a window of +-3 points
    assert 20 <= len(frontier.points) <= 26
    assert frontier.slo_latency_ms == pytest.approx(500 + 255 * 20)
    assert all(p.latency_ms <= frontier.slo_latency_ms for p in frontier.points)


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_cli_json_points_and_plot(tmp_path, capsys, suffix, magic):
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(small_pareto().model_dump(exclude_defaults=True)))
    chart = tmp_path / f"frontier{suffix}"
    assert main(["solve", str(path), "--format", "json", "--plot", str(chart)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["status"] == "OPTIMAL" and payload["verified"]
    point = payload["points"][0]
    assert {"cost_per_hour", "latency_ms", "throughput_tokens_per_s", "deployments"} <= set(point)
    assert {"model", "gpu", "gpu_count", "tp", "replicas", "max_batch", "cost_per_hour", "metrics"} <= set(point["deployments"][0])
    assert payload["pareto"]["latency"] == "mean_request_latency_ms"
    assert chart.read_bytes().startswith(magic)


def test_cli_table_and_bad_plot_extension(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(small_pareto().model_dump(exclude_defaults=True)))
    assert main(["solve", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Pareto frontier" in out and "Optimum (cheapest point)" in out
    assert main(["solve", str(path), "--plot", str(tmp_path / "chart.bmp")]) == 1


def test_cli_exhaustive_frontier_matches(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(small_pareto().model_dump(exclude_defaults=True)))
    main(["solve", str(path), "--format", "json"])
    exact = json.loads(capsys.readouterr().out)
    main(["solve", str(path), "--format", "json", "--solver", "exhaustive"])
    brute = json.loads(capsys.readouterr().out)
    key = lambda p: (round(p["cost_per_hour"], 6), round(p["latency_ms"], 3), round(p["throughput_tokens_per_s"], 1))  # noqa: E731
    assert sorted(map(key, exact["points"])) == sorted(map(key, brute["points"]))


def test_point_values_match_a_hand_computation_and_no_point_dominates_another():
    # Expected values by hand from each point's own candidate: cost = replicas x GPUs per
    # replica x $/GPU-hour; latency = the candidate's mean request latency in ms. Dominance is
    # checked pairwise on the raw values, independently of the quanta the frontier uses.
    space = build_space(small_pareto())
    points = brute_force_frontier(space).points
    assert len(points) >= 2
    for point in points:
        (pick,) = point.plan
        shape = pick.candidate.shape
        assert point.cost_per_hour == pytest.approx(pick.replicas * shape.tp * shape.pp * shape.usd_per_gpu_hour)
        assert point.latency_ms == pytest.approx(pick.candidate.request_latency_s * 1e3)
    for a in points:
        for b in points:
            if a is not b:
                no_worse = (a.cost_per_hour <= b.cost_per_hour and a.latency_ms <= b.latency_ms
                            and a.throughput_tokens_per_s >= b.throughput_tokens_per_s)
                assert not (no_worse and (a.cost_per_hour, a.latency_ms, a.throughput_tokens_per_s)
                            != (b.cost_per_hour, b.latency_ms, b.throughput_tokens_per_s)), (a, b)
