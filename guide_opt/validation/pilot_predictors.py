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
- ``tgis-kv`` (the default) -- the same batcher, fitted per GPU type with what the measured levels
  show ``tgis`` lacks (:func:`fit_tgis_kv`): a step overhead per pod size (TGIS's shard processes
  cost more per step with more GPUs), a host cost per running sequence per pod size and one per
  GiB of KV cache held on a GPU (the ITL of an LLM with a large KV cache grows faster with load),
  fitted on the training levels where no more than 1% of requests failed, and an add-on cost of
  padded deployments fitted on the other padded LLMs' nTTFT.

The request lengths of the simulated users are the benchmark's workload: a log-normal per
direction matching the mean and median prompt and output lengths of the fold's *training* LLMs'
rows (about 120 / 85 input and 19 / 17 output tokens). Every fold, physics and hybrid as well
as the TGIS predictors, builds its own table from them
(:func:`guide_opt.validation.llm_pilot.predictor_recommendations`), so no measured row of the
held-out LLM, not even its request lengths, enters its prediction: a user planning a new LLM
has none.

scikit-learn is imported lazily (only the ``learned`` and ``hybrid`` predictors need it).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Callable

import numpy as np

from guide_opt.catalog import Catalog
from guide_opt.frameworks import EfficiencyFactors, FrameworkProfile
from guide_opt.perf import ServingConfig
from guide_opt.simulate import Workload, simulate
from guide_opt.simulate.workloads import HistogramLengths
from guide_opt.validation.datasets import LLM_PILOT_GPUS, llm_pilot_profile, read_csv_rows, resolve_id

#: The predictors, in the order reports list them.
PREDICTORS = ("physics", "learned", "hybrid", "tgis", "tgis-hybrid", "tgis-kv")
#: Each predictor in words, as reports and ``validate --llm-pilot`` label it.
PREDICTOR_LABELS = {"physics": "guide-opt physics: TGIS profile, closed-loop simulation, efficiencies fitted per GPU type",
                    "learned": "learned baseline: gradient boosting on the characterization (the paper's method)",
                    "hybrid": "hybrid: physics x learned residual",
                    "tgis": "guide-opt TGIS batcher: TGIS's add-on rule step by step, host costs fitted per GPU type",
                    "tgis-hybrid": "TGIS batcher x learned residual",
                    "tgis-kv": "guide-opt TGIS batcher, costs per pod size, per sequence and per GiB of KV cache"}
#: The predictor ``validate --llm-pilot`` uses unless told otherwise: the best S/O on the
#: benchmark, leave-one-LLM-out (benchmarks/RESULTS.md, section 1.5: 100% success, 37.5% overspend,
#: S/O 0.769), the most accurate held-out ITL, and no learned part (no scikit-learn needed).
DEFAULT_PREDICTOR = "tgis-kv"
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
#: Compute efficiency the TGIS recommendation predictors start from: the kernels as measured. Their per-GPU-type
#: fits (memory efficiency, step overhead, host costs) were made on it; the ``tgis`` profile's own efficiencies
#: (fitted for ``validate --serving tgis``, :mod:`guide_opt.validation.tgis_host`) are not theirs.
PREDICTOR_COMPUTE_EFFICIENCY = 1.0


def predictor_efficiency(framework: FrameworkProfile, architecture: str, **update: float) -> EfficiencyFactors:
    """The factors a TGIS recommendation predictor plays ``framework`` with on ``architecture``: the profile's, at
    :data:`PREDICTOR_COMPUTE_EFFICIENCY`, with ``update`` on top."""
    return framework.efficiency_on(architecture).model_copy(update={"compute_efficiency": PREDICTOR_COMPUTE_EFFICIENCY, **update})


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


def lognormal_lengths(mean_input: float, median_input: float, mean_output: float, median_output: float) -> HistogramLengths:
    """Independent log-normal input and output lengths with these means and medians (tokens; :func:`lognormal_bins`)."""
    return HistogramLengths(input_bins=lognormal_bins(mean_input, median_input), output_bins=lognormal_bins(mean_output, median_output))


