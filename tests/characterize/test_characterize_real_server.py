"""``guide-opt characterize`` against real OpenAI-compatible servers (see conftest.py): the load
test measures, its CSV feeds ``calibrate`` and a re-plan, what it counts agrees with what the
server reports, and Ctrl-C keeps what was measured.

Expected token counts come from the test models' design: ``transformers serve``'s model has one
token per prompt word and no BOS (tiny_hf_llama.py), llama.cpp's adds a BOS (tiny_llama.py);
neither ever generates the end-of-sequence token.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import MODEL_ALIAS
from guide_opt.cli import main

ROOT = Path(__file__).resolve().parents[2]
INPUT_TOKENS, OUTPUT_TOKENS = 32, 8
#: The rows are labelled as Llama-3.2-1B on an A100 40GB. calibrate accepts a row between the weight-streaming
#: floor (1.6 ms per token here) and 100x the model (TTFT about 3.8-4.1 ms at these lengths, so about 400 ms). A
#: lightly loaded CPU running the tiny model measured TPOT 7.3-10.1 ms and TTFT 48-218 ms; a quiet one (load
#: average 1.5) TPOT 4.9-7.5 ms and TTFT 21-169 ms (three characterizations), both inside that window and slower
#: than the model's TPOT (3.7-4.0 ms); a heavily loaded one (load average 11 on 2 cores) 1.2-3.6 s to a first token,
#: which calibrate refuses. An A10 label (floor 4.1 ms) refused all three of a quiet machine's rows as too fast
#: in one run, and an 8B label (floor 27 ms) the lightly loaded machine's.
LABELS = ["--llm", "llama-3.2-1b", "--gpu", "a100-40gb", "--framework", "vllm"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _characterize(url: str, model: str, out: Path, *extra: str) -> int:
    return main(["characterize", "--endpoint", url, "--model", model, "--input-tokens", str(INPUT_TOKENS), "--output-tokens",
                 str(OUTPUT_TOKENS), "--max-users", "4", "--level-duration-s", "2", "--max-requests-per-level", "6", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def characterized(transformers_server, tmp_path_factory):
    """One characterization of ``transformers serve``: 1, 2 and 4 users, 2 s or 6 requests each.

    ``--no-ignore-eos``: transformers serve rejects fields it does not know (HTTP 422).
    """
    url, model = transformers_server
    out = tmp_path_factory.mktemp("characterized")
    return _characterize(url, model, out, "--no-ignore-eos", *LABELS), out


def test_characterization_of_a_real_server(characterized):
    code, out = characterized
    assert code == 0
    requests = _rows(out / "requests.csv")
    summary = _rows(out / "summary.csv")
    assert [int(s["users"]) for s in summary] == [1, 2, 4]  # LLM-Pilot's doubling schedule up to --max-users
    assert all(s["failures"] == "0" for s in summary)
    for s in summary:
        level = [r for r in requests if r["users"] == s["users"]]
        assert int(s["users"]) <= len(level) <= 6  # every user sent one; --max-requests-per-level bounds them
        assert float(s["throughput_tokens_per_s"]) > 0 and float(s["ttft_p90_ms"]) >= float(s["ttft_median_ms"]) > 0
        assert float(s["nttft_median_ms"]) == pytest.approx(statistics.median(float(r["ttft_ms"]) / INPUT_TOKENS for r in level), rel=1e-3)
    for r in requests:
        assert r["success"] == "true"
        # the server's own usage counts: one token per prompt word, exactly max_tokens generated
        assert (int(r["input_tokens"]), int(r["output_tokens"])) == (INPUT_TOKENS, OUTPUT_TOKENS)
        assert float(r["e2e_ms"]) >= float(r["ttft_ms"]) + sum(json.loads(r["itl_ms"])) - 1.0


PROBLEM = """
name: the characterized LLM on its GPU
models:
  - id: llama-3.2-1b
    workload: {input_tokens: 32, output_tokens: 8, concurrent_users: 4}
    slo: {tpot_ms: 5000}
