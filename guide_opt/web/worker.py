"""What one solve or estimate request does, as a plain function of a JSON-able request.

:func:`run_solve` and :func:`run_estimate` are the whole computation behind ``POST /api/solve``
and ``POST /api/estimate``; :mod:`guide_opt.web.jobs` runs :func:`run_solve` in a separate
process so it can be bounded in time and cancelled. Both return JSON-able dictionaries:
``{"ok": true, ...}`` or ``{"ok": false, "error": {"field", "message"}}`` for bad input, the
message being the one line ``guide-opt`` prints after ``error:``.

The server reads no file a request names: LLMs are catalog ids or an uploaded config.json
(written to a private temporary folder for the request), and the problem keys that name
server-side files (``prediction.calibration``, ``workload.trace``) are refused.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

from guide_opt.answer import check_contexts, estimate_payload, in_problem_file, serving_config
from guide_opt.api import solve
from guide_opt.catalog import load_catalog, parse_yaml_text
from guide_opt.errors import InputError, unknown_id_error
from guide_opt.presets import DEFAULT_PRESET, load_preset
from guide_opt.problem import Problem
from guide_opt.web.form import PROBLEM_FILE_NAME, PlannerForm, error_field, form_to_problem, problem_yaml, upload_folder_name

#: Solvers a web request may choose (both exact; ``optuna`` refinement is a CLI job).
WEB_SOLVERS = ("cpsat", "exhaustive")
#: Solver presets a web request may choose (``solvers/*.yaml``).
WEB_PRESETS = ("fast", "exact")


def clean_json(value: Any) -> Any:
    """``value`` with non-finite floats as None (what ``solve --format json`` prints)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def error_result(exc: InputError, source: str = PROBLEM_FILE_NAME) -> dict:
    """The JSON of a bad-input answer: the field (for the page to highlight) and the CLI's line."""
    exc = in_problem_file(exc, source)
    return {"ok": False, "error": {"field": error_field(exc, source), "message": str(exc)}}


def problem_of_request(request: dict) -> tuple[dict, str | None]:
    """The problem dictionary a solve request stands for, and the uploaded LLM's folder name (or None).

    A request holds exactly one of ``form`` (a :class:`PlannerForm`), ``problem`` (a
    problem-file dictionary) or ``problem_yaml`` (its text); ``llm_config`` (an uploaded
    config.json object) replaces the form's LLM.
    """
    given = [k for k in ("form", "problem", "problem_yaml") if request.get(k) is not None]
    if len(given) != 1:
        raise InputError("request", f"give exactly one of form, problem or problem_yaml (got {', '.join(given) or 'none'})",
                         "send the form, or a problem as in problems/*.yaml")
    uploaded = upload_folder_name(request.get("llm_config_name")) if request.get("llm_config") is not None else None
    if "form" in given:
        return form_to_problem(PlannerForm.model_validate(request["form"]), uploaded_name=uploaded), uploaded
    if "problem_yaml" in given:
        data = parse_yaml_text(request["problem_yaml"], PROBLEM_FILE_NAME)  # bounded like a problem file the CLI reads
    else:
        data = request["problem"]
    if not isinstance(data, dict):
        raise InputError(PROBLEM_FILE_NAME, "a problem file must be a mapping with keys name, models, hardware, ...", "see problems/README.md")
    return data, uploaded


def _refuse_server_files(data: dict, uploaded: str | None) -> None:
    """Raise for problem keys that would make the server read one of its own files."""
    catalog = load_catalog()
    prediction = data.get("prediction")
    if isinstance(prediction, dict) and prediction.get("calibration") is not None:
        raise InputError("prediction.calibration", "the web planner does not read calibration files on the server",
                         "run 'guide-opt solve --calibration FILE' on your machine")
    for i, model in enumerate(data.get("models") or []):
        if not isinstance(model, dict):
            continue
        if isinstance(model.get("workload"), dict) and model["workload"].get("trace") is not None:
            raise InputError(f"models[{i}].workload.trace", "the web planner does not read trace files on the server",
                             "use a preset or custom lengths, or run guide-opt on your machine")
        llm_id = model.get("id")
        if isinstance(llm_id, str) and llm_id not in catalog.llms and llm_id != f"{uploaded}/config.json":
            # the CLI's message for an unknown id; a path is not read here (upload the config.json instead)
            raise unknown_id_error(f"models[{i}].id", llm_id, list(catalog.llms), "LLM")


def _with_upload_path(data: dict, uploaded: str, folder: Path) -> dict:
    """``data`` with the uploaded LLM's relative id replaced by its path in ``folder``."""
    relative = f"{uploaded}/config.json"
    models = [dict(m, id=str(folder / relative)) if isinstance(m, dict) and m.get("id") == relative else m for m in data.get("models") or []]
    return dict(data, models=models)


