"""LLM-Pilot's GPU recommendation benchmark (arXiv 2410.02425, Eq. 1-3 and 5-7) with guide-opt's predictions.

The problem (Eq. 1-3): serve ``U = 200`` concurrent users of an *unseen* LLM ``M`` at the
lowest cost. For every GPU profile ``G`` (n GPUs of one type, tensor parallel, one pod) the
largest per-pod user count ``u_max`` in ``{1, 2, 4, ..., 128}`` such that every ``u' <= u``
keeps median nTTFT <= 100 ms per input token and median ITL <= 50 ms; then
``pods = ceil(U / u_max)`` and ``cost = pods x price(G)``; recommend the cheapest.

Ground truth: the same rule applied to the measured medians of ``llm_pilot_aggregate.csv``
(the derivation ``SCHEMA.md`` describes for ``llm_pilot_recommendation_groundtruth.csv``;
:func:`static_policy_score` checks it reproduces the paper's best static policy, 4 pods of
1 x A100, S/O 0.65). Prices: ``llm_pilot/prices.csv`` (AWS on-demand per profile, as the paper).

guide-opt's prediction for ``M`` (leave-one-LLM-out): the ``vllm`` profile stands in for the
TGIS server; its efficiency factors are fitted per GPU type on the *other* decoder-only LLMs'
measurements (TTFT and ITL, :mod:`guide_opt.validation.calibration`), never on ``M``'s. A
closed loop of ``u`` users is predicted with the static estimator as a batch of ``u``
requests with the workload's mean lengths (measured over the training LLMs' rows, about 120
input and 19 output tokens): nTTFT = predicted mean TTFT / input tokens, ITL = predicted
TPOT. A batch that does not fit in memory violates the limits.

Scores (Eq. 5-7): success ``S_M = 1`` when ``pods x true u_max(M, G*) >= U``; relative
overspend ``O_M = (cost - best cost) / best cost`` over successes; ``S`` and ``O`` their
means; ``S/O = 2 S max(0, 1 - O) / (S + max(0, 1 - O))``. Encoder-decoder LLMs (T5 family)
are out of scope and not scored; the static-policy check covers all ten LLMs as the paper did.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from guide_opt.catalog import Catalog
from guide_opt.frameworks import EfficiencyFactors
from guide_opt.perf import ServingConfig
from guide_opt.validation.accuracy import predicted_metrics
from guide_opt.validation.calibration import fit_groups, prepare_rows
from guide_opt.validation.datasets import (
    LLM_PILOT_ENCODER_DECODER,
    LLM_PILOT_FRAMEWORK,
    LLM_PILOT_GPUS,
    LLM_PILOT_LLMS,
    Measurement,
    llm_pilot_flash_attention,
    llm_pilot_profile,
    load_llm_pilot,
    read_csv_rows,
    resolve_id,
)

#: Total concurrent users to serve (U).
TOTAL_USERS = 200
#: Median nTTFT limit (L1), ms per input token.
NTTFT_LIMIT_MS_PER_TOKEN = 100.0
#: Median ITL limit (L2), ms.
ITL_LIMIT_MS = 50.0
#: Per-pod user counts considered (the set U of Eq. 3).
USER_LEVELS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
#: Metrics the recommendation predicts, hence the ones its calibration fits.
RECOMMENDATION_METRICS = ("ttft_ms", "tpot_ms")
#: The paper's best static policy (Sec. V-C): this many pods of this profile, whatever the LLM.
STATIC_POLICY = ("1 x A100", 4)


def load_prices(data_dir: Path) -> dict[str, float]:
    """GPU profile (e.g. ``"2 x A100"``) -> $/hour per pod, from ``llm_pilot/prices.csv``."""
    return {row["GPU"]: float(row["price"]) for row in read_csv_rows(data_dir / "llm_pilot" / "prices.csv")}


def load_points(data_dir: Path) -> dict[str, dict[str, dict[int, tuple[float, float]]]]:
    """Measured medians: model -> profile -> users -> (median nTTFT ms/token, median ITL ms)."""
    points: dict[str, dict[str, dict[int, tuple[float, float]]]] = {}
    for row in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv"):
        per_profile = points.setdefault(row["model"], {}).setdefault(row["gpu"], {})
        per_profile[int(row["num_users"])] = (float(row["median_nttft_ms_per_in_tok"]), float(row["median_itl_ms"]))
    return points


def load_one_user_ttft(data_dir: Path) -> dict[tuple[str, str], float]:
    """(model, profile) -> measured median TTFT (ms) of one user alone, from ``llm_pilot_aggregate.csv``."""
    return {(row["model"], row["gpu"]): float(row["median_ttft_ms"])
            for row in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv") if int(row["num_users"]) == 1}


def load_failed_fractions(data_dir: Path) -> dict[tuple[str, str, int], float]:
    """(model, profile, users) -> fraction of that level's requests that failed (``fail_frac`` of ``llm_pilot_aggregate.csv``)."""
    return {(row["model"], row["gpu"], int(row["num_users"])): float(row["fail_frac"])
            for row in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv")}


def u_max(levels: dict[int, tuple[float, float]]) -> int:
    """Eq. (3): the largest user count whose level and every lower level meet both limits (0 if u = 1 fails).

    ``levels`` maps users -> (nTTFT ms/token, ITL ms); a missing or non-finite level stops the scan.
    """
    best = 0
    for users in USER_LEVELS:
        if users not in levels:
            break
        nttft, itl = levels[users]
        if not (math.isfinite(nttft) and math.isfinite(itl) and nttft <= NTTFT_LIMIT_MS_PER_TOKEN and itl <= ITL_LIMIT_MS):
            break
        best = users
    return best


def pods_needed(users_per_pod: int) -> int | None:
    """Eq. (2): ``ceil(U / u_max)`` pods, None when a pod serves nobody."""
    return math.ceil(TOTAL_USERS / users_per_pod) if users_per_pod > 0 else None


@dataclass(frozen=True)
class Choice:
    """A deployment: ``pods`` pods of ``profile`` costing ``cost_usd_per_hour`` in total."""

    profile: str
    pods: int
    cost_usd_per_hour: float


def cheapest(u_max_by_profile: dict[str, int], prices: dict[str, float]) -> Choice | None:
    """Eq. (1): the cheapest profile x pods over the profiles with ``u_max > 0`` (ties: fewer pods, then name)."""
    options = []
    for profile, users in u_max_by_profile.items():
        pods = pods_needed(users)
        if pods is not None and profile in prices:
            options.append(Choice(profile, pods, pods * prices[profile]))
    return min(options, key=lambda c: (round(c.cost_usd_per_hour, 9), c.pods, c.profile)) if options else None


@dataclass(frozen=True)
class TruthLlm:
    """Ground truth of one LLM: true ``u_max`` per measured profile and the truly cheapest choice."""

    model: str
    u_max_by_profile: dict[str, int]
    best: Choice | None


#: The largest fraction of failed requests a measured level may have to count as meeting the SLOs
#: in the *reliable-levels* reading of the benchmark (:func:`ground_truth`).
RELIABLE_MAX_FAILED_FRACTION = 0.1


def ground_truth(data_dir: Path, max_failed_fraction: float | None = None) -> dict[str, TruthLlm]:
    """True u_max per (model, profile) and the cheapest true deployment per model, from the measured medians.

    LLM-Pilot's Eq. (3) reads only the medians of the requests that completed, so a level where
    most requests failed (the server ran out of memory) still meets the SLOs when its survivors
    were fast. ``max_failed_fraction`` (e.g. :data:`RELIABLE_MAX_FAILED_FRACTION`) makes a level
    whose ``fail_frac`` exceeds it fail instead, as a user would count it; None is the paper's protocol.
    """
    prices = load_prices(data_dir)
    failed = load_failed_fractions(data_dir) if max_failed_fraction is not None else {}
    truth = {}
    for model, profiles in sorted(load_points(data_dir).items()):
        if failed:
            profiles = {profile: {users: (level if failed.get((model, profile, users), 0.0) <= max_failed_fraction else (math.inf, math.inf))
                                  for users, level in levels.items()}
                        for profile, levels in profiles.items()}
        by_profile = {profile: u_max(levels) for profile, levels in profiles.items()}
        truth[model] = TruthLlm(model, by_profile, cheapest(by_profile, prices))
    return truth


@dataclass(frozen=True)
class Outcome:
    """How one recommendation fared against the truth (Eq. 5-6); overspend is a fraction, None when not successful."""

    model: str
    choice: Choice | None
    true_u_max: int
    success: bool
    overspend: float | None


def outcome(model: str, choice: Choice | None, truth: TruthLlm, prices: dict[str, float]) -> Outcome:
    """Eq. (5) and (6) for one recommendation (an unmeasured recommended profile counts as u_max = 0)."""
    if choice is None:
        return Outcome(model, None, 0, False, None)
    true_u = truth.u_max_by_profile.get(choice.profile, 0)
    success = choice.pods * true_u >= TOTAL_USERS
    overspend = None
    if success and truth.best is not None:
        best = truth.best.cost_usd_per_hour
        overspend = (choice.pods * prices[choice.profile] - best) / best
    return Outcome(model, choice, true_u, success, overspend)


@dataclass(frozen=True)
class Score:
    """Eq. (5)-(7) over a set of LLMs: success rate, mean relative overspend (fraction), S/O, and each outcome."""

    success_rate: float
    mean_overspend: float | None
    so_score: float
    outcomes: tuple[Outcome, ...]


def so_score(success_rate: float, mean_overspend: float | None) -> float:
    """Eq. (7): harmonic mean of S and max(0, 1 - O) (0 when nothing succeeded)."""
    if mean_overspend is None:
        return 0.0
    inverse = max(0.0, 1.0 - mean_overspend)
    return 0.0 if success_rate + inverse == 0 else 2 * success_rate * inverse / (success_rate + inverse)


def score(outcomes: list[Outcome]) -> Score:
    """Aggregate outcomes into S, O and S/O (Eq. 5-7)."""
    success_rate = statistics.fmean(o.success for o in outcomes) if outcomes else 0.0
    overspends = [o.overspend for o in outcomes if o.success and o.overspend is not None]
    mean_overspend = statistics.fmean(overspends) if overspends else None
    return Score(success_rate, mean_overspend, so_score(success_rate, mean_overspend), tuple(outcomes))


def static_policy_score(data_dir: Path, models: list[str] | None = None, policy: tuple[str, int] = STATIC_POLICY, *,
                        truth: dict[str, TruthLlm] | None = None) -> Score:
    """Score the static policy ``policy`` = (profile, pods) on ``models`` (default: all ten LLMs, as the paper) against ``truth`` (default: the paper's)."""
    truth, prices = truth or ground_truth(data_dir), load_prices(data_dir)
    profile, pods = policy
    choice = Choice(profile, pods, pods * prices[profile])
    return score([outcome(m, choice, truth[m], prices) for m in (models or sorted(truth))])


# ---- guide-opt's predictions --------------------------------------------------------------------
@dataclass(frozen=True)
class MeanLengths:
    """Mean request lengths (tokens) used for every prediction."""

    input_tokens: int
    output_tokens: int


def workload_of(data_dir: Path, models: list[str]) -> MeanLengths:
    """Mean input / output tokens over the aggregate rows of ``models`` (rounded)."""
    rows = [r for r in read_csv_rows(data_dir / "llm_pilot" / "llm_pilot_aggregate.csv") if r["model"] in models]
    return MeanLengths(round(statistics.fmean(float(r["mean_input_tokens"]) for r in rows)),
                    max(1, round(statistics.fmean(float(r["mean_output_tokens"]) for r in rows))))


def predict_levels(config: ServingConfig, workload: MeanLengths, *, closed_loop: bool = True) -> dict[int, tuple[float, float]]:
    """Predicted (nTTFT ms/token, ITL ms) per user level; a level that does not fit in memory is (inf, inf).

    ``closed_loop`` reads ITL as the batch's cycle time per output token (see
    :func:`~guide_opt.validation.accuracy.predicted_metrics`); False reads the bare decode step.
    """
    levels = {}
    for users in USER_LEVELS:
        c = replace(config, batch=users, input_tokens=workload.input_tokens, output_tokens=workload.output_tokens)
        m = predicted_metrics(c, closed_loop=closed_loop)
        levels[users] = (math.inf, math.inf) if m is None else (m["ttft_ms"] / workload.input_tokens, m["tpot_ms"])
    return levels


@dataclass(frozen=True)
class Recommendation:
    """guide-opt's recommendation for one unseen LLM, its predicted u_max per profile, and the factors used.

    levels: the predicted (nTTFT, ITL) per user level of each profile (the predictors of
    :mod:`~guide_opt.validation.pilot_predictors` fill it; empty for the static estimator).
    """

    model: str
    llm_id: str
    choice: Choice | None
    predicted_u_max: dict[str, int]
    factors: dict[str, Any]
    levels: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)