def pilot_lengths(data_dir: Path, models: list[str]) -> HistogramLengths:
    """The benchmark's request lengths: log-normal input and output matching the rows of ``models`` (means and medians)."""
    rows = [r for r in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv") if r["model"] in models]
    stat = lambda key, f: f(float(r[key]) for r in rows)  # noqa: E731
    return lognormal_lengths(stat("mean_input_tokens", statistics.fmean), stat("median_input_tokens", statistics.median),
                             stat("mean_output_tokens", statistics.fmean), stat("median_output_tokens", statistics.median))


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
    flash attention. One per fold (its request ``lengths`` come from the fold's training LLMs),
    shared by the predictors built on it (physics, hybrid): a fit only chooses grid points, it
    never changes a simulation.
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


# ---- the TGIS batcher predictors ------------------------------------------------------------------
#: Grids of stage 1 of the TGIS fits (the one-user ITL): memory efficiency per GPU type and step overhead.
TGIS_MEMORY_EFFICIENCIES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: ``tgis``: one step overhead per GPU type.
TGIS_STEP_OVERHEADS_MS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0)
#: ``tgis-kv``: one step overhead per pod size (TGIS's shard processes add a per-step cost that
#: grows with the TP degree: about 2-3 ms at one GPU and 6-10 ms at four in LLM-Pilot's data).
TGIS_KV_STEP_OVERHEADS_MS = tuple(0.5 * i for i in range(29))
#: ``tgis`` stage 2: host time per running sequence per decode step (ms).
TGIS_PER_SEQUENCE_MS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8)
#: ``tgis-kv`` stage 2 uses the loaded levels with more than one user, at most this failed
#: fraction of requests (a level where requests fail for lack of memory reports medians of the
#: survivors only, which no model of a running server reproduces) ...
TGIS_FIT_MAX_FAILED_FRACTION = 0.01
#: ... and a measured median ITL at most this many times the ITL limit (the region where u_max is decided).
TGIS_FIT_MAX_ITL_OVER_LIMIT = 1.5
#: ``tgis-kv`` stage 3: add-on cost of padded deployments searched (ms per add-on prefill pass).
TGIS_PADDED_ADDON_MS = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0)
#: Rounds of the linearized least-squares fit of ``tgis-kv`` stage 2 (each re-simulates the training levels).
TGIS_FIT_ROUNDS = 3
#: Measured requests per simulated level of the TGIS batcher: at least this many, and this many per user.
TGIS_MIN_REQUESTS = 80
TGIS_REQUESTS_PER_USER = 3


@dataclass(frozen=True)
class TgisFit:
    """Fitted TGIS parameters of one GPU profile: efficiencies of the ``tgis`` profile and host costs (ms)."""

    memory_efficiency: float
    step_overhead_ms: float
    prefill_overhead_ms: float
    per_sequence_overhead_ms: float
    kv_ms_per_gib: float = 0.0
    padded_addon_overhead_ms: float = 0.0


def _nearest(by_gpus: tuple[tuple[int, float], ...], count: int) -> float:
    """The value of the pod size nearest ``count`` GPUs (ties: the larger pod) in ``(GPUs, value)`` pairs."""
    return min(by_gpus, key=lambda item: (abs(item[0] - count), -item[0]))[1]


@dataclass(frozen=True)
class TgisGpuFit:
    """Fitted TGIS parameters of one GPU type; step overhead and per-sequence cost as (GPUs per pod, ms) pairs.

    A pod size no training LLM was measured on takes the nearest measured one's values (ties: the larger pod).
    """

    memory_efficiency: float
    step_overhead_ms: tuple[tuple[int, float], ...]
    prefill_overhead_ms: float
    per_sequence_overhead_ms: tuple[tuple[int, float], ...]
    kv_ms_per_gib: float = 0.0
    padded_addon_overhead_ms: float = 0.0

    def for_gpus(self, count: int) -> TgisFit:
        """The parameters of a pod of ``count`` GPUs."""
        per_seq = _nearest(self.per_sequence_overhead_ms, count) if self.per_sequence_overhead_ms else 0.0
        return TgisFit(self.memory_efficiency, _nearest(self.step_overhead_ms, count), self.prefill_overhead_ms, per_seq,
                       self.kv_ms_per_gib, self.padded_addon_overhead_ms)


def profile_fit(fits: dict[str, TgisGpuFit], profile: str) -> TgisFit | None:
    """The :class:`TgisFit` of ``profile`` (e.g. ``"4 x T4"``) from per-GPU-type fits; None when its GPU type was not fitted."""
    count, gpu_type = llm_pilot_profile(profile)
    found = fits.get(gpu_type)
    return None if found is None else found.for_gpus(count)


