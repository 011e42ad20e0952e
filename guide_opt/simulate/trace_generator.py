"""LLM-Pilot's workload generator: joint multi-dimensional bins fitted to a trace (:class:`JointBinnedLengths`).

LLM-Pilot (arXiv 2410.02425, Sec. III-B) models requests non-parametrically so that correlated
parameters stay correlated:

1. *Bins per parameter.* Each column's range is cut into at most 64 intervals holding about
   equal numbers of requests (as many bins as distinct values when there are fewer).
2. *Joint bins.* Each request falls in one multi-dimensional bin (its combination of
   per-column bins); the model keeps only non-empty joint bins with their counts (sparse).
3. *Sampling.* A joint bin is drawn with probability proportional to its count and each
   parameter is set to the *center* of its interval in that bin.

guide-opt applies this to the two columns that drive serving cost, ``n_input_tokens`` and
``n_output_tokens`` (the column names of LLM-Pilot's per-request result files), so the
input/output correlation of the trace survives, which independent histograms lose (the paper
measured up to 19 % throughput and 98 % median-TTFT differences from ignoring it). ``fit`` works
for any number of columns. With ``representative="mean"`` a bin is represented by the mean of
its members instead of the interval center (keeps each column's mean exactly; a guide-opt option,
not in the paper).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from guide_opt.errors import InputError
from guide_opt.simulate.workloads import LengthDistribution

#: Trace columns used for token lengths (LLM-Pilot's per-request result files use these names).
TRACE_COLUMNS = ("n_input_tokens", "n_output_tokens")
#: LLM-Pilot's number of bins per parameter.
DEFAULT_BINS_PER_COLUMN = 64


def read_trace_csv(path: str | Path, columns: Sequence[str] = TRACE_COLUMNS, *, field: str = "trace") -> np.ndarray:
    """Read ``columns`` of a CSV trace as an ``(n, len(columns))`` int64 array.

    Other columns are ignored. Rows where any of the columns is below 1 (e.g. failed requests
    with no output) are dropped. Raises :class:`InputError` naming ``field`` when the file is
    missing, a column is absent, a value is not an integer, or no usable row remains.
    """
    from guide_opt.limits import MAX_TOKENS, read_text_file

    path = Path(path)
    fix = f"give a CSV file with a header row containing {', '.join(columns)}"
    try:
        path.stat()
    except OSError as exc:
        raise InputError(field, f"cannot read trace file '{path}' ({exc.strerror})", fix) from None
    handle = io.StringIO(read_text_file(path, field), newline="")  # UTF-8 text within the size limit, else InputError
    rows: list[list[int]] = []
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(field, f"trace '{path}' has no column {', '.join(missing)} (found: {', '.join(header) or 'no header'})", fix)
        for line, record in enumerate(reader, start=2):
            try:
                values = [int(float(record[c])) for c in columns]
                if max(values) > MAX_TOKENS:
                    raise ValueError("too large")
            except (TypeError, ValueError, OverflowError):  # OverflowError: "inf"
                raise InputError(field, f"trace '{path}' line {line}: non-numeric {', '.join(columns)} {[record.get(c) for c in columns]}",
                                 "fix or remove the row") from None
            if min(values) >= 1:
                rows.append(values)
    if not rows:
        raise InputError(field, f"trace '{path}' has no row with every one of {', '.join(columns)} >= 1", fix)
    return np.asarray(rows, dtype=np.int64)


def _column_bins(values: np.ndarray, max_bins: int, representative: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower edges, representative value per bin, bin index of each value) for one integer column."""
    distinct = np.unique(values)
    if distinct.size <= max_bins:  # one bin per distinct value: the value represents itself
        return distinct, distinct.astype(np.int64), np.searchsorted(distinct, values)
    # Upper-inclusive integer intervals (previous upper, upper] at the k/max_bins quantiles: about equal counts.
    uppers = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_bins + 1)[1:], method="inverted_cdf"))
    lowers = np.concatenate(([values.min()], uppers[:-1] + 1))
    index = np.searchsorted(uppers, values, side="left")
    if representative == "mean":
        sums = np.bincount(index, weights=values, minlength=lowers.size)
        counts = np.bincount(index, minlength=lowers.size)
        reps = np.where(counts > 0, sums / np.maximum(counts, 1), lowers)
    else:
        reps = (lowers + uppers) / 2.0
    return lowers, np.maximum(1, np.floor(reps + 0.5)).astype(np.int64), index


