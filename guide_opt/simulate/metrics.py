"""What a simulation reports: latency percentiles, throughput, goodput, KV use (:class:`SimulationResult`).

Definitions (every latency is measured from the request's arrival at the load balancer):

- **TTFT** (time to first token): first output token time - arrival. Queueing and the whole
  prefill (all chunks, preemption recomputes) are included.
- **ITL** (inter-token latency): the gap between two consecutive output tokens of one request,
  *pooled over all gaps of all requests* (LLM-Pilot Sec. III-C: "the median latency between
  all subsequent output tokens, excluding the first one"). A request with ``n`` output tokens
  contributes ``n - 1`` gaps; a gap that spans a preemption includes the wait and recompute.
- **TPOT** (time per output token) of one request: ``(e2e - ttft) / (output_tokens - 1)``,
  0 for a one-token output. Its mean over requests is what the static estimator's ``tpot_s``
  predicts for a uniform batch.
- **E2E**: finish time - arrival.
- **Percentiles** use the inverted-CDF rule: ``pXX`` is the smallest sample ``x`` such that at
  least XX % of the (weighted) samples are ``<= x``. ``mean`` is the plain (weighted) mean.
- **Throughput**: output tokens of completed requests / makespan, where the makespan runs from
  the first arrival to the last finish (``duration_s``).
- **Goodput** (only when :class:`GoodputTargets` are given): ``fraction`` is the share of *all* submitted
  requests (rejected ones count as misses) whose own TTFT <= ``ttft_ms`` and own TPOT <=
  ``tpot_ms`` (and E2E <= ``e2e_ms`` when set); ``requests_per_s`` and ``tokens_per_s`` are the
  requests / output tokens of those requests divided by the makespan. This is the
  per-request SLO-attainment notion of DistServe/Sarathi-Serve evaluations, measured at the
  offered load (it is not "the highest rate at which 90 % attain").
- **KV utilization**: blocks in use / KV blocks of the replica, time-weighted over the steps the
  replica ran (``mean``), and its maximum (``peak``); averaged over replicas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

#: The percentiles every latency is reported at.
PERCENTILES = (50, 90, 99)


def weighted_percentile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """The inverted-CDF ``q``-th percentile (0-100) of ``values`` with optional non-negative ``weights``.

    Returns NaN for an empty sample (or zero total weight).
    """
    return weighted_percentiles(values, weights, (q,))[0]


def weighted_percentiles(values: np.ndarray, weights: np.ndarray | None, qs: tuple[float, ...]) -> list[float]:
    """:func:`weighted_percentile` at each of ``qs``, the sample sorted once (a simulation's inter-token gaps are
    hundreds of thousands of steps).

    Equal values may be sorted in any order (numpy's quicksort, about 3x faster than a stable sort here): the answer is
    the smallest value whose cumulative weight reaches the percentile, and at each distinct value that weight is the
    same sum whatever the order of the equal ones before it, exactly so for integer weights (a simulation's gap counts),
    whose float sums are exact.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return [math.nan] * len(qs)
    if weights is None:
        return [float(v) for v in np.percentile(values, list(qs), method="inverted_cdf")]
    weights = np.asarray(weights, dtype=float)
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    total = cum[-1]
    if total <= 0:
        return [math.nan] * len(qs)
    indices = np.searchsorted(cum, np.array(qs, dtype=float) / 100.0 * total * (1 - 1e-12), side="left")
    return [float(values[order[min(int(index), order.size - 1)]]) for index in indices]


@dataclass(frozen=True)
class Percentiles:
    """p50 / p90 / p99 and mean of one latency, in seconds (NaN when there was no sample)."""

    p50_s: float
    p90_s: float
    p99_s: float
    mean_s: float

    @staticmethod
    def of(values: np.ndarray, weights: np.ndarray | None = None) -> "Percentiles":
        """Summarise ``values`` (seconds), optionally weighted (see :func:`weighted_percentile`)."""
        values = np.asarray(values, dtype=float)
        if values.size == 0:
            return Percentiles(math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = weighted_percentiles(values, weights, PERCENTILES)
        if weights is None:
            mean = float(values.mean())
        else:
            w = np.asarray(weights, dtype=float)
            mean = float((values * w).sum() / w.sum()) if w.sum() > 0 else math.nan
        return Percentiles(p50, p90, p99, mean)

    def as_ms(self) -> dict[str, float | None]:
        """``{"p50", "p90", "p99", "mean"}`` in milliseconds (None for NaN)."""
        return {key: _finite(value * 1e3) for key, value in (("p50", self.p50_s), ("p90", self.p90_s), ("p99", self.p99_s), ("mean", self.mean_s))}


@dataclass(frozen=True)
class GoodputTargets:
    """Per-request latency targets used for goodput; ``None`` means no target on that metric.

    Not a planning SLO (:class:`guide_opt.problem.Slo`, targets at a percentile): each request
    either meets every target here or not, and goodput counts the ones that do.

    ttft_ms: time to first token, ms. tpot_ms: time per output token after the first, ms.
    e2e_ms: end-to-end latency, ms.
    """

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"GoodputTargets.{name} must be positive, got {value}")

    def met(self, ttft_s: np.ndarray, tpot_s: np.ndarray, e2e_s: np.ndarray) -> np.ndarray:
        """Boolean mask of requests meeting every set target (NaN latencies never do)."""
        ok = np.isfinite(ttft_s) & np.isfinite(e2e_s)
        if self.ttft_ms is not None:
            ok &= ttft_s <= self.ttft_ms * 1e-3
        if self.tpot_ms is not None:
            ok &= tpot_s <= self.tpot_ms * 1e-3
        if self.e2e_ms is not None:
            ok &= e2e_s <= self.e2e_ms * 1e-3
        return ok

    def as_dict(self) -> dict[str, float | None]:
        """The targets in ms."""
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2e_ms": self.e2e_ms}


@dataclass(frozen=True)
class Goodput:
    """Requests meeting the :class:`GoodputTargets` (see the module docstring for the definition).

    fraction: met / submitted, in [0, 1]. requests_per_s: met requests per second of makespan.
    tokens_per_s: output tokens of met requests per second of makespan.
    """

    slo: GoodputTargets
    fraction: float
    requests_per_s: float
    tokens_per_s: float

    def as_dict(self) -> dict:
        """JSON form: the fraction, rates and the SLO they were measured against."""
        return {"fraction": _finite(self.fraction), "requests_per_s": _finite(self.requests_per_s),
                "tokens_per_s": _finite(self.tokens_per_s), "slo": self.slo.as_dict()}


@dataclass(frozen=True, eq=False)
class RequestRecords:
    """Per-request arrays (index = request id, in submission order); times in seconds.

    ``first_token_s`` / ``finish_s`` are NaN for rejected requests; ``replica`` is -1 for them.
    """

    input_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    replica: np.ndarray
    rejected: np.ndarray

    @property
    def ttft_s(self) -> np.ndarray:
        """Time to first token of each request (s)."""
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        """End-to-end latency of each request (s)."""
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """Time per output token after the first, per request (s; 0 for one-token outputs)."""
        gaps = np.maximum(self.output_tokens - 1, 1)
        tpot = (self.finish_s - self.first_token_s) / gaps
        return np.where(self.output_tokens > 1, tpot, 0.0 * tpot)

    def in_system_at_arrival(self) -> np.ndarray:
        """Requests in the system (holding a sequence slot or waiting for one) as each request arrives, itself not
        counted, in order of arrival (what an arrival finds; requests all finish after they arrive)."""
        order = np.argsort(self.arrival_s, kind="stable")
        finishes = np.sort(self.finish_s)
        return np.arange(len(order)) - np.searchsorted(finishes, self.arrival_s[order], side="right")


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Outcome of :func:`guide_opt.simulate.simulate` (times in seconds, rates per second).

    fits: False when not a single request of the workload can be held in the KV cache (or the
    weights do not fit); then every latency is NaN and ``reason`` says why.
    ttft_s / itl_s / tpot_s / e2e_s: :class:`Percentiles` (ITL pooled over all gaps).
    throughput_tokens_per_s: output tokens of completed requests / ``duration_s``.
    request_throughput_per_s: completed requests / ``duration_s``.
    goodput: :class:`Goodput` when an SLO was given, else None.
    kv_utilization_mean / kv_utilization_peak: fraction of KV blocks in use (see module doc).
    kv_capacity_tokens: tokens of KV cache one replica holds (blocks x block size).
    preemptions: recompute preemptions, all replicas together.
    steps: engine steps executed, all replicas together.
    itl_gaps: inter-token gaps pooled into ``itl_s`` (= sum of output_tokens - 1 over completed requests).
    mean_batch_sequences: mean number of sequences per engine step.
    """

    fits: bool
    reason: str | None
    num_requests: int
    completed_requests: int
    rejected_requests: int
    replicas: int
    balancer: str
    policy: str
    prefill_mode: str
    max_num_seqs: int
    max_num_batched_tokens: int
    seed: int
    ttft_s: Percentiles
    itl_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    throughput_tokens_per_s: float
    request_throughput_per_s: float
    duration_s: float
    goodput: Goodput | None
    kv_utilization_mean: float
    kv_utilization_peak: float
    kv_capacity_tokens: int
    kv_block_size_tokens: int
    preemptions: int
    steps: int
    itl_gaps: int
    mean_batch_sequences: float
    requests: RequestRecords = field(repr=False)

    def metrics(self) -> dict:
        """The JSON object of ``guide-opt simulate --format json`` (ms, tokens/s, fractions)."""
        return {
            "fits": self.fits,
            "reason": self.reason,
            "ttft_ms": self.ttft_s.as_ms(),
            "itl_ms": self.itl_s.as_ms(),
            "tpot_ms": self.tpot_s.as_ms(),
            "e2e_ms": self.e2e_s.as_ms(),
            "throughput_tokens_per_s": _finite(self.throughput_tokens_per_s),
            "request_throughput_per_s": _finite(self.request_throughput_per_s),
            "goodput": self.goodput.as_dict() if self.goodput else None,
            "kv_utilization": {"mean": _finite(self.kv_utilization_mean), "peak": _finite(self.kv_utilization_peak),
                               "capacity_tokens": self.kv_capacity_tokens, "block_size_tokens": self.kv_block_size_tokens},
            "preemptions": self.preemptions,
            "requests": {"submitted": self.num_requests, "completed": self.completed_requests, "rejected": self.rejected_requests},
            "duration_s": _finite(self.duration_s),
            "steps": self.steps,
            "itl_gaps": self.itl_gaps,
            "mean_batch_sequences": _finite(self.mean_batch_sequences),
            "engine": {"replicas": self.replicas, "balancer": self.balancer, "policy": self.policy, "prefill_mode": self.prefill_mode,
                       "max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens, "seed": self.seed},
        }

    def to_json(self) -> str:
        """:meth:`metrics` as a JSON string (NaN becomes null)."""
        return json.dumps(self.metrics())


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
