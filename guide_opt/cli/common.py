"""Options shared by verbs that evaluate one configuration (``estimate``, ``simulate``)."""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

import click

from guide_opt import limits
from guide_opt.answer import serving_config
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig

if TYPE_CHECKING:
    from guide_opt.validation.calibration import Calibration

#: A count or length from the command line: 1 up to :data:`~guide_opt.limits.MAX_TOKENS` (no unbounded integers).
positive_int = click.IntRange(min=1, max=limits.MAX_TOKENS)
#: A TP or PP degree.
degree_int = click.IntRange(min=1, max=limits.MAX_PARALLEL_DEGREE)
#: A batch, max-num-seqs or max-batched-tokens value.
batch_int = click.IntRange(min=1, max=limits.MAX_BATCH)
#: A random seed: CP-SAT takes a signed 32-bit seed, so every verb accepts 0 .. 2**31 - 1.
seed_int = click.IntRange(min=0, max=limits.MAX_SEED)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf (NaN passes every range comparison)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

#: Key under which ``--calibration`` leaves the loaded file in the click context's ``meta``.
CALIBRATION_META_KEY = "guide_opt.calibration"


def _load_calibration_option(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--calibration FILE`` callback: load and validate the file, keep it for :func:`build_config`."""
    if value is None:
        return None
    from guide_opt.validation.calibration import load_calibration

    ctx.meta[CALIBRATION_META_KEY] = (value, load_calibration(value))
    return None


def replica_options(func: Callable) -> Callable:
    """Add --model --gpu --tp --pp --framework --quantization --kv-cache-dtype --calibration to a command.

    ``--calibration FILE`` is not passed to the command function: it is loaded into the click
    context and :func:`build_config` picks it up, so every verb built on these options honours it.
    """
    options = [
        click.option("--model", "model", required=True, help="LLM catalog id (see 'guide-opt models list') or path to a HuggingFace config.json."),
        click.option("--gpu", "gpu", required=True, help="GPU id (see 'guide-opt hardware list')."),
        click.option("--tp", type=degree_int, default=1, show_default=True, help="Tensor-parallel degree."),
        click.option("--pp", type=degree_int, default=1, show_default=True, help="Pipeline-parallel degree."),
        click.option("--framework", default="vllm", show_default=True, help="Serving engine: vllm, sglang, tensorrt-llm, deepspeed-fastgen."),
        click.option("--quantization", default="bf16", show_default=True, help="bf16 (alias fp16), fp8, w8a8 or w4a16."),
        click.option("--kv-cache-dtype", type=click.Choice(["fp16", "fp8"]), default="fp16", show_default=True, help="KV-cache precision."),
        click.option("--calibration", type=click.Path(dir_okay=False), default=None, expose_value=False, callback=_load_calibration_option,
                     help="Calibration YAML from 'guide-opt calibrate': its fitted efficiency factors for this GPU and framework replace the framework defaults."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def build_config(
    *,
    calibration: "Calibration | Mapping[tuple[str, str], EfficiencyFactors] | None" = None,
    **options: Any,
) -> ServingConfig:
    """Resolve CLI ids into a :class:`ServingConfig` (:func:`guide_opt.answer.serving_config`, whose keyword
    ``options`` it takes: ``model``, ``gpu``, ``tp``, ...); unrunnable settings raise :class:`InputError` naming the option.

    ``calibration``: a :class:`~guide_opt.validation.calibration.Calibration` (or a mapping
    ``(gpu id, framework id) -> EfficiencyFactors``) whose factors for this GPU and framework
    become ``ServingConfig.efficiency``. When None, the file given with ``--calibration`` to
    the running command (if any) is used. Without an entry for the pair, the framework's
    default factors stay in force (a note says so on stderr).
    """
    framework = options.get("framework", inspect.signature(serving_config).parameters["framework"].default)
    return serving_config(**options, efficiency=lambda: _calibrated_factors(calibration, options["gpu"], framework))


def _calibrated_factors(calibration: Any, gpu: str, framework: str) -> EfficiencyFactors | None:
    """Factors for (``gpu``, ``framework``) from ``calibration`` or from the ``--calibration`` file of the running command."""
    label = "the given calibration"
    if calibration is None:
        ctx = click.get_current_context(silent=True)
        loaded = ctx.find_root().meta.get(CALIBRATION_META_KEY) if ctx is not None else None
        if loaded is None:
            return None
        label, calibration = loaded
    from guide_opt.validation.accuracy import resolve_factors

    factors = resolve_factors(calibration, gpu, framework)
    if factors is None:
        click.echo(f"note: {label} has no factors for {gpu} / {framework}; using the framework's default efficiency factors", err=True)
    return factors


def capacity_share_text(utilization: float, closed_loop: bool, capacity_per_s: float | None = None) -> str:
    """A replica's load as a share of its capacity, e.g. ``78% of capacity 12.3 requests/s``.

    A closed loop keeps its sequence slots full, so its throughput may pass the open-loop capacity
    (the rate at which its slots reach the stability limit): it is named as a throughput share of
    that capacity. ``capacity_per_s`` (requests/s) is shown when given.
    """
    share = f"throughput {utilization:.0%} of the open-loop capacity" if closed_loop else f"{utilization:.0%} of capacity"
    return share if capacity_per_s is None else f"{share} {capacity_per_s:.4g} requests/s"
