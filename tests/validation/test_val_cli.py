"""``guide-opt validate`` and ``guide-opt calibrate`` end to end, and ``estimate --calibration``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from guide_opt.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_val_calibration import LLMS, write_synthetic_csv  # noqa: E402


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_json_is_a_list_of_rows(capsys, data_dir):
    code, out, _ = run(capsys, "validate", "--source", "lmdeploy", "--source", "trtllm-perf", "--data-dir", str(data_dir), "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {r["source"] for r in rows} == {"lmdeploy", "trtllm-perf"}
    for r in rows:
        assert set(r) == {"source", "gpu", "metric", "mape", "median_ape", "bias", "count"}
        assert r["count"] > 0 and r["mape"] >= 0 and r["median_ape"] >= 0
    lmdeploy = {r["metric"]: r for r in rows if r["source"] == "lmdeploy"}
    assert set(lmdeploy) == {"ttft_ms", "tpot_ms", "throughput_tokens_per_s"}


def test_validate_table_reports_skips(capsys, data_dir):
    code, out, _ = run(capsys, "validate", "--source", "lmdeploy", "--data-dir", str(data_dir))
    assert code == 0
    assert "Error metric" in out and "a100-80gb-sxm" in out
    assert "skipped in lmdeploy" in out and "internlm-20b" in out


def test_validate_llm_pilot_json(capsys, data_dir):
    code, out, _ = run(capsys, "validate", "--llm-pilot", "--data-dir", str(data_dir), "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert {"success_rate", "mean_overspend", "so_score", "recommendations", "static_policy"} <= set(payload)
    assert 0 <= payload["success_rate"] <= 1 and 0 <= payload["so_score"] <= 1
    assert payload["static_policy"]["all_llms"]["so_score"] == pytest.approx(0.6509, abs=1e-4)
    assert len(payload["recommendations"]) == payload["scored_llms"] >= 5
    assert not {r["llm"] for r in payload["recommendations"]} & set(payload["skipped_llms"])


def test_calibrate_then_estimate(capsys, tmp_path, catalog):
    assert set(LLMS) <= set(catalog.llms), "the synthetic benchmark's LLMs must be in hardware_db/"
    csv_path = write_synthetic_csv(tmp_path / "bench.csv", catalog)
    out_path = tmp_path / "cal.yaml"
    code, out, _ = run(capsys, "calibrate", "--data", str(csv_path), "--out", str(out_path), "--format", "json")
    assert code == 0 and out_path.is_file()
    payload = json.loads(out)
    assert payload["held_out"]["calibrated"] and payload["calibration"]["residual_kind"] == "leave-one-llm-out"
    args = ["estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--batch", "8", "--format", "json"]
    _, plain, _ = run(capsys, *args)
    code, tuned, err = run(capsys, *args, "--calibration", str(out_path))
    assert code == 0 and err == ""
    # the synthetic engine is slower than the defaults: calibrated TPOT must be higher
    assert json.loads(tuned)["metrics"]["tpot_ms"] > 1.2 * json.loads(plain)["metrics"]["tpot_ms"]
    code, _, err = run(capsys, *args[:4], "h100-sxm", *args[5:], "--calibration", str(out_path))
    assert code == 0 and "no factors for h100-sxm / vllm" in err


def test_calibrate_needs_data(capsys):
    code, _, err = run(capsys, "calibrate")
    assert code == 1 and "--data" in err
    code, _, err = run(capsys, "estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--calibration", "/no/such/file.yaml")
    assert code == 1 and "not found" in err