def recommend(model: str, llm_id: str, profiles: list[str], catalog: Catalog, prices: dict[str, float], workload: MeanLengths,
              factors: dict[str, EfficiencyFactors], flash_attention: bool, *, closed_loop: bool = True) -> Recommendation:
    """Predict u_max on each profile with the given per-GPU factors and pick the cheapest (Eq. 1-3)."""
    predicted, used = {}, {}
    llm = catalog.llms[llm_id]
    for profile in profiles:
        count, gpu_type = llm_pilot_profile(profile)
        gpu_id = resolve_id(LLM_PILOT_GPUS.get(gpu_type, ()), catalog.gpus)
        if gpu_id is None:
            continue
        config = ServingConfig(llm=llm, gpu=catalog.gpus[gpu_id], framework=catalog.frameworks[LLM_PILOT_FRAMEWORK],
                               quantization=catalog.quantization("bf16"), tp=count, batch=1, input_tokens=workload.input_tokens,
                               output_tokens=workload.output_tokens, flash_attention=flash_attention, efficiency=factors.get(gpu_id))
        used[profile] = factors.get(gpu_id)
        predicted[profile] = 0 if config.unsupported_reason() else u_max(predict_levels(config, workload, closed_loop=closed_loop))
    return Recommendation(model, llm_id, cheapest(predicted, prices), predicted, used)