def _without_folder(exc: InputError, folder: Path) -> InputError:
    """``exc`` with the request's private folder removed from its text (the user knows the file as NAME/config.json)."""
    prefix = f"{folder}/"
    return InputError(exc.field.replace(prefix, ""), exc.problem.replace(prefix, ""), exc.fix.replace(prefix, ""))


def _write_upload(folder: Path, name: str, config: Any) -> None:
    """Write the uploaded config.json as ``folder/name/config.json``."""
    (folder / name).mkdir()
    (folder / name / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)


def run_solve(request: dict, progress: Callable[[str], None] = lambda _m: None, *, max_time_limit_s: float = 60.0,
              workers: int | None = 1) -> dict:
    """Answer one solve request: ``{"ok", "exit_code", "result", "problem", "problem_yaml"}``.

    ``result`` is the JSON ``guide-opt solve problem.yaml --format json`` prints for the same
    problem. ``time_limit_s`` (the whole solve, the space build included) is capped at ``max_time_limit_s``.
    """
    try:
        data, uploaded = problem_of_request(request)
        text = problem_yaml(data, uploaded_name=uploaded)
        _refuse_server_files(data, uploaded)
        solver_name = request.get("solver") or "cpsat"
        if solver_name not in WEB_SOLVERS:
            raise InputError("--solver", f"the web planner runs {' or '.join(WEB_SOLVERS)}, not '{solver_name}'", "choose cpsat")
        preset_name = request.get("preset") or DEFAULT_PRESET
        if preset_name not in WEB_PRESETS:
            raise InputError("--preset", f"the web planner offers the presets {', '.join(WEB_PRESETS)}, not '{preset_name}'", "choose fast")
        preset = load_preset(preset_name)
        limit = request.get("time_limit_s")
        limit = min(float(limit), max_time_limit_s) if limit is not None else (None if preset.time_limit_s <= max_time_limit_s else max_time_limit_s)
        with tempfile.TemporaryDirectory(prefix="guide-opt-web-") as tmp:
            solved = data
            if uploaded:
                _write_upload(Path(tmp), uploaded, request["llm_config"])
                solved = _with_upload_path(data, uploaded, Path(tmp))
            try:
                problem = Problem.from_dict(solved, source=PROBLEM_FILE_NAME)
                check_contexts(problem)
                answer = solve(problem, solver_name=solver_name, preset=preset, time_limit_s=limit,
                               seed=request.get("seed"), explain=request.get("explain", True), workers=workers, progress=progress)
            except InputError as exc:
                raise _without_folder(exc, Path(tmp)) from None
    except InputError as exc:
        return error_result(exc)
    return {"ok": True, "exit_code": answer.exit_code, "result": clean_json(answer.payload), "problem": data, "problem_yaml": text}


#: Keys of an estimate request besides the LLM, with their defaults (the ``estimate`` command's).
ESTIMATE_DEFAULTS = {"tp": 1, "pp": 1, "framework": "vllm", "quantization": "bf16", "kv_cache_dtype": "fp16", "batch": 1,
                     "input_tokens": 512, "output_tokens": 128, "flash_attention": True, "h2o_kept_fraction": 1.0,
                     "expert_parallel": False}


def run_estimate(request: dict) -> dict:
    """Answer one estimate request: ``{"ok", "exit_code", "result"}``, ``result`` as ``guide-opt estimate --format json``."""
    from guide_opt.perf import ESTIMATORS

    try:
        estimator = request.get("estimator") or "roofline"
        if estimator not in ESTIMATORS:
            raise InputError("--estimator", f"unknown estimator '{estimator}'", f"use one of {', '.join(sorted(ESTIMATORS))}")
        options = {k: request.get(k) if request.get(k) is not None else v for k, v in ESTIMATE_DEFAULTS.items()}
        with tempfile.TemporaryDirectory(prefix="guide-opt-web-") as tmp:
            model = request.get("model") or ""
            if request.get("llm_config") is not None:
                name = upload_folder_name(request.get("llm_config_name"))
                _write_upload(Path(tmp), name, request["llm_config"])
                model = str(Path(tmp) / name / "config.json")
            elif model not in load_catalog().llms:
                raise unknown_id_error("--model", model, list(load_catalog().llms), "LLM")
            try:
                config = serving_config(model=model, gpu=request.get("gpu") or "", **options)
            except InputError as exc:
                raise _without_folder(exc, Path(tmp)) from None
            est = ESTIMATORS[estimator](config)
    except InputError as exc:
        return {"ok": False, "error": {"field": exc.field.removeprefix("--").replace("-", "_"), "message": str(exc)}}
    return {"ok": True, "exit_code": 0 if est.runs else 2, "result": clean_json(estimate_payload(est))}
