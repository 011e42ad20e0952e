"""Characterization of a running inference service: LLM-Pilot's closed-loop load test (Sec. III-C).

- :mod:`guide_opt.characterize.sse` -- parsing an OpenAI-compatible stream (server-sent events).
- :mod:`guide_opt.characterize.client` -- one streamed request and its per-token timestamps.
- :mod:`guide_opt.characterize.runner` -- the closed loop over user counts 1, 2, 4, ..., 128, bounded in time and requests.
- :mod:`guide_opt.characterize.report` -- per-level metrics (TTFT, nTTFT, ITL, throughput), the CSVs, and
  the rows ``guide-opt calibrate --data`` reads.
"""

from guide_opt.characterize.client import EndpointDown, RequestRecord
from guide_opt.characterize.report import CalibrationLabels, LevelSummary, summarize, write_outputs
from guide_opt.characterize.runner import LLM_PILOT_USERS, LoadPlan, RunOutcome, run_characterization, user_schedule

__all__ = ["EndpointDown", "RequestRecord", "CalibrationLabels", "LevelSummary", "summarize", "write_outputs", "LLM_PILOT_USERS",
           "LoadPlan", "RunOutcome", "run_characterization", "user_schedule"]