@dataclass
class BenchmarkResult:
    """Scores of guide-opt's recommendations, the static policy, and details.

    calibrated / default: the static estimator (``vllm`` profile, batch-of-users reading) with
    factors fitted on the other LLMs / the defaults. predictors: the score of each predictor of
    :mod:`~guide_opt.validation.pilot_predictors` that was run; predicted: its recommendations.
    reliable: the same recommendations (each predictor's, and ``static-policy``) scored against
    the reliable-levels truth (:func:`ground_truth` with :data:`RELIABLE_MAX_FAILED_FRACTION`).
    """

    calibrated: Score
    default: Score
    static_policy_all: Score
    static_policy_decoder_only: Score
    recommendations: dict[str, Recommendation] = field(default_factory=dict)
    default_recommendations: dict[str, Recommendation] = field(default_factory=dict)
    workloads: dict[str, MeanLengths] = field(default_factory=dict)
    truth: dict[str, TruthLlm] = field(default_factory=dict)
    candidates: str = "measured"
    predictors: dict[str, Score] = field(default_factory=dict)
    predicted: dict[str, dict[str, Recommendation]] = field(default_factory=dict)
    reliable: dict[str, Score] = field(default_factory=dict)


def run_benchmark(data_dir: Path, catalog: Catalog, *, candidates: Literal["measured", "all"] = "measured",
                  closed_loop: bool = True, predictors: tuple[str, ...] = ()) -> BenchmarkResult:
    """Leave-one-LLM-out recommendation for every decoder-only LLM in the catalog, scored by Eq. (5)-(7).

    ``candidates``: ``measured`` considers the profiles LLM-Pilot measured for the LLM (so
    every recommendation can be checked against the truth), ``all`` every priced profile (an
    unmeasured recommendation then counts as a failure). ``closed_loop=False`` predicts ITL
    as the bare decode step instead of the cycle time per token (for comparison), in the fit
    and in the predictions alike. ``predictors``: names from
    :data:`~guide_opt.validation.pilot_predictors.PREDICTORS` to run as well (physics and
    hybrid simulate every measured (LLM, profile) pair at every grid point once per fold, each
    fold with its training LLMs' request lengths: tens of minutes).
    """
    truth, prices = ground_truth(data_dir), load_prices(data_dir)
    flash = llm_pilot_flash_attention(data_dir)
    source = load_llm_pilot(data_dir, catalog)
    models = [name for name in LLM_PILOT_LLMS if name in truth and resolve_id(LLM_PILOT_LLMS[name], catalog.llms)]
    result = BenchmarkResult(Score(0, None, 0, ()), Score(0, None, 0, ()), static_policy_score(data_dir),
                             static_policy_score(data_dir, models), truth=truth, candidates=candidates)
    calibrated_outcomes, default_outcomes = [], []
    for model in models:
        llm_id = resolve_id(LLM_PILOT_LLMS[model], catalog.llms)
        train_models = [m for m in models if m != model]
        train_rows = [replace(_only(r, RECOMMENDATION_METRICS), closed_loop=closed_loop) for r in source.rows if r.llm != llm_id]
        fits = fit_groups(prepare_rows(train_rows, catalog))
        factors = {gpu: fit.factors for (gpu, _framework), fit in fits.items()}
        workload = workload_of(data_dir, train_models)
        result.workloads[model] = workload
        profiles = _profiles(truth[model], prices, candidates)
        rec = recommend(model, llm_id, profiles, catalog, prices, workload, factors, flash.get(model, True), closed_loop=closed_loop)
        base = recommend(model, llm_id, profiles, catalog, prices, workload, {}, flash.get(model, True), closed_loop=closed_loop)
        result.recommendations[model], result.default_recommendations[model] = rec, base
        calibrated_outcomes.append(outcome(model, rec.choice, truth[model], prices))
        default_outcomes.append(outcome(model, base.choice, truth[model], prices))
    result.calibrated, result.default = score(calibrated_outcomes), score(default_outcomes)
    tables: dict[str, Any] = {}  # the simulations, shared by the predictors built on the same model
    for name in predictors:
        kind = "tgis" if name.startswith("tgis") else "physics"
        tables.setdefault(kind, {})  # held-out model -> its fold's table (lengths of its training LLMs only)
        recs = predictor_recommendations(name, data_dir, catalog, models, truth, prices, candidates, tables.get(kind))
        result.predicted[name] = recs
        result.predictors[name] = score([outcome(m, recs[m].choice, truth[m], prices) for m in models])
    reliable = ground_truth(data_dir, RELIABLE_MAX_FAILED_FRACTION)
    for name, recs in result.predicted.items():
        result.reliable[name] = score([outcome(m, recs[m].choice, reliable[m], prices) for m in models])
    result.reliable["static-policy"] = static_policy_score(data_dir, models, truth=reliable)
    return result


