"""The knob table (guide_opt.refine.knobs.KNOBS) is the refinement's search space: adding a knob is one entry."""

from __future__ import annotations

import dataclasses
import inspect

import optuna
import pytest

from guide_opt.frameworks import FrameworkProfile
from guide_opt.perf import ServingConfig
from guide_opt.refine import KNOBS, EngineSettings, Evaluator
from guide_opt.refine import knobs
from guide_opt.simulate import simulate
from guide_opt.solution import Deployment
from guide_opt.solvers import get_solver
from problem_fixtures import small_problem

TRIALS = 20


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    problem = small_problem()
    solution = get_solver("cpsat").solve(problem, alternatives=False, check_by_simulation=False)
    return Evaluator(problem, solution.deployments, 100, 0)


def test_the_sampled_parameters_are_the_tables_knobs(evaluator):
    """Optuna samples exactly one parameter per table entry, with the entry's kind, inside the entry's domain."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = []
    study.optimize(lambda t: sampled.append(knobs.suggest(t, 0, evaluator.neighbourhoods[0])) or 0.0, n_trials=TRIALS)
    names = [k.name for k in KNOBS]
    kinds = {"categorical": optuna.distributions.CategoricalDistribution, "int": optuna.distributions.IntDistribution,
             "float": optuna.distributions.FloatDistribution}
    for trial in study.trials:
        assert list(trial.params) == [f"models[0].{name}" for name in names]
        for k in KNOBS:
            assert isinstance(trial.distributions[f"models[0].{k.name}"], kinds[k.kind])
    assert [f.name for f in dataclasses.fields(EngineSettings)] == names
    for s in sampled:
        for k in KNOBS:
            value, domain = getattr(s, k.name), getattr(evaluator.neighbourhoods[0], k.name)
            if k.at_least is not None and value == getattr(s, k.at_least):  # raised to its floor after sampling
                continue
            if k.kind == "categorical":
                assert value in domain
            else:
                assert domain[0] <= value <= domain[1]
        assert all(getattr(s, k.name) >= getattr(s, k.at_least) for k in KNOBS if k.at_least)


def test_every_entry_names_real_fields_of_what_it_sets():
    """Each entry's targets exist: the ServingConfig field, the simulate() keyword, the Deployment field, the engine default."""
    config_fields = {f.name for f in dataclasses.fields(ServingConfig)}
    simulate_arguments = set(inspect.signature(simulate).parameters)
    deployment_fields = {f.name for f in dataclasses.fields(Deployment)}
    for k in KNOBS:
        assert (k.deployment_field is None) != (k.engine_default is None), k.name  # the incumbent's value comes from one place
        assert k.deployment_field is None or k.deployment_field in deployment_fields
        assert k.engine_default is None or k.engine_default in FrameworkProfile.model_fields
        assert k.serving_config_field is None or k.serving_config_field in config_fields
        assert k.simulator_argument is None or k.simulator_argument in simulate_arguments
        assert k.at_least is None or k.at_least in knobs.KNOB_NAMES
        assert k.serving_config_field or k.simulator_argument, f"{k.name} changes nothing that is simulated"


def test_the_incumbent_round_trips_through_trial_parameters(evaluator):
    """The incumbent enqueued as trial parameters reads back as itself, and lies in its own neighbourhood."""
    incumbent = evaluator.incumbent_settings
    assert knobs.settings_from_params(knobs.params(incumbent), 1) == incumbent
    n = evaluator.neighbourhoods[0]
    for k in KNOBS:
        value, domain = getattr(incumbent[0], k.name), getattr(n, k.name)
        assert value in domain if k.kind == "categorical" else domain[0] <= value <= domain[1]


def test_warm_starts_are_every_one_knob_move(evaluator):
    """Each warm start differs from the incumbent in exactly one warm-started knob; together they cover every other value.

    Expected count: for each warm-started knob, its domain's values minus the incumbent's (an
    int range counts its integers), summed.
    """
    incumbent = evaluator.incumbent_settings
    n = evaluator.neighbourhoods[0]
    moves = knobs.warm_starts(incumbent, evaluator.neighbourhoods)
    warm = [k for k in KNOBS if k.warm_start_rank is not None]
    domains = {k.name: getattr(n, k.name) for k in warm}
    expected = sum(len(d) - 1 if k.kind == "categorical" else d[1] - d[0] for k, d in zip(warm, domains.values()))
    assert len(moves) == expected
    for (plan,) in moves:
        changed = [k.name for k in KNOBS if getattr(plan, k.name) != getattr(incumbent[0], k.name)]
        assert len(changed) == 1 and changed[0] in domains
