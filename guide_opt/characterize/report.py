"""Summaries and files of a characterization: per user count, LLM-Pilot's metrics; the calibration CSV.

Per level (Sec. III-C of LLM-Pilot): TTFT (median of first-token latencies), nTTFT (median of
TTFT / input tokens per request), ITL (median of all gaps between consecutive tokens, the first
excluded), throughput (output tokens of the level's completed requests / the level's wall
time); plus p90s, the mean TPOT, mean lengths and the failures.

:func:`calibration_rows` writes one row per level in the CSV form ``guide-opt calibrate --data``
reads (:data:`guide_opt.validation.datasets.USER_CSV_REQUIRED`): ``batch`` is the user count
and ``closed_loop`` is true, ``input_tokens`` / ``output_tokens`` the level's mean lengths,
``ttft_ms`` / ``tpot_ms`` means over successful requests. The endpoint does not say which
LLM, GPU, engine and TP it runs: the caller labels the rows with catalog ids.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from guide_opt.characterize.client import RequestRecord
from guide_opt.characterize.runner import LevelResult
from guide_opt.validation.datasets import USER_CSV_REQUIRED

#: Columns of the per-request CSV.
REQUEST_COLUMNS = ("users", "user", "start_s", "input_tokens", "requested_output_tokens", "output_tokens", "ttft_ms", "tpot_ms",
                   "e2e_ms", "itl_ms", "success", "error", "server_prompt_ms", "server_ms_per_token")


@dataclass(frozen=True)
class LevelSummary:
    """LLM-Pilot's metrics of one level (times in ms, nTTFT in ms per input token, throughput in output tokens/s)."""

    users: int
    requests: int
    failures: int
    duration_s: float
    ttft_median_ms: float | None
    ttft_p90_ms: float | None
    nttft_median_ms: float | None
    nttft_p90_ms: float | None
    itl_median_ms: float | None
    itl_p90_ms: float | None
    tpot_mean_ms: float | None
    throughput_tokens_per_s: float
    mean_input_tokens: float | None
    mean_output_tokens: float | None


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize_level(level: LevelResult, records: list[RequestRecord]) -> LevelSummary:
    """The :class:`LevelSummary` of ``level`` from its requests."""
    ok = [r for r in records if r.success]
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    nttft = [r.ttft_ms / r.input_tokens for r in ok if r.ttft_ms is not None and r.input_tokens > 0]
    itl = [gap for r in ok for gap in r.itl_ms]
    tpot = [t for t in (r.tpot_ms for r in ok) if t is not None]
    tokens = sum(r.output_tokens for r in ok)
    return LevelSummary(
        level.users, len(records), len(records) - len(ok), level.duration_s,
        _quantile(ttft, 0.5), _quantile(ttft, 0.9), _quantile(nttft, 0.5), _quantile(nttft, 0.9), _quantile(itl, 0.5), _quantile(itl, 0.9),
        _mean(tpot), tokens / level.duration_s if level.duration_s > 0 else 0.0,
        _mean([r.input_tokens for r in ok]), _mean([r.output_tokens for r in ok]),
    )


def summarize(levels: list[LevelResult], records: list[RequestRecord]) -> list[LevelSummary]:
    """One summary per level, in the order run."""
    return [summarize_level(level, [r for r in records if r.users == level.users]) for level in levels]


@dataclass(frozen=True)
class CalibrationLabels:
    """Catalog ids the calibration rows carry: what the endpoint runs."""

    llm: str
    gpu: str
    framework: str
    tp: int
    quantization: str = "bf16"


def calibration_rows(summaries: list[LevelSummary], records: list[RequestRecord], labels: CalibrationLabels) -> list[dict]:
    """Rows for ``guide-opt calibrate --data`` (one per level with at least one successful request)."""
    rows = []
    for s in summaries:
        ok = [r for r in records if r.users == s.users and r.success]
        if not ok or s.mean_input_tokens is None:
            continue
        ttft = _mean([r.ttft_ms for r in ok if r.ttft_ms is not None])
        row = {"model": labels.llm, "gpu": labels.gpu, "framework": labels.framework, "tp": labels.tp, "batch": s.users,
               "input_tokens": max(1, round(s.mean_input_tokens)), "output_tokens": max(1, round(s.mean_output_tokens)),
               "quantization": labels.quantization, "closed_loop": "true",
               "ttft_ms": _fmt(ttft), "tpot_ms": _fmt(s.tpot_mean_ms), "throughput_tokens_per_s": _fmt(s.throughput_tokens_per_s)}
        rows.append(row)
    return rows


def _fmt(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4f}"


def write_csv(path: Path, columns: tuple[str, ...] | list[str], rows: list[dict]) -> Path:
    """Write ``rows`` (dicts) with header ``columns``; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def request_rows(records: list[RequestRecord]) -> list[dict]:
    """The per-request CSV rows (ITLs as a JSON list, times in ms rounded to 0.001)."""
    return [{"users": r.users, "user": r.user, "start_s": f"{r.start_s:.4f}", "input_tokens": r.input_tokens,
             "requested_output_tokens": r.requested_output_tokens, "output_tokens": r.output_tokens,
             "ttft_ms": _fmt(r.ttft_ms), "tpot_ms": _fmt(r.tpot_ms), "e2e_ms": _fmt(r.e2e_ms),
             "itl_ms": json.dumps([round(g, 3) for g in r.itl_ms]), "success": str(r.success).lower(), "error": r.error,
             "server_prompt_ms": _fmt(r.server_prompt_ms), "server_ms_per_token": _fmt(r.server_ms_per_token)} for r in records]


def summary_rows(summaries: list[LevelSummary]) -> list[dict]:
    """The summary CSV rows (one per level)."""
    return [{k: (_fmt(v) if isinstance(v, float) or v is None else v) for k, v in asdict(s).items()} for s in summaries]


CALIBRATION_COLUMNS = (*USER_CSV_REQUIRED, "quantization", "closed_loop", "ttft_ms", "tpot_ms", "throughput_tokens_per_s")
SUMMARY_COLUMNS = tuple(LevelSummary.__dataclass_fields__)


def write_outputs(out_dir: str | Path, records: list[RequestRecord], summaries: list[LevelSummary],
                  labels: CalibrationLabels | None) -> dict[str, Path]:
    """Write ``requests.csv``, ``summary.csv`` and (with ``labels``) ``calibration.csv`` under ``out_dir``."""
    out_dir = Path(out_dir)
    written = {"requests": write_csv(out_dir / "requests.csv", REQUEST_COLUMNS, request_rows(records)),
               "summary": write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, summary_rows(summaries))}
    if labels is not None:
        rows = calibration_rows(summaries, records, labels)
        if rows:
            written["calibration"] = write_csv(out_dir / "calibration.csv", CALIBRATION_COLUMNS, rows)
    return written