@dataclass
class TgisTable:
    """Configurations and simulated TGIS levels per (model, profile, fit), computed on first use and kept."""

    catalog: Catalog
    lengths: HistogramLengths
    llm_ids: dict[str, str]
    flash: dict[str, bool]
    levels: tuple[int, ...]
    cache: dict[tuple, object] = field(default_factory=dict)

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
                               flash_attention=self.flash.get(model, True),
                               efficiency=predictor_efficiency(framework, self.catalog.gpus[gpu_id].architecture, **update))
        return None if config.unsupported_reason() else config

    def settings(self, model: str, fit: TgisFit | None) -> TgisSettings:
        """TGIS's batching of ``model`` (flash attention: the engine's batch limit; padded: :data:`PADDED_MAX_BATCH`) with ``fit``'s host costs."""
        from guide_opt.validation.tgis import TgisSettings

        flash = self.flash.get(model, True)
        seqs = self.catalog.framework(TGIS_FRAMEWORK).max_num_seqs if flash else PADDED_MAX_BATCH
        if fit is None:
            return TgisSettings(seqs, padded=not flash)
        return TgisSettings(seqs, padded=not flash, per_sequence_overhead_ms=fit.per_sequence_overhead_ms,
                            prefill_overhead_ms=fit.prefill_overhead_ms, kv_ms_per_gib=fit.kv_ms_per_gib,
                            addon_overhead_ms=0.0 if flash else fit.padded_addon_overhead_ms)

    def simulated(self, model: str, profile: str, fit: TgisFit | None, levels: tuple[int, ...] | None = None) -> dict | None:
        """Simulated :class:`~guide_opt.validation.tgis.TgisLevel` per level of (model, profile) under ``fit``; None when unsupported."""
        from guide_opt.validation.tgis import tgis_closed_loop

        levels = levels or self.levels
        config = None
        out = {}
        for users in levels:
            key = (model, profile, fit, users)
            if key not in self.cache:
                if config is None:
                    config = self.config(model, profile, *((fit.memory_efficiency, fit.step_overhead_ms) if fit else ()))
                    if config is None:
                        return None
                self.cache[key] = tgis_closed_loop(config, users, self.lengths, self.settings(model, fit), seed=SIMULATION_SEED,
                                                   num_requests=max(TGIS_MIN_REQUESTS, TGIS_REQUESTS_PER_USER * users))
            out[users] = self.cache[key]
        return out

    def get(self, model: str, profile: str, fit: TgisFit | None, levels: tuple[int, ...] | None = None) -> Levels | None:
        """Simulated (nTTFT, ITL) per level of (model, profile) under ``fit`` (None: the profile's defaults, no host costs)."""
        found = self.simulated(model, profile, fit, levels)
        return None if found is None else {users: level.pilot_pair for users, level in found.items()}


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


def _pairs_by_type(points: dict, train_models: list[str]) -> dict[str, list[tuple[str, str]]]:
    """GPU type -> the (model, profile) pairs of ``train_models`` measured on it."""
    by_type: dict[str, list[tuple[str, str]]] = {}
    for model in train_models:
        for profile in points.get(model, {}):
            by_type.setdefault(llm_pilot_profile(profile)[1], []).append((model, profile))
    return by_type


def _prefill_overhead_ms(table: TgisTable, one_user_ttft_ms: dict[tuple[str, str], float], pairs: list[tuple[str, str]],
                         memory: float, overhead_of: Callable[[str], float]) -> float:
    """Median of (measured one-user TTFT - predicted prefill pass) over ``pairs``, at least 0, rounded to 0.1 ms."""
    gaps = []
    for m, p in pairs:
        times = _one_user_times(table, m, p, memory, overhead_of(p))
        if times is not None and (m, p) in one_user_ttft_ms:
            gaps.append(one_user_ttft_ms[(m, p)] - times[0])
    return max(0.0, round(statistics.median(gaps), 1)) if gaps else 0.0


def fit_tgis(table: TgisTable, points: dict, one_user_ttft_ms: dict[tuple[str, str], float], train_models: list[str]) -> dict[str, TgisGpuFit]:
    """The ``tgis`` fit: GPU type -> :class:`TgisGpuFit` from ``train_models``' measured medians only (never the held-out LLM's).

    Stage 1 (one user, no queue): memory efficiency and one step overhead per GPU type minimize
    the summed |log error| of the one-user ITL (one decode step) over the grids; the prefill
    overhead is the median of (measured one-user median TTFT, ``one_user_ttft_ms[(model,
    profile)]``, - the predicted prefill pass), at least 0. Stage 2: one per-sequence host time
    per GPU type minimizes the summed |log error| of the simulated ITL and nTTFT (weight
    :data:`NTTFT_WEIGHT`) over the levels with more than one user.
    """
    fits = {}
    for gpu_type, pairs in _pairs_by_type(points, train_models).items():
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
        prefill_overhead = _prefill_overhead_ms(table, one_user_ttft_ms, [(m, p) for m, p, _ in ones], best[0], lambda _p: best[1])
        loaded = tuple(u for u in table.levels if u > 1)
        errors = []
        for per_seq in TGIS_PER_SEQUENCE_MS:
            fit = TgisFit(best[0], best[1], prefill_overhead, per_seq)
            errors.append(sum(levels_error(table.get(m, p, fit, loaded), points[m][p]) for m, p in pairs))
        per_seq = TGIS_PER_SEQUENCE_MS[int(np.argmin(errors))]
        fits[gpu_type] = TgisGpuFit(best[0], ((1, best[1]),), prefill_overhead, ((1, per_seq),))
    return fits


