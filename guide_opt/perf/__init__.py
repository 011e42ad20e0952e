"""The performance model: pure functions of frozen specs and integers.

- ``config``        -- :class:`ServingConfig`, the one configuration evaluated.
- ``roofline``      -- roofline time of one piece of work and its :class:`Bound`.
- ``communication`` -- ring all-reduce and pipeline-hop times.
- ``step``          -- time of one engine step (:class:`StepShape` -> :class:`StepTime`).
- ``memory``        -- per-GPU memory breakdown, max batch, max sequence length.
- ``estimator``     -- static TTFT / TPOT / batch latency / throughput (:func:`estimate`).
- ``guide2024``     -- GUIDE's published equations as an alternative estimator.
- ``steady_state``  -- a running server under a request rate or a number of users: continuous
                       batching with arriving prompts mixed into decode steps, queueing,
                       capacity, percentiles (:func:`steady_state.open_loop`, :func:`steady_state.closed_loop`).
"""

from __future__ import annotations

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.estimator import Estimate, estimate
from guide_opt.perf.guide2024 import estimate_guide2024
from guide_opt.perf.roofline import Bound
from guide_opt.perf.step import StepShape, StepTime, step_time

#: Estimator name -> function, for ``--estimator``.
ESTIMATORS = {"roofline": estimate, "guide-2024": estimate_guide2024}

__all__ = ["ESTIMATORS", "Bound", "Estimate", "ServingConfig", "StepShape", "StepTime", "estimate", "estimate_guide2024", "step_time"]
