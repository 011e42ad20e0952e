"""The workload block of a problem file, parsed into a :class:`~guide_opt.simulate.workloads.Workload`.

:func:`workload_from_spec` builds a :class:`Workload` from the dict a problem file holds (fixed
lengths, a preset, histograms, or a trace fitted with LLM-Pilot's generator); bad input raises
:class:`~guide_opt.errors.InputError` naming the field and the fix. It sits above both
``workloads`` and ``trace_generator`` so that neither imports the other back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, ValidationError

from guide_opt.errors import InputError
from guide_opt.simulate.trace_generator import JointBinnedLengths
from guide_opt.simulate.workloads import FixedLengths, HistogramLengths, LengthDistribution, Workload, preset_lengths


class HistogramSpec(BaseModel):
    """``histogram:`` -- input and output bins as ``[tokens, weight]`` pairs."""

    model_config = ConfigDict(extra="forbid")

    input: list[tuple[PositiveInt, PositiveFloat]]
    output: list[tuple[PositiveInt, PositiveFloat]]


class WorkloadSpec(BaseModel):
    """The workload block of a problem file (validated; exactly one length form).

    Length forms: ``input_tokens`` + ``output_tokens`` | ``preset`` | ``histogram`` | ``trace``
    (a CSV with columns ``n_input_tokens,n_output_tokens``; ``trace_bins`` bins per column,
    default 64 as in LLM-Pilot). Arrival: at most one of ``request_rate_per_s`` /
    ``concurrent_users``; neither means every request arrives at t = 0.
    """

    model_config = ConfigDict(extra="forbid")

    input_tokens: PositiveInt | None = None
    output_tokens: PositiveInt | None = None
    preset: str | None = None
    histogram: HistogramSpec | None = None
    trace: str | None = None
    trace_bins: PositiveInt = 64
    request_rate_per_s: PositiveFloat | None = None
    concurrent_users: PositiveInt | None = None


_LENGTH_FORMS = "input_tokens + output_tokens, preset, histogram or trace"


def _pydantic_to_input_error(field: str, exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    path = field
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if err["type"] == "extra_forbidden":
        return InputError(path, "unknown key", f"remove it; a workload takes {_LENGTH_FORMS}, plus request_rate_per_s or concurrent_users")
    if err["type"] == "missing":
        return InputError(path, "required key is missing", "add it")
    return InputError(path, err["msg"], f"got {err.get('input')!r}")


def workload_from_spec(spec: dict[str, Any], *, field: str = "workload", base_dir: str | Path | None = None) -> Workload:
    """Build a :class:`Workload` from a problem file's workload dict.

    Accepts exactly one length form -- ``{input_tokens, output_tokens}`` | ``{preset: NAME}`` |
    ``{histogram: {input: [[tokens, weight], ...], output: [...]}}`` | ``{trace: PATH}`` (plus
    optional ``trace_bins``) -- and optionally ``request_rate_per_s`` or ``concurrent_users``.
    Relative trace paths are resolved against ``base_dir`` (e.g. the problem file's folder).
    Raises :class:`InputError` naming ``field`` (dotted path) and the fix.
    """
    if not isinstance(spec, dict):
        raise InputError(field, f"expected a mapping, got {type(spec).__name__}", f"give {_LENGTH_FORMS}")
    try:
        parsed = WorkloadSpec.model_validate(spec)
    except ValidationError as exc:
        raise _pydantic_to_input_error(field, exc) from None
    forms = [name for name, present in (
        ("input_tokens/output_tokens", parsed.input_tokens is not None or parsed.output_tokens is not None),
        ("preset", parsed.preset is not None),
        ("histogram", parsed.histogram is not None),
        ("trace", parsed.trace is not None),
    ) if present]
    if not forms:
        raise InputError(field, "no token lengths given", f"add one of {_LENGTH_FORMS}")
    if len(forms) > 1:
        raise InputError(field, f"several length forms given ({', '.join(forms)})", f"keep exactly one of {_LENGTH_FORMS}")
    if parsed.request_rate_per_s is not None and parsed.concurrent_users is not None:
        raise InputError(f"{field}.concurrent_users", "both request_rate_per_s and concurrent_users are set",
                         "keep request_rate_per_s for open-loop Poisson arrivals or concurrent_users for a closed loop")
    if "trace_bins" in spec and parsed.trace is None:
        raise InputError(f"{field}.trace_bins", "trace_bins applies only to a trace", "remove it or add trace: PATH")
    lengths: LengthDistribution
    if forms[0] == "input_tokens/output_tokens":
        missing = "output_tokens" if parsed.output_tokens is None else "input_tokens" if parsed.input_tokens is None else None
        if missing:
            raise InputError(f"{field}.{missing}", "required with the other fixed length", "give both input_tokens and output_tokens")
        lengths = FixedLengths(parsed.input_tokens, parsed.output_tokens)
    elif forms[0] == "preset":
        lengths = preset_lengths(parsed.preset, field=f"{field}.preset")
    elif forms[0] == "histogram":
        for side in ("input", "output"):
            if not getattr(parsed.histogram, side):
                raise InputError(f"{field}.histogram.{side}", "no bins", "add at least one [tokens, weight] pair")
        lengths = HistogramLengths(tuple(parsed.histogram.input), tuple(parsed.histogram.output))
    else:
        path = Path(parsed.trace)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        lengths = JointBinnedLengths.from_csv(path, max_bins_per_column=parsed.trace_bins, field=f"{field}.trace")
    return Workload(lengths, request_rate_per_s=parsed.request_rate_per_s, concurrent_users=parsed.concurrent_users)
