"""The refined engine knobs, as a table: one :class:`Knob` entry per knob in :data:`KNOBS`.

Everything that varies with the set of knobs reads the table, so adding a knob is one entry:

- :class:`EngineSettings` -- one LLM's settings, a field per knob (built from the table).
- :func:`incumbent_settings` -- the incumbent's values: from its deployment
  (:attr:`Knob.deployment_field`) or its engine's defaults (:attr:`Knob.engine_default`).
- :class:`Neighbourhood` / :func:`neighbourhood` -- the choices searched around them
  (:attr:`Knob.domain`), and :func:`warm_starts`, the incumbent's one-knob moves.
- :func:`suggest`, :func:`params`, :func:`settings_from_params` -- the Optuna search space
  (trial parameters ``models[i].<knob>``) and its inverse.
- :func:`serving_config_fields`, :func:`simulator_arguments`, :func:`deployment_fields` -- how
  a plan maps onto :class:`~guide_opt.perf.ServingConfig`, :func:`~guide_opt.simulate.simulate`
  and :class:`~guide_opt.solution.Deployment`.

GPU type, PP, quantization and KV dtype are not knobs: they stay the incumbent's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from guide_opt.catalog import Catalog
from guide_opt.frameworks import FrameworkProfile
from guide_opt.problem import Problem
from guide_opt.solution import Deployment

if TYPE_CHECKING:
    import optuna

#: Replicas searched either side of the incumbent's.
REPLICA_RADIUS = 2
#: Steps of ``search.batch_sizes`` searched either side of the incumbent's max-num-seqs.
BATCH_RADIUS_STEPS = 2
#: Steps of ``search.tp`` searched either side of the incumbent's TP.
TP_RADIUS_STEPS = 1
#: Per-step token budgets searched (plus every allowed engine's default).
TOKEN_BUDGETS = (512, 1024, 2048, 4096, 8192, 16384)
#: gpu-memory-utilization range searched (widened to include the engines' defaults).
MEMORY_FRACTION_RANGE = (0.80, 0.95)
#: gpu-memory-utilization grid step.
MEMORY_FRACTION_STEP = 0.01


@dataclass(frozen=True)
class KnobContext:
    """What a knob's domain is built from, for one LLM.

    problem: the problem (its ``search`` grids and allowed ``frameworks``). current: the
    incumbent's settings. engines: the profiles of the problem's allowed engines (their
    defaults widen some domains). supports: whether a replica shape with these settings can
    run at all (:meth:`~guide_opt.perf.ServingConfig.unsupported_reason` is None).
    """

    problem: Problem
    current: Any  # EngineSettings
    engines: tuple[FrameworkProfile, ...]
    supports: Callable[[Any], bool]


@dataclass(frozen=True)
class Knob:
    """One refinable engine knob: its name, its search domain and where its value goes.

    name: the :class:`EngineSettings` field and the Optuna parameter ``models[i].<name>``.
    type: ``str``, ``int`` or ``float`` (trial values are converted to it).
    kind: how Optuna samples it: ``categorical`` (``domain`` gives the choices), ``int`` or
    ``float`` (``domain`` gives the inclusive ``(low, high)`` range; floats on a ``step`` grid
    and rounded to ``digits``). doc: what it is, with units.
    domain: the values searched around the incumbent (they include the incumbent's).
    deployment_field: the :class:`~guide_opt.solution.Deployment` attribute holding it (the
    incumbent's value comes from there), else None and ``engine_default`` names the
    :class:`~guide_opt.frameworks.FrameworkProfile` attribute with the engine's default.
    at_least: another knob's name; the value is raised to at least that knob's.
    serving_config_field / simulator_argument: the :class:`~guide_opt.perf.ServingConfig`
    field and the :func:`~guide_opt.simulate.simulate` keyword that take it (None: neither);
    ``resolve`` turns the value into what the serving config holds (a catalog lookup).
    warm_start_rank: order among the incumbent's one-knob moves (None: no warm start).
    """

    name: str
    type: type
    kind: Literal["categorical", "int", "float"]
    doc: str
    domain: Callable[[KnobContext], tuple]
    deployment_field: str | None = None
    engine_default: str | None = None
    at_least: str | None = None
    serving_config_field: str | None = None
    simulator_argument: str | None = None
    resolve: Callable[[Catalog, Any], Any] | None = None
    warm_start_rank: int | None = None
    step: float | None = None
    digits: int | None = None

    @property
    def flag(self) -> str:
        """The engine flag spelling, e.g. ``max-num-batched-tokens``."""
        return self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """A trial or catalog value as this knob's type (floats rounded to ``digits``)."""
        value = self.type(value)
        return round(value, self.digits) if self.digits is not None else value

    def format(self, value: Any) -> str:
        """The value for reports: floats with two decimals."""
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    def choices(self, domain: tuple) -> tuple:
        """Every value of a discrete domain (a categorical's choices, an int range's integers); () for a float range."""
        if self.kind == "categorical":
            return tuple(domain)
        if self.kind == "int":
            return tuple(range(domain[0], domain[1] + 1))
        return ()


def _steps_around(grid: list[int], value: int, radius: int) -> tuple[int, ...]:
    """``radius`` steps of the sorted ``grid`` (which holds ``value``) either side of ``value``."""
    k = grid.index(value)
    return tuple(grid[max(0, k - radius): k + radius + 1])


def _framework_domain(ctx: KnobContext) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*ctx.problem.frameworks, ctx.current.framework]))


