"""The planner's web form and the problem file it stands for.

A :class:`PlannerForm` holds what a person fills in on the page (GUIDE's Figure 12 and
more); :func:`form_to_problem` turns it into the dictionary of a problem file, field for
field (``models[0].slo.ttft_ms`` ...), *without* validating it: validation is
:meth:`guide_opt.problem.Problem.from_dict`'s, so the page shows exactly the message that
``guide-opt solve problem.yaml`` prints for the downloaded file. :func:`problem_yaml`
writes that file.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from guide_opt.errors import InputError

#: The name the page gives the downloaded problem file; errors are phrased for it.
PROBLEM_FILE_NAME = "problem.yaml"
#: Folder name of an uploaded config.json when the upload gives none.
DEFAULT_UPLOAD_NAME = "uploaded-llm"


class PlannerForm(BaseModel):
    """What the web form sends: one LLM, its workload and SLOs, the hardware, engines, budget and objective.

    Numbers are passed on unvalidated (a negative TTFT reaches the problem validation and comes
    back with the CLI's message). ``gpus`` empty means every GPU in the catalog.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Problem name (default: derived from the LLM and the workload).")
    model: str = Field("llama-3.1-8b", description="LLM catalog id; ignored when a config.json is uploaded.")
    lengths: Literal["custom", "short", "long", "conversational"] = Field("custom", description="Request lengths: a preset or custom numbers.")
    input_tokens: float | None = Field(1024, description="Prompt tokens per request (custom lengths).")
    output_tokens: float | None = Field(256, description="Generated tokens per request (custom lengths).")
    demand: Literal["rate", "users", "none"] = Field("rate", description="Open loop (requests/s), closed loop (concurrent users) or one replica.")
    request_rate_per_s: float | None = Field(20, description="Requests per second (demand 'rate').")
    concurrent_users: float | None = Field(None, description="Concurrent users (demand 'users').")
    ttft_ms: float | None = Field(500, description="Time-to-first-token SLO in ms (empty: none).")
    tpot_ms: float | None = Field(40, description="Time-per-output-token SLO in ms (empty: none).")
    percentile: int | str = Field(50, description="Percentile the SLOs apply to: 50, 90 or 99.")
    precision_tolerance: str = Field("none", description="none, 10%, 20% or 50%: the accuracy loss allowed for faster precisions.")
    gpus: list[str] = Field(default_factory=list, description="GPU ids to choose from (empty: all).")
    inventory: dict[str, float | None] = Field(default_factory=dict, description="GPUs available per type (types not listed: unlimited).")
    max_gpus: float | None = Field(None, description="Cap on all GPUs used.")
    frameworks: list[str] = Field(default_factory=lambda: ["vllm", "sglang"], description="Serving engines.")
    budget_per_hour: float | None = Field(None, description="Budget in $/h (empty: none).")
    objective: str = Field("min_cost", description="min_cost, max_throughput, min_latency or pareto.")


def _number(value: float | None) -> int | float | None:
    """Integral floats as ints (YAML and the problem's integer fields read them as written)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def upload_folder_name(name: str | None) -> str:
    """A safe folder name for an uploaded config.json (``my-llm`` from ``My LLM/config.json``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", (name or "").removesuffix(".json").removesuffix("config").strip(" -_./")).strip("-.")
    return stem[:64] or DEFAULT_UPLOAD_NAME


def form_to_problem(form: PlannerForm, *, uploaded_name: str | None = None) -> dict[str, Any]:
    """The problem-file dictionary the form stands for (see ``problems/README.md``).

    ``uploaded_name``: when a config.json was uploaded, the folder it is referred to by
    (``id: NAME/config.json``) instead of the catalog id.
    """
    if form.lengths == "custom":
        workload: dict[str, Any] = {"input_tokens": _number(form.input_tokens), "output_tokens": _number(form.output_tokens)}
    else:
        workload = {"preset": form.lengths}
    if form.demand == "rate":
        workload["request_rate_per_s"] = _number(form.request_rate_per_s)
    elif form.demand == "users":
        workload["concurrent_users"] = _number(form.concurrent_users)
    percentile = int(form.percentile) if str(form.percentile).isdigit() else form.percentile
    llm_id = f"{uploaded_name}/config.json" if uploaded_name else form.model
    hardware = _drop_none({
        "gpus": list(form.gpus) if form.gpus else "all",
        "inventory": {gpu: _number(count) for gpu, count in form.inventory.items() if count is not None} or None,
        "max_gpus": _number(form.max_gpus),
    })
    model = {
        "id": llm_id,
        "workload": workload,
        "slo": _drop_none({"ttft_ms": _number(form.ttft_ms), "tpot_ms": _number(form.tpot_ms), "percentile": percentile}),
        "precision_tolerance": form.precision_tolerance,
    }
    lengths = (f"{workload['input_tokens']} in / {workload['output_tokens']} out tokens" if form.lengths == "custom"
               else f"{form.lengths} requests")
    demand = {"rate": f", {workload.get('request_rate_per_s')} requests/s", "users": f", {workload.get('concurrent_users')} users"}.get(form.demand, "")
    name = form.name.strip() or f"{uploaded_name or form.model}: {lengths}{demand}, {form.objective}"
    return _drop_none({
        "name": name,
        "models": [model],
        "hardware": hardware,
        "frameworks": list(form.frameworks),
        "budget_per_hour": _number(form.budget_per_hour),
        "objective": form.objective,
    })


def problem_yaml(problem: dict[str, Any], *, uploaded_name: str | None = None) -> str:
    """The problem as a YAML file that ``guide-opt solve`` reads, with a header saying how to run it."""
    lines = ["# Written by the guide-opt web planner. Reproduce this session with:",
             f"#   guide-opt solve {PROBLEM_FILE_NAME}"]
    if uploaded_name:
        lines.append(f"# The LLM is the uploaded config.json: save it as {uploaded_name}/config.json next to this file.")
    return "\n".join(lines) + "\n" + yaml.safe_dump(problem, sort_keys=False, allow_unicode=True)


def error_field(exc: InputError, source: str = PROBLEM_FILE_NAME) -> str:
    """The problem field an error is about (``models[0].slo.ttft_ms``), without the file name."""
    return exc.field.removeprefix(f"{source}: ")