def _fit_one_user(table: TgisTable, points: dict, pairs: list[tuple[str, str]]) -> tuple[float, dict[int, float]]:
    """``tgis-kv`` stage 1: (memory efficiency, pod size -> step overhead ms) minimizing the summed |log error| of the one-user ITL.

    The step overhead adds to the decode step (no pipeline parallelism here), so for each memory
    efficiency the best overhead of each pod size is found on the grid from the zero-overhead times.
    """
    best, best_error = (TGIS_MEMORY_EFFICIENCIES[-1], {}), math.inf
    for memory in TGIS_MEMORY_EFFICIENCIES:
        by_gpus: dict[int, list[tuple[float, float]]] = {}
        for m, p in pairs:
            if 1 not in points[m][p]:
                continue
            times = _one_user_times(table, m, p, memory, 0.0)
            if times is not None:
                by_gpus.setdefault(llm_pilot_profile(p)[0], []).append((times[1], points[m][p][1][1]))
        error, overheads = 0.0, {}
        for gpus, rows in by_gpus.items():
            errors = [sum(abs(math.log((step + o) / itl)) for step, itl in rows) for o in TGIS_KV_STEP_OVERHEADS_MS]
            overheads[gpus] = TGIS_KV_STEP_OVERHEADS_MS[int(np.argmin(errors))]
            error += min(errors)
        if overheads and error < best_error:
            best, best_error = (memory, overheads), error
    return best


def _fit_loaded(table: TgisTable, points: dict, usable: Callable[[str, str, int], bool], pairs: list[tuple[str, str]],
                fit_of: Callable[[str, dict[int, float], float], TgisFit]) -> tuple[dict[int, float], float]:
    """``tgis-kv`` stage 2: (pod size -> ms per sequence, ms per GiB of KV cache) per decode step.

    Least squares on the relative error of the median ITL of the usable levels of the pairs
    served with flash attention (the batch limit of padded deployments is not known for every
    one: fmperf's file holds two specifications of mpt-7b-instruct2, batch 12 and 64). The median
    ITL moves with the two costs by the batch and the KV cache of its decode steps
    (:attr:`~guide_opt.validation.tgis.TgisLevel.itl_batch`, ``itl_kv_gib``); each round
    simulates the levels at the current costs, linearizes there and solves the non-negative
    least squares; :data:`TGIS_FIT_ROUNDS` rounds.
    """
    from scipy.optimize import nnls

    sizes = sorted({llm_pilot_profile(p)[0] for m, p in pairs if table.flash.get(m, True)})
    per_seq, per_gib = {g: 0.0 for g in sizes}, 0.0
    for _ in range(TGIS_FIT_ROUNDS):
        rows, targets = [], []
        for m, p in pairs:
            if not table.flash.get(m, True):
                continue
            gpus = llm_pilot_profile(p)[0]
            levels = tuple(u for u in table.levels if u > 1 and u in points[m][p] and usable(m, p, u))
            found = table.simulated(m, p, fit_of(p, per_seq, per_gib), levels) if levels else None
            for users, level in (found or {}).items():
                measured = points[m][p][users][1]
                if not (level.fits and math.isfinite(level.median_itl_ms)):
                    continue
                rows.append([level.itl_batch / measured if size == gpus else 0.0 for size in sizes] + [level.itl_kv_gib / measured])
                targets.append((measured - level.median_itl_ms + per_seq[gpus] * level.itl_batch + per_gib * level.itl_kv_gib) / measured)
        if not rows:
            break
        solution, _ = nnls(np.array(rows), np.array(targets))
        per_seq = {g: round(float(v), 3) for g, v in zip(sizes, solution[:-1])}
        per_gib = round(float(solution[-1]), 2)
    return per_seq, per_gib