def _tp_domain(ctx: KnobContext) -> tuple[int, ...]:
    tp = ctx.current.tp
    near = _steps_around(sorted(set(ctx.problem.search.tp) | {tp}), tp, TP_RADIUS_STEPS)
    return tuple(t for t in near if t == tp or ctx.supports(dataclasses.replace(ctx.current, tp=t)))


def _replicas_domain(ctx: KnobContext) -> tuple[int, int]:
    r = ctx.current.replicas
    return max(1, r - REPLICA_RADIUS), max(r, min(r + REPLICA_RADIUS, ctx.problem.search.max_replicas))


def _max_num_seqs_domain(ctx: KnobContext) -> tuple[int, ...]:
    seqs = ctx.current.max_num_seqs
    return _steps_around(sorted(set(ctx.problem.search.batch_sizes) | {seqs}), seqs, BATCH_RADIUS_STEPS)


def _token_budget_domain(ctx: KnobContext) -> tuple[int, ...]:
    return tuple(sorted(set(TOKEN_BUDGETS) | {e.max_num_batched_tokens for e in ctx.engines} | {ctx.current.max_num_batched_tokens}))


def _memory_fraction_domain(ctx: KnobContext) -> tuple[float, float]:
    fractions = [round(e.gpu_memory_utilization, 2) for e in ctx.engines] + [ctx.current.gpu_memory_utilization]
    return min(MEMORY_FRACTION_RANGE[0], *fractions), max(MEMORY_FRACTION_RANGE[1], *fractions)


#: The refined knobs, in the order Optuna samples them. One entry per knob: everything else reads this table.
KNOBS: tuple[Knob, ...] = (
    Knob("framework", str, "categorical", "serving engine id (among the problem's frameworks)", _framework_domain,
         deployment_field="framework", serving_config_field="framework", resolve=lambda catalog, v: catalog.framework(v),
         warm_start_rank=4),
    Knob("tp", int, "categorical", "tensor-parallel degree (the incumbent's and the neighbouring degrees of search.tp that run)",
         _tp_domain, deployment_field="tp", serving_config_field="tp", warm_start_rank=3),
    Knob("replicas", int, "int", "identical replicas behind the deployment's Service, balanced at random (the incumbent's +-2, >= 1)", _replicas_domain,
         deployment_field="replicas", simulator_argument="replicas", warm_start_rank=2),
    Knob("max_num_seqs", int, "categorical", "concurrent sequences per replica (the deployment's max_batch)", _max_num_seqs_domain,
         deployment_field="max_batch", serving_config_field="batch", simulator_argument="max_num_seqs", warm_start_rank=0),
    Knob("max_num_batched_tokens", int, "categorical",
         "token budget of one engine step (chunked-prefill chunk / SplitFuse budget; at least max_num_seqs)", _token_budget_domain,
         engine_default="max_num_batched_tokens", at_least="max_num_seqs", serving_config_field="max_num_batched_tokens",
         simulator_argument="max_num_batched_tokens", warm_start_rank=1),
    Knob("gpu_memory_utilization", float, "float", "fraction of each GPU's memory the engine may use", _memory_fraction_domain,
         engine_default="gpu_memory_utilization", serving_config_field="gpu_memory_utilization", step=MEMORY_FRACTION_STEP, digits=2),
)
#: The knobs' names, in table order.
KNOB_NAMES: tuple[str, ...] = tuple(k.name for k in KNOBS)


def _settings_to_json(self) -> dict[str, Any]:
    """The settings as a dict (engine flag names without dashes)."""
    return dataclasses.asdict(self)


EngineSettings = dataclasses.make_dataclass(
    "EngineSettings", [(k.name, k.type) for k in KNOBS], frozen=True,
    namespace={"__module__": __name__, "to_json": _settings_to_json,
               "__doc__": "The refined knobs of one LLM's deployment, a field per entry of :data:`KNOBS`:\n\n"
                          + "\n".join(f"{k.name}: {k.doc}." for k in KNOBS)})

Neighbourhood = dataclasses.make_dataclass(
    "Neighbourhood", [(k.name, tuple) for k in KNOBS], frozen=True,
    namespace={"__module__": __name__, "__doc__": "Choices searched for one LLM, a field per entry of :data:`KNOBS`: a categorical knob's choices, "
                          "or the inclusive (low, high) range of an int or float knob. All include the incumbent's value."})


def make_settings(values: dict[str, Any]) -> EngineSettings:
    """Settings from ``{knob name: value}``: each value converted to its knob's type, then raised to its ``at_least`` knob."""
    values = {k.name: k.coerce(values[k.name]) for k in KNOBS}
    for k in KNOBS:
        if k.at_least is not None:
            values[k.name] = max(values[k.name], values[k.at_least])
    return EngineSettings(**values)