@dataclass(frozen=True, eq=False)
class JointBinnedLengths(LengthDistribution):
    """LLM-Pilot's joint binned generator over ``columns`` (first two: input and output tokens).

    columns: column names. lower_edges / values: per column, the lower edge and representative
    value (tokens) of each bin. bins: ``(k, len(columns))`` bin indices of the ``k`` non-empty
    joint bins. counts: trace requests in each joint bin. source_rows: rows fitted.
    """

    columns: tuple[str, ...]
    lower_edges: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    bins: np.ndarray
    counts: np.ndarray
    source_rows: int
    representative: str = "center"
    max_bins_per_column: int = DEFAULT_BINS_PER_COLUMN

    def __post_init__(self) -> None:
        cdf = np.cumsum(self.counts, dtype=float)
        object.__setattr__(self, "_cdf", cdf / cdf[-1])

    @classmethod
    def fit(cls, data: np.ndarray, *, columns: Sequence[str] = TRACE_COLUMNS, max_bins_per_column: int = DEFAULT_BINS_PER_COLUMN,
            representative: Literal["center", "mean"] = "center") -> "JointBinnedLengths":
        """Fit to ``data``, an ``(n, len(columns))`` array of positive integers (one row per request)."""
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != len(columns) or data.shape[0] == 0:
            raise ValueError(f"data must be a non-empty (n, {len(columns)}) array, got shape {data.shape}")
        if max_bins_per_column < 1:
            raise ValueError("max_bins_per_column must be at least 1")
        if representative not in ("center", "mean"):
            raise ValueError("representative must be 'center' or 'mean'")
        data = data.astype(np.int64)
        per_column = [_column_bins(data[:, d], max_bins_per_column, representative) for d in range(data.shape[1])]
        shape = tuple(lowers.size for lowers, _, _ in per_column)
        keys = np.ravel_multi_index(tuple(index for _, _, index in per_column), shape)
        unique_keys, counts = np.unique(keys, return_counts=True)
        bins = np.stack(np.unravel_index(unique_keys, shape), axis=1).astype(np.int64)
        return cls(columns=tuple(columns), lower_edges=tuple(l for l, _, _ in per_column), values=tuple(v for _, v, _ in per_column),
                   bins=bins, counts=counts.astype(np.int64), source_rows=int(data.shape[0]), representative=representative,
                   max_bins_per_column=max_bins_per_column)

    @classmethod
    def from_csv(cls, path: str | Path, *, max_bins_per_column: int = DEFAULT_BINS_PER_COLUMN, field: str = "trace",
                 representative: Literal["center", "mean"] = "center") -> "JointBinnedLengths":
        """Fit to the ``n_input_tokens,n_output_tokens`` columns of a CSV trace (see :func:`read_trace_csv`)."""
        generator = cls.fit(read_trace_csv(path, TRACE_COLUMNS, field=field), max_bins_per_column=max_bins_per_column,
                            representative=representative)
        object.__setattr__(generator, "_path", str(path))
        return generator

    def sample_rows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` requests as an ``(n, len(columns))`` int64 array."""
        chosen = np.searchsorted(self._cdf, rng.random(n), side="right")
        chosen = np.minimum(chosen, self.counts.size - 1)
        return np.stack([self.values[d][self.bins[chosen, d]] for d in range(len(self.columns))], axis=1)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (input_tokens, output_tokens) pairs from the joint bins."""
        rows = self.sample_rows(rng, n)
        return rows[:, 0].copy(), rows[:, 1].copy()

    def _column_mean(self, d: int) -> float:
        return float((self.values[d][self.bins[:, d]] * self.counts).sum() / self.counts.sum())

    @property
    def mean_input_tokens(self) -> float:
        """Expected input tokens under the fitted model."""
        return self._column_mean(0)

    @property
    def mean_output_tokens(self) -> float:
        """Expected output tokens under the fitted model."""
        return self._column_mean(1)

    @property
    def num_joint_bins(self) -> int:
        """Non-empty joint bins (the model's size)."""
        return int(self.counts.size)

    def spec(self) -> dict[str, Any]:
        """``{"trace": PATH, "trace_bins": ...}`` when read from a file, else a summary."""
        path = getattr(self, "_path", None)
        if path is not None:
            return {"trace": path, "trace_bins": self.max_bins_per_column}
        return {"joint_bins": {"columns": list(self.columns), "non_empty_bins": self.num_joint_bins, "source_rows": self.source_rows}}