hardware: {gpus: [a100-40gb], max_gpus: 4}
frameworks: [vllm]
objective: min_cost
"""


def _planned_tpot_ms(problem: Path, capsys, *extra: str) -> float:
    assert main(["solve", str(problem), "--format", "json", "--no-explain", *extra]) == 0
    return json.loads(capsys.readouterr().out)["deployments"][0]["metrics"]["tpot_ms"]


def test_the_loop_calibrate_then_replan(characterized, tmp_path, capsys):
    # plan -> (launch) -> characterize -> calibrate -> re-plan: the calibration file is fitted to
    # the rows the load test wrote (labelled a100-40gb / vllm), and re-planning uses it. This CPU is
    # slower than an A100, so the fitted factors make the planned TPOT larger than the default's.
    _, out = characterized
    calibration = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--data", str(out / "calibration.csv"), "--out", str(calibration), "--no-cross-validate"]) == 0
    report = capsys.readouterr().out
    (entry,) = yaml.safe_load(calibration.read_text())["entries"]
    # One closed-loop row per user count (3), less those calibrate refuses as more than 100x slower
    # than the A100 model: on a loaded CPU the 4-user level can be, and calibrate then says so.
    # Every row calibrate leaves out is counted in its report under a reason ("skipped (where): N x ...").
    left_out = {reason: int(n) for n, reason in re.findall(r"skipped \([^)]*\): (\d+) x (.*)", report)}
    refused = sum(n for reason, n in left_out.items() if "slower than the model predicts" in reason)
    assert (entry["gpu"], entry["framework"]) == ("a100-40gb", "vllm") and 0 <= refused < 3
    assert entry["rows"] + sum(left_out.values()) == 3, report
    problem = tmp_path / "problem.yaml"
    problem.write_text(PROBLEM)
    assert _planned_tpot_ms(problem, capsys, "--calibration", str(calibration)) > _planned_tpot_ms(problem, capsys)


def test_ctrl_c_keeps_what_was_measured(transformers_server, tmp_path):
    url, model = transformers_server
    command = [sys.executable, "-c", "import sys; from guide_opt.cli import main; sys.exit(main(sys.argv[1:]))",
               "characterize", "--endpoint", url, "--model", model, "--input-tokens", "8", "--output-tokens", "4", "--no-ignore-eos",
               "--max-users", "4", "--max-requests-per-level", "2", "--level-duration-s", "120", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not any("1 user(s):" in line for line in lines) and process.poll() is None:
        lines.append(process.stderr.readline())  # the first level (2 requests) is done: the second has begun
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopped early: interrupted" in err and "Traceback" not in err
    rows = _rows(tmp_path / "requests.csv")
    assert [r["success"] for r in rows if r["users"] == "1"] == ["true", "true"]  # the finished level is kept
    assert "users" in out  # the summary table of what was measured


def test_client_latencies_agree_with_llama_cpp_timings(llama_server, tmp_path):
    # llama-server reports per request its prompt time and decode time per token ("timings").
    # The client's TTFT adds the HTTP round trip to the server's prompt time; its inter-token
    # gaps are the server's decode steps seen over the stream. With one user nothing queues. A busy
    # client machine may read two tokens in one chunk (one gap near 0, the next doubled), which
    # moves a median gap but not a request's mean gap: its decode time over its tokens.
    url, _ = llama_server
    assert _characterize(url, MODEL_ALIAS, tmp_path, "--max-users", "1") == 0
    single = _rows(tmp_path / "requests.csv")
    assert single and all(r["server_prompt_ms"] and r["server_ms_per_token"] for r in single)
    assert {int(r["input_tokens"]) for r in single} == {INPUT_TOKENS + 1}  # + <s>
    for r in single:
        ttft, prompt_ms = float(r["ttft_ms"]), float(r["server_prompt_ms"])
        assert prompt_ms <= ttft <= prompt_ms + 50.0
    client_itl = statistics.median(statistics.mean(json.loads(r["itl_ms"])) for r in single)
    server_itl = statistics.median(float(r["server_ms_per_token"]) for r in single)
    assert client_itl == pytest.approx(server_itl, rel=0.25, abs=1.0)
