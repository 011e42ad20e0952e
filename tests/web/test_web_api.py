"""The planner's JSON API under FastAPI's TestClient: the same answers and messages as the CLI."""

from __future__ import annotations

import time

import pytest
import yaml

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from web_fixtures import INFEASIBLE_FORM, LLAMA_2_7B_HF_CONFIG, PROBLEMS_DIR, QUICKSTART_FORM, cli_json, run_cli  # noqa: E402

from guide_opt.catalog import load_catalog  # noqa: E402
from guide_opt.web.form import PlannerForm, form_to_problem  # noqa: E402

#: Keys that differ between two runs of the same solve (timings).
_TIMING_KEYS = ("wall_time_s",)


def _comparable(payload: dict) -> dict:
    """A solve payload without its timings and its name (the form names the problem itself)."""
    out = {k: v for k, v in payload.items() if k not in _TIMING_KEYS + ("stats", "problem")}
    return out


def test_quickstart_form_is_the_quickstart_file():
    # expected: problems/quickstart.yaml itself (name aside), read independently of the form code
    bundled = yaml.safe_load((PROBLEMS_DIR / "quickstart.yaml").read_text())
    made = form_to_problem(PlannerForm.model_validate(QUICKSTART_FORM))
    assert {k: v for k, v in made.items() if k != "name"} == {k: v for k, v in bundled.items() if k != "name"}


