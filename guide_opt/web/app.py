"""The FastAPI application behind ``guide-opt serve``: the planner page and its JSON API.

Routes (documented at ``/docs``, schema at ``/openapi.json``):

- ``GET /`` -- the planner page (one static HTML/JS file, no external resources);
- ``GET /api/catalog`` -- LLMs, GPUs (with $/GPU-h), engines, precisions and presets for the form;
- ``POST /api/solve`` -- solve and wait: the JSON ``guide-opt solve --format json`` prints;
- ``POST /api/jobs``, ``GET /api/jobs/{id}``, ``DELETE /api/jobs/{id}`` -- the same solve as a
  job the page polls for progress and can cancel;
- ``POST /api/estimate`` -- one configuration's predicted metrics, as ``guide-opt estimate``;
- ``POST /api/problem.yaml`` -- the problem file a form stands for.

Bad input answers HTTP 422 with ``{"error": {"field", "message"}}``: the message is the line
the CLI prints after ``error:``, the field the form input to highlight. Solves run in
:class:`~guide_opt.web.jobs.JobRunner` processes; requests larger than ``max_body_bytes`` are
refused with 413 before they are read.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from guide_opt import __version__, limits
from guide_opt.errors import InputError
from guide_opt.web.form import PROBLEM_FILE_NAME, PlannerForm
from guide_opt.web.jobs import Job, JobRunner, JobState

#: Largest request body accepted (a form, a problem file or a config.json are a few kB).
MAX_BODY_BYTES = 1 << 20


class SolveRequest(BaseModel):
    """A solve: exactly one of ``form``, ``problem`` or ``problem_yaml``, and how to solve it."""

    model_config = ConfigDict(extra="forbid")

    form: PlannerForm | None = Field(None, description="The planner form (one LLM).")
    problem: dict[str, Any] | None = Field(None, description="A problem as in problems/*.yaml, as a JSON object (see problems/README.md).")
    problem_yaml: str | None = Field(None, description="A problem file's YAML text.")
    llm_config: dict[str, Any] | None = Field(None, description="An uploaded HuggingFace config.json; the problem refers to it as NAME/config.json.")
    llm_config_name: str | None = Field(None, description="NAME of the uploaded LLM (default: uploaded-llm).")
    solver: Literal["cpsat", "exhaustive"] = Field("cpsat", description="cpsat (exact) or exhaustive (brute-force cross-check).")
    preset: Literal["fast", "exact"] = Field("fast", description="Solver preset (solvers/fast.yaml, solvers/exact.yaml).")
    time_limit_s: float | None = Field(None, gt=0, le=limits.MAX_TIME_LIMIT_S, description="Time limit in s for the whole solve, the candidate build included (capped by the server).")
    seed: int | None = Field(None, ge=0, le=limits.MAX_SEED, description="Random seed.")
    explain: bool = Field(True, description="Report which constraints bind and what relaxing each would gain.")


class EstimateRequest(BaseModel):
    """One configuration, as the options of ``guide-opt estimate``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="LLM catalog id (or upload llm_config).")
    llm_config: dict[str, Any] | None = Field(None, description="An uploaded HuggingFace config.json instead of a catalog id.")
    llm_config_name: str | None = Field(None, description="Name of the uploaded LLM.")
    gpu: str = Field(..., description="GPU id.")
    tp: int = Field(1, ge=1, le=limits.MAX_PARALLEL_DEGREE, description="Tensor-parallel degree.")
    pp: int = Field(1, ge=1, le=limits.MAX_PARALLEL_DEGREE, description="Pipeline-parallel degree.")
    framework: str = Field("vllm", description="Serving engine id.")
    quantization: str = Field("bf16", description="bf16 (alias fp16), fp8, w8a8 or w4a16.")
    kv_cache_dtype: Literal["fp16", "fp8"] = Field("fp16", description="KV-cache precision.")
    batch: int = Field(1, ge=1, le=limits.MAX_BATCH, description="Concurrent sequences in the batch.")
    input_tokens: int = Field(512, ge=1, le=limits.MAX_TOKENS, description="Prompt tokens per request.")
    output_tokens: int = Field(128, ge=1, le=limits.MAX_TOKENS, description="Generated tokens per request.")
    flash_attention: bool = Field(True, description="Model attention with FlashAttention.")
    h2o_kept_fraction: float = Field(1.0, gt=0, le=1, description="Fraction of KV entries kept by H2O eviction.")
    expert_parallel: bool = Field(False, description="Place MoE experts whole, num_experts / tp per GPU (vLLM --enable-expert-parallel; SGLang --ep-size = --tp).")
    estimator: str = Field("roofline", description="roofline (guide-opt's) or guide-2024 (GUIDE's published equations).")


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


def _loc_field(loc: tuple) -> str:
    """``form.ttft_ms`` from pydantic's ``("body", "form", "ttft_ms")``."""
    return ".".join(str(p) for p in loc if p != "body") or "(request)"


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413 (by header, and while streaming)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = _error(413, f"request body over {self.max_bytes:,} bytes; send a smaller problem or config.json", "request")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await too_large(scope, receive, send)


class _TooLarge(Exception):
    """The body grew past the limit while it was read."""


