"""Three predictors of LLM-Pilot's per-pod user limit ``u_max`` for an LLM that was never measured.

Each predicts, for one (LLM, GPU profile), the median nTTFT (ms per input token) and median ITL
(ms) at every user level of :data:`~guide_opt.validation.llm_pilot.USER_LEVELS`; ``u_max`` and
the recommendation follow by LLM-Pilot's rule (:mod:`guide_opt.validation.llm_pilot`). All three
are trained on the *other* LLMs only (leave one LLM out).

- ``physics`` -- the serving simulator in closed loop (:func:`guide_opt.simulate.simulate` with
  ``u`` users) on the ``tgis`` engine profile (``hardware_db/frameworks/tgis.yaml``: continuous
  batching, whole-prompt prefill, the prefill token limit). LLMs without flash attention are
  served by TGIS with padded batches and a small batch limit (:data:`PADDED_MAX_BATCH`). The
  efficiency factors are chosen per GPU type from :data:`EFFICIENCY_GRID` to minimize the log
  error of the training LLMs' measured medians (ITL, and nTTFT with weight :data:`NTTFT_WEIGHT`).
- ``learned`` -- the paper's own method: a gradient-boosted regressor (scikit-learn's
  ``HistGradientBoostingRegressor``; the paper uses XGBoost) on the characterization data,
  features of the LLM and the GPU profile (``llm_features.csv``, ``gpu_features.csv``) and
  log2(users), one model per metric on the log scale. It trains on every other LLM's measured
  points, encoder-decoder ones included, as the paper does.
- ``hybrid`` -- the physics prediction times a learned residual: the regressor is trained on
  ``ln(measured / physics)`` with the physics prediction among its features.
- ``tgis`` -- TGIS's own batching played step by step (:mod:`guide_opt.validation.tgis`: add-on
  prefill passes pulled by TGIS's waiting rule, batch limit 256 or :data:`PADDED_MAX_BATCH`) on the
  ``tgis`` profile, fitted per GPU type on the other decoder-only LLMs (:func:`fit_tgis`: memory
  efficiency and step overhead from the one-user ITL, a prefill-pass host cost from the one-user
  TTFT, a host cost per running sequence per decode step from the loaded levels).
- ``tgis-hybrid`` -- the ``tgis`` prediction times a learned residual, as ``hybrid``.

The request lengths of the simulated users are the benchmark's workload, common to every LLM:
a log-normal per direction matching the mean and median prompt and output lengths of the
decoder-only rows (about 120 / 85 input and 19 / 17 output tokens). It carries no information
about any LLM's speed.

scikit-learn is imported lazily (only the ``learned`` and ``hybrid`` predictors need it).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Callable

import numpy as np

from guide_opt.catalog import Catalog
from guide_opt.perf import ServingConfig
from guide_opt.simulate import Workload, simulate
from guide_opt.simulate.workloads import HistogramLengths
from guide_opt.validation.datasets import LLM_PILOT_GPUS, llm_pilot_profile, read_csv_rows, resolve_id

#: The predictors, in the order reports list them.
PREDICTORS = ("physics", "learned", "hybrid", "tgis", "tgis-hybrid")
#: The predictor ``validate --llm-pilot`` uses unless told otherwise: the best S/O on the
#: benchmark, leave-one-LLM-out (benchmarks/RESULTS.md, section 1.5).
DEFAULT_PREDICTOR = "tgis"
#: Engine profile standing in for TGIS.
TGIS_FRAMEWORK = "tgis"
#: (compute efficiency, memory efficiency, step overhead ms) searched per GPU type for ``physics``.
EFFICIENCY_GRID: tuple[tuple[float, float, float], ...] = tuple(itertools.product((0.15, 0.3, 0.5), (0.45, 0.65, 0.85), (1.0, 5.0, 10.0)))
#: Grid point used for a GPU type no training LLM was measured on (the middle of the grid).
FALLBACK_GRID_INDEX = len(EFFICIENCY_GRID) // 2
#: Batch limit of LLMs TGIS serves without flash attention (padded batches): fmperf's TGIS
#: specification for mpt-7b under hf_transformers sets max_batch_size 12
#: (shared/data/llm_pilot/fmperf_model_specifications_tgis_all.yml).
PADDED_MAX_BATCH = 12
#: Weight of the nTTFT log error relative to the ITL one in the physics fit (ITL is the limit that binds in this data).
NTTFT_WEIGHT = 0.2
#: Point masses per direction of the log-normal request-length histogram.
LENGTH_BINS = 16
#: Simulated requests per level: at least this many, and at least :data:`ROUNDS_PER_USER` per user.
MIN_REQUESTS = 200
ROUNDS_PER_USER = 6
#: Seed of every simulated stream (the physics predictor is deterministic).
SIMULATION_SEED = 0
#: Gradient boosting settings (fixed, not tuned on the held-out LLM).
BOOSTING = {"max_iter": 300, "learning_rate": 0.05, "min_samples_leaf": 5, "random_state": 0}
if TYPE_CHECKING:  # imported lazily at run time: the TGIS batcher is only needed by the tgis predictors
    from guide_opt.validation.tgis import TgisSettings

_DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0}

#: user level -> (median nTTFT ms/token, median ITL ms); (inf, inf) where it does not fit.
Levels = dict[int, tuple[float, float]]


def lognormal_bins(mean: float, median: float, bins: int = LENGTH_BINS) -> tuple[tuple[int, float], ...]:
    """``bins`` equally weighted point masses at the mid-quantiles of the log-normal with this mean and median (tokens)."""
    sigma = math.sqrt(2.0 * math.log(max(mean / median, 1.0 + 1e-9)))
    mu = math.log(median)
    return tuple((max(1, round(math.exp(mu + sigma * NormalDist().inv_cdf((i + 0.5) / bins)))), 1.0) for i in range(bins))


def pilot_lengths(data_dir: Path, models: list[str]) -> HistogramLengths:
    """The benchmark's request lengths: log-normal input and output matching the rows of ``models`` (means and medians)."""
    rows = [r for r in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv") if r["model"] in models]
    stat = lambda key, f: f(float(r[key]) for r in rows)  # noqa: E731
    return HistogramLengths(input_bins=lognormal_bins(stat("mean_input_tokens", statistics.fmean), stat("median_input_tokens", statistics.median)),
                            output_bins=lognormal_bins(stat("mean_output_tokens", statistics.fmean), stat("median_output_tokens", statistics.median)))


def simulated_levels(config: ServingConfig, lengths: HistogramLengths, max_num_seqs: int, levels: tuple[int, ...]) -> Levels:
    """Median nTTFT (per request TTFT / its input tokens) and median ITL of a closed loop of ``u`` users, per level."""
    out: Levels = {}
    budget = max(config.framework.max_num_batched_tokens, max_num_seqs)
    for users in levels:
        r = simulate(config, Workload.closed_loop(lengths, users), max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                     num_requests=max(MIN_REQUESTS, ROUNDS_PER_USER * users), seed=SIMULATION_SEED)
        if not r.fits or r.completed_requests == 0:
            out[users] = (math.inf, math.inf)
            continue
        rec = r.requests
        done = np.isfinite(rec.first_token_s)
        nttft_ms = float(np.median(rec.ttft_s[done] / rec.input_tokens[done])) * 1e3
        out[users] = (nttft_ms, r.itl_s.p50_s * 1e3)
    return out


@dataclass
class PhysicsTable:
    """Simulated levels per (model, profile, grid index), computed on first use and kept.

    ``llm_ids`` maps LLM-Pilot model names to catalog ids; ``flash`` says which were served with
    flash attention. Shared by every fold: a fold only chooses grid points, it never changes a
    simulation.
    """

    catalog: Catalog
    lengths: HistogramLengths
    llm_ids: dict[str, str]
    flash: dict[str, bool]
    levels: tuple[int, ...]
    cache: dict[tuple[str, str, int], Levels | None] = field(default_factory=dict)

    def get(self, model: str, profile: str, grid_index: int) -> Levels | None:
        """The simulated levels, or None when the profile cannot run the LLM (unsupported, unknown GPU)."""
        key = (model, profile, grid_index)
        if key not in self.cache:
            self.cache[key] = self._simulate(model, profile, grid_index)
        return self.cache[key]

    def _simulate(self, model: str, profile: str, grid_index: int) -> Levels | None:
        count, gpu_type = llm_pilot_profile(profile)
        gpu_id = resolve_id(LLM_PILOT_GPUS.get(gpu_type, ()), self.catalog.gpus)
        if gpu_id is None or model not in self.llm_ids:
            return None
        flash = self.flash.get(model, True)
        framework = self.catalog.framework(TGIS_FRAMEWORK)
        compute, memory, overhead = EFFICIENCY_GRID[grid_index]
        efficiency = framework.efficiency.model_copy(update={"compute_efficiency": compute, "memory_efficiency": memory,
                                                              "step_overhead_ms": overhead})
        config = ServingConfig(llm=self.catalog.llms[self.llm_ids[model]], gpu=self.catalog.gpus[gpu_id], framework=framework,
                               quantization=self.catalog.quantization("bf16"), tp=count, batch=1,
                               input_tokens=round(self.lengths.mean_input_tokens), output_tokens=round(self.lengths.mean_output_tokens),
                               flash_attention=flash, efficiency=efficiency)
        if config.unsupported_reason():
            return None
        seqs = framework.max_num_seqs if flash else PADDED_MAX_BATCH
        return simulated_levels(config, self.lengths, seqs, self.levels)


def physics_fit_error(table: PhysicsTable, points: dict, model: str, profile: str, grid_index: int) -> float:
    """Summed |log error| of one (model, profile) at one grid point over its measured levels (ITL + weighted nTTFT)."""
    return levels_error(table.get(model, profile, grid_index), points[model][profile])


def levels_error(levels: Levels | None, measured: Levels) -> float:
    """Summed |log error| of predicted ``levels`` against ``measured`` ones (ITL + :data:`NTTFT_WEIGHT` x nTTFT).

    A level predicted not to fit where it was measured running adds 10; None (unsupported) adds nothing.
    """
    if levels is None:
        return 0.0
    error = 0.0
    for users, (nttft, itl) in levels.items():
        point = measured.get(users)
        if point is None:
            continue
        if not (math.isfinite(itl) and math.isfinite(nttft)):
            error += 10.0
            continue
        error += abs(math.log(itl / point[1])) + NTTFT_WEIGHT * abs(math.log(nttft / max(point[0], 1e-6)))
    return error


def fit_grid(table: PhysicsTable, points: dict, train_models: list[str]) -> dict[str, int]:
    """GPU type -> the grid index with the smallest summed error over ``train_models``' measured profiles of that type."""
    errors: dict[str, np.ndarray] = {}
    for model in train_models:
        for profile in points.get(model, {}):
            gpu_type = llm_pilot_profile(profile)[1]
            row = errors.setdefault(gpu_type, np.zeros(len(EFFICIENCY_GRID)))
            for g in range(len(EFFICIENCY_GRID)):
                row[g] += physics_fit_error(table, points, model, profile, g)
    return {gpu_type: int(np.argmin(row)) for gpu_type, row in errors.items()}


def physics_levels(table: PhysicsTable, model: str, profile: str, grid: dict[str, int]) -> Levels | None:
    """The physics prediction of one (model, profile) with the per-GPU-type grid choice ``grid``."""
    return table.get(model, profile, grid.get(llm_pilot_profile(profile)[1], FALLBACK_GRID_INDEX))


# ---- the learned predictors ---------------------------------------------------------------------
def load_features(data_dir: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """LLM-Pilot's feature tables: model -> llm_features.csv row, profile -> gpu_features.csv row."""
    llms = {r["model"]: r for r in read_csv_rows(data_dir / "llm_pilot" / "llm_features.csv")}
    gpus = {r["gpu"]: r for r in read_csv_rows(data_dir / "llm_pilot" / "gpu_features.csv")}
    return llms, gpus


def feature_vector(llm: dict[str, str], gpu: dict[str, str], users: int) -> list[float]:
    """Features of one (LLM, profile, users) point: LLM size and shape, GPU memory / bandwidth / compute, load."""
    params_b = float(llm["model_n_parameters"])
    dtype = _DTYPE_BYTES.get(llm["model_torch_dtype"], 2.0)
    gpus = float(gpu["gpu_n_gpus"])
    memory_gb = float(gpu["gpu_memory_capacity_gb_total"])
    return [params_b, float(llm["model_n_heads"]), float(llm["model_n_layers"]), float(llm["model_is_flash_attention"].upper() == "TRUE"),
            float(llm["model_is_encoder_decoder"].upper() == "TRUE"), dtype, float(llm["model_vocabulary_size"]),
            float(gpu["gpu_memory_bandwidth"]) * gpus, float(gpu["gpu_tflops_tc_fp16"]), memory_gb, gpus,
            params_b * dtype / memory_gb, math.log2(users)]


def _regressor():
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ModuleNotFoundError:  # pragma: no cover - a dependency of the package
        from guide_opt.errors import InputError

        raise InputError("--predictor", "the learned predictors need scikit-learn", "pip install scikit-learn") from None
    return HistGradientBoostingRegressor(**BOOSTING)


@dataclass(frozen=True)
class LearnedModel:
    """Two fitted regressors (log nTTFT, log ITL, or their log residuals over physics) and how to build their features."""

    regressors: tuple
    features: Callable[[str, str, int], list[float] | None]
    base: Callable[[str, str, int], tuple[float, float]] | None = None

    def levels(self, model: str, profile: str, levels: tuple[int, ...]) -> Levels:
        """Predicted levels of one (model, profile); a level without features (physics: does not fit) is (inf, inf)."""
        out: Levels = {}
        for users in levels:
            x = self.features(model, profile, users)
            if x is None:
                out[users] = (math.inf, math.inf)
                continue
            logs = [float(r.predict(np.array([x]))[0]) for r in self.regressors]
            base = self.base(model, profile, users) if self.base else (1.0, 1.0)
            out[users] = (base[0] * math.exp(logs[0]), base[1] * math.exp(logs[1]))
        return out


def train_learned(points: dict, llm_features: dict, gpu_features: dict, train_models: list[str], *,
                  physics: Callable[[str, str, int], tuple[float, float] | None] | None = None) -> LearnedModel:
    """Fit the regressors on ``train_models``' measured points; with ``physics``, fit the log residual over it (hybrid)."""

    def features(model: str, profile: str, users: int) -> list[float] | None:
        if model not in llm_features or profile not in gpu_features:
            return None
        x = feature_vector(llm_features[model], gpu_features[profile], users)
        if physics is None:
            return x
        base = physics(model, profile, users)
        if base is None or not all(math.isfinite(v) and v > 0 for v in base):
            return None
        return x + [math.log(base[0]), math.log(base[1])]

    X, targets = [], ([], [])
    for model in train_models:
        for profile, levels in points.get(model, {}).items():
            for users, measured in levels.items():
                x = features(model, profile, users)
                if x is None or not all(math.isfinite(v) and v > 0 for v in measured):
                    continue
                base = physics(model, profile, users) if physics else (1.0, 1.0)
                X.append(x)
                targets[0].append(math.log(measured[0] / base[0]))
                targets[1].append(math.log(measured[1] / base[1]))
    regressors = tuple(_regressor().fit(np.array(X), np.array(y)) for y in targets)
    return LearnedModel(regressors, features, physics)


# ---- the TGIS batcher predictor -------------------------------------------------------------------
#: Grids of the per-GPU-type fit of the ``tgis`` predictor (stage 1: the one-user levels).
TGIS_MEMORY_EFFICIENCIES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TGIS_STEP_OVERHEADS_MS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0)
#: Stage 2: host time per running sequence per decode step (ms).
TGIS_PER_SEQUENCE_MS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8)
#: Measured requests per simulated level of the TGIS batcher: at least this many, and this many per user.
TGIS_MIN_REQUESTS = 80
TGIS_REQUESTS_PER_USER = 3


