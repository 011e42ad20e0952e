"""Options shared by verbs that evaluate one configuration (``estimate``, ``simulate``)."""

from __future__ import annotations

import functools
from typing import Callable

import click

from guide_opt.catalog import load_catalog
from guide_opt.errors import InputError
from guide_opt.perf import ServingConfig

positive_int = click.IntRange(min=1)


def replica_options(func: Callable) -> Callable:
    """Add --model --gpu --tp --pp --framework --quantization --kv-cache-dtype to a command."""
    options = [
        click.option("--model", "model", required=True, help="LLM catalog id (see 'guide-opt models list') or path to a HuggingFace config.json."),
        click.option("--gpu", "gpu", required=True, help="GPU id (see 'guide-opt hardware list')."),
        click.option("--tp", type=positive_int, default=1, show_default=True, help="Tensor-parallel degree."),
        click.option("--pp", type=positive_int, default=1, show_default=True, help="Pipeline-parallel degree."),
        click.option("--framework", default="vllm", show_default=True, help="Serving engine: vllm, sglang, tensorrt-llm, deepspeed-fastgen."),
        click.option("--quantization", default="bf16", show_default=True, help="bf16 (alias fp16), fp8, w8a8 or w4a16."),
        click.option("--kv-cache-dtype", type=click.Choice(["fp16", "fp8"]), default="fp16", show_default=True, help="KV-cache precision."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def build_config(
    *,
    model: str,
    gpu: str,
    tp: int = 1,
    pp: int = 1,
    framework: str = "vllm",
    quantization: str = "bf16",
    kv_cache_dtype: str = "fp16",
    batch: int = 1,
    input_tokens: int = 512,
    output_tokens: int = 128,
    flash_attention: bool = True,
    h2o_kept_fraction: float = 1.0,
) -> ServingConfig:
    """Resolve CLI ids into a :class:`ServingConfig`; unrunnable settings raise :class:`InputError` naming the option."""
    catalog = load_catalog()
    config = ServingConfig(
        llm=catalog.llm(model, field="--model"),
        gpu=catalog.gpu(gpu, field="--gpu"),
        framework=catalog.framework(framework, field="--framework"),
        quantization=catalog.quantization(quantization, field="--quantization"),
        tp=tp,
        pp=pp,
        batch=batch,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        kv_cache_dtype=kv_cache_dtype,
        flash_attention=flash_attention,
        h2o_kept_fraction=h2o_kept_fraction,
    )
    reason = config.unsupported_reason()
    if reason:
        option = "--tp" if "TP=" in reason else "--pp" if "PP=" in reason else "--quantization" if "tensor cores" in reason else "--kv-cache-dtype" if "KV cache" in reason else "options"
        raise InputError(option, reason, "choose a supported value")
    return config
