"""The user's intent (:class:`Problem`), read from a YAML problem file.

A problem lists the LLMs to serve (each an :class:`LlmRequirement` with a workload, SLOs and
a precision tolerance), the hardware to choose from, the serving engines, a budget and an
objective. Every validation error becomes one :class:`~guide_opt.errors.InputError` naming
the field (``models[0].slo.ttft_ms``) and the fix. See ``problems/README.md`` for the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from guide_opt.catalog import load_catalog, read_yaml
from guide_opt import limits as L
from guide_opt.errors import InputError
from guide_opt.objectives import OBJECTIVES, problem_objectives
from guide_opt.perf.steady_state import DEFAULT_TARGET_UTILIZATION
from guide_opt.quantization import PRECISION_TOLERANCES

#: Batch sizes (max concurrent sequences per replica) searched when a problem names none.
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
DEFAULT_TP_DEGREES = (1, 2, 4, 8)
DEFAULT_PP_DEGREES = (1,)

def _registered_objective(name: object) -> object:
    """``name`` when it is a problem objective of the registry (:data:`guide_opt.objectives.OBJECTIVES`); else pydantic's literal
    error, for any input (checked before the type, so a number or a list gets the same line as a misspelling)."""
    names = problem_objectives()
    if name not in names:
        expected = ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return name


Objective = Annotated[str, BeforeValidator(_registered_objective)]
"""What to optimize: a problem objective of the registry (:mod:`guide_opt.objectives`, one entry each).

- ``min_cost``: $/h of the plan (of a batch-job schedule: $ of the whole schedule).
- ``max_throughput``: generated tokens/s of all replicas, within the limits.
- ``min_latency``: mean request latency (ms), summed over LLMs, within the limits.
- ``pareto``: every non-dominated (cost $/h, mean request latency ms, throughput tokens/s)
  plan (:mod:`guide_opt.pareto`).
- ``min_makespan``: batch jobs scheduled on the GPU pool, finishing as early as possible
  (:mod:`guide_opt.scheduling`).
- ``max_served``: a fleet under the budget/limits serving as much of each LLM's demand as it
  can: maximizes the mean over LLMs of the served share of demand (each LLM gets at least one
  replica; ties go to the cheaper plan).