@dataclass(frozen=True)
class TgisFit:
    """Fitted TGIS parameters of one GPU type: efficiencies of the ``tgis`` profile and host costs (ms)."""

    memory_efficiency: float
    step_overhead_ms: float
    prefill_overhead_ms: float
    per_sequence_overhead_ms: float


@dataclass
class TgisTable:
    """Configurations and simulated TGIS levels per (model, profile, fit), computed on first use and kept."""

    catalog: Catalog
    lengths: HistogramLengths
    llm_ids: dict[str, str]
    flash: dict[str, bool]
    levels: tuple[int, ...]
    cache: dict[tuple, tuple[float, float]] = field(default_factory=dict)

    def config(self, model: str, profile: str, memory_efficiency: float | None = None, step_overhead_ms: float | None = None) -> ServingConfig | None:
        """The ``tgis`` configuration of (model, profile) with these factors (None: the profile's defaults); None when unsupported."""
        count, gpu_type = llm_pilot_profile(profile)
        gpu_id = resolve_id(LLM_PILOT_GPUS.get(gpu_type, ()), self.catalog.gpus)
        if gpu_id is None or model not in self.llm_ids:
            return None
        framework = self.catalog.framework(TGIS_FRAMEWORK)
        update = {k: v for k, v in (("memory_efficiency", memory_efficiency), ("step_overhead_ms", step_overhead_ms)) if v is not None}
        config = ServingConfig(llm=self.catalog.llms[self.llm_ids[model]], gpu=self.catalog.gpus[gpu_id], framework=framework,
                               quantization=self.catalog.quantization("bf16"), tp=count, batch=1,
                               input_tokens=round(self.lengths.mean_input_tokens), output_tokens=round(self.lengths.mean_output_tokens),
                               flash_attention=self.flash.get(model, True), efficiency=framework.efficiency.model_copy(update=update))
        return None if config.unsupported_reason() else config

    def settings(self, model: str, fit: TgisFit | None) -> TgisSettings:
        """TGIS's batching of ``model`` (flash attention: the engine's batch limit; padded: :data:`PADDED_MAX_BATCH`) with ``fit``'s host costs."""
        from guide_opt.validation.tgis import TgisSettings

        flash = self.flash.get(model, True)
        seqs = self.catalog.framework(TGIS_FRAMEWORK).max_num_seqs if flash else PADDED_MAX_BATCH
        if fit is None:
            return TgisSettings(seqs, padded=not flash)
        return TgisSettings(seqs, padded=not flash, per_sequence_overhead_ms=fit.per_sequence_overhead_ms, prefill_overhead_ms=fit.prefill_overhead_ms)

    def get(self, model: str, profile: str, fit: TgisFit | None, levels: tuple[int, ...] | None = None) -> Levels | None:
        """Simulated (nTTFT, ITL) per level of (model, profile) under ``fit`` (None: the profile's defaults, no host costs)."""
        from guide_opt.validation.tgis import tgis_closed_loop

        levels = levels or self.levels
        config = None
        out: Levels = {}
        for users in levels:
            key = (model, profile, fit, users)
            if key not in self.cache:
                if config is None:
                    config = self.config(model, profile, *((fit.memory_efficiency, fit.step_overhead_ms) if fit else ()))
                    if config is None:
                        return None
                self.cache[key] = tgis_closed_loop(config, users, self.lengths, self.settings(model, fit), seed=SIMULATION_SEED,
                                                   num_requests=max(TGIS_MIN_REQUESTS, TGIS_REQUESTS_PER_USER * users)).pilot_pair
            out[users] = self.cache[key]
        return out


