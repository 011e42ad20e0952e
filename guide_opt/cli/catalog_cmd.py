"""``guide-opt hardware list`` and ``guide-opt models list``: what the catalog holds."""

from __future__ import annotations

import click

from guide_opt.catalog import load_catalog
from guide_opt.cli.app import cli
from guide_opt.cli.output import echo_json, echo_rows, fmt_number, format_option


@cli.group("hardware")
def hardware_group() -> None:
    """GPUs known to guide-opt."""


@hardware_group.command("list")
@click.option("--price-table", default="default", show_default=True, help="Price table to show prices from.")
@format_option
def hardware_list(price_table: str, output_format: str) -> None:
    """List GPUs with memory, bandwidth, peaks, links and price."""
    catalog = load_catalog()
    prices = catalog.price_table(price_table, field="--price-table").usd_per_gpu_hour()
    gpus = sorted(catalog.gpus.values(), key=lambda g: g.id)
    if output_format == "json":
        echo_json([g.model_dump(exclude={"kernels"}) | {"usd_per_gpu_hour": prices.get(g.id)} for g in gpus])
        return
    rows = [[g.id, fmt_number(g.memory_gib), fmt_number(g.hbm_bandwidth_gbps), fmt_number(g.bf16_dense_tflops),
             fmt_number(g.fp8_dense_tflops), f"{g.link_kind} {fmt_number(g.link_bandwidth_gbps)}", str(g.gpus_per_node),
             fmt_number(prices.get(g.id))] for g in gpus]
    echo_rows(["id", "GiB", "HBM GB/s", "bf16 TFLOPS", "fp8 TFLOPS", "link GB/s", "per node", "$/GPU-h"], rows)


@cli.group("models")
def models_group() -> None:
    """LLM architectures known to guide-opt."""


@models_group.command("list")
@format_option
def models_list(output_format: str) -> None:
    """List LLM architectures with their sizes."""
    llms = sorted(load_catalog().llms.values(), key=lambda m: m.id)
    if output_format == "json":
        echo_json([m.model_dump() | {"total_params": m.total_params} for m in llms])
        return
    rows = [[m.id, f"{m.total_params / 1e9:.2f}B", str(m.num_layers), str(m.hidden_size), f"{m.num_attention_heads}/{m.num_kv_heads}",
             m.mlp_kind + (f" MoE {m.experts_per_token}/{m.num_experts}" if m.is_moe else ""), str(m.max_position_embeddings)] for m in llms]
    echo_rows(["id", "params", "layers", "hidden", "heads/kv", "mlp", "context"], rows)