def fit_tgis_kv(table: TgisTable, points: dict, one_user_ttft_ms: dict[tuple[str, str], float], train_models: list[str],
                failed_fraction: dict[tuple[str, str, int], float] | None = None, *, itl_limit_ms: float) -> dict[str, TgisGpuFit]:
    """The ``tgis-kv`` fit: GPU type -> :class:`TgisGpuFit` from ``train_models``' measured medians only.

    Stage 1 (:func:`_fit_one_user`): the memory efficiency of the GPU type and a step overhead
    per pod size minimize the summed |log error| of the one-user ITL; the prefill overhead as in
    :func:`fit_tgis`. Stage 2 (:func:`_fit_loaded`): a host time per running sequence per pod
    size and one per GiB of KV cache on one GPU, on the loaded levels whose
    ``failed_fraction[(model, profile, users)]`` is at most :data:`TGIS_FIT_MAX_FAILED_FRACTION`
    (missing: 0) and whose median ITL is at most :data:`TGIS_FIT_MAX_ITL_OVER_LIMIT` times the
    benchmark's ITL limit ``itl_limit_ms``.
    """
    failed = failed_fraction or {}

    def usable(model: str, profile: str, users: int) -> bool:
        return (failed.get((model, profile, users), 0.0) <= TGIS_FIT_MAX_FAILED_FRACTION
                and points[model][profile][users][1] <= TGIS_FIT_MAX_ITL_OVER_LIMIT * itl_limit_ms)

    fits = {}
    for gpu_type, pairs in _pairs_by_type(points, train_models).items():
        memory, overheads = _fit_one_user(table, points, pairs)
        if not overheads:
            continue
        prefill = _prefill_overhead_ms(table, one_user_ttft_ms, [(m, p) for m, p in pairs if 1 in points[m][p]], memory,
                                       lambda p, o=overheads: o[llm_pilot_profile(p)[0]])
        stage1 = TgisGpuFit(memory, tuple(sorted(overheads.items())), prefill, ())

        def fit_of(profile: str, per_seq: dict[int, float], per_gib: float, stage1=stage1) -> TgisFit:
            return replace(stage1, per_sequence_overhead_ms=tuple(sorted(per_seq.items())), kv_ms_per_gib=per_gib).for_gpus(
                llm_pilot_profile(profile)[0])

        per_seq, per_gib = _fit_loaded(table, points, usable, pairs, fit_of)
        fits[gpu_type] = replace(stage1, per_sequence_overhead_ms=tuple(sorted(per_seq.items())), kv_ms_per_gib=per_gib)
    padded = [(m, p) for m in train_models if not table.flash.get(m, True) for p in points.get(m, {})
              if llm_pilot_profile(p)[1] in fits]
    addon = _fit_padded_addon(table, points, lambda m, p, u: failed.get((m, p, u), 0.0) <= TGIS_FIT_MAX_FAILED_FRACTION, padded, fits)
    return {gpu_type: replace(fit, padded_addon_overhead_ms=addon) for gpu_type, fit in fits.items()}


def _fit_padded_addon(table: TgisTable, points: dict, usable: Callable[[str, str, int], bool], pairs: list[tuple[str, str]],
                      fits: dict[str, TgisGpuFit]) -> float:
    """``tgis-kv`` stage 3: the add-on cost of padded deployments (ms per add-on prefill pass), one for every GPU type.

    TGIS merges an add-on batch into a running padded batch by re-padding it (``concatenate`` of
    its non-flash batches), a cost a lone request's TTFT does not show; under load it paces the
    batch-limited server's throughput, hence the queue and the nTTFT. Chosen from
    :data:`TGIS_PADDED_ADDON_MS` to minimize the summed |log error| of the median nTTFT over the
    usable loaded levels of the training LLMs served without flash attention (0 when there are none).
    """
    errors = []
    for addon in TGIS_PADDED_ADDON_MS:
        error = 0.0
        for m, p in pairs:
            fit = replace(profile_fit(fits, p), padded_addon_overhead_ms=addon)
            levels = tuple(u for u in table.levels if u > 1 and u in points[m][p] and usable(m, p, u))
            for users, (nttft, _itl) in (table.get(m, p, fit, levels) or {}).items() if levels else ():
                measured = points[m][p][users][0]
                error += abs(math.log(nttft / measured)) if math.isfinite(nttft) else 10.0
        errors.append(error)
    return TGIS_PADDED_ADDON_MS[int(np.argmin(errors))] if pairs else 0.0