def _one_user_times(table: TgisTable, model: str, profile: str, memory: float, overhead: float) -> tuple[float, float] | None:
    """(prefill pass of the mean prompt, decode step of one sequence) in ms, or None when unsupported."""
    from guide_opt.perf.step import StepShape, step_time

    config = table.config(model, profile, memory, overhead)
    if config is None:
        return None
    prompt = config.input_tokens
    prefill = step_time(config, StepShape.prefill_chunk(1, prompt), pipeline_fill=True).time_s
    decode = step_time(config, StepShape.decode(1, prompt + config.output_tokens / 2)).time_s
    return prefill * 1e3, decode * 1e3


def fit_tgis(table: TgisTable, points: dict, one_user_ttft_ms: dict[tuple[str, str], float], train_models: list[str]) -> dict[str, TgisFit]:
    """GPU type -> :class:`TgisFit` from ``train_models``' measured medians only (never the held-out LLM's).

    Stage 1 (one user, no queue): memory efficiency and step overhead minimize the summed |log
    error| of the one-user ITL (one decode step) over the grids; the prefill overhead is the
    median of (measured one-user median TTFT, ``one_user_ttft_ms[(model, profile)]``, - the
    predicted prefill pass), at least 0. Stage 2: the
    per-sequence host time minimizes the summed |log error| of the simulated ITL and nTTFT
    (weight :data:`NTTFT_WEIGHT`) over the levels with more than one user.
    """
    by_type: dict[str, list[tuple[str, str]]] = {}
    for model in train_models:
        for profile in points.get(model, {}):
            by_type.setdefault(llm_pilot_profile(profile)[1], []).append((model, profile))
    fits = {}
    for gpu_type, pairs in by_type.items():
        ones = [(m, p, points[m][p][1]) for m, p in pairs if 1 in points[m][p]]
        best, best_error = (0.8, 1.0), math.inf
        for memory, overhead in itertools.product(TGIS_MEMORY_EFFICIENCIES, TGIS_STEP_OVERHEADS_MS):
            error = 0.0
            for m, p, (_nttft, itl) in ones:
                times = _one_user_times(table, m, p, memory, overhead)
                if times is not None:
                    error += abs(math.log(times[1] / itl))
            if error < best_error:
                best, best_error = (memory, overhead), error
        gaps = []
        for m, p, _ in ones:
            times = _one_user_times(table, m, p, *best)
            if times is not None and (m, p) in one_user_ttft_ms:
                gaps.append(one_user_ttft_ms[(m, p)] - times[0])
        prefill_overhead = max(0.0, round(statistics.median(gaps), 1)) if gaps else 0.0
        loaded = tuple(u for u in table.levels if u > 1)
        errors = []
        for per_seq in TGIS_PER_SEQUENCE_MS:
            fit = TgisFit(best[0], best[1], prefill_overhead, per_seq)
            errors.append(sum(levels_error(table.get(m, p, fit, loaded), points[m][p]) for m, p in pairs))
        fits[gpu_type] = TgisFit(best[0], best[1], prefill_overhead, TGIS_PER_SEQUENCE_MS[int(np.argmin(errors))])
    return fits
