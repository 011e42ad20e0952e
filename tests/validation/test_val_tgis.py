"""The TGIS closed-loop batcher (:mod:`guide_opt.validation.tgis`): timelines worked out by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from guide_opt.perf import ServingConfig
from guide_opt.perf.step import StepShape, step_time
from guide_opt.simulate.workloads import HistogramLengths
from guide_opt.validation import tgis
from guide_opt.validation.accuracy import evaluate, summarize
from guide_opt.validation.datasets import load_source

PROMPT, OUTPUT = 100, 5


@pytest.fixture(scope="module")
def config(catalog) -> ServingConfig:
    return ServingConfig(llm=catalog.llms["llama-7b"], gpu=catalog.gpus["a100-40gb"], framework=catalog.framework("tgis"),
                         quantization=catalog.quantization("bf16"), tp=1, batch=1, input_tokens=PROMPT, output_tokens=OUTPUT)


def fixed_lengths(prompt: int = PROMPT, output: int = OUTPUT) -> HistogramLengths:
    return HistogramLengths(input_bins=((prompt, 1.0),), output_bins=((output, 1.0),))


def test_one_user_sees_one_prefill_pass_then_single_sequence_decode_steps(config):
    """Alone, a request never queues: TTFT = its prefill pass + the pass's host cost; each gap = one decode step + one sequence's host cost.
    The prompt is 128 tokens, a whole number of the batcher's 16-token prefill buckets."""
    prompt = 128
    settings = tgis.TgisSettings(256, per_sequence_overhead_ms=0.5, prefill_overhead_ms=7.0)
    level = tgis.tgis_closed_loop(config, 1, fixed_lengths(prompt), settings, num_requests=5)
    prefill_ms = step_time(config, StepShape.prefill_chunk(1, prompt), pipeline_fill=True).time_s * 1e3 + 7.0
    assert level.median_ttft_ms == pytest.approx(prefill_ms, rel=0.01)
    assert level.median_nttft_ms_per_token == pytest.approx(prefill_ms / prompt, rel=0.01)
    # the decode gaps see contexts prompt+1 .. prompt+OUTPUT-1; the median one is the middle context
    middle = prompt + OUTPUT // 2
    decode_ms = step_time(config, StepShape.decode(1, middle)).time_s * 1e3 + 0.5
    assert level.median_itl_ms == pytest.approx(decode_ms, rel=0.01)


def test_llm_pilot_rows_are_played_with_their_own_length_spread(catalog, data_dir):
    """LLM-Pilot's requests varied (llama-13b on 1 x H100, 8 users: mean prompt 128 tokens, median 86; mean output 20,
    median 13, llm_pilot_aggregate.csv). The row carries the medians, and its users then fall out of step: the
    predicted median TTFT differs from the lockstep one of every request at the mean lengths."""
    from guide_opt.validation.accuracy import tgis_closed_loop_metrics
    from guide_opt.validation.datasets import measurement_config

    row = next(m for m in load_source("llm-pilot", catalog, data_dir).rows if m.key == "llama-13b 1 x H100 u8")
    assert (row.input_tokens, row.output_tokens, row.median_lengths) == (128, 20, (86, 13))
    config = measurement_config(replace(row, framework="tgis"), catalog)
    spread = tgis_closed_loop_metrics(config, median_lengths=row.median_lengths)
    lockstep = tgis_closed_loop_metrics(config)
    assert spread["ttft_ms"] != lockstep["ttft_ms"]
    result = evaluate([row], catalog, serving="tgis", closed_loop_framework="tgis")
    assert {c.metric: c.predicted for c in result.comparisons}["ttft_ms"] == pytest.approx(spread["ttft_ms"], rel=1e-12)


class _ConstantSteps(tgis._StepTimes):
    """Decode steps of 10 ms and prefill passes of 5 ms, whatever their shape."""

    def decode_s(self, contexts):
        return 0.010

    def prefill_s(self, prompts):
        return 0.005


