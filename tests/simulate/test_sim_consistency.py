"""The simulator agrees with the static estimator where both describe the same thing.

A burst of ``batch`` equal requests with enough memory (no preemption) is exactly the batch the
estimator models. With every prompt prefilled in one step, the simulator's mean TTFT and mean
per-request TPOT must equal ``estimate()``'s ``ttft_s`` / ``tpot_s`` under every engine and
policy. With several prefill steps the estimator's schedule is "all prefill, then decode", which
is the ``prefill_first`` policy: mean TTFT, batch latency and the typical (median) inter-token
gap must then match, while the *mean* per-request TPOT legitimately differs (early prompts wait
for the later ones, which the estimator's decode-step TPOT leaves out), so it is not compared.
"""

from __future__ import annotations

import dataclasses

import pytest

from guide_opt.perf import estimate
from guide_opt.simulate import FixedLengths, Workload, simulate

TOLERANCE = 0.02
CASES = [  # llm, gpu, ServingConfig fields
    ("llama-2-7b", "a100-80gb-sxm", {}),
    ("llama-3.1-8b", "h100-sxm", {"tp": 2}),
    ("llama-2-13b", "a100-80gb-sxm", {"pp": 2}),
]


def _run(config, batch, prompt, output, budget, policy):
    config = dataclasses.replace(config, batch=batch, input_tokens=prompt, output_tokens=output, max_num_batched_tokens=budget)
    expected = estimate(config)
    assert expected.fits
    result = simulate(config, Workload.burst(FixedLengths(prompt, output)), max_num_seqs=batch, num_requests=batch, policy=policy)
    assert result.preemptions == 0 and result.completed_requests == batch
    return expected, result


@pytest.mark.parametrize("llm, gpu, fields", CASES)
@pytest.mark.parametrize("mode", ["chunked", "split_fuse", "whole"])
@pytest.mark.parametrize("policy", ["decode_first", "prefill_first"])
def test_one_prefill_step_matches_ttft_and_tpot(make_config, llm, gpu, fields, mode, policy):
    config = make_config(llm, gpu, "vllm", **fields)
    config = dataclasses.replace(config, framework=config.framework.model_copy(update={"prefill_mode": mode}))
    expected, result = _run(config, batch=16, prompt=512, output=128, budget=8192, policy=policy)
    assert result.ttft_s.mean_s == pytest.approx(expected.ttft_s, rel=TOLERANCE)
    assert result.tpot_s.mean_s == pytest.approx(expected.tpot_s, rel=TOLERANCE)
    assert result.duration_s == pytest.approx(expected.batch_latency_s, rel=TOLERANCE)


@pytest.mark.parametrize("llm, gpu, fields", CASES)
@pytest.mark.parametrize("mode, batch, prompt, budget", [
    ("whole", 64, 512, 2048),  # 4 prompts per step, 16 steps
    ("whole", 8, 3000, 2048),  # a prompt over the budget goes alone
    ("chunked", 64, 512, 2048),
    ("chunked", 8, 3000, 2048),  # prompts cut across step boundaries
    ("split_fuse", 24, 1000, 768),  # DeepSpeed-FastGen's default budget
])
def test_several_prefill_steps_match_under_prefill_first(make_config, llm, gpu, fields, mode, batch, prompt, budget):
    config = make_config(llm, gpu, "vllm", **fields)
    config = dataclasses.replace(config, framework=config.framework.model_copy(update={"prefill_mode": mode}))
    expected, result = _run(config, batch=batch, prompt=prompt, output=96, budget=budget, policy="prefill_first")
    assert result.ttft_s.mean_s == pytest.approx(expected.ttft_s, rel=TOLERANCE)
    assert result.duration_s == pytest.approx(expected.batch_latency_s, rel=TOLERANCE)
    assert result.itl_s.p50_s == pytest.approx(expected.tpot_s, rel=TOLERANCE)


def test_decode_first_interleaves_and_so_departs_from_the_static_schedule(make_config):
    """The check above can fail: decoding alongside prefill (vLLM V1) delays later prompts."""
    config = make_config("llama-2-7b", "a100-80gb-sxm", "vllm")
    expected, result = _run(config, batch=64, prompt=512, output=256, budget=2048, policy="decode_first")
    assert result.ttft_s.mean_s > (1 + TOLERANCE) * expected.ttft_s
