"""The roofline: time of one piece of work, and which resource bounds it.

``time = max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x memory efficiency))``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


@dataclass(frozen=True)
class RooflineTime:
    """Seconds spent on a piece of work and the resource that bounded it."""

    time_s: float
    compute_time_s: float
    memory_time_s: float

    @property
    def bound(self) -> Bound:
        """COMPUTE when arithmetic takes at least as long as memory traffic, else MEMORY."""
        return Bound.COMPUTE if self.compute_time_s >= self.memory_time_s else Bound.MEMORY


def roofline_time(flops: float, bytes_moved: float, peak_flops_per_s: float, bandwidth_bytes_per_s: float) -> RooflineTime:
    """Return the roofline time of work needing ``flops`` FLOPs and ``bytes_moved`` bytes of HBM traffic.

    ``peak_flops_per_s`` and ``bandwidth_bytes_per_s`` are *effective* rates (peak times the
    efficiency factor). Both must be positive.
    """
    compute_time_s = flops / peak_flops_per_s
    memory_time_s = bytes_moved / bandwidth_bytes_per_s
    return RooflineTime(max(compute_time_s, memory_time_s), compute_time_s, memory_time_s)