def test_the_kv_cost_adds_per_gib_of_cache_the_decode_step_holds(config):
    """One user, 125-token prompt, 5 output tokens: every decode step holds 126..129 context tokens, one 64-token
    bucket of 128. llama-7b's cache on one GPU: 32 layers x 2 (K, V) x 32 heads x 128 dims x 2 bytes = 0.5 MiB per
    token, so 128 tokens hold 1/16 GiB and 1000 ms per GiB adds 62.5 ms to each gap."""
    settings = tgis.TgisSettings(256, kv_ms_per_gib=1000.0)
    level = tgis.tgis_closed_loop(config, 1, fixed_lengths(125, 5), settings, num_requests=5)
    decode_ms = step_time(config, StepShape.decode(1, 128)).time_s * 1e3
    assert level.median_itl_ms == pytest.approx(decode_ms + 62.5, rel=1e-9)
    # The reported cache is what the steps around the median ITL hold: 126..129 tokens x 0.5 MiB = 1/2048 GiB each.
    assert level.itl_batch == 1.0 and 126 / 2048 <= level.itl_kv_gib <= 129 / 2048


class _AlternatingLengths:
    """Prompts of 100 tokens; outputs 3, 5, 3, 5, ... tokens by request number."""

    def sample(self, rng, n):
        return np.full(n, 100, dtype=np.int64), np.array([3 if i % 2 == 0 else 5 for i in range(n)], dtype=np.int64)


def test_an_add_on_pass_pays_the_add_on_cost_and_pauses_the_running_batch(monkeypatch, config):
    """Two users, batch limit 2, prefill 5 ms, decode 10 ms, add-on cost 100 ms, played by hand:
    r0 (3 tokens) and r1 (5) are prefilled together at 5 ms (an idle server: no add-on cost); decode steps end at
    15 and 25 ms, where r0 finishes and its user sends r2. One request runs, so one waiting request suffices:
    r2's add-on pass ends at 25 + 5 + 100 = 130 ms (TTFT 105 ms), the next step at 140 ms, r2's last at 150 ms,
    where r1 and r2 finish and r3, r4 arrive to an idle server: prefilled together at 155 ms (TTFT 5 ms).
    Measured requests start at r2: TTFTs 105 and 5 ms, median 55 ms. r2's gaps 10, 10; r3's gaps 10, 10, then
    115 (r5's add-on pass at 175 + 105 ms pauses it), 10: median ITL 10 ms."""
    monkeypatch.setattr(tgis, "_StepTimes", _ConstantSteps)
    level = tgis.tgis_closed_loop(config, 2, _AlternatingLengths(), tgis.TgisSettings(2, addon_overhead_ms=100.0), num_requests=1)
    assert level.median_ttft_ms == pytest.approx(105.0)
    level = tgis.tgis_closed_loop(config, 2, _AlternatingLengths(), tgis.TgisSettings(2, addon_overhead_ms=100.0), num_requests=2)
    assert level.median_ttft_ms == pytest.approx(55.0)
    assert level.median_itl_ms == pytest.approx(10.0)
    # without the add-on cost, r2 waits for its 5 ms pass only
    level = tgis.tgis_closed_loop(config, 2, _AlternatingLengths(), tgis.TgisSettings(2), num_requests=1)
    assert level.median_ttft_ms == pytest.approx(5.0)


def test_users_beyond_the_batch_limit_wait_a_whole_service(monkeypatch, config):
    """Batch limit 1, two users, 3 output tokens, prefill 5 ms, decode 10 ms: each request waits for the other's
    service (5 + 2 x 10 = 25 ms) and then its own prefill (5 ms): TTFT 30 ms, every gap one decode step (10 ms)."""
    monkeypatch.setattr(tgis, "_StepTimes", _ConstantSteps)
    level = tgis.tgis_closed_loop(config, 2, fixed_lengths(output=3), tgis.TgisSettings(1), num_requests=6)
    assert level.median_ttft_ms == pytest.approx(30.0)
    assert level.median_itl_ms == pytest.approx(10.0)


def test_users_that_finish_together_are_prefilled_together(monkeypatch, config):
    """Two users, batch limit 2, 3 output tokens: both start in one 5 ms prefill and finish together, so they return
    together and are prefilled together again: TTFT 5 ms. Gaps are the 10 ms decode steps."""
    monkeypatch.setattr(tgis, "_StepTimes", _ConstantSteps)
    level = tgis.tgis_closed_loop(config, 2, fixed_lengths(output=3), tgis.TgisSettings(2), num_requests=6)
    assert level.median_ttft_ms == pytest.approx(5.0)
    assert level.median_itl_ms == pytest.approx(10.0)