def _profiles(truth: TruthLlm, prices: dict[str, float], candidates: str) -> list[str]:
    return sorted(truth.u_max_by_profile) if candidates == "measured" else sorted(prices)


def physics_table(data_dir: Path, catalog: Catalog, models: list[str], lengths_from: list[str] | None = None):
    """The (lazily filled) table of simulated levels of ``models`` on LLM-Pilot's profiles (see :mod:`~guide_opt.validation.pilot_predictors`).

    The simulated request lengths come from the rows of ``lengths_from`` (default: ``models``);
    a fold passes its training LLMs so that no row of the held-out LLM enters its prediction.
    """
    from guide_opt.validation import pilot_predictors as pp

    llm_ids = {m: resolve_id(LLM_PILOT_LLMS[m], catalog.llms) for m in models}
    return pp.PhysicsTable(catalog, pp.pilot_lengths(data_dir, lengths_from or models), llm_ids, llm_pilot_flash_attention(data_dir),
                           USER_LEVELS)


def predictor_recommendations(name: str, data_dir: Path, catalog: Catalog, models: list[str], truth: dict[str, TruthLlm],
                              prices: dict[str, float], candidates: str, table=None, held_out: list[str] | None = None) -> dict[str, Recommendation]:
    """Leave-one-LLM-out recommendations of predictor ``name`` (one of ``pilot_predictors.PREDICTORS``) for every model in ``models``.

    ``table``: a dict held-out model -> :func:`physics_table` (physics, hybrid) or
    :func:`tgis_table` (the TGIS predictors) to reuse, filled here; each fold's simulated
    workload comes from its training LLMs' rows only. None: new ones. ``held_out``: the models
    to predict (default: every one of ``models``; the others still train).
    """
    from guide_opt.validation import pilot_predictors as pp

    if name not in pp.PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}")
    points = load_points(data_dir)
    llm_ids = {m: resolve_id(LLM_PILOT_LLMS[m], catalog.llms) for m in models}
    tgis_based = name.startswith("tgis")
    one_user_ttft = load_one_user_ttft(data_dir)
    failed = load_failed_fractions(data_dir)
    folds = table if isinstance(table, dict) else {}
    llm_features, gpu_features = pp.load_features(data_dir)
    out = {}
    for model in held_out or models:
        train = [m for m in models if m != model]
        profiles = _profiles(truth[model], prices, candidates)
        if name != "learned" and model not in folds:
            folds[model] = (tgis_table if tgis_based else physics_table)(data_dir, catalog, models, lengths_from=train)
        table = folds.get(model)
        if tgis_based:
            fits = pp.fit_tgis_kv(table, points, one_user_ttft, train, failed, itl_limit_ms=ITL_LIMIT_MS) if name == "tgis-kv" else pp.fit_tgis(table, points, one_user_ttft, train)

            def base_levels(m: str, profile: str, fits=fits, table=table):
                return table.get(m, profile, pp.profile_fit(fits, profile))
        elif name != "learned":
            grid = pp.fit_grid(table, points, train)

            def base_levels(m: str, profile: str, grid=grid, table=table):
                return pp.physics_levels(table, m, profile, grid)

        def base(m: str, profile: str, users: int):
            levels = base_levels(m, profile)
            return None if levels is None else levels.get(users)

        factors: dict = {}
        if name in ("physics", "tgis", "tgis-kv"):
            levels = {p: base_levels(model, p) or {} for p in profiles}
            if name == "physics":
                factors = {p: _grid_factors(grid.get(llm_pilot_profile(p)[1], pp.FALLBACK_GRID_INDEX)) for p in profiles}
            else:
                factors = {p: pp.profile_fit(fits, p) for p in profiles}
        else:
            # the learned baseline trains on every other measured LLM (encoder-decoder ones too), as the paper does
            learned_train = [m for m in points if m != model] if name == "learned" else train
            fitted = pp.train_learned(points, llm_features, gpu_features, learned_train, physics=None if name == "learned" else base)
            levels = {p: fitted.levels(model, p, USER_LEVELS) for p in profiles}
        predicted = {p: u_max(found) for p, found in levels.items()}
        out[model] = Recommendation(model, llm_ids[model], cheapest(predicted, prices), predicted, factors, levels)
    return out


