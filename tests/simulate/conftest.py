"""Fixtures for the simulator tests: an LLM-Pilot-like request trace and small configurations.

``validation_data/llm_pilot`` holds only aggregates (its per-request ``raw/`` files are not in the
snapshot), so the trace is synthesised: a Gaussian copula with rank correlation ~0.6 between
lognormal input and output lengths whose medians / means / maxima follow the aggregate's
low-load rows (``llm_pilot_aggregate.csv``, num_users <= 4: median input 85, mean ~123, max 874;
median output 14, mean ~20, max 381). The 0.6 correlation is a test choice (the paper reports
"strongly correlated" lengths without a number).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TRACE_ROWS = 4000
INPUT_MEDIAN, INPUT_SIGMA, INPUT_MAX = 85.0, 0.86, 874
OUTPUT_MEDIAN, OUTPUT_SIGMA, OUTPUT_MAX = 14.0, 0.82, 381
GAUSSIAN_CORRELATION = 0.62


def synthesize_trace(rows: int = TRACE_ROWS, seed: int = 2024) -> np.ndarray:
    """``(rows, 2)`` int array of correlated (n_input_tokens, n_output_tokens)."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, GAUSSIAN_CORRELATION], [GAUSSIAN_CORRELATION, 1.0]], size=rows)
    inputs = np.clip(np.rint(INPUT_MEDIAN * np.exp(INPUT_SIGMA * z[:, 0])), 1, INPUT_MAX)
    outputs = np.clip(np.rint(OUTPUT_MEDIAN * np.exp(OUTPUT_SIGMA * z[:, 1])), 1, OUTPUT_MAX)
    return np.stack([inputs, outputs], axis=1).astype(np.int64)


@pytest.fixture(scope="session")
def pilot_trace() -> np.ndarray:
    """The synthesised LLM-Pilot-like trace as an array."""
    return synthesize_trace()


@pytest.fixture(scope="session")
def pilot_trace_csv(tmp_path_factory: pytest.TempPathFactory, pilot_trace: np.ndarray) -> Path:
    """The trace written as a CSV in LLM-Pilot's raw-file shape (extra columns included, as in the real files)."""
    path = tmp_path_factory.mktemp("trace") / "results_llama-13b_gpu1_a100_u8.csv"
    lines = ["smpnum,reqnum,status,model,num_users,n_input_tokens,n_output_tokens,latency_ms"]
    for i, (n_in, n_out) in enumerate(pilot_trace):
        lines.append(f"{i},{i},200,llama-13b,8,{n_in},{n_out},{1000 + n_out * 25}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def source_engine():
    """``engine.py`` run as Python whatever the install compiled, under a name of its own (the compiled engine is
    held to it, and it to the step-cost model)."""
    from guide_opt.simulate.compiled import ENGINE_FOLDER, load_source_engine

    name = "guide_opt.simulate._engine_source_for_tests"
    module = load_source_engine(ENGINE_FOLDER, name)
    yield module
    sys.modules.pop(name, None)
