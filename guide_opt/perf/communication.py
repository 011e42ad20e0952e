"""GPU-to-GPU communication times (alpha-beta model).

A ring all-reduce of ``m`` bytes over ``n`` GPUs sends ``2(n-1)/n x m`` bytes per GPU in
``2(n-1)`` steps, each paying the link latency. Pipeline-parallel stages pass activations
point-to-point once per stage boundary.
"""

from __future__ import annotations


def ring_all_reduce_time_s(message_bytes: float, num_gpus: int, link_bandwidth_bytes_per_s: float, link_latency_s: float) -> float:
    """Seconds for a ring all-reduce of ``message_bytes`` across ``num_gpus`` GPUs (0 for one GPU)."""
    if num_gpus <= 1:
        return 0.0
    steps = 2 * (num_gpus - 1)
    return steps / num_gpus * message_bytes / link_bandwidth_bytes_per_s + steps * link_latency_s


def point_to_point_time_s(message_bytes: float, link_bandwidth_bytes_per_s: float, link_latency_s: float) -> float:
    """Seconds to send ``message_bytes`` from one GPU to the next (one pipeline hop)."""
    return message_bytes / link_bandwidth_bytes_per_s + link_latency_s
