"""The discrete-event replica (:class:`ReplicaEngine`): continuous batching over paged KV blocks.

One replica runs *engine steps* back to back while it has work; the simulation clock jumps from
one step's end to the next (a step is the event). Each step's duration is
``step_time(config, StepShape)`` of the step's summed work (:mod:`guide_opt.simulate.step_cost`):

- ``new_tokens`` = decode tokens + prompt-chunk tokens, ``sequences`` = sequences touched,
- ``attended_tokens`` = per decode token its context + 1, per chunk ``c`` over ``p`` earlier
  tokens ``c*p + c(c+1)/2``, ``kv_read_tokens`` = cached tokens read (decode contexts + chunk
  priors); ``pipeline_fill`` is True for steps holding prefill work, like the static estimator.

Prompt work per step follows the framework's ``prefill_mode``:

- ``chunked`` (vLLM V1 chunked prefill, SGLang) and ``split_fuse`` (DeepSpeed-FastGen dynamic
  SplitFuse): the token budget is filled token by token -- first the partially prefilled
  prompts in admission order, then new requests from the queue (FCFS), the last one cut to
  fit. Both modes compose steps this way in guide-opt; what differs between the engines is
  data (token budget, block size, overheads in the framework profile).
- ``whole`` (TensorRT-LLM in-flight batching without chunked prefill): whole prompts only,
  packed while they fit in the budget, and at least one per step so that none starves.

Scheduling policies (``policy`` argument):

- ``decode_first`` (default, every engine): each step first takes one decode token from every
  running sequence, then fills the rest of the budget with prompt work. As in vLLM V1, no new
  request is admitted in a step that had to preempt.
- ``prefill_first`` (vLLM V0's default scheduler; the static estimator's assumption): a step
  either prefills (the whole budget) or decodes every running sequence, and prefill wins
  whenever there is prompt work it can schedule. With equal lengths and a burst this is exactly
  :func:`guide_opt.perf.estimator.prefill_schedule` followed by batched decoding.

Admission needs a free sequence slot (``max_num_seqs``) and KV blocks for the first chunk
(the whole prompt under ``whole``). KV is paged in blocks of ``kv_block_size_tokens``: a
sequence holding ``t`` tokens of KV holds ``ceil(t / block)`` blocks. When a decode step needs
more blocks than are free, the newest running request is preempted by *recompute* (its blocks
are freed, it goes back to the head of the queue keeping the tokens it generated, and later
re-prefills prompt + generated tokens, which yields its next token) until the step fits. A
partially prefilled prompt gets only as many tokens as free blocks hold; if every running
request is such a stalled prompt, the newest is preempted so that the oldest can proceed.
Requests that could never fit are rejected before they reach a replica (see ``cluster``).

Speed: decode progress is tracked in aggregate (a decode "tick" counter, the sum of context
offsets and per-block-phase counts), so a step costs O(1) plus O(chunks); runs of pure-decode
steps up to the next completion, block shortage or arrival are evaluated at once: with numpy, or,
when the run is short (most are cut by the next arrival), one step after another in Python, which
costs less than numpy's fixed cost per call and does the same arithmetic in the same order. A step
with prompt work is timed from the step-cost model's per-count columns without a call into the model
(:meth:`ReplicaEngine._step_s`, its expression on the same floats; pipeline-parallel models are called).
The install compiles this module with mypyc (``hatch_build.py``; :mod:`guide_opt.simulate.compiled` says which
engine runs): keep its annotations exact, since compiled code checks them at run time.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from typing import Any

import numpy as np

from guide_opt.simulate.compiled import is_extension_file
from guide_opt.simulate.step_cost import StepCostModel

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3
#: Shortest run of pure-decode steps evaluated at once (below: one scheduled step at a time).
MACRO_MIN_STEPS = 6
#: Longest run evaluated at once (bounds temporary arrays).
MACRO_MAX_STEPS = 1 << 16
#: Runs that end within this many steps are evaluated one step at a time, longer ones with numpy: about where the
#: two cost the same per run, numpy paying some 30 array operations a run, the loop a fraction of a microsecond a step.
#: Run as Python, 64 (measured 66 us each at 64-79 steps on a 2-core AMD EPYC; at 0-15 steps 16 us against 58 us);
#: compiled with mypyc (:mod:`guide_opt.simulate.compiled`), whose loop is several times cheaper, 256 (plan-check
#: simulations took 0.31 s against 0.52 s at 64, the longest runs no longer than at 1,024; ``benchmarks/RESULTS.md``
#: section 4). Either way the results are the same to the last bit.
SHORT_RUN_STEPS = 256 if is_extension_file(__file__) else 64

POLICIES = ("decode_first", "prefill_first")
#: What :meth:`ReplicaEngine._steps_in_turn` returns for a run longer than :data:`SHORT_RUN_STEPS` steps.
_LONG_RUN = object()


def default_policy(prefill_mode: str) -> str:
    """The scheduling policy an engine with ``prefill_mode`` uses: ``decode_first`` for every mode.

    (vLLM V1 chunked prefill, SGLang, DeepSpeed-FastGen SplitFuse and TensorRT-LLM in-flight
    batching all keep decoding while prompts are prefilled; ``prefill_first`` is opt-in.)
    """
    return "decode_first"


class RequestTable:
    """Per-request state shared by the replicas of one simulation (index = request id).

    prompt / output: tokens. arrival_s, first_token_s, finish_s: times (NaN until known).
    The rest is engine bookkeeping (see :class:`ReplicaEngine`).
    """

    def __init__(self, prompt: list[int], output: list[int]) -> None:
        n = len(prompt)
        self.prompt = prompt
        self.output = output
        self.arrival_s = [math.nan] * n
        self.first_token_s = [math.nan] * n
        self.finish_s = [math.nan] * n
        self.replica = [-1] * n
        self.state = [WAITING] * n
        self.regenerated = [0] * n  # output tokens already produced when the current prefill (re)started
        self.target = list(prompt)  # tokens the current prefill must compute (prompt + regenerated)
        self.done = [0] * n  # tokens prefilled so far
        self.offset = [0] * n  # decoding: KV tokens = offset + tick
        self.join_tick = [0] * n
        self.gen_at_join = [0] * n
        self.token_s = [0.0] * n  # time of the token produced by the last prefill
        self.last_token_s = [0.0] * n  # last token before a preemption
        self.epoch = [0] * n  # bumps on preemption (invalidates heap entries)


class ReplicaEngine:
    """One replica: a queue, running sequences, KV blocks and a clock (s).

    Drive it with :meth:`submit` and :meth:`advance`; :attr:`completions` collects finished
    request ids until the caller clears it.
    """

    def __init__(self, index: int, cost: StepCostModel, table: RequestTable, *, prefill_mode: str, policy: str,
                 max_num_seqs: int, max_num_batched_tokens: int, num_blocks: int, block_tokens: int) -> None:
        self.index = index
        self.cost = cost
        self.table = table
        self.chunk_long_prompts = prefill_mode != "whole"
        self.prefill_first = policy == "prefill_first"
        self.max_num_seqs = max_num_seqs
        self.budget = max_num_batched_tokens
        self.num_blocks = num_blocks
        self.block = block_tokens
        self.clock = 0.0
        self.waiting: deque[int] = deque()
        self.running: dict[int, None] = {}  # admission order; the last key is the newest
        self.prefilling: dict[int, None] = {}
        self.n_dec = 0
        self.sum_offset = 0
        self.phase = [0] * block_tokens  # decoders by offset % block
        self.heap: list[tuple[int, int, int]] = []  # (finish tick, request, epoch)
        self.tick = 0
        self.used = 0
        self.last_decode_end = -math.inf
        self.joiners: list[tuple[int, int]] = []
        self.completions: list[int] = []
        # statistics
        self.preemptions = 0
        self.steps = 0
        self.busy_s = 0.0
        self.block_seconds = 0.0
        self.peak_used = 0
        self.sequence_steps = 0
        self.itl_values: list[float] = []
        self.itl_weights: list[int] = []
        # the runs of decode steps, in order: every step's duration (float64, read by numpy without a copy), and per run
        # its steps and the sequences each of its gaps counts for
        self.itl_run_values = array("d")
        self.itl_run_steps: list[int] = []
        self.itl_run_sequences: list[int] = []
        # the step-cost model's constants of a pure-decode step, by decoder count (they never change for a model)
        self._decode_entries: dict[int, tuple[float, ...] | None] = {}
        # its one-dimensional parts by count (without pipeline parallelism), which :meth:`_step_s` reads directly
        columns = cost.separable_columns()
        self._separable = columns is not None
        if columns is None:
            columns = (array("d"), array("d"), array("d"), array("d"), array("d"), array("d"))
        self._tokens_base: array[float] = columns[0]
        self._tokens_gamma: array[float] = columns[1]
        self._tokens_alpha: array[float] = columns[2]
        self._tokens_intercept: array[float] = columns[3]
        self._sequences_base: array[float] = columns[4]
        self._sequences_gamma: array[float] = columns[5]
        self._layers = float(cost.layers)
        self._beta = cost.beta
        self._delta = cost.delta

    # ---- queries ------------------------------------------------------------------------------
    @property
    def has_work(self) -> bool:
        """True while requests are queued or running."""
        return bool(self.waiting or self.running)

    @property
    def outstanding(self) -> int:
        """Requests queued or running (the least-loaded balancer's measure)."""
        return len(self.waiting) + len(self.running)

    def completion_lower_bound_s(self) -> float:
        """A time before which no request on this replica can complete (inf when idle)."""
        if not self.running and not self.waiting:
            return math.inf
        if self.waiting or self.prefilling:
            return self.clock + self.cost.min_step_s
        ticks = self._next_finish_tick() - self.tick
        return self.clock + max(1, ticks) * self.cost.min_step_s

    # ---- inputs -------------------------------------------------------------------------------
    def submit(self, rid: int, time_s: float) -> None:
        """Queue request ``rid`` arriving at ``time_s`` (not before the last event)."""
        if not self.waiting and not self.running:
            self.clock = max(self.clock, time_s)
        t = self.table
        t.state[rid] = WAITING
        t.replica[rid] = self.index
        self.waiting.append(rid)

    def advance(self, horizon_s: float, stop_on_completion: bool = False) -> None:
        """Run every step that starts before ``horizon_s`` (stop early after a completion if asked)."""
        while (self.waiting or self.running) and self.clock < horizon_s:
            if not self._decode_run(horizon_s) and not self._step():
                raise RuntimeError(f"replica {self.index} has {self.outstanding} requests but cannot schedule any (a simulator bug)")
            if stop_on_completion and self.completions:
                break

    def serve(self, requests: list[int], arrivals_s: list[float]) -> None:
        """Serve ``requests`` arriving at ``arrivals_s`` (in time order) and run until all its work is done: what a replica
        that never hears of the others does (:func:`guide_opt.simulate.cluster._run_apart`), without a call from
        Python for every arrival."""
        for rid, arrival_s in zip(requests, arrivals_s):
            self.advance(arrival_s)
            self.submit(rid, arrival_s)
        self.advance(math.inf)

    # ---- bookkeeping helpers ------------------------------------------------------------------
    def _next_finish_tick(self) -> int:
        heap, t = self.heap, self.table
        while heap:
            _, rid, epoch = heap[0]
            if t.epoch[rid] == epoch and t.state[rid] == DECODE:
                return heap[0][0]
            heapq.heappop(heap)
        return self.tick + 1

    def _preempt(self, rid: int) -> None:
        t, block = self.table, self.block
        if t.state[rid] == DECODE:
            off = t.offset[rid]
            blocks = -(-(off + self.tick) // block)
            self.n_dec -= 1
            self.sum_offset -= off
            self.phase[off % block] -= 1
            t.epoch[rid] += 1
            joined = t.join_tick[rid]
            t.last_token_s[rid] = self.last_decode_end if self.tick > joined else t.token_s[rid]
            t.regenerated[rid] = t.gen_at_join[rid] + self.tick - joined
        else:
            blocks = -(-t.done[rid] // block)
            del self.prefilling[rid]
        self.used -= blocks
        del self.running[rid]
        t.state[rid] = WAITING
        t.target[rid] = t.prompt[rid] + t.regenerated[rid]
        t.done[rid] = 0
        self.waiting.appendleft(rid)
        self.preemptions += 1

    def _finish(self, rid: int, time_s: float) -> None:
        t, block = self.table, self.block
        if t.state[rid] == DECODE:
            off = t.offset[rid]
            self.used -= -(-(off + self.tick) // block)
            self.n_dec -= 1
            self.sum_offset -= off
            self.phase[off % block] -= 1
        else:
            self.used -= -(-t.target[rid] // block)
        del self.running[rid]
        t.state[rid] = DONE
        t.finish_s[rid] = time_s
        self.completions.append(rid)

    def _admissible(self) -> bool:
        """Whether the queue's head could be admitted now (ignoring the preemption rule)."""
        if not self.waiting or len(self.running) >= self.max_num_seqs:
            return False
        target = self.table.target[self.waiting[0]]
        if not self.chunk_long_prompts:
            tokens = target
        else:
            left = self.budget - (0 if self.prefill_first else self.n_dec)
            if left <= 0:
                return False
            tokens = min(target, left)
        return -(-tokens // self.block) <= self.num_blocks - self.used

    def _fill(self, chunks: list[tuple[int, int]], left: int, admit: bool) -> tuple[int, float, int]:
        """Fill ``left`` tokens with prompt chunks: partial prefills first, then (if ``admit``) new requests, FCFS.

        Chunked modes cut the last admitted prompt to fit; ``whole`` admits whole prompts only,
        at least one per step even when it exceeds ``left`` (so a long prompt cannot starve).

        Appends ``(request, tokens)`` to ``chunks``; returns (chunk tokens, attended tokens, prior tokens read).
        """
        t = self.table
        block = self.block
        done, target = t.done, t.target
        tokens, attended, prior = 0, 0.0, 0
        if self.prefilling and left > 0:
            for rid in self.prefilling:
                d = done[rid]
                held = -(-d // block)
                c = min(target[rid] - d, left, (held + self.num_blocks - self.used) * block - d)
                if c <= 0:
                    continue
                self.used += -(-(d + c) // block) - held
                chunks.append((rid, c))
                tokens += c
                attended += c * d + c * (c + 1) / 2
                prior += d
                left -= c
                if left <= 0:
                    break
        if admit and self.waiting and (left > 0 or (not self.chunk_long_prompts and not chunks)):
            waiting, running = self.waiting, self.running
            max_seqs = self.max_num_seqs
            whole = not self.chunk_long_prompts
            while waiting and len(running) < max_seqs:
                rid = waiting[0]
                c = target[rid]
                if c > left:
                    if not whole:
                        c = left
                    elif chunks:  # whole prompts: at least one per step, then only those that fit
                        break
                blocks = -(-c // block)
                if blocks > self.num_blocks - self.used:
                    break
                waiting.popleft()
                running[rid] = None
                self.prefilling[rid] = None
                t.state[rid] = PREFILL
                done[rid] = 0
                self.used += blocks
                chunks.append((rid, c))
                tokens += c
                attended += c * (c + 1) / 2
                left -= c
                if left <= 0:
                    break
        return tokens, attended, prior

    # ---- one step -----------------------------------------------------------------------------
    def _step(self) -> bool:
        """Schedule and run one step (or free blocks by a preemption); False when nothing can be scheduled."""
        t = self.table
        block = self.block
        done, target = t.done, t.target
        chunks: list[tuple[int, int]] = []
        chunk_tokens = 0
        chunk_attended = 0.0
        chunk_prior = 0
        preempted = False
        decode = True
        if self.prefill_first:  # a step prefills when it can, and then holds no decodes
            chunk_tokens, chunk_attended, chunk_prior = self._fill(chunks, self.budget, True)
            decode = not chunks
        n = 0
        need = 0
        if decode and self.n_dec:
            phase, tick = self.phase, self.tick
            need = phase[-tick % block]
            while self.num_blocks - self.used < need:
                self._preempt(next(reversed(self.running)))
                preempted = True
                need = phase[-tick % block] if self.n_dec else 0
            n = self.n_dec
            self.used += need
        if not self.prefill_first:
            chunk_tokens, chunk_attended, chunk_prior = self._fill(chunks, self.budget - n, not preempted)
        if n == 0 and not chunks:
            if self.running:  # every running prompt is stalled on blocks: free some by recompute
                self._preempt(next(reversed(self.running)))
                return True
            return False

        # ---- run the step ----
        kv_read = self.sum_offset + n * self.tick if n else 0
        sequences = n + len(chunks)
        duration = self._step_s(n + chunk_tokens, sequences, kv_read + n + chunk_attended, kv_read + chunk_prior, bool(chunks))
        end = self.clock + duration
        self.steps += 1
        self.busy_s += duration
        self.block_seconds += self.used * duration
        if self.used > self.peak_used:
            self.peak_used = self.used
        self.sequence_steps += sequences

        if n:
            self.tick += 1
            gap = end - self.last_decode_end
            plain = n
            if self.joiners:
                epoch, state, token_s = t.epoch, t.state, t.token_s
                for rid, ep in self.joiners:
                    if epoch[rid] == ep and state[rid] == DECODE:
                        g = end - token_s[rid]
                        if g != gap:
                            self.itl_values.append(g)
                            self.itl_weights.append(1)
                            plain -= 1
                self.joiners.clear()
            if plain:
                self.itl_values.append(gap)
                self.itl_weights.append(plain)
            self.last_decode_end = end
            heap, tick = self.heap, self.tick
            while heap and heap[0][0] <= tick:
                _, rid, ep = heapq.heappop(heap)
                if t.epoch[rid] == ep and t.state[rid] == DECODE:
                    self._finish(rid, end)

        if chunks:
            output, regenerated = t.output, t.regenerated
            tick = self.tick
            for rid, c in chunks:
                d = done[rid] + c
                done[rid] = d
                if d < target[rid]:
                    continue
                del self.prefilling[rid]
                gen = regenerated[rid]
                if gen == 0:
                    t.first_token_s[rid] = end
                else:
                    self.itl_values.append(end - t.last_token_s[rid])
                    self.itl_weights.append(1)
                if gen + 1 >= output[rid]:
                    self._finish(rid, end)
                    continue
                off = d - tick
                t.state[rid] = DECODE
                t.offset[rid] = off
                t.join_tick[rid] = tick
                t.gen_at_join[rid] = gen + 1
                t.token_s[rid] = end
                self.n_dec += 1
                self.sum_offset += off
                self.phase[off % block] += 1
                heapq.heappush(self.heap, (tick + output[rid] - gen - 1, rid, t.epoch[rid]))
                self.joiners.append((rid, t.epoch[rid]))
        self.clock = end
        return True

    def _step_s(self, new_tokens: int, sequences: int, attended_tokens: float, kv_read_tokens: int, pipeline_fill: bool) -> float:
        """Seconds of a step: :meth:`~guide_opt.simulate.step_cost.StepCostModel.time_s`, whose expression it evaluates
        itself on the model's columns when the model has them
        (:meth:`~guide_opt.simulate.step_cost.StepCostModel.separable_columns`): the same operations on the same floats,
        without a call into the model on every step."""
        if not self._separable:
            return self.cost.time_s(new_tokens, sequences, attended_tokens, kv_read_tokens, pipeline_fill)
        if new_tokens >= len(self._tokens_base) or sequences >= len(self._sequences_base):
            self.cost.reserve(new_tokens, sequences)  # the columns grow in place
        gamma = self._tokens_gamma[new_tokens] + self._sequences_gamma[sequences]
        compute = self._tokens_alpha[new_tokens] * attended_tokens + self._tokens_intercept[new_tokens] if attended_tokens > 0 else 0.0
        memory = gamma + self._beta * kv_read_tokens + self._delta * attended_tokens
        base = self._tokens_base[new_tokens] + self._sequences_base[sequences]
        return base + self._layers * ((compute if compute > memory else memory) - gamma)

    # ---- runs of pure-decode steps ------------------------------------------------------------
    def _decode_run(self, horizon_s: float) -> bool:
        """Run several pure-decode steps at once when nothing else can happen in between."""
        n = self.n_dec
        if n == 0 or self.prefilling or self.joiners or self.last_decode_end != self.clock:
            return False
        if self.waiting and self._admissible():
            return False
        k = self._next_finish_tick() - self.tick
        if k < MACRO_MIN_STEPS:
            return False
        k = min(k, MACRO_MAX_STEPS)
        if n in self._decode_entries:
            entry = self._decode_entries[n]
        else:
            entry = self._decode_entries[n] = self.cost.decode_entry(n)
        run: Any = self._steps_in_turn(n, k, horizon_s, entry) if entry is not None else _LONG_RUN
        if run is _LONG_RUN:
            run = self._steps_as_arrays(n, k, horizon_s)
        if run is None:
            return False
        k, elapsed, block_seconds, used = run
        self.block_seconds += block_seconds
        self.peak_used = max(self.peak_used, used)
        self.used = used
        self.tick += k
        self.steps += k
        self.busy_s += elapsed
        self.sequence_steps += n * k
        self.itl_run_steps.append(k)
        self.itl_run_sequences.append(n)
        end = self.clock + elapsed
        self.last_decode_end = self.clock = end
        heap, t, tick = self.heap, self.table, self.tick
        while heap and heap[0][0] <= tick:
            _, rid, ep = heapq.heappop(heap)
            if t.epoch[rid] == ep and t.state[rid] == DECODE:
                self._finish(rid, end)
        return True

    def _steps_in_turn(self, n: int, k: int, horizon_s: float, entry: tuple[float, ...]) -> "tuple[int, float, float, int] | None | object":
        """:meth:`_steps_as_arrays` one step at a time, for a run that ends within :data:`SHORT_RUN_STEPS` steps (numpy's
        fixed cost per call outweighs a few steps' arithmetic); :data:`_LONG_RUN` when it does not.

        The same steps, sums and blocks: each step's time is
        :meth:`~guide_opt.simulate.step_cost.StepCostModel.decode_times_s`' expression on the same floats (of
        :meth:`~guide_opt.simulate.step_cost.StepCostModel.decode_entry`), and the sums are running sums from the
        first step, as ``cumsum`` adds them. The durations are appended to :attr:`itl_run_values`.
        """
        if k > SHORT_RUN_STEPS and horizon_s == math.inf:
            return _LONG_RUN
        phase, block, tick, free = self.phase, self.block, self.tick, self.num_blocks - self.used
        if sum(phase[-(tick + i) % block] for i in range(MACRO_MIN_STEPS)) > free:
            return None
        base, scale, inv_micro, gamma, alpha, intercept, beta, delta = entry
        sum_offset, used_before, clock = self.sum_offset, self.used, self.clock
        durations: list[float] = []
        need, steps, used, elapsed, block_seconds = 0, 0, used_before, 0.0, 0.0
        for step_tick in range(tick, tick + min(k, SHORT_RUN_STEPS)):
            need += phase[-step_tick % block]
            if need > free:
                break
            kv_read = float(sum_offset + n * step_tick)
            a = (kv_read + n) * inv_micro
            compute = alpha * a + intercept
            memory = gamma + beta * kv_read * inv_micro + delta * a
            duration = base + scale * ((compute if compute > memory else memory) - gamma)
            durations.append(duration)
            used = used_before + need
            steps += 1
            elapsed += duration
            block_seconds += used * duration
            if clock + elapsed >= horizon_s:
                break
        else:
            if k > SHORT_RUN_STEPS:
                return _LONG_RUN
        self.itl_run_values.extend(durations)
        return steps, elapsed, block_seconds, used

    def _steps_as_arrays(self, n: int, k: int, horizon_s: float) -> tuple[int, float, float, int] | None:
        """The next pure-decode steps, at most ``k``, as arrays: up to the last one the free KV blocks allow and the
        first one ending at or after ``horizon_s``: (steps, their time s, their block-seconds, blocks used after the
        last), both sums running from the first step (``cumsum``); None when the blocks allow fewer than
        :data:`MACRO_MIN_STEPS`. The durations are appended to :attr:`itl_run_values`."""
        block = self.block
        ticks = self.tick + np.arange(k, dtype=np.int64)
        needs = np.asarray(self.phase, dtype=np.int64)[(-ticks) % block]
        cum_needs = np.cumsum(needs)
        k = min(k, int(np.searchsorted(cum_needs, self.num_blocks - self.used, side="right")))
        if k < MACRO_MIN_STEPS:
            return None
        durations = self.cost.decode_times_s(n, (self.sum_offset + n * ticks[:k]).astype(float))
        elapsed = np.cumsum(durations)
        if horizon_s < math.inf:
            k = min(k, 1 + int(np.searchsorted((self.clock + elapsed)[: k - 1], horizon_s, side="left")))
        used = self.used + cum_needs[:k]
        self.itl_run_values.frombytes(np.ascontiguousarray(durations[:k], dtype=np.float64).tobytes())
        return k, float(elapsed[k - 1]), float(np.cumsum(used * durations[:k])[-1]), int(used[-1])


# ---- the cluster's event loops ----------------------------------------------------------------------
def fixed_replica(balancer: str, dispatched: int, drawn_replicas: list[int] | None, replicas: int) -> int:
    """The replica of the ``dispatched``-th request (0-based, in dispatch order) under a balancer that does not look at the
    replicas: ``random`` (its pre-drawn replica in ``drawn_replicas``) or ``round_robin``."""
    if balancer == "random" and drawn_replicas is not None:
        return drawn_replicas[dispatched]
    return dispatched % replicas


def run_events(engines: list[ReplicaEngine], table: RequestTable, arrivals_s: list[float] | None, users: int, rejected: list[bool],
               balancer: str, drawn_replicas: list[int] | None) -> None:
    """The cluster's event loop (:func:`guide_opt.simulate.cluster.simulate`): dispatch arrivals in time order and advance
    the replicas between them, the replica furthest behind first.

    ``arrivals_s``: an open loop's arrival times, in order; None for a closed loop of ``users`` users with zero think
    time (each completion's user sends the next request at once). ``rejected[rid]``: a request that never reaches a
    replica (its arrival is recorded, and under a closed loop its user moves on). ``balancer``: ``least_loaded`` (the
    replica with the fewest requests queued or running, the lowest index on a tie), or ``random`` / ``round_robin``
    (:func:`fixed_replica`; ``drawn_replicas``: the random balancer's replica of each dispatch, in dispatch order).
    Under a closed loop with several replicas, a replica runs at most to the earliest time another one could complete
    a request (:meth:`ReplicaEngine.completion_lower_bound_s`), since that completion brings the next arrival.
    """
    n = len(rejected)
    closed = arrivals_s is None
    times: list[float] = [] if arrivals_s is None else arrivals_s
    pending: list[tuple[float, int]] = []  # (time, request id): a heap under the closed loop
    next_rid = 0
    if closed:
        users = min(users, n)
        pending = [(0.0, rid) for rid in range(users)]
        next_rid = users
    cursor = 0
    dispatched = 0
    multi = len(engines) > 1
    least_loaded = balancer == "least_loaded"
    inf = math.inf
    while True:
        if closed:
            a = pending[0][0] if pending else inf
        else:
            a = times[cursor] if cursor < n else inf
        engine: ReplicaEngine | None = None  # the busy replica with the earliest clock (the first of them on a tie)
        for e in engines:
            if (e.waiting or e.running) and (engine is None or e.clock < engine.clock):
                engine = e
        if engine is None or a <= engine.clock:
            if a == inf:
                break
            if closed:
                rid = heapq.heappop(pending)[1]
            else:
                rid = cursor
                cursor += 1
            table.arrival_s[rid] = a
            if rejected[rid]:
                if closed and next_rid < n:
                    heapq.heappush(pending, (a, next_rid))
                    next_rid += 1
                continue
            if least_loaded:
                target = engines[0]
                for e in engines:
                    if e.outstanding < target.outstanding or (e.outstanding == target.outstanding and e.index < target.index):
                        target = e
            else:
                target = engines[fixed_replica(balancer, dispatched, drawn_replicas, len(engines))]
            dispatched += 1
            target.submit(rid, a)
            continue
        horizon = a
        if closed and multi:
            for other in engines:
                if other is not engine and (other.waiting or other.running):
                    horizon = min(horizon, other.completion_lower_bound_s())
        engine.advance(horizon, closed)
        if engine.completions:
            if closed:
                for rid in engine.completions:
                    if next_rid < n:
                        heapq.heappush(pending, (table.finish_s[rid], next_rid))
                        next_rid += 1
            engine.completions.clear()