#: ITL scales the nested safety rule searches (predicted median ITL x scale before the u_max rule):
#: below 1 optimistic, above 1 a safety margin.
ITL_MARGIN_SCALES = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2)


def scaled_choice(levels: dict[str, dict[int, tuple[float, float]]], itl_scale: float, prices: dict[str, float]) -> Choice | None:
    """The cheapest choice when every predicted median ITL of ``levels`` (profile -> level -> (nTTFT, ITL)) is multiplied by ``itl_scale``."""
    predicted = {p: u_max({u: (nttft, itl * itl_scale) for u, (nttft, itl) in found.items()}) for p, found in levels.items()}
    return cheapest(predicted, prices)


def choose_itl_scale(inner: dict[str, dict[str, dict[int, tuple[float, float]]]], truth: dict[str, TruthLlm],
                     prices: dict[str, float], scales: tuple[float, ...] = ITL_MARGIN_SCALES) -> float:
    """The scale of ``scales`` whose recommendations score the best S/O over ``inner`` (model -> its held-out levels); ties: nearest 1."""
    def so(scale: float) -> float:
        return score([outcome(m, scaled_choice(levels, scale, prices), truth[m], prices) for m, levels in inner.items()]).so_score

    return max(scales, key=lambda scale: (round(so(scale), 9), -abs(scale - 1.0)))


