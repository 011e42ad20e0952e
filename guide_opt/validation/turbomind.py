"""First-token latency of LMDeploy's ``profile_generation.py`` runs on TurboMind v0.1, from TurboMind's own batching rule.

LMDeploy's A100 static-inference table (``validation_data/lmdeploy``) was measured with
``benchmark/profile_generation.py`` of lmdeploy v0.1.0a1 (``docs/en/benchmark/a100_fp16.md``).
Its "first token latency" is not that of one static batch whose prompts are prefilled one
after the other, which is what the static estimator reads (a mean over a sequential
prefill schedule). Three things of the harness and the engine decide it (InternLM/lmdeploy at
``v0.1.0a1``):

- **The harness** (``benchmark/profile_generation.py``, ``infer``): ``batch`` threads each send
  ``test_round`` requests (6) one after the other, the next as soon as the last one finished,
  and the first-token latency is averaged over every request. The first thread's request
  reaches the engine alone, while the other threads are still starting; the engine takes it at
  once, and the others in its next iteration. With equal lengths, the first thread's requests
  then finish one iteration ahead of the others in every round, so each round repeats the
  pattern: one request alone, the other ``batch - 1`` together. The table's ``FTL(min)`` is
  the one-request latency in every row.
- **Prompts taken together** (``src/turbomind/models/llama/LlamaBatch.cc``,
  ``InternalThreadEntry`` and ``ContextDecode``): each iteration takes every waiting request,
  prefills all of them (sub-batches of at most ``max_context_token_num`` tokens), then runs one
  decode step of the whole batch. No new request gets its first token before every request
  taken with it is prefilled.
- **The last prompt token is decoded, not prefilled** (``ContextDecode``: "subtract input/context
  len by 1 to skip last input token (will process with decoder later)"): the first token comes
  out of the decode step after the prefill, so it costs a prefill of ``L - 1`` tokens plus one
  decode step of the batch.

``max_context_token_num`` was 4 in the benchmark's ``config.ini`` (``benchmark/benchmark_7b.sh``
sets it with ``crudini``), which ``LlamaTritonModel.cc`` multiplies by the session length when it
is not above ``max_batch_size`` (128): ``4 x 4104`` tokens for Llama-2 (``session_len`` 4096 of
the ``llama2`` template, plus 8 at conversion).

Not modelled: the KV cache. TurboMind v0.1 allocates cache blocks as sequences grow and swaps out
sequences when they run out; a batch whose sequences cannot all reach their last token in the
cache is predicted as if they could (its first prompts are prefilled before the cache runs
out; the later rounds' waits for swapped-out sequences are not represented).
"""

from __future__ import annotations

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.estimator import prefill_steps
from guide_opt.perf.step import StepShape, step_time

#: Session length (tokens) of TurboMind's Llama-2 models in lmdeploy v0.1: the ``llama2`` template's 4096 plus 8 at conversion.
LLAMA2_SESSION_LEN_TOKENS = 4096 + 8
#: ``max_context_token_num`` in the benchmark's ``config.ini`` (``benchmark/benchmark_7b.sh``), in session lengths.
MAX_CONTEXT_SESSIONS = 4


def max_context_tokens(session_len_tokens: int = LLAMA2_SESSION_LEN_TOKENS) -> int:
    """Most prompt tokens TurboMind v0.1 prefills in one forward pass (``max_context_token_num`` x session length)."""
    return MAX_CONTEXT_SESSIONS * session_len_tokens


def round_first_token_latencies_s(config: ServingConfig, session_len_tokens: int = LLAMA2_SESSION_LEN_TOKENS) -> tuple[float, float]:
    """First-token latencies (s) of one round of ``profile_generation.py`` with ``config.batch`` threads: (alone, together).

    The request that arrives alone waits for a prefill of its prompt but the last token, then
    the decode step of the batch; the ``batch - 1`` taken together for their prefills, then the
    decode step. ``ContextDecode`` fills a sub-batch with whole prompts while their tokens stay
    within :func:`max_context_tokens` (at least one prompt per sub-batch): the static estimator's
    ``whole`` prefill schedule (:func:`~guide_opt.perf.estimator.prefill_steps`) at that budget.
    """
    batch, prefilled = config.batch, max(1, config.input_tokens - 1)
    decode_s = step_time(config, StepShape.decode(batch, config.input_tokens)).time_s
    alone_s = step_time(config, StepShape.prefill_chunk(1, prefilled), pipeline_fill=True).time_s + decode_s
    together_s = decode_s + sum(step_time(config, shape, pipeline_fill=True).time_s
                                for shape, _ in prefill_steps("whole", max_context_tokens(session_len_tokens), prefilled, batch - 1))
    return alone_s, together_s


def first_token_latency_s(config: ServingConfig, session_len_tokens: int = LLAMA2_SESSION_LEN_TOKENS) -> float:
    """Mean first-token latency (s) of ``profile_generation.py`` with ``config.batch`` threads on TurboMind v0.1.

    Every round: one request alone and ``batch - 1`` together (:func:`round_first_token_latencies_s`).
    """
    alone_s, together_s = round_first_token_latencies_s(config, session_len_tokens)
    return (alone_s + (config.batch - 1) * together_s) / config.batch
