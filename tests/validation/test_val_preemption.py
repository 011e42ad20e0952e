"""Static batches the KV cache cannot hold at once: vLLM's are read as its requests served together with recompute
preemption (guide_opt.validation.preemption), other engines' as waves, and fits hold the slowdown."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from guide_opt.perf import estimate
from guide_opt.simulate import simulate
from guide_opt.simulate.workloads import FixedLengths, Workload
from guide_opt.validation import preemption
from guide_opt.validation.accuracy import measurement_config, predicted_metrics
from guide_opt.validation.calibration import log_residuals, prepare_rows
from guide_opt.validation.datasets import Measurement

#: LLM-Inference-Bench's row "meta-llama/Llama-2-7b-hf Nvidia H100 GPU x1 vllm b64 2048/2048" (measured 117.13 s): its
#: 64 sequences of 4,096 tokens do not fit one H100's KV cache at once; about twice as many of their prompts as whole
#: sequences do.
BATCH, PROMPT, OUTPUT = 64, 2048, 2048


def _row(framework: str, batch: int = BATCH) -> Measurement:
    return Measurement("llm-inference-bench", "llama-2-7b", "h100-sxm", framework, "bf16", 1, batch, PROMPT, OUTPUT,
                       {"batch_latency_s": 117.13}, key=f"llama-2-7b h100 {framework} b{batch}")


def _burst(config):
    return simulate(config, Workload.burst(FixedLengths(PROMPT, OUTPUT)), max_num_seqs=config.batch,
                    max_num_batched_tokens=max(config.step_token_budget, config.batch), num_requests=config.batch)


def test_the_row_runs_in_waves_and_vllm_preempts_it(catalog):
    """The premise, by counting tokens: the KV cache cannot hold the 64 whole sequences (64 x 4,096 tokens), and it
    holds about twice as many 2,048-token prompts as 4,096-token sequences, so vLLM's admission by the prompt's blocks
    starts sequences it must later preempt, where waves would start only what fits to the end."""
    config = measurement_config(_row("vllm"), catalog)
    assert estimate(config).waves > 1
    run = _burst(config)
    capacity = run.kv_capacity_tokens
    assert capacity < BATCH * (PROMPT + OUTPUT)
    assert min(BATCH, capacity // PROMPT) > capacity // (PROMPT + OUTPUT)
    assert run.preemptions >= 1 and run.completed_requests == BATCH


def test_a_vllm_batch_in_waves_takes_the_simulated_burst_latency(catalog):
    config = measurement_config(_row("vllm"), catalog)
    predicted = predicted_metrics(config)
    simulated_s = _burst(config).duration_s
    assert predicted["batch_latency_s"] == pytest.approx(simulated_s, rel=1e-12)
    assert predicted["throughput_tokens_per_s"] == pytest.approx(BATCH * OUTPUT / simulated_s, rel=1e-12)
    assert predicted["tpot_ms"] == pytest.approx(estimate(config).tpot_s * 1e3, rel=1e-12)  # TTFT and TPOT keep the waves reading


def test_other_engines_and_resident_batches_keep_the_static_estimate(catalog):
    """TensorRT-LLM (no-evict scheduling) runs the same batch in waves; a vLLM batch the cache holds is the estimate."""
    for row in (_row("tensorrt-llm"), _row("vllm", batch=8)):
        config = measurement_config(row, catalog)
        assert predicted_metrics(config)["batch_latency_s"] == pytest.approx(estimate(config).batch_latency_s, rel=1e-12)
    assert not preemption.preempts_by_recompute(measurement_config(_row("tensorrt-llm"), catalog))


def test_a_fit_holds_the_slowdown_of_its_starting_factors(catalog):
    """prepare_rows keeps simulated / waves at the default factors; at those factors the fit's residual is the
    evaluation's, and under other factors the slowdown stays the same (no simulation per evaluation)."""
    (row,) = prepare_rows([_row("vllm")], catalog)
    config = row.config
    assert row.wave_slowdown == pytest.approx(_burst(config).duration_s / estimate(config).batch_latency_s, rel=1e-12)
    (residual,) = log_residuals([row], config.factors)
    assert residual == pytest.approx(math.log(predicted_metrics(config)["batch_latency_s"] / 117.13), rel=1e-9)
    faster = config.factors.model_copy(update={"memory_efficiency": 1.2})
    (moved,) = log_residuals([row], faster)
    waves_s = predicted_metrics(replace(config, efficiency=faster), check_memory=False, running=row.running, wave_slowdown=1.0)["batch_latency_s"]
    assert moved == pytest.approx(math.log(waves_s * row.wave_slowdown / 117.13), rel=1e-9)