def nested_margin_recommendations(name: str, data_dir: Path, catalog: Catalog, models: list[str], truth: dict[str, TruthLlm],
                                  prices: dict[str, float], candidates: str, outer: dict[str, Recommendation]) -> dict[str, tuple[float, Choice | None]]:
    """Predictor ``name`` with an ITL safety scale chosen by nested leave-one-LLM-out: held-out model -> (scale, choice).

    For each held-out model H (its prediction ``outer[H]``, fitted without it), every training LLM
    T of H is predicted by a fit on the training LLMs other than T (their lengths too), and the
    scale of :data:`ITL_MARGIN_SCALES` with the best S/O over those T (:func:`choose_itl_scale`)
    is applied to H's levels. H's measurements reach neither the inner fits nor the choice.
    """
    out = {}
    for held in outer:
        train = [m for m in models if m != held]
        inner = {t: predictor_recommendations(name, data_dir, catalog, train, truth, prices, candidates, held_out=[t])[t].levels
                 for t in train}
        scale = choose_itl_scale(inner, truth, prices)
        out[held] = (scale, scaled_choice(outer[held].levels, scale, prices))
    return out


def tgis_table(data_dir: Path, catalog: Catalog, models: list[str], lengths_from: list[str] | None = None):
    """The (lazily filled) table of TGIS-batcher levels of ``models`` (see :func:`guide_opt.validation.pilot_predictors.fit_tgis`).

    The simulated request lengths come from the rows of ``lengths_from`` (default: ``models``);
    a fold passes its training LLMs so that no row of the held-out LLM enters its prediction.
    """
    from guide_opt.validation import pilot_predictors as pp

    llm_ids = {m: resolve_id(LLM_PILOT_LLMS[m], catalog.llms) for m in models}
    return pp.TgisTable(catalog, pp.pilot_lengths(data_dir, lengths_from or models), llm_ids, llm_pilot_flash_attention(data_dir), USER_LEVELS)