def test_quickstart_by_form_answers_as_the_cli_on_the_bundled_file(client, capsys):
    # A limit that no part of the solve reaches on a busy machine: what a time limit cuts short (the
    # alternatives' simulations, round by round) differs from run to run, which is not what this compares.
    response = client.post("/api/solve", json={"form": QUICKSTART_FORM, "time_limit_s": 120})
    assert response.status_code == 200
    body = response.json()
    expected = cli_json(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--time-limit-s", "120")
    assert body["exit_code"] == 0
    assert _comparable(body["result"]) == _comparable(expected)
    # by hand: the optimum's GPUs at the default price table's $/GPU-h
    prices = {q.gpu: q.usd_per_gpu_hour for q in load_catalog().price_table().quotes}
    dep = body["result"]["deployments"][0]
    assert body["result"]["objective"] == pytest.approx(dep["gpu_count"] * prices[dep["gpu"]])
    assert body["result"]["status"] == "OPTIMAL" and body["result"]["gap"] == 0.0
    kinds = [a["kind"] for a in body["result"]["alternatives"]]
    assert "top-1" in kinds and any("throughput" in k for k in kinds) and any("latency" in k for k in kinds)


def test_every_problem_file_of_the_library_answers_as_the_cli(client, capsys):
    # the problem_yaml route: a bundled file sent as text answers exactly as guide-opt solve FILE. The
    # limit counts the candidate build, which the web planner runs serially (its solves are daemonic
    # processes), so both get one that does not bind: otherwise what is finished in time may differ.
    for name in ("max-throughput-budget.yaml", "fleet-mixed-inventory.yaml", "batch-job-deadline.yaml"):
        path = PROBLEMS_DIR / name
        response = client.post("/api/solve", json={"problem_yaml": path.read_text(), "time_limit_s": 60})
        assert response.status_code == 200, (name, response.json())
        expected = cli_json(capsys, "solve", str(path), "--time-limit-s", "60")
        assert _comparable(response.json()["result"]) == _comparable(expected), name


def test_infeasible_form_explains_with_the_estimated_tpot(client, capsys):
    body = client.post("/api/solve", json={"form": INFEASIBLE_FORM}).json()
    assert body["exit_code"] == 2 and body["result"]["status"] == "INFEASIBLE"
    relaxation = body["result"]["explanation"]["relaxations"][0]
    assert relaxation["constraint"] == "models[0].slo.tpot_ms"
    # independent: nothing decodes faster than one request alone on the fastest shape (8-way TP,
    # guide-opt estimate --batch 1). The relaxed plan runs its replicas under the demand (the
    # steady-state model), so its steps carry a few other requests' work: a few percent slower.
    estimate = cli_json(capsys, "estimate", "--model", "llama-2-70b", "--gpu", "a100-80gb-sxm", "--tp", "8", "--batch", "1",
                        "--input-tokens", "512", "--output-tokens", "128")
    alone = estimate["metrics"]["tpot_ms"]
    assert alone * (1 - 1e-9) <= relaxation["needed"] <= alone * 1.10


def test_bad_form_input_gets_the_cli_message_for_the_downloaded_file(client, capsys, tmp_path, monkeypatch):
    form = dict(QUICKSTART_FORM, ttft_ms=-5)
    response = client.post("/api/solve", json={"form": form})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "models[0].slo.ttft_ms"
    # the downloaded problem.yaml, run by the CLI, prints the same line after "error: "
    text = client.post("/api/problem.yaml", json={"form": form}).text
    (tmp_path / "problem.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "solve", "problem.yaml")
    assert code == 1 and err.strip() == f"error: {error['message']}"


def test_unknown_gpu_names_the_list_entry_like_the_cli(client, capsys, tmp_path, monkeypatch):
    form = dict(QUICKSTART_FORM, gpus=["h100-sxm", "h100-sxmm"])
    error = client.post("/api/solve", json={"form": form}).json()["error"]
    assert error["field"] == "hardware.gpus[1]"
    (tmp_path / "problem.yaml").write_text(client.post("/api/problem.yaml", json={"form": form}).text)
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "solve", "problem.yaml")[2].strip() == f"error: {error['message']}"


def test_downloaded_yaml_reproduces_the_web_answer(client, capsys, tmp_path, monkeypatch):
    form = dict(QUICKSTART_FORM, objective="max_throughput", budget_per_hour=12)
    web = client.post("/api/solve", json={"form": form, "time_limit_s": 120}).json()  # a limit neither run reaches (see above)
    (tmp_path / "problem.yaml").write_text(web["problem_yaml"])
    monkeypatch.chdir(tmp_path)
    assert _comparable(cli_json(capsys, "solve", "problem.yaml", "--time-limit-s", "120")) == _comparable(web["result"])


def test_uploaded_config_plans_like_the_catalog_entry(client):
    # the published Llama-2-7B config describes the catalog's llama-2-7b: the same plan and cost
    form = dict(QUICKSTART_FORM, model="llama-2-7b", input_tokens=512, output_tokens=128, request_rate_per_s=4)
    by_id = client.post("/api/solve", json={"form": form, "explain": False}).json()["result"]
    uploaded = client.post("/api/solve", json={"form": form, "explain": False, "llm_config": LLAMA_2_7B_HF_CONFIG,
                                               "llm_config_name": "Llama-2-7b-hf"}).json()
    assert uploaded["result"]["deployments"][0]["model"] == "Llama-2-7b-hf"
    assert uploaded["result"]["objective"] == by_id["objective"]
    assert "id: Llama-2-7b-hf/config.json" in uploaded["problem_yaml"]


def test_uploaded_config_errors_do_not_show_server_paths(client):
    body = client.post("/api/solve", json={"form": QUICKSTART_FORM, "llm_config": {"model_type": "llama"}, "llm_config_name": "broken"}).json()
    message = body["error"]["message"]
    assert "broken/config.json" in message and "guide-opt-web-" not in message and "/tmp" not in message


def test_server_side_files_are_refused(client):
    problem = yaml.safe_load((PROBLEMS_DIR / "quickstart.yaml").read_text())
    problem["prediction"] = {"calibration": "/etc/passwd"}
    assert client.post("/api/solve", json={"problem": problem}).json()["error"]["field"] == "prediction.calibration"
    problem = yaml.safe_load((PROBLEMS_DIR / "quickstart.yaml").read_text())
    problem["models"][0]["id"] = "/etc/hostname"
    error = client.post("/api/solve", json={"problem": problem}).json()["error"]
    assert error["field"] == "models[0].id" and "unknown LLM id" in error["message"]


def test_estimate_answers_as_the_cli(client, capsys):
    response = client.post("/api/estimate", json={"model": "llama-2-7b", "gpu": "a100-80gb-sxm", "batch": 16, "tp": 2})
    expected = cli_json(capsys, "estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--batch", "16", "--tp", "2")
    assert response.status_code == 200 and response.json()["result"] == expected


def test_estimate_bad_gpu_has_the_cli_line(client, capsys):
    error = client.post("/api/estimate", json={"model": "llama-2-7b", "gpu": "a100"}).json()["error"]
    code, _, err = run_cli(capsys, "estimate", "--model", "llama-2-7b", "--gpu", "a100")
    assert code == 1 and err.strip() == f"error: {error['message']}" and error["field"] == "gpu"


def test_malformed_request_names_the_field(client):
    response = client.post("/api/solve", json={"form": dict(QUICKSTART_FORM, ttft_ms="fast")})
    assert response.status_code == 422 and response.json()["error"]["field"] == "form.ttft_ms"
    assert client.post("/api/solve", json={}).json()["error"]["field"] == "request"


def test_request_size_is_bounded(client):
    from guide_opt.web.app import MAX_BODY_BYTES

    response = client.post("/api/solve", content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_openapi_documents_solve_and_estimate(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/solve"] and "post" in paths["/api/estimate"]
    assert client.get("/docs").status_code == 200


def test_pareto_points_are_non_dominated(client):
    body = client.post("/api/solve", json={"form": dict(QUICKSTART_FORM, objective="pareto", budget_per_hour=25)}).json()
    points = body["result"]["points"]
    assert len(points) >= 2
    for a in points:  # brute force: no point is at least as good in all three and better in one
        for b in points:
            no_worse = (b["cost_per_hour"] <= a["cost_per_hour"] and b["latency_ms"] <= a["latency_ms"]
                        and b["throughput_tokens_per_s"] >= a["throughput_tokens_per_s"])
            assert a is b or not (no_worse and (b["cost_per_hour"], b["latency_ms"], b["throughput_tokens_per_s"])
                                  != (a["cost_per_hour"], a["latency_ms"], a["throughput_tokens_per_s"]))


def _wait(client, job_id: str, states: tuple[str, ...], timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_a_job_reports_progress_and_can_be_cancelled(client):
    # the whole catalog at three lengths: long enough to be caught running
    form = dict(QUICKSTART_FORM, gpus=[], frameworks=["vllm", "sglang", "tensorrt-llm", "deepspeed-fastgen"], objective="pareto")
    job = client.post("/api/jobs", json={"form": form}).json()
    running = _wait(client, job["id"], ("running",))
    deadline = time.monotonic() + 60
    while not running["progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
        running = client.get(f"/api/jobs/{job['id']}").json()
    # the first stage the solver reports (guide_opt.api.solve)
    assert running["state"] == "running" and running["progress"][0].startswith("evaluating the candidates")
    # the server answers other requests while the job runs
    assert client.get("/api/catalog").status_code == 200
    cancelled = client.delete(f"/api/jobs/{job['id']}").json()
    assert cancelled["state"] == "cancelled"


def test_a_solve_past_the_server_limit_is_stopped():
    from fastapi.testclient import TestClient

    from guide_opt.web.app import create_app
    from guide_opt.web.jobs import JobRunner

    with TestClient(create_app(JobRunner(max_workers=1, max_solve_s=0.01))) as limited:
        response = limited.post("/api/solve", json={"form": QUICKSTART_FORM})
    assert response.status_code == 504 and "limit" in response.json()["error"]["message"]


def test_jobs_queue_beyond_the_workers_and_all_answer(client):
    jobs = [client.post("/api/jobs", json={"form": QUICKSTART_FORM, "explain": False}).json() for _ in range(4)]
    done = [_wait(client, j["id"], ("done", "failed", "cancelled"), timeout_s=120) for j in jobs]
    assert [d["state"] for d in done] == ["done"] * 4
    assert len({d["result"]["result"]["objective"] for d in done}) == 1


def test_serve_command_options(capsys):
    code, out, _ = run_cli(capsys, "serve", "--help")
    assert code == 0 and "--host" in out and "--port" in out and "127.0.0.1" in out and "8000" in out
    code, _, err = run_cli(capsys, "serve", "--port", "0")
    assert code == 1 and "--port" in err and err.strip().count("\n") == 0


def test_the_page_loads_nothing_from_outside(client):
    # the machine a planner runs on may have no internet: no CDN, no external script, style or font
    import re

    page = client.get("/").text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"""@import|url\(\s*["']?(https?:)?//""", page)