def _catalog_json() -> dict:
    """What the form offers: catalog ids with a few facts, presets, tolerances and objectives."""
    from guide_opt.catalog import load_catalog
    from guide_opt.quantization import PRECISION_TOLERANCES
    from guide_opt.simulate.workloads import PRESETS

    catalog = load_catalog()
    prices = {q.gpu: q.usd_per_gpu_hour for q in catalog.price_table().quotes}
    return {
        "llms": [{"id": s.id, "name": s.name, "params_b": round(s.total_params / 1e9, 2)} for s in catalog.llms.values()],
        "gpus": [{"id": g.id, "name": g.name, "memory_gib": g.memory_gib, "usd_per_gpu_hour": prices.get(g.id)} for g in catalog.gpus.values()],
        "frameworks": [{"id": f.id, "name": f.name} for f in catalog.frameworks.values()],
        "quantizations": list(catalog.quantizations),
        "precision_tolerances": list(PRECISION_TOLERANCES),
        "length_presets": {name: repr(dist) for name, dist in PRESETS.items()},
        "objectives": ["min_cost", "max_throughput", "min_latency", "pareto"],
        "percentiles": [50, 90, 99],
    }


def _page() -> str:
    return resources.files("guide_opt.web").joinpath("static/index.html").read_text(encoding="utf-8")


def _job_response(job: Job, runner: JobRunner) -> JSONResponse:
    return JSONResponse(job.to_json(runner.queue_position(job)))


def _answer_response(job: Job) -> JSONResponse:
    """The HTTP answer of a finished solve job."""
    if job.state is JobState.DONE and job.result is not None:
        if job.result.get("ok"):
            return JSONResponse({k: job.result[k] for k in ("exit_code", "result", "problem", "problem_yaml")})
        return JSONResponse({"error": job.result["error"]}, status_code=422)
    if job.state is JobState.CANCELLED:
        return _error(409, "the solve was cancelled")
    return _error(504 if job.state is JobState.TIMED_OUT else 500, job.error or "the solve failed")


def create_app(runner: JobRunner | None = None, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The planner application; ``runner`` runs the solves (default: a :class:`JobRunner` with one worker per core)."""
    runner = runner or JobRunner()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        runner.shutdown()

    app = FastAPI(title="guide-opt planner", version=__version__, lifespan=lifespan,
                  description="Plan LLM deployments: GPUs, parallelism, engine, batch and precision under SLOs and budgets. "
                              "The same answers as the guide-opt command line.")
    app.state.runner = runner

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        field = _loc_field(tuple(err.get("loc", ())))
        return _error(422, f"{field}: {err.get('msg', 'invalid value')}; got {err.get('input')!r}", field)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @app.get("/api/catalog", summary="What the form offers: LLMs, GPUs with prices, engines, precisions, presets")
    async def catalog() -> dict:
        return await run_in_threadpool(_catalog_json)

    @app.post("/api/solve", summary="Solve a problem and wait for the answer",
              description="Answers `{exit_code, result, problem, problem_yaml}`: `result` is what `guide-opt solve problem.yaml "
                          "--format json` prints (status, objective, bound, gap, deployments, alternatives, binding_constraints, "
                          "explanation when infeasible, points for pareto); `exit_code` 0 found, 2 infeasible. Bad input: 422 "
                          "`{error: {field, message}}`. Past the server's time limit: 504. Hanging up cancels the solve.")
    async def solve(body: SolveRequest, request: Request) -> Response:
        job = runner.submit(body.model_dump(exclude_none=True))
        while not job.finished.is_set():
            if await request.is_disconnected():
                runner.cancel(job.id)
                return _error(409, "the client hung up; the solve was cancelled")
            await asyncio.sleep(0.05)
        return _answer_response(job)

    @app.post("/api/jobs", status_code=202, summary="Start a solve as a job (poll it, cancel it)")
    async def start_job(body: SolveRequest) -> JSONResponse:
        job = runner.submit(body.model_dump(exclude_none=True))
        return JSONResponse(job.to_json(runner.queue_position(job)), status_code=202)

    @app.get("/api/jobs/{job_id}", summary="A job's state, progress and, once done, its answer")
    async def get_job(job_id: str) -> JSONResponse:
        job = runner.get(job_id)
        return _job_response(job, runner) if job else _error(404, f"no job {job_id} (finished jobs are kept {runner.keep_s:g} s)")

    @app.delete("/api/jobs/{job_id}", summary="Cancel a job")
    async def cancel_job(job_id: str) -> JSONResponse:
        job = runner.cancel(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        await asyncio.to_thread(job.finished.wait, 5.0)
        return _job_response(job, runner)

    @app.post("/api/estimate", summary="Predicted metrics of one configuration (as guide-opt estimate)",
              description="Answers `{exit_code, result}`: `result` is what `guide-opt estimate --format json` prints; "
                          "`exit_code` 2 when the engine cannot run it (as the CLI's exit code). Bad input: 422 `{error: {field, message}}`.")
    async def estimate(body: EstimateRequest) -> JSONResponse:
        from guide_opt.web.worker import run_estimate

        answer = await run_in_threadpool(run_estimate, body.model_dump(exclude_none=True))
        if not answer["ok"]:
            return JSONResponse({"error": answer["error"]}, status_code=422)
        return JSONResponse({"exit_code": answer["exit_code"], "result": answer["result"]})

    @app.post("/api/problem.yaml", response_class=PlainTextResponse, summary="The problem file a request stands for",
              description=f"Download it as {PROBLEM_FILE_NAME} and run `guide-opt solve {PROBLEM_FILE_NAME}` to reproduce the web session.")
    async def problem_file(body: SolveRequest) -> Response:
        from guide_opt.web.form import problem_yaml
        from guide_opt.web.worker import error_result, problem_of_request

        try:
            data, uploaded = problem_of_request(body.model_dump(exclude_none=True))
        except InputError as exc:
            return JSONResponse({"error": error_result(exc)["error"]}, status_code=422)
        return PlainTextResponse(problem_yaml(data, uploaded_name=uploaded), media_type="application/yaml",
                                 headers={"Content-Disposition": f'attachment; filename="{PROBLEM_FILE_NAME}"'})

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app