def _grid_factors(index: int) -> EfficiencyFactors:
    from guide_opt.validation.pilot_predictors import EFFICIENCY_GRID

    compute, memory, overhead = EFFICIENCY_GRID[index]
    return EfficiencyFactors(compute_efficiency=compute, memory_efficiency=memory, communication_efficiency=0.7, step_overhead_ms=overhead)


def _only(m: Measurement, metrics: tuple[str, ...]) -> Measurement:
    return replace(m, measured={k: v for k, v in m.measured.items() if k in metrics})


def benchmark_payload(result: BenchmarkResult, predictor: str | None = None) -> dict[str, Any]:
    """The JSON object of ``validate --llm-pilot --format json``.

    The top-level scores and each recommendation are ``predictor``'s (one of
    ``result.predictors``; None: the static estimator with calibrated factors). Every other
    method run is listed beside it: each predictor, the static estimator (calibrated and
    default factors), the static policy and the paper's figures.
    """

    def choice(c: Choice | None) -> dict[str, Any] | None:
        return None if c is None else {"profile": c.profile, "pods": c.pods, "cost_usd_per_hour": round(c.cost_usd_per_hour, 4)}

    def score_dict(s: Score) -> dict[str, Any]:
        return {"success_rate": round(s.success_rate, 4), "mean_overspend": None if s.mean_overspend is None else round(s.mean_overspend, 4),
                "so_score": round(s.so_score, 4)}

    def brief(o: Outcome) -> dict[str, Any]:
        return {"recommended": choice(o.choice), "success": o.success, "overspend": None if o.overspend is None else round(o.overspend, 4)}

    headline = result.predictors[predictor] if predictor else result.calibrated
    headline_recs = result.predicted[predictor] if predictor else result.recommendations
    others = {name: {o.model: o for o in s.outcomes} for name, s in result.predictors.items()}
    recommendations = []
    for o, c, d in zip(headline.outcomes, result.calibrated.outcomes, result.default.outcomes):
        rec = headline_recs[o.model]
        truth = result.truth[o.model]
        recommendations.append({
            "llm": o.model,
            "catalog_id": rec.llm_id,
            **brief(o),
            "predicted_u_max": rec.predicted_u_max,
            "true_u_max": truth.u_max_by_profile,
            "true_best": choice(truth.best),
            "predictors": {name: brief(by_model[o.model]) for name, by_model in others.items()},
            "static_estimator": {"calibrated": brief(c), "default_factors": brief(d)},
            "workload_tokens": {"input": result.workloads[o.model].input_tokens, "output": result.workloads[o.model].output_tokens},
        })
    return {
        "predictor": predictor or "static-estimator",
        **score_dict(headline),
        "scored_llms": len(headline.outcomes),
        "candidates": result.candidates,
        "predictors": {name: score_dict(s) for name, s in result.predictors.items()},
        "static_estimator": {"calibrated": score_dict(result.calibrated), "default_factors": score_dict(result.default)},
        "static_policy": {"policy": f"{STATIC_POLICY[1]} x ({STATIC_POLICY[0]})", "all_llms": score_dict(result.static_policy_all),
                          "decoder_only": score_dict(result.static_policy_decoder_only)},
        "paper": {"llm_pilot": {"success_rate": 0.8, "mean_overspend": "< 0.2"}, "static_policy_so": 0.65},
        "reliable_levels": {"max_failed_fraction": RELIABLE_MAX_FAILED_FRACTION,
                            "scores": {name: score_dict(s) for name, s in result.reliable.items()}},
        "recommendations": recommendations,
        "skipped_llms": sorted(LLM_PILOT_ENCODER_DECODER),
        "skipped_reason": "encoder-decoder LLMs (T5 family: flan-t5-xl/xxl, flan-ul2, mt0-xxl); guide-opt models decoder-only LLMs",
    }