def test_a_batch_that_does_not_fit_reads_as_violating_both_limits(catalog):
    """llama-13b (about 26 GB of 16-bit weights) cannot run on a 16 GB T4."""
    config = ServingConfig(llm=catalog.llms["llama-13b"], gpu=catalog.gpus["t4"], framework=catalog.framework("tgis"),
                           quantization=catalog.quantization("bf16"), tp=1, batch=1, input_tokens=PROMPT, output_tokens=OUTPUT)
    level = tgis.tgis_closed_loop(config, 4, fixed_lengths(), tgis.TgisSettings(256), num_requests=5)
    assert not level.fits and level.pilot_pair == (math.inf, math.inf)


def test_tgis_serving_of_llm_pilot_rows_grows_ttft_with_users(catalog, data_dir):
    """LLM-Pilot's median TTFT of llama-7b on 1 x A100 grows from 29 ms (1 user) to 329 ms (32 users), measured;
    the TGIS batcher must grow it too (queueing behind the add-on rule), which the steady-state model barely does."""
    rows = [m for m in load_source("llm-pilot", catalog, data_dir).rows
            if m.key in ("llama-7b 1 x A100 u1", "llama-7b 1 x A100 u32")]
    assert len(rows) == 2
    result = evaluate(rows, catalog, serving="tgis", closed_loop_framework="tgis")
    ttft = {c.measurement.batch: c.predicted for c in result.comparisons if c.metric == "ttft_ms"}
    assert ttft[32] > 5 * ttft[1]
    assert {r.metric for r in summarize(result.comparisons)} >= {"ttft_ms", "tpot_ms"}


def test_validate_serving_tgis_reports_llm_pilot_rows(capsys, data_dir):
    """`validate --serving tgis` predicts LLM-Pilot's closed-loop rows on the tgis profile; it does not go with --llm-pilot."""
    import json

    from guide_opt.cli import main

    assert main(["validate", "--source", "llm-pilot", "--serving", "tgis", "--data-dir", str(data_dir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["gpu"], r["metric"]) for r in rows} >= {("a100-40gb", "ttft_ms"), ("h100-sxm", "tpot_ms")}
    assert all(r["count"] > 0 for r in rows)
    assert main(["validate", "--llm-pilot", "--serving", "tgis"]) == 1
    assert "--serving goes without --llm-pilot" in capsys.readouterr().err


def test_the_tgis_fit_recovers_known_parameters_from_the_training_llms_only(catalog, data_dir):
    """Synthetic measurements made with memory efficiency 0.7, step overhead 3 ms, prefill host cost 12 ms and
    0.3 ms per sequence: the fit must return exactly those, whatever the held-out LLM's (absurd) points say."""
    from guide_opt.validation import pilot_predictors as pp
    from guide_opt.validation.llm_pilot import tgis_table

    class Table(pp.TgisTable):
        def get(self, model, profile, fit, levels=None):  # loaded levels: ITL grows with the per-sequence cost
            return {u: (1.0, 10.0 + 100.0 * fit.per_sequence_overhead_ms * math.sqrt(u)) for u in (levels or self.levels)}

    real = tgis_table(data_dir, catalog, ["llama-7b", "llama-13b", "EleutherAI/gpt-neox-20b"])
    table = Table(real.catalog, real.lengths, real.llm_ids, real.flash, real.levels)
    points, one_user = {}, {}
    for model in ("llama-7b", "llama-13b"):
        prefill_ms, decode_ms = pp._one_user_times(table, model, "1 x A100", 0.7, 3.0)
        points[model] = {"1 x A100": {1: (1.0, decode_ms), **{u: (1.0, 10.0 + 30.0 * math.sqrt(u)) for u in (2, 4, 8, 16)}}}
        one_user[(model, "1 x A100")] = prefill_ms + 12.0
    points["EleutherAI/gpt-neox-20b"] = {"1 x A100": {u: (1e6, 1e6) for u in (1, 2, 4)}}
    one_user[("EleutherAI/gpt-neox-20b", "1 x A100")] = 1e6
    fits = pp.fit_tgis(table, points, one_user, ["llama-7b", "llama-13b"])
    assert pp.profile_fit(fits, "1 x A100") == pp.TgisFit(0.7, 3.0, 12.0, 0.3)
