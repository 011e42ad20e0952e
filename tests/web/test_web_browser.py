"""The planner page in a real headless Chromium, driven as a person would (selenium + chromedriver).

Skips, saying why, only when Chromium, its driver or selenium are absent here; ``.ci/run``
installs them so these run in CI. Screenshots go to ``$GUIDE_OPT_SCREENSHOT_DIR`` (default
``build/screenshots/`` in the checkout).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from web_fixtures import INFEASIBLE_FORM, LLAMA_2_7B_HF_CONFIG, PROBLEMS_DIR, QUICKSTART_FORM, cli_json, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SCREENSHOTS = Path(os.environ.get("GUIDE_OPT_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "build" / "screenshots"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    """``guide-opt serve``'s app under uvicorn on a free local port, for the module's tests."""
    import uvicorn

    from guide_opt.web.app import create_app
    from guide_opt.web.jobs import JobRunner

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(JobRunner(max_workers=2)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    """A fresh headless Chromium (own profile, no network services of its own)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1800", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, server_url):
    """The planner page, freshly loaded, with the catalog in the pickers."""
    browser.get(server_url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "input.gpu"))
    return browser


def _type(driver, element_id: str, value) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    if value is not None:
        box.send_keys(str(value))


def fill_form(driver, form: dict) -> None:
    """Fill the planner form field by field from a form dictionary (as tests/web/web_fixtures.py writes them)."""
    Select(driver.find_element(By.ID, "model")).select_by_value(form["model"])
    Select(driver.find_element(By.ID, "lengths")).select_by_value(form["lengths"])
    _type(driver, "input_tokens", form["input_tokens"])
    _type(driver, "output_tokens", form["output_tokens"])
    Select(driver.find_element(By.ID, "demand")).select_by_value(form["demand"])
    _type(driver, "request_rate_per_s", form["request_rate_per_s"])
    _type(driver, "ttft_ms", form["ttft_ms"])
    _type(driver, "tpot_ms", form["tpot_ms"])
    Select(driver.find_element(By.ID, "percentile")).select_by_value(str(form["percentile"]))
    Select(driver.find_element(By.ID, "precision_tolerance")).select_by_value(form["precision_tolerance"])
    for box in driver.find_elements(By.CSS_SELECTOR, "input.gpu"):
        if box.is_selected() != (box.get_attribute("value") in form["gpus"]):
            box.click()
    _type(driver, "max_gpus", form["max_gpus"])
    for box in driver.find_elements(By.CSS_SELECTOR, "input.engine"):
        if box.is_selected() != (box.get_attribute("value") in form["frameworks"]):
            box.click()
    _type(driver, "budget_per_hour", form["budget_per_hour"])
    Select(driver.find_element(By.ID, "objective")).select_by_value(form["objective"])


def solve(driver, timeout_s: float = 120) -> None:
    """Press Solve and wait until the page shows an answer or an error."""
    driver.find_element(By.ID, "solve").click()
    WebDriverWait(driver, timeout_s).until(
        lambda d: d.find_element(By.ID, "progress").text.startswith(("finished", "cancelled")) or d.find_element(By.ID, "form-error").text)


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_quickstart_solved_in_the_browser(page, capsys):
    fill_form(page, QUICKSTART_FORM)
    solve(page)
    expected = cli_json(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"))
    assert page.find_element(By.ID, "result-status").text == expected["status"] == "OPTIMAL"
    assert page.find_element(By.ID, "result-objective").text == f"${expected['objective']:,.2f}/h"
    assert expected["deployments"][0]["summary"] in page.find_element(By.ID, "deployments").text
    assert len(page.find_elements(By.CSS_SELECTOR, "#alternatives tr")) == 1 + len(expected["alternatives"])
    assert page.find_elements(By.CSS_SELECTOR, "#chart circle.point")
    assert screenshot(page, "planner-quickstart").stat().st_size > 10_000


def test_infeasible_shows_the_relaxation_and_applying_it_solves(page, capsys):
    fill_form(page, INFEASIBLE_FORM)
    solve(page)
    assert page.find_element(By.ID, "result-status").text == "INFEASIBLE"
    # independent: nothing decodes faster than one request alone on the fastest shape (8-way TP,
    # guide-opt estimate --batch 1); the relaxed plan serves the demand (steady state), a few percent slower.
    tpot_ms = cli_json(capsys, "estimate", "--model", "llama-2-70b", "--gpu", "a100-80gb-sxm", "--tp", "8", "--batch", "1",
                       "--input-tokens", "512", "--output-tokens", "128")["metrics"]["tpot_ms"]
    first = page.find_elements(By.CSS_SELECTOR, "#relaxations li.relaxation")[0]
    shown = re.search(r"relax models\[0\]\.slo\.tpot_ms from 5 to ([0-9.]+) ms", first.text)
    assert shown, first.text
    needed = float(shown.group(1))
    assert tpot_ms - 0.005 <= needed <= tpot_ms * 1.10
    screenshot(page, "planner-infeasible")
    first.find_element(By.CSS_SELECTOR, "button.apply-relaxation").click()
    assert abs(float(page.find_element(By.ID, "tpot_ms").get_attribute("value")) - needed) <= 0.01
    solve(page)
    assert page.find_element(By.ID, "result-status").text == "OPTIMAL"


def test_bad_input_highlights_the_field_with_the_cli_message(page, capsys, server_url, tmp_path, monkeypatch):
    form = dict(QUICKSTART_FORM, ttft_ms=-5)
    fill_form(page, form)
    solve(page)
    box = page.find_element(By.ID, "ttft_ms")
    assert "invalid" in box.get_attribute("class")
    shown = page.find_element(By.CSS_SELECTOR, ".field-error").text
    request = urllib.request.Request(server_url + "/api/problem.yaml", data=json.dumps({"form": form}).encode(),
                                     headers={"Content-Type": "application/json"})
    (tmp_path / "problem.yaml").write_bytes(urllib.request.urlopen(request, timeout=30).read())
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "solve", "problem.yaml")[2].strip() == f"error: {shown}"
    screenshot(page, "planner-bad-input")