def tgis_held_out_comparisons(data_dir: Path, catalog: Catalog) -> tuple[list, dict[str, dict[str, Any]]]:
    """Every decoder-only LLM's LLM-Pilot rows predicted by the TGIS batcher fitted on the *other* LLMs.

    For each LLM, :func:`~guide_opt.validation.pilot_predictors.fit_tgis` fits the memory
    efficiency, step overhead and host costs per GPU type on the other decoder-only LLMs; the
    LLM's rows (its own mean lengths, u users) are then played with
    :func:`~guide_opt.validation.tgis.tgis_closed_loop`. Returns the comparisons (median TTFT
    and median ITL, :class:`~guide_opt.validation.accuracy.Comparison`) and, per held-out LLM,
    the fits used (GPU type -> fit).
    """
    from guide_opt.simulate.workloads import HistogramLengths
    from guide_opt.validation import pilot_predictors as pp
    from guide_opt.validation.accuracy import Comparison, measurement_config
    from guide_opt.validation.tgis import tgis_closed_loop

    truth = ground_truth(data_dir)
    models = [name for name in LLM_PILOT_LLMS if name in truth and resolve_id(LLM_PILOT_LLMS[name], catalog.llms)]
    points, one_user = load_points(data_dir), load_one_user_ttft(data_dir)
    framework = catalog.framework(pp.TGIS_FRAMEWORK)
    rows = load_llm_pilot(data_dir, catalog).rows
    comparisons, used = [], {}
    for model in models:
        train = [m for m in models if m != model]
        table = tgis_table(data_dir, catalog, models, lengths_from=train)
        fits = pp.fit_tgis(table, points, one_user, train)
        used[model] = fits
        for m in rows:
            if m.key.split(" ")[0] != model:
                continue
            fit = pp.profile_fit(fits, " ".join(m.key.split(" ")[1:-1]))
            update = {} if fit is None else {"memory_efficiency": fit.memory_efficiency, "step_overhead_ms": fit.step_overhead_ms}
            efficiency = pp.predictor_efficiency(framework, catalog.gpus[m.gpu].architecture, **update)
            config = measurement_config(replace(m, framework=pp.TGIS_FRAMEWORK, batch=1), catalog, efficiency)
            if config.unsupported_reason():
                continue
            lengths = HistogramLengths(input_bins=((m.input_tokens, 1.0),), output_bins=((m.output_tokens, 1.0),))
            level = tgis_closed_loop(config, m.batch, lengths, table.settings(model, fit),
                                     num_requests=max(pp.TGIS_MIN_REQUESTS, pp.TGIS_REQUESTS_PER_USER * m.batch))
            if not level.fits:
                continue
            comparisons.append(Comparison(m, "ttft_ms", level.median_ttft_ms, m.measured["ttft_ms"]))
            comparisons.append(Comparison(m, "tpot_ms", level.median_itl_ms, m.measured["tpot_ms"]))
    return comparisons, used
