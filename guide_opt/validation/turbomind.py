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

- **The KV cache** (``SequenceManager.cc``, ``Materialize``): the benchmark scripts fix the cache
  at ``cache_max_entry_count`` blocks (``benchmark_7b.sh`` 1000, ``benchmark_13b.sh`` 500,
  ``benchmark_70b.sh`` 4000; a count >= 1 is a block count, ``BlockManager.cc``) of
  ``cache_block_seq_len`` 128 tokens (the default of ``LlamaTritonModel.cc``). Every iteration
  gives blocks to the sequences in arrival order (``priority``) for their length plus one
  step; when the free and cached blocks run out it preempts the newest active sequences, whose
  blocks are then evicted and recomputed when they come back, and a sequence that gets no
  blocks waits. Where the batch's sequences cannot all reach their last token in the cache,
  the later requests wait for blocks: :func:`block_wait_s` reads that wait off the
  engine simulator (:func:`guide_opt.simulate.simulate`), whose recompute preemption of the
  newest running request and whole-prompt admission on free blocks are this policy, as the
  mean first-token latency of the harness's closed loop with the cache's blocks less that
  with blocks for every sequence. Where the cache holds the batch to its last token the two
  runs are the same and the wait is zero.
"""

from __future__ import annotations

import dataclasses

from guide_opt.perf.config import ServingConfig
from guide_opt.perf.estimator import prefill_steps
from guide_opt.perf.step import StepShape, step_time
from guide_opt.simulate.cluster import simulate
from guide_opt.simulate.workloads import FixedLengths, Workload

#: Session length (tokens) of TurboMind's Llama-2 models in lmdeploy v0.1: the ``llama2`` template's 4096 plus 8 at conversion.
LLAMA2_SESSION_LEN_TOKENS = 4096 + 8
#: ``max_context_token_num`` in the benchmark's ``config.ini`` (``benchmark/benchmark_7b.sh``), in session lengths.
MAX_CONTEXT_SESSIONS = 4
#: Requests each ``profile_generation.py`` thread sends one after the other (``--test-round`` default).
TEST_ROUNDS = 6
#: Tokens per KV-cache block (``cache_block_seq_len``, the default of ``LlamaTritonModel.cc``).
CACHE_BLOCK_TOKENS = 128
#: KV-cache blocks of the benchmark's engines by catalog LLM (``cache_max_entry_count`` set by
#: ``benchmark/benchmark_7b.sh``, ``_13b.sh`` and ``_70b.sh`` at the commit of the A100 table).
BENCHMARK_CACHE_BLOCKS = {"llama-2-7b": 1000, "llama-2-13b": 500, "llama-2-70b": 4000}


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


def cache_blocks_of(config: ServingConfig) -> int | None:
    """KV-cache blocks of the benchmark's engine for ``config``'s LLM (None: not one the benchmark scripts configure)."""
    return BENCHMARK_CACHE_BLOCKS.get(config.llm.id)


def blocks_to_finish(config: ServingConfig) -> int:
    """Blocks one sequence holds at its last token (prompt + output, in :data:`CACHE_BLOCK_TOKENS`-token blocks)."""
    return -(-(config.input_tokens + config.output_tokens) // CACHE_BLOCK_TOKENS)


def block_wait_s(config: ServingConfig, cache_blocks: int | None,
                       session_len_tokens: int = LLAMA2_SESSION_LEN_TOKENS) -> float:
    """Mean wait (s) for KV-cache blocks of a first token in ``profile_generation.py`` with ``config.batch`` threads.

    The harness (``config.batch`` closed-loop users, :data:`TEST_ROUNDS` requests each) is
    simulated twice on the engine simulator, whole prompts prefilled first within
    :func:`max_context_tokens`, as TurboMind's iteration does: with ``cache_blocks`` blocks of
    :data:`CACHE_BLOCK_TOKENS` tokens, and with a block for every token of every sequence. The
    wait is the difference of their mean first-token latencies: 0 when every sequence can
    reach its last token in the cache (the two runs are then the same run), and 0 when
    ``cache_blocks`` is None (a cache the benchmark did not configure is not guessed).
    """
    batch = config.batch
    unlimited = batch * blocks_to_finish(config)
    if cache_blocks is None or cache_blocks >= unlimited:
        return 0.0
    engine = dataclasses.replace(config, framework=config.framework.model_copy(
        update={"kv_block_size_tokens": CACHE_BLOCK_TOKENS, "prefill_mode": "whole"}))
    workload = Workload.closed_loop(FixedLengths(config.input_tokens, config.output_tokens), batch)

    def mean_first_token_s(blocks: int) -> float:
        run = simulate(engine, workload, max_num_seqs=batch, max_num_batched_tokens=max(max_context_tokens(session_len_tokens), batch),
                       num_requests=TEST_ROUNDS * batch, policy="prefill_first", num_kv_blocks=blocks)
        return float(run.requests.ttft_s.mean())

    return mean_first_token_s(cache_blocks) - mean_first_token_s(unlimited)


def first_token_latency_s(config: ServingConfig, session_len_tokens: int = LLAMA2_SESSION_LEN_TOKENS, *,
                          cache_block_wait_s: float | None = None) -> float:
    """Mean first-token latency (s) of ``profile_generation.py`` with ``config.batch`` threads on TurboMind v0.1.

    Every round: one request alone and ``batch - 1`` together (:func:`round_first_token_latencies_s`),
    plus the wait for KV-cache blocks where the benchmark's cache cannot hold every sequence to
    its last token: ``cache_block_wait_s`` if given, else simulated (:func:`block_wait_s` with
    :func:`cache_blocks_of`).
    """
    alone_s, together_s = round_first_token_latencies_s(config, session_len_tokens)
    rounds_s = (alone_s + (config.batch - 1) * together_s) / config.batch
    if cache_block_wait_s is None:
        cache_block_wait_s = block_wait_s(config, cache_blocks_of(config), session_len_tokens)
    return rounds_s + cache_block_wait_s
