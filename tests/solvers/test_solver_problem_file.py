"""Problem files: valid ones load, bad ones give one InputError naming the field and a fix."""

from __future__ import annotations

import pytest

from guide_opt.errors import InputError
from guide_opt.problem import Problem

from problem_fixtures import PROBLEMS_DIR

BASE = {"name": "x", "models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 100, "output_tokens": 10}}]}


@pytest.mark.parametrize("path", sorted(PROBLEMS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_problem_validates(path):
    problem = Problem.from_yaml(path)
    assert problem.name and problem.models


def with_model(**fields):
    model = {**BASE["models"][0], **fields}
    return {**BASE, "models": [model]}


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({**BASE, "budget": 3}, "budget", "unknown key"),
        (with_model(workload={"input_tokens": 5}), "models[0].workload", "go together"),
        (with_model(workload={"input_tokens": 5, "output_tokens": 5, "request_rate_per_s": 1, "concurrent_users": 3}), "models[0].workload", "one demand"),
        (with_model(workload={"input_tokens": 5, "output_tokens": 5, "requests": 10}), "models[0].workload", "deadline_h"),
        (with_model(slo={"ttft_ms": 0}), "models[0].slo.ttft_ms", "positive"),
        (with_model(slo={"percentile": 95}), "models[0].slo.percentile", "50"),
        (with_model(precision_tolerance="30%"), "models[0].precision_tolerance", "10%"),
        ({**BASE, "objective": "cheapest"}, "objective", "min_cost"),
        ({**BASE, "models": []}, "models", ""),
        ({**BASE, "hardware": {"inventory": {"h100-sxm": -1}}}, "hardware.inventory", ">= 0"),
    ],
)
def test_bad_problem_names_field_and_fix(data, field, words):
    with pytest.raises(InputError) as info:
        Problem.from_dict(data, source="p.yaml")
    message = str(info.value)
    assert message.startswith(f"p.yaml: {field}"), message
    assert words in message
    assert "\n" not in message


def test_tolerance_numbers_are_accepted_as_percent():
    problem = Problem.from_dict(with_model(precision_tolerance=20))
    assert problem.models[0].precision_tolerance == "20%"


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nmodels: [\n")
    with pytest.raises(InputError, match="invalid YAML"):
        Problem.from_yaml(path)


def test_unknown_ids_are_reported_at_solve_time_with_the_field():
    from guide_opt.space import build_space

    problem = Problem.from_dict({**BASE, "hardware": {"gpus": ["h100-sxn"]}})
    with pytest.raises(InputError, match=r"hardware.gpus\[0\].*did you mean h100-sxm"):
        build_space(problem)


def test_max_throughput_needs_a_limit():
    from guide_opt.space import build_space

    with pytest.raises(InputError, match="budget_per_hour"):
        build_space(Problem.from_dict({**BASE, "objective": "max_throughput"}))


@pytest.mark.parametrize("value", [0, -0.5, 1.5])
def test_target_utilization_outside_0_1_is_bad_input(value):
    from guide_opt.errors import InputError
    from guide_opt.problem import Problem

    data = {"name": "x", "models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 2}}],
            "prediction": {"target_utilization": value}}
    with pytest.raises(InputError) as info:
        Problem.from_dict(data)
    assert "prediction.target_utilization" in str(info.value)
