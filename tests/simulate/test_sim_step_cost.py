"""The simulator's fast step cost equals perf.step.step_time, and falls back to it when it cannot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guide_opt.perf.step import StepShape, step_time
from guide_opt.simulate import step_cost
from guide_opt.simulate.step_cost import StepCostModel

VARIANTS = [
    ("llama-2-7b", "a100-80gb-sxm", {}),
    ("llama-2-13b", "h100-sxm", {}),  # 40 layers: a step's layer count is not always a power of two
    ("llama-2-7b", "a100-80gb-sxm", {"pp": 2}),
    ("llama-2-13b", "a100-40gb", {"tp": 2, "pp": 2, "flash_attention": False}),
    ("llama-3.1-8b", "h100-sxm", {"tp": 4, "h2o_kept_fraction": 0.5, "kv_cache_dtype": "fp8"}),
    ("mixtral-8x7b", "h100-sxm", {"tp": 2}),
]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}-{'-'.join(f'{k}{w}' for k, w in v[2].items())}")
def model(request, make_config):
    llm, gpu, fields = request.param
    config = make_config(llm=llm, gpu=gpu, **fields)
    return StepCostModel(config)


@settings(max_examples=150, deadline=None)
# token counts: no subnormal floats (below 1e-308 the efficiency curve loses precision, no step attends that little)
@given(st.integers(1, 9000), st.integers(1, 300), st.floats(0, 2e6, allow_subnormal=False), st.floats(0, 3e7, allow_subnormal=False), st.booleans())
def test_equals_step_time(model, new_tokens, sequences, kv_read, extra_attended, fill):
    sequences = min(sequences, new_tokens)
    shape = StepShape(new_tokens, sequences, kv_read + extra_attended, kv_read)
    expected = step_time(model.config, shape, pipeline_fill=fill).time_s
    assert model.exact_shortcut
    assert model.time_s(new_tokens, sequences, shape.attended_tokens, kv_read, fill) == pytest.approx(expected, rel=1e-9)


def test_vectorised_decode_equals_scalar(model):
    kv_read = np.array([0.0, 64.0, 5e3, 2e5, 1.5e6])
    times = model.decode_times_s(32, kv_read)
    for value, r in zip(times, kv_read):
        assert value == pytest.approx(step_time(model.config, StepShape(32, 32, r + 32, r)).time_s, rel=1e-9)


def test_a_model_without_the_structure_falls_back_to_step_time(make_config, monkeypatch):
    config = make_config()
    real = step_cost.step_time

    def bent(cfg, shape, *, pipeline_fill=False):  # pretend the KV read also slows the MLP
        t = real(cfg, shape, pipeline_fill=pipeline_fill)
        return type(t)(t.time_s + 1e-9 * shape.kv_read_tokens ** 1.5, t.compute_s, t.memory_s, t.network_s, t.overhead_s)

    monkeypatch.setattr(step_cost, "step_time", bent)
    fallback = StepCostModel(config)
    assert not fallback.exact_shortcut
    assert fallback.time_s(64, 64, 64 * 1001.0, 64 * 1000.0, False) == bent(config, StepShape(64, 64, 64 * 1001.0, 64 * 1000.0)).time_s


def test_without_pipeline_parallelism_new_step_shapes_cost_no_step_model_call(make_config, monkeypatch):
    # The per-count tables answer shapes never seen before; the expected times are step_time's own (called after the
    # count below), so the shortcut is exact and not merely cached.
    config = make_config(llm="llama-3.1-8b", gpu="h100-sxm")
    model = StepCostModel(config)
    calls = []
    real_step_time, real_layer_times = step_cost.step_time, step_cost.layer_operator_times
    monkeypatch.setattr(step_cost, "step_time", lambda *a, **k: calls.append(a) or real_step_time(*a, **k))
    monkeypatch.setattr(step_cost, "layer_operator_times", lambda *a, **k: calls.append(a) or real_layer_times(*a, **k))
    shapes = [(nt, seq, nt * 700.0 + seq, nt * 700.0) for nt, seq in ((3, 2), (77, 40), (1500, 9), (6001, 250), (8000, 1))]
    times = [model.time_s(*shape, False) for shape in shapes]
    assert calls == []
    monkeypatch.undo()
    for shape, value in zip(shapes, times):
        assert value == pytest.approx(step_time(config, StepShape(*shape)).time_s, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(variant=st.sampled_from(VARIANTS + [("deepseek-v3", "h200", {"tp": 8, "expert_parallel": True})]),
       batch=st.integers(1, 1024), input_tokens=st.integers(1, 8192), output_tokens=st.integers(1, 4096),
       budget=st.one_of(st.none(), st.integers(1024, 65536)), memory=st.one_of(st.none(), st.floats(0.3, 0.98)),
       new_tokens=st.integers(1, 8192), sequences=st.integers(1, 512), context=st.floats(0.0, 32000.0), fill=st.booleans())
def test_step_times_ignore_the_fields_shared_models_leave_out(make_config, variant, batch, input_tokens, output_tokens, budget, memory,
                                                              new_tokens, sequences, context, fill):
    # shared_step_cost_model gives configurations that differ only in STEP_INDEPENDENT_FIELDS one model: that is exact
    # only while step_time never reads those fields. Expected value: step_time itself at the shared model's settings.
    llm, gpu, fields = variant
    config = make_config(llm=llm, gpu=gpu, **fields)
    varied = dataclasses.replace(config, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens, max_num_batched_tokens=budget,
                                 gpu_memory_utilization=memory)
    shared = dataclasses.replace(config, **step_cost.STEP_INDEPENDENT_FIELDS)
    sequences = min(sequences, new_tokens)
    shape = StepShape(new_tokens, sequences, context * sequences + new_tokens, context * sequences)
    assert step_time(varied, shape, pipeline_fill=fill) == step_time(shared, shape, pipeline_fill=fill)


def test_configurations_alike_but_for_those_fields_share_one_model(make_config):
    step_cost.clear_shared_step_cost_models()
    config = make_config(llm="llama-3.1-8b", gpu="h100-sxm")
    first = step_cost.shared_step_cost_model(dataclasses.replace(config, batch=64, input_tokens=1000, output_tokens=200))
    assert step_cost.shared_step_cost_model(dataclasses.replace(config, batch=256, max_num_batched_tokens=16384)) is first
    assert step_cost.shared_step_cost_model(dataclasses.replace(config, tp=2)) is not first
    assert first.time_s(300, 20, 20 * 900.0 + 300, 20 * 900.0, False) == StepCostModel(config).time_s(300, 20, 20 * 900.0 + 300, 20 * 900.0,
                                                                                                      False)


def test_threads_do_not_share_a_model(make_config):
    # A model grows its tables as it is used, and the web planner simulates in several threads at once: each thread
    # gets its own.
    import threading

    config = make_config(llm="llama-3.1-8b", gpu="h100-sxm")
    here = step_cost.shared_step_cost_model(config)
    there = []
    thread = threading.Thread(target=lambda: there.append(step_cost.shared_step_cost_model(config)))
    thread.start()
    thread.join()
    assert there and there[0] is not here and step_cost.shared_step_cost_model(config) is here


@pytest.fixture(scope="module")
def engines(source_engine):
    """The engine in use (compiled where the install compiled it) and ``engine.py`` run as Python."""
    from guide_opt.simulate import engine

    return {"in use": engine, "source": source_engine}


@settings(max_examples=150, deadline=None)
# attended beyond the KV read: a decode step's few tokens (memory-bound) up to long prompt chunks (compute-bound)
@given(new_tokens=st.integers(1, 9000), sequences=st.integers(1, 600), kv_read=st.integers(0, 3_000_000),
       extra_attended=st.one_of(st.integers(0, 600).map(float), st.floats(0, 3e7, allow_subnormal=False)), fill=st.booleans())
def test_the_engine_times_a_step_as_the_model_does_to_the_last_bit(model, engines, new_tokens, sequences, kv_read, extra_attended, fill):
    # The engine evaluates StepCostModel.time_s' expression on the model's columns (no pipeline parallelism) instead of
    # calling it on every step; expected value: time_s itself (held to step_time above). Counts past the columns' length
    # make them grow; a pipeline-parallel model is called as before.
    sequences = min(sequences, new_tokens)
    expected = model.time_s(new_tokens, sequences, kv_read + extra_attended, kv_read, fill)
    for engine in engines.values():
        table = engine.RequestTable([1], [1])
        replica = engine.ReplicaEngine(0, model, table, prefill_mode="chunked", policy="decode_first", max_num_seqs=8,
                                       max_num_batched_tokens=2048, num_blocks=64, block_tokens=16)
        assert replica._step_s(new_tokens, sequences, kv_read + extra_attended, kv_read, fill) == expected


def test_the_engine_reads_the_columns_only_without_pipeline_parallelism(make_config):
    assert StepCostModel(make_config()).separable_columns() is not None
    assert StepCostModel(make_config(pp=2)).separable_columns() is None