def test_uploaded_config_json_is_planned(page, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA_2_7B_HF_CONFIG, _name_or_path="meta-llama/Llama-2-7b-hf")))
    fill_form(page, dict(QUICKSTART_FORM, model="llama-2-7b", input_tokens=512, output_tokens=128, request_rate_per_s=4))
    page.find_element(By.ID, "llm-config").send_keys(str(path))
    WebDriverWait(page, 10).until(lambda d: "Llama-2-7b-hf" in d.find_element(By.ID, "upload-info").text)
    solve(page)
    assert page.find_element(By.ID, "result-status").text == "OPTIMAL"
    assert page.find_element(By.CSS_SELECTOR, "#deployments tr:nth-child(2) td").text == "Llama-2-7b-hf"
    uploaded_cost = page.find_element(By.ID, "result-objective").text
    page.find_element(By.ID, "clear-upload").click()
    solve(page)  # the catalog's llama-2-7b is the same architecture: the same cost
    assert page.find_element(By.ID, "result-objective").text == uploaded_cost


def test_downloaded_problem_yaml_reproduces_the_page(page, downloads, capsys, monkeypatch):
    fill_form(page, dict(QUICKSTART_FORM, objective="pareto", budget_per_hour=25))
    solve(page)
    circles = page.find_elements(By.CSS_SELECTOR, "#chart circle.point")
    circles[-1].click()
    assert "tokens/s" in page.find_element(By.ID, "point-detail").text
    screenshot(page, "planner-pareto")
    page.find_element(By.ID, "download-yaml").click()
    target = downloads / "problem.yaml"
    WebDriverWait(page, 20).until(lambda _d: target.exists() and target.stat().st_size > 0)
    monkeypatch.chdir(downloads)
    expected = cli_json(capsys, "solve", "problem.yaml")
    assert len(circles) == len(expected["points"])
    assert page.find_element(By.ID, "result-objective").text.startswith(f"${expected['objective']:,.2f}/h")


def test_deployment_artifacts_are_shown_when_the_answer_has_them(page):
    # the artifacts object of a deployment as `solve --emit` documents it (launch per role, benchmark,
    # Kubernetes objects, notes); injected into the page's renderer, since this answer's solver adds none yet
    deployment = {"model": "llama-3.1-8b", "summary": "1 x (2 x h100-sxm, TP=2) vllm, max-num-seqs 32, bf16", "cost_per_hour": 5.98,
                  "metrics": {"ttft_ms": 280.0, "tpot_ms": 5.0, "throughput_tokens_per_s": 5000.0, "memory_utilization": 0.2,
                              "request_latency_ms": 1500.0},
                  "artifacts": {"name": "llama-3-1-8b", "nodes_per_replica": 1, "launch": {"server": "vllm serve meta-llama/Llama-3.1-8B --tensor-parallel-size 2"},
                                "benchmark": "vllm bench serve --request-rate 20", "kubernetes": ["Deployment/llama-3-1-8b"], "notes": ["download the checkpoint first"]}}
    answer = {"result": {"status": "OPTIMAL", "objective_name": "min_cost", "objective": 5.98, "bound": 5.98, "gap": 0.0, "wall_time_s": 0.1,
                         "solver": "cpsat", "verified": True, "deployments": [deployment], "alternatives": []},
              "problem_yaml": "name: x\n"}
    page.execute_script("render(arguments[0])", answer)
    text = page.find_element(By.ID, "artifacts-box").text
    assert "vllm serve meta-llama/Llama-3.1-8B --tensor-parallel-size 2" in text
    assert "Deployment/llama-3-1-8b" in text and "download the checkpoint first" in text


def test_a_problem_file_of_the_library_is_solved_from_the_page(page, capsys):
    path = PROBLEMS_DIR / "fleet-mixed-inventory.yaml"
    page.find_element(By.ID, "problem-file").send_keys(str(path))
    WebDriverWait(page, 10).until(lambda d: path.name in d.find_element(By.ID, "progress").text)
    solve(page)
    expected = cli_json(capsys, "solve", str(path))
    assert page.find_element(By.ID, "result-objective").text == f"${expected['objective']:,.2f}/h"
    rows = page.find_elements(By.CSS_SELECTOR, "#deployments tr")
    assert len(rows) == 1 + len(expected["deployments"])  # one row per LLM of the fleet