def normalized(settings: EngineSettings) -> EngineSettings:
    """``settings`` with every ``at_least`` rule applied (after one knob was changed by hand)."""
    return make_settings(dataclasses.asdict(settings))


def incumbent_settings(deployment: Deployment, engine: FrameworkProfile) -> EngineSettings:
    """The incumbent's settings: its deployment's values, its engine's defaults for the rest."""
    return make_settings({k.name: getattr(deployment, k.deployment_field) if k.deployment_field else getattr(engine, k.engine_default)
                          for k in KNOBS})


def neighbourhood(ctx: KnobContext) -> Neighbourhood:
    """Every knob's domain around ``ctx.current``."""
    return Neighbourhood(**{k.name: k.domain(ctx) for k in KNOBS})


def suggest(trial: optuna.Trial, i: int, n: Neighbourhood) -> EngineSettings:
    """Sample LLM ``i``'s settings from its neighbourhood (parameters ``models[i].<knob>``, in table order)."""
    values = {}
    for k in KNOBS:
        name, domain = f"models[{i}].{k.name}", getattr(n, k.name)
        if k.kind == "categorical":
            values[k.name] = trial.suggest_categorical(name, domain)
        elif k.kind == "int":
            values[k.name] = trial.suggest_int(name, *domain)
        else:
            values[k.name] = trial.suggest_float(name, *domain, step=k.step)
    return make_settings(values)


def params(settings: tuple[EngineSettings, ...]) -> dict[str, Any]:
    """Trial parameters (``models[i].<knob>``) of a plan, as enqueued."""
    return {f"models[{i}].{k.name}": getattr(s, k.name) for i, s in enumerate(settings) for k in KNOBS}


def settings_from_params(trial_params: dict[str, Any], llms: int) -> tuple[EngineSettings, ...]:
    """Inverse of :func:`suggest` for a finished trial's parameters (``llms`` LLMs)."""
    return tuple(make_settings({k.name: trial_params[f"models[{i}].{k.name}"] for k in KNOBS}) for i in range(llms))


def warm_starts(incumbent: tuple[EngineSettings, ...], neighbourhoods: tuple[Neighbourhood, ...]) -> list[tuple[EngineSettings, ...]]:
    """The incumbent's one-knob moves, to enqueue after it: each changes one discrete knob of one LLM.

    Ordered so that a prefix covers every knob: the nearest alternative of each knob (in
    :attr:`Knob.warm_start_rank` order) first, then the next nearest, and so on (nearness in
    log scale for numbers; a categorical string keeps its domain's order). The step budget
    is raised to max-num-seqs when the trial runs, not here.
    """
    ranked = sorted((k for k in KNOBS if k.warm_start_rank is not None), key=lambda k: k.warm_start_rank)
    per_knob: list[list[tuple[EngineSettings, ...]]] = []
    for i, (s, n) in enumerate(zip(incumbent, neighbourhoods)):
        for k in ranked:
            current = getattr(s, k.name)
            others = [v for v in k.choices(getattr(n, k.name)) if v != current]
            if k.type is not str:
                others.sort(key=lambda v: (abs(math.log(v / current)), v))
            per_knob.append([tuple(dataclasses.replace(s, **{k.name: v}) if j == i else o for j, o in enumerate(incumbent))
                             for v in others])
    out: list[tuple[EngineSettings, ...]] = []
    for rank in range(max((len(m) for m in per_knob), default=0)):
        out.extend(m[rank] for m in per_knob if rank < len(m))
    return list(dict.fromkeys(out))


def serving_config_fields(settings: EngineSettings, catalog: Catalog) -> dict[str, Any]:
    """The :class:`~guide_opt.perf.ServingConfig` keyword arguments the knobs set."""
    out = {}
    for k in KNOBS:
        if k.serving_config_field is not None:
            value = getattr(settings, k.name)
            out[k.serving_config_field] = k.resolve(catalog, value) if k.resolve else value
    return out


def simulator_arguments(settings: EngineSettings) -> dict[str, Any]:
    """The :func:`~guide_opt.simulate.simulate` keyword arguments the knobs set."""
    return {k.simulator_argument: getattr(settings, k.name) for k in KNOBS if k.simulator_argument is not None}


def deployment_fields(settings: EngineSettings) -> dict[str, Any]:
    """The :class:`~guide_opt.solution.Deployment` fields the knobs set."""
    return {k.deployment_field: getattr(settings, k.name) for k in KNOBS if k.deployment_field is not None}


def changes(old: tuple[EngineSettings, ...], new: tuple[EngineSettings, ...]) -> tuple[str, ...]:
    """``[models[i].]knob: old -> new`` for every knob that differs (the prefix only with several LLMs)."""
    out = []
    for i, (a, b) in enumerate(zip(old, new)):
        prefix = f"models[{i}]." if len(old) > 1 else ""
        for k in KNOBS:
            x, y = getattr(a, k.name), getattr(b, k.name)
            if x != y:
                out.append(f"{prefix}{k.name}: {k.format(x)} -> {k.format(y)}")
    return tuple(out)
