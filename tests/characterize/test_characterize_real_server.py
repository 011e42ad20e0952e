"""``guide-opt characterize`` against a real OpenAI-compatible server (llama.cpp's llama-server
with a tiny random Llama, see conftest.py): the load test measures, its CSV feeds ``calibrate``,
its latencies agree with the server's own timings, and Ctrl-C keeps what was measured.

Expected token counts come from the test model's design (tiny_llama.py): one token per prompt
word plus the beginning-of-sequence token, and no end-of-sequence token ever generated.
"""

from __future__ import annotations

import csv
import json
import os
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
INPUT_TOKENS, OUTPUT_TOKENS = 64, 16


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def characterized(llama_server, tmp_path_factory):
    """One characterization of the server: 1, 2 and 4 users, 2 s or 8 requests each."""
    url, _ = llama_server
    out = tmp_path_factory.mktemp("characterized")
    code = main(["characterize", "--endpoint", url, "--model", MODEL_ALIAS, "--input-tokens", str(INPUT_TOKENS),
                 "--output-tokens", str(OUTPUT_TOKENS), "--max-users", "4", "--level-duration-s", "2", "--max-requests-per-level", "8",
                 "--llm", "llama-3.2-1b", "--gpu", "a10", "--framework", "vllm", "--out", str(out)])
    return code, out


def test_characterization_of_a_real_server(characterized):
    code, out = characterized
    assert code == 0
    requests = _rows(out / "requests.csv")
    summary = _rows(out / "summary.csv")
    assert [int(s["users"]) for s in summary] == [1, 2, 4]  # LLM-Pilot's doubling schedule up to --max-users
    assert all(s["failures"] == "0" for s in summary)
    assert all(r["success"] == "true" for r in requests)
    assert {int(r["input_tokens"]) for r in requests} == {INPUT_TOKENS + 1}  # + <s>
    assert {int(r["output_tokens"]) for r in requests} == {OUTPUT_TOKENS}
    for r in requests:  # OUTPUT_TOKENS tokens arrive one chunk each: 1 first token + 15 gaps
        assert len(json.loads(r["itl_ms"])) == OUTPUT_TOKENS - 1
        assert float(r["e2e_ms"]) >= float(r["ttft_ms"]) > 0
    for s in summary:
        assert float(s["throughput_tokens_per_s"]) > 0 and float(s["ttft_p90_ms"]) >= float(s["ttft_median_ms"])
        assert float(s["nttft_median_ms"]) == pytest.approx(
            statistics.median(float(r["ttft_ms"]) / (INPUT_TOKENS + 1) for r in requests if r["users"] == s["users"]), rel=1e-6)


def test_the_calibration_csv_is_accepted_by_calibrate(characterized, tmp_path, capsys):
    _, out = characterized
    calibration = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--data", str(out / "calibration.csv"), "--out", str(calibration), "--no-cross-validate"]) == 0
    capsys.readouterr()
    data = yaml.safe_load(calibration.read_text())
    (entry,) = data["entries"]
    assert (entry["gpu"], entry["framework"], entry["rows"]) == ("a10", "vllm", 3)  # one closed-loop row per user count


def test_client_latencies_agree_with_the_servers_own_timings(characterized):
    # llama-server reports per request its prompt time and decode time per token ("timings").
    # The client's TTFT adds the HTTP round trip (and, with several users, waiting for a batch
    # slot) to the server's prompt time; its inter-token gaps are the server's decode steps as
    # seen over the stream. With one user nothing queues, so the two agree closely.
    _, out = characterized
    single = [r for r in _rows(out / "requests.csv") if r["users"] == "1"]
    assert single and all(r["server_prompt_ms"] and r["server_ms_per_token"] for r in single)
    for r in single:
        ttft, prompt_ms = float(r["ttft_ms"]), float(r["server_prompt_ms"])
        assert prompt_ms <= ttft <= prompt_ms + 50.0
    client_itl = statistics.median(g for r in single for g in json.loads(r["itl_ms"]))
    server_itl = statistics.median(float(r["server_ms_per_token"]) for r in single)
    assert client_itl == pytest.approx(server_itl, rel=0.25, abs=1.0)


def test_ctrl_c_keeps_what_was_measured(llama_server, tmp_path):
    url, _ = llama_server
    command = [sys.executable, "-c", "import sys; from guide_opt.cli import main; sys.exit(main(sys.argv[1:]))",
               "characterize", "--endpoint", url, "--model", MODEL_ALIAS, "--input-tokens", "16", "--output-tokens", "8",
               "--max-users", "2", "--level-duration-s", "30", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # past the imports, well into the first 30-s level
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "stopped early: interrupted" in err and "Traceback" not in err
    rows = _rows(tmp_path / "requests.csv")
    assert any(r["success"] == "true" for r in rows)
    assert "users" in out  # the summary table of what was measured
