"""Adjusting predictions to a problem's calibration and SLO percentile.

A problem may name a calibration file (``prediction.calibration``, or ``solve
--calibration``) and a safety factor (``prediction.slo_margin``). Two things follow:

- :func:`calibrated_efficiency`: the fitted efficiency factors of a (GPU, engine) pair,
  used in place of the engine's defaults;
- :func:`slo_margins`: per LLM, the factors multiplying predicted TTFT and TPOT before they
  are compared with the SLOs -- the calibration's residual quantile at the LLM's
  ``slo.percentile`` times ``slo_margin``. Without a calibration only ``slo_margin`` applies.

The space builder and the verifier both call these, so a plan is checked exactly as it was
chosen.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from guide_opt.errors import InputError
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.problem import Problem

if TYPE_CHECKING:
    from guide_opt.validation.calibration import Calibration

#: Calibration metric names of the two latency SLOs.
SLO_METRICS = {"ttft": "ttft_ms", "tpot": "tpot_ms"}


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> "Calibration":
    from guide_opt.validation.calibration import load_calibration

    return load_calibration(path)


def problem_calibration(problem: Problem) -> "Calibration | None":
    """The calibration the problem names (loaded once per file version), or None."""
    path = problem.prediction.calibration
    if path is None:
        return None
    if not Path(path).is_file():
        raise InputError("prediction.calibration", f"file '{path}' not found", "give the YAML written by 'guide-opt calibrate'")
    return _load(path, Path(path).stat().st_mtime_ns)


def calibrated_efficiency(problem: Problem, gpu_id: str, framework_id: str) -> EfficiencyFactors | None:
    """Fitted factors for (``gpu_id``, ``framework_id``) from the problem's calibration; None for the defaults."""
    calibration = problem_calibration(problem)
    return None if calibration is None else calibration.factors_for(gpu_id, framework_id)


def slo_margins(problem: Problem, index: int) -> tuple[float, float]:
    """(TTFT factor, TPOT factor) for LLM ``index``: calibration quantile at its percentile x ``slo_margin``."""
    calibration = problem_calibration(problem)
    if calibration is None:  # no residuals to learn from: the margin alone (and no import of the validation package)
        return problem.prediction.slo_margin, problem.prediction.slo_margin
    from guide_opt.validation.calibration import margin_factor

    req = problem.models[index]
    quantile = req.slo.percentile / 100.0
    factors = []
    for key in ("ttft", "tpot"):
        try:
            factor = margin_factor(calibration, SLO_METRICS[key], quantile)
        except ValueError as exc:
            raise InputError(f"models[{index}].slo.percentile", f"the calibration cannot give the p{req.slo.percentile} of {key.upper()} ({exc})",
                             "use a percentile the calibration covers (50 or 90), or plan without the calibration") from None
        factors.append(factor * problem.prediction.slo_margin)
    return factors[0], factors[1]
