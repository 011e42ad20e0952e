"""The roofline: time of one piece of work, and which resource bounds it.

``time = max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x memory efficiency))``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class Bound(str, enum.Enum):
    """The resource that limits a piece of work."""

    COMPUTE = "compute"
    """Tensor-core arithmetic is the bottleneck (large prefills, big batches)."""
    MEMORY = "memory"
    """HBM traffic (weights, KV cache) is the bottleneck (decode at small batch)."""
    NETWORK = "network"
    """GPU-to-GPU communication (tensor/pipeline parallel) is the bottleneck."""
    OVERHEAD = "overhead"
    """Fixed per-step costs (scheduling, kernel launches) dominate."""


# ---- arithmetic on numbers or arrays ----------------------------------------------------------
# The step model (guide_opt.perf.step, guide_opt.perf.kernels) maps one step shape to its time;
# given arrays of shapes it maps all of them at once (a window table's steps, see
# guide_opt.perf.steady_state.StepTable). These helpers take plain numbers the fast way and arrays
# elementwise, with the same IEEE operations either way, so both give the same figures.
def larger(a, b):
    """``max(a, b)``, elementwise for arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


def smaller(a, b):
    """``min(a, b)``, elementwise for arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.minimum(a, b)
    return a if a <= b else b


def choose(condition, if_true, if_false):
    """``if_true if condition else if_false``, elementwise for an array ``condition``."""
    if isinstance(condition, np.ndarray):
        return np.where(condition, if_true, if_false)
    return if_true if condition else if_false


def ceil(x):
    """``math.ceil(x)``, elementwise (as floats) for arrays."""
    return np.ceil(x) if isinstance(x, np.ndarray) else math.ceil(x)


@dataclass(frozen=True)
class RooflineTime:
    """Seconds spent on a piece of work and the resource that bounded it."""

    time_s: float
    compute_time_s: float
    memory_time_s: float

    @property
    def bound(self) -> Bound:
        """COMPUTE when arithmetic takes at least as long as memory traffic, else MEMORY (one piece of work)."""
        return Bound.COMPUTE if self.compute_time_s >= self.memory_time_s else Bound.MEMORY

    @property
    def compute_bound(self):
        """Whether arithmetic takes at least as long as memory traffic (elementwise for arrays of work)."""
        return self.compute_time_s >= self.memory_time_s


def roofline_time(flops: float, bytes_moved: float, peak_flops_per_s: float, bandwidth_bytes_per_s: float) -> RooflineTime:
    """Return the roofline time of work needing ``flops`` FLOPs and ``bytes_moved`` bytes of HBM traffic.

    ``peak_flops_per_s`` and ``bandwidth_bytes_per_s`` are *effective* rates (peak times the
    efficiency factor). Both must be positive.
    """
    compute_time_s = flops / peak_flops_per_s
    memory_time_s = bytes_moved / bandwidth_bytes_per_s
    return RooflineTime(larger(compute_time_s, memory_time_s), compute_time_s, memory_time_s)
