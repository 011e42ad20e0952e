"""The load tester's pure parts: schedule, URLs, summaries and calibration rows (hand-computed)."""

from __future__ import annotations

import pytest

from guide_opt.characterize import CalibrationLabels, RequestRecord, user_schedule
from guide_opt.characterize.report import calibration_rows, summarize
from guide_opt.characterize.runner import LLM_PILOT_USERS, LevelResult
from guide_opt.cli import main
from guide_opt.cli.characterize_cmd import completions_url


def test_llm_pilot_schedule():
    # LLM-Pilot Sec. III-C: "1, 2, 4, ..., 128 concurrent users, increasing exponentially"
    assert LLM_PILOT_USERS == (1, 2, 4, 8, 16, 32, 64, 128) == user_schedule(128)
    assert user_schedule(100, 3) == (4, 8, 16, 32, 64)


@pytest.mark.parametrize("endpoint, url", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/completions"),
    ("http://h:1/v1", "http://h:1/v1/completions"),
    ("http://h:1/v1/", "http://h:1/v1/completions"),
    ("https://h/v1/completions", "https://h/v1/completions"),
    ("http://h/prefix", "http://h/prefix/v1/completions"),
])
def test_completions_url(endpoint, url):
    assert completions_url(endpoint) == url


def _record(users, ttft, e2e, itl, n_in=10, n_out=5, ok=True):
    return RequestRecord(users, 0, 0.0, n_in, n_out, n_out if ok else 0, ttft, e2e, itl, ok, "" if ok else "HTTP 500: x")


def test_summary_and_calibration_rows_by_hand():
    records = [_record(2, 100.0, 180.0, [20.0] * 4), _record(2, 300.0, 420.0, [30.0] * 4, n_in=30), _record(2, None, None, [], ok=False)]
    (s,) = summarize([LevelResult(2, 0.0, 2.0)], records)
    assert (s.requests, s.failures) == (3, 1)
    assert s.ttft_median_ms == pytest.approx(200.0)          # median of 100, 300
    assert s.nttft_median_ms == pytest.approx((10.0 + 10.0) / 2)  # 100/10 and 300/30 ms per input token
    assert s.itl_median_ms == pytest.approx(25.0)            # four 20s and four 30s
    assert s.tpot_mean_ms == pytest.approx(((180 - 100) / 4 + (420 - 300) / 4) / 2)  # (E2E - TTFT) / (5 - 1)
    assert s.throughput_tokens_per_s == pytest.approx(10 / 2.0)  # 2 x 5 tokens in 2 s
    (row,) = calibration_rows([s], records, CalibrationLabels("llama-2-7b", "a10", "vllm", 1))
    assert row["batch"] == 2 and row["closed_loop"] == "true" and row["input_tokens"] == 20 and row["output_tokens"] == 5
    assert float(row["ttft_ms"]) == pytest.approx(200.0) and float(row["tpot_ms"]) == pytest.approx(25.0)


@pytest.mark.parametrize("args, fragment", [
    (["--endpoint", "localhost:8000"], "--endpoint: 'localhost:8000' is not an http(s) URL"),
    (["--endpoint", "http://127.0.0.1:9", "--gpu", "a10"], "--llm: needed with the other calibration labels"),
    (["--endpoint", "http://127.0.0.1:9", "--llm", "llama-2-7b", "--gpu", "a1OO", "--framework", "vllm"], "--gpu: unknown GPU id 'a1OO'"),
    (["--endpoint", "http://127.0.0.1:9", "--min-users", "8", "--max-users", "4"], "--min-users: 8 is above --max-users 4"),
])
def test_bad_input_is_one_line_and_exit_1(args, fragment, capsys, tmp_path):
    code = main(["characterize", "--model", "m", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 1 and fragment in err and "Traceback" not in err