"""



class _Strict(BaseModel):
    # nan and inf are refused everywhere: NaN would silently switch every comparison (SLO checks) off
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _tokens():
    return Field(default=None, gt=0, le=L.MAX_TOKENS)


class LlmWorkload(_Strict):
    """Request lengths and demand of one LLM.

    Lengths: ``input_tokens`` and ``output_tokens`` (numbers), or ``preset``
    (short / long / conversational), ``histogram`` or ``trace`` (see the simulator).
    Demand, exactly one of: ``request_rate_per_s`` (open loop), ``concurrent_users``
    (closed loop), or a batch job ``requests`` with ``deadline_h``. With none, one replica
    meeting the SLOs is enough.
    """

    input_tokens: int | None = _tokens()
    output_tokens: int | None = _tokens()
    preset: str | None = None
    histogram: dict | None = None
    trace: str | None = None
    request_rate_per_s: float | None = Field(default=None, gt=0, le=L.MAX_REQUEST_RATE_PER_S)
    concurrent_users: int | None = Field(default=None, gt=0, le=L.MAX_CONCURRENT_USERS)
    requests: int | None = Field(default=None, gt=0, le=L.MAX_JOB_REQUESTS)
    deadline_h: float | None = Field(default=None, gt=0, le=L.MAX_DEADLINE_H)

    @model_validator(mode="after")
    def _one_length_and_one_demand(self) -> "LlmWorkload":
        fixed = self.input_tokens is not None or self.output_tokens is not None
        kinds = [k for k, on in (("input_tokens/output_tokens", fixed), ("preset", self.preset), ("histogram", self.histogram), ("trace", self.trace)) if on]
        if len(kinds) != 1:
            raise ValueError("give the request lengths one way: input_tokens + output_tokens, preset, histogram or trace")
        if fixed and (self.input_tokens is None or self.output_tokens is None):
            raise ValueError("input_tokens and output_tokens go together; give both")
        demands = [k for k in ("request_rate_per_s", "concurrent_users", "requests") if getattr(self, k) is not None]
        if len(demands) > 1:
            raise ValueError(f"give one demand, not {' and '.join(demands)}")
        if (self.requests is None) != (self.deadline_h is None):
            raise ValueError("a batch job needs both requests and deadline_h")
        return self

    def token_lengths(self) -> tuple[int, int]:
        """Mean (input, output) tokens per request used by the static performance model."""
        if self.input_tokens is not None and self.output_tokens is not None:
            return self.input_tokens, self.output_tokens
        from guide_opt.simulate.workload_spec import workload_from_spec  # lengths from the workload generator

        spec = {k: v for k, v in (("preset", self.preset), ("histogram", self.histogram), ("trace", self.trace)) if v is not None}
        return workload_from_spec(spec).mean_token_lengths()


class Slo(_Strict):
    """Latency targets. ``percentile`` says which percentile the targets apply to (50, 90 or 99).

    The static model predicts typical (median-like) latencies; with a calibration file the
    solver widens predictions to the requested percentile (see ``guide-opt calibrate``).
    """

    ttft_ms: float | None = Field(default=None, gt=0, le=L.MAX_LATENCY_MS)
    tpot_ms: float | None = Field(default=None, gt=0, le=L.MAX_LATENCY_MS)
    percentile: Literal[50, 90, 99] = 50


class LlmRequirement(_Strict):
    """One LLM to serve: catalog id or path to a config.json, workload, SLOs, precision tolerance."""

    id: str
    workload: LlmWorkload
    slo: Slo = Slo()
    precision_tolerance: Literal["none", "10%", "20%", "50%"] = "none"

    @field_validator("precision_tolerance", mode="before")
    @classmethod
    def _tolerance_text(cls, value):
        if value is None or value is False:
            return "none"
        if isinstance(value, (int, float)):
            value = f"{value:g}%"
        if isinstance(value, str) and value not in PRECISION_TOLERANCES:
            raise ValueError(f"use one of {', '.join(PRECISION_TOLERANCES)}")
        return value


class Hardware(_Strict):
    """GPUs to choose from, how many exist, and what they cost.

    gpus: GPU ids, or ``all``. inventory: per-type GPU count available (types not listed are
    unlimited). max_gpus: cap on all GPUs used. price_table: a table in
    ``hardware_db/prices``. prices: $/GPU-hour overrides per GPU id.
    """

    gpus: list[str] | Literal["all"] = "all"
    inventory: dict[str, int] = {}
    max_gpus: int | None = Field(default=None, gt=0, le=L.MAX_GPUS)
    price_table: str = "default"
    prices: dict[str, float] = {}

    @field_validator("gpus")
    @classmethod
    def _some_gpus(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("the list of GPUs is empty; name at least one GPU id, or write: all")
        if isinstance(value, list) and len(value) > L.MAX_CHOICES:
            raise ValueError(f"{len(value)} GPU ids are above the limit of {L.MAX_CHOICES}; use: all")
        return value

    @field_validator("prices")
    @classmethod
    def _prices_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for gpu_id, price in value.items():
            L.check_finite(gpu_id, price, L.MIN_PRICE_PER_GPU_HOUR, L.MAX_PRICE_PER_GPU_HOUR)
        return value

    @field_validator("inventory")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"inventory counts must be >= 0 (check {', '.join(bad)})")
        big = [k for k, v in value.items() if v > L.MAX_GPUS]
        if big:
            raise ValueError(f"inventory counts must be at most {L.MAX_GPUS:,} (check {', '.join(big)})")
        return value


class SearchOptions(_Strict):
    """The discrete choices searched per LLM (defaults cover common deployments)."""

    tp: list[Annotated[int, Field(gt=0, le=L.MAX_PARALLEL_DEGREE)]] = Field(list(DEFAULT_TP_DEGREES), min_length=1, max_length=L.MAX_CHOICES)
    pp: list[Annotated[int, Field(gt=0, le=L.MAX_PARALLEL_DEGREE)]] = Field(list(DEFAULT_PP_DEGREES), min_length=1, max_length=L.MAX_CHOICES)
    batch_sizes: list[Annotated[int, Field(gt=0, le=L.MAX_BATCH)]] = Field(list(DEFAULT_BATCH_SIZES), min_length=1, max_length=L.MAX_CHOICES)
    kv_cache_dtypes: list[Literal["fp16", "fp8"]] = Field(["fp16"], min_length=1)
    max_replicas: int = Field(64, gt=0, le=L.MAX_REPLICAS)


class Scheduling(_Strict):
    """How batch-job workloads (``requests`` + ``deadline_h``) are planned.

    enabled: ``true`` schedules the jobs over time: each job gets a replica shape, a start
    and an end, sharing the GPU pool (``hardware.inventory`` per type, ``max_gpus``, and
    ``budget_per_hour`` as a $/h cap at every instant); see :mod:`guide_opt.scheduling`.
    ``false`` plans steady replicas held until each deadline (the fleet plan, $/h). ``auto``
    (default) schedules exactly when the objective is ``min_makespan``; a cheapest schedule
    (total $) is ``objective: min_cost`` with ``enabled: true``.
    time_quantum_s: the schedule's time unit (s); job durations round up to it, deadlines down.
    """

    enabled: bool | Literal["auto"] = "auto"
    time_quantum_s: int = Field(60, gt=0, le=86_400)


class Prediction(_Strict):
    """How predictions are adjusted before they are compared with the SLOs.

    calibration: a file written by ``guide-opt calibrate`` (path relative to the working
        directory): its fitted efficiency factors replace the engine defaults for the
        (GPU, engine) pairs it covers, and its residual quantiles widen TTFT and TPOT to each
        LLM's ``slo.percentile`` (p50 uses the median residual, a bias correction; p90 the
        90th percentile; p99 is beyond what a calibration file stores and is refused).
    slo_margin: a safety factor >= 1 multiplying predicted TTFT and TPOT (1.2 = plan with 20%
        headroom), applied on top of the calibration's.
    serving_model: how a candidate's latencies and replica count are predicted.
        ``steady_state`` (default): a running server under the LLM's demand
        (:mod:`guide_opt.perf.steady_state`: continuous batching with arriving prompts mixed into
        decode steps, queueing, the SLO's percentile), each replica loaded to at most
        ``target_utilization`` of its capacity. ``burst``: the static estimate of a batch whose
        prompts arrive at once (GUIDE's view), replicas by Little's law at full load.
    target_utilization: the largest share (0 < u <= 1) of a replica's capacity (its highest
        sustainable request rate) a steady-state plan may load it to; the headroom absorbs
        bursts that the mean-value model does not see.
    """

    calibration: str | None = None
    slo_margin: float = Field(default=1.0, ge=1.0, le=L.MAX_SLO_MARGIN)
    serving_model: Literal["steady_state", "burst"] = "steady_state"
    target_utilization: float = Field(default=DEFAULT_TARGET_UTILIZATION, gt=0.0, le=1.0)


class Problem(_Strict):
    """A deployment question: serve ``models`` on ``hardware`` with ``frameworks``, optimizing ``objective``."""

    name: str
    description: str = ""
    models: list[LlmRequirement] = Field(min_length=1, max_length=L.MAX_MODELS)
    hardware: Hardware = Hardware()
    frameworks: list[str] = Field(["vllm"], min_length=1, max_length=L.MAX_CHOICES)
    quantizations: list[str] | None = Field(None, min_length=1, max_length=L.MAX_CHOICES)
    budget_per_hour: float | None = Field(default=None, gt=0, le=L.MAX_BUDGET_PER_HOUR)
    objective: Objective = "min_cost"
    search: SearchOptions = SearchOptions()
    prediction: Prediction = Prediction()
    scheduling: Scheduling = Scheduling()

    @model_validator(mode="after")
    def _schedules_need_batch_jobs(self) -> "Problem":
        if self.scheduling.enabled is True and self.objective not in ("min_cost", "min_makespan"):
            raise ValueError(f"a batch-job schedule (scheduling.enabled: true) minimizes min_cost or min_makespan, not {self.objective}")
        if self.objective == "min_makespan" and self.scheduling.enabled is False:
            raise ValueError("objective min_makespan plans a schedule: remove scheduling.enabled: false")
        if self.objective == "min_makespan" or self.scheduling.enabled is True:
            for i, m in enumerate(self.models):
                if m.workload.requests is None:
                    raise ValueError(f"models[{i}].workload is not a batch job (a schedule needs requests + deadline_h for every model)")
        if self.candidate_upper_bound > L.MAX_CANDIDATES:
            raise ValueError(f"the search asks for up to {self.candidate_upper_bound:,} candidates, above the limit of {L.MAX_CANDIDATES:,} "
                             "(LLMs x GPUs x frameworks x quantizations x tp x pp x kv_cache_dtypes x batch_sizes); narrow the search")
        return self

    @property
    def candidate_upper_bound(self) -> int:
        """Most candidates this problem can ask for (before pruning): the product of its choice counts.

        ``hardware.gpus: all`` counts every catalog GPU, unspecified quantizations every scheme.
        """
        catalog = load_catalog()
        gpus = len(catalog.gpus) if self.hardware.gpus == "all" else len(set(self.hardware.gpus))
        quantizations = len(catalog.quantizations) if self.quantizations is None else len(set(self.quantizations))
        s = self.search
        return (len(self.models) * gpus * len(set(self.frameworks)) * quantizations * len(set(s.tp)) * len(set(s.pp))
                * len(set(s.kv_cache_dtypes)) * len(set(s.batch_sizes)))

    @property
    def is_schedule(self) -> bool:
        """True when the batch jobs are scheduled over time (see :class:`Scheduling`)."""
        if self.scheduling.enabled != "auto":
            return bool(self.scheduling.enabled)
        return OBJECTIVES[self.objective].stack == "schedule"

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Problem":
        """Read and validate a problem file; errors name the field and the fix."""
        data = read_yaml(Path(path))
        if not isinstance(data, dict):
            raise InputError(str(path), "a problem file must be a mapping with keys name, models, hardware, ...", "see problems/README.md")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "problem") -> "Problem":
        """Validate ``data`` as a problem (``source`` names it in errors)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise problem_error(source, exc) from None


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after[_one_length_and_one_demand()]",) or str(part).startswith(("function-", "literal[", "list[", "constrained-")):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


_FIXES = {
    "extra_forbidden": ("unknown key", "remove it or check its spelling (see problems/README.md)"),
    "missing": ("required key is missing", "add it"),
    "greater_than": ("must be positive", "give a number above 0"),
    "finite_number": ("must be a finite number", "give a plain number (not nan or inf)"),
    "too_short": ("must not be empty", "list at least one choice"),
    "too_long": ("has too many entries", "see problems/README.md, Limits"),
    "literal_error": ("not an allowed value", "use one of the listed values"),
}


def problem_error(source: str, exc: ValidationError) -> InputError:
    """Turn pydantic's first error into one :class:`InputError` naming the problem field."""
    err = exc.errors()[0]
    field = _field_path(err["loc"])
    problem, fix = _FIXES.get(err["type"], (None, None))
    if err["type"] == "literal_error":
        fix = err["msg"].replace("Input should be", "use")
    if err["type"] in ("less_than_equal", "less_than"):
        limit = err.get("ctx", {}).get("le", err.get("ctx", {}).get("lt"))
        shown = f"{limit:,.0f}" if float(limit).is_integer() else f"{limit:g}"
        problem, fix = f"{err.get('input')!r} is above the limit of {shown}", "give a smaller value (see problems/README.md, Limits)"
    if problem is None:
        msg = err["msg"].removeprefix("Value error, ")
        problem, fix = (msg, f"got {err.get('input')!r}") if err["type"] != "value_error" else (msg.split("; ")[0], "see problems/README.md")
    return InputError(f"{source}: {field}", problem, fix)
