"""The step model on arrays of step shapes (:func:`guide_opt.perf.step.step_time` given a :class:`StepShape` of arrays).

A window table (:class:`guide_opt.perf.steady_state.StepTable`) times all the steps of its
windows in one call. Expected value: the same function called once per shape with plain
numbers -- the model as it was written and as every other caller uses it -- element by element
(the array path runs the same IEEE operations, so the tolerance is a few ulps).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guide_opt.perf import ServingConfig
from guide_opt.perf.step import StepShape, step_time

#: Dense, MoE (routed + shared experts), MLA, sliding-window, AWQ and multi-query LLMs.
LLMS = ["llama-3.1-8b", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "deepseek-v3", "gemma-2-9b", "llama-3.1-70b-awq", "starcoder-15b", "opt-6.7b"]
GPUS = ["h100-sxm", "a100-80gb-sxm", "l40s", "mi300x", "t4"]
FIELDS = ("time_s", "compute_s", "memory_s", "network_s", "overhead_s")


def _config(catalog, llm, gpu, engine, quantization, tp, pp):
    config = ServingConfig(llm=catalog.llms[llm], gpu=catalog.gpus[gpu], framework=catalog.frameworks[engine],
                           quantization=catalog.quantization(quantization), tp=tp, pp=pp, batch=8, input_tokens=512, output_tokens=64)
    return None if config.unsupported_reason() else config


shapes = st.lists(st.tuples(st.integers(1, 16384), st.integers(1, 512), st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=40)


@given(llm=st.sampled_from(LLMS), gpu=st.sampled_from(GPUS), engine=st.sampled_from(["vllm", "sglang", "tensorrt-llm", "tgis"]),
       quantization=st.sampled_from(["bf16", "fp8", "w4a16"]), tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2, 4]),
       rows=shapes, pipeline_fill=st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_step_times_of_an_array_of_shapes_are_the_shapes_one_by_one(catalog, llm, gpu, engine, quantization, tp, pp, rows, pipeline_fill):
    config = _config(catalog, llm, gpu, engine, quantization, tp, pp)
    if config is None:
        return
    # A shape: new tokens, sequences (at most the new tokens), attended tokens between a decode's
    # one per context token and a whole prompt's triangle, cached tokens read.
    singles = []
    for new_tokens, sequences, attended_share, read_share in rows:
        sequences = min(sequences, new_tokens)
        attended = new_tokens * (1.0 + attended_share * new_tokens)
        singles.append(StepShape(new_tokens, sequences, attended, read_share * attended))
    arrays = StepShape(*(np.array([getattr(s, f) for s in singles], dtype=float) for f in ("new_tokens", "sequences", "attended_tokens",
                                                                                               "kv_read_tokens")))
    together = step_time(config, arrays, pipeline_fill=pipeline_fill)
    # A part that does not depend on the shape (no all-reduce on one GPU) stays one number.
    columns = {field: np.broadcast_to(np.asarray(getattr(together, field), dtype=float), (len(singles),)) for field in FIELDS}
    for i, shape in enumerate(singles):
        alone = step_time(config, shape, pipeline_fill=pipeline_fill)
        for field in FIELDS:
            assert columns[field][i] == pytest.approx(getattr(alone, field), rel=1e-12, abs=1e-18), field
