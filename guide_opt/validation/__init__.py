"""Honesty about prediction: measured data, accuracy tables, calibration, LLM-Pilot benchmark.

- ``datasets``    -- loaders mapping each public source's rows to a :class:`Measurement`
  (catalog ids + one static-batch configuration + measured metrics), counting what they skip.
- ``physics``     -- physical floors of measured figures (weights and KV cache read once per
  token at peak bandwidth): rows below them are broken runs, left out by loaders and calibration.
- ``accuracy``    -- predicted vs measured: MAPE, median APE, bias and count per
  (source, GPU, metric), in the form of GUIDE's Tables 1-2.
- ``calibration`` -- fitting :class:`~guide_opt.frameworks.EfficiencyFactors` per (GPU,
  framework) by least squares on log errors, leave-one-LLM-out scoring, the calibration
  YAML file, prediction intervals and SLO margin factors from residuals.
- ``profile_fit`` -- a GPU's kernel curves fitted end to end on measured serving latencies
  (for a GPU without kernel tables: MI300X), with leave-one-LLM-out scores.
- ``decisions``   -- decision quality: in groups of measured rows that differ only in what a
  planner chooses, the share of the measured best that the predictions' pick captures.
- ``llm_pilot``   -- LLM-Pilot's GPU recommendation (Eq. 1-3) with guide-opt's predictions and
  its scores (success rate, overspend, S/O; Eq. 5-7) against the measured ground truth.

Measured data is *not* shipped with the package: it lives in the project's shared
``data/`` folder (see :func:`guide_opt.validation.datasets.default_data_dir`).
"""

from __future__ import annotations

from guide_opt.validation.accuracy import AccuracyRow, evaluate, summarize
from guide_opt.validation.calibration import Calibration, fit_factors, interval, load_calibration, margin_factor
from guide_opt.validation.datasets import SOURCES, Measurement, SourceData, default_data_dir, load_source

__all__ = [
    "SOURCES",
    "AccuracyRow",
    "Calibration",
    "Measurement",
    "SourceData",
    "default_data_dir",
    "evaluate",
    "fit_factors",
    "interval",
    "load_calibration",
    "load_source",
    "margin_factor",
    "summarize",
]
