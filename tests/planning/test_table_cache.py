"""The table cache (guide_opt/table_cache.py): a table read back is the table a fresh build makes, and
every input a candidate depends on is part of its key.

Expected values come from a fresh build without the cache (``build_space`` or ``solve --no-cache``): the
cache must change where a table comes from, never what it holds or what is planned from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
import yaml

from guide_opt import disk_cache, table_cache
from guide_opt.api import solve
from guide_opt.cli import main
from guide_opt.errors import InputError
from guide_opt.presets import load_preset
from guide_opt.space import build_space

from problem_fixtures import small_problem

#: A quick problem: the static (burst) model, one GPU type, two batch sizes.
QUICK = dict(prediction={"serving_model": "burst"}, hardware={"gpus": ["l40s"], "max_gpus": 8}, search={"tp": [1, 2], "batch_sizes": [4, 16]})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A table cache of this test's own (the test run's shared one stays untouched)."""
    folder = tmp_path / "tables"
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, str(folder))
    return folder


def _rows(space) -> list[tuple]:
    """Every candidate of ``space`` as plain values (the fields a solver reads), in order."""
    return [dataclasses.astuple(c) for ms in space.models for c in ms.candidates]


def _comparable(payload: dict) -> dict:
    """A solve payload without what says how long it took and where its table came from (``stats.timing``)."""
    out = {k: v for k, v in payload.items() if k != "wall_time_s"}
    out["stats"] = {k: v for k, v in payload["stats"].items() if k != "timing"}
    return out


def test_a_cached_table_is_the_table_a_fresh_build_makes(cache):
    problem = small_problem(**QUICK)
    built, first = table_cache.cached_build(problem)
    read, second = table_cache.cached_build(problem)
    assert (first, second) == ("built", "cached")
    assert len(list((cache / "tables").glob("*.pickle"))) == 1
    fresh = build_space(problem)  # independent: no cache involved
    assert _rows(read) == _rows(built) == _rows(fresh)
    assert read.problem is problem


def test_solver_only_fields_reuse_the_table_and_plan_as_a_fresh_build(cache):
    # name, objective, budget and max_gpus are read by the solvers only: the table of the min-cost problem
    # serves the max-throughput question, and the answer equals one planned from a fresh build.
    table_cache.cached_build(small_problem(**QUICK))
    other = small_problem(**(QUICK | {"name": "other", "objective": "max_throughput", "budget_per_hour": 9,
                                       "hardware": {"gpus": ["l40s"], "max_gpus": 4}}))
    assert table_cache.cached_build(other)[1] == "cached"
    preset = load_preset()
    cached = solve(other, preset=preset, seed=0, explain=True)
    fresh = solve(other, preset=preset, seed=0, explain=True, use_cache=False)
    assert cached.payload["stats"]["timing"]["candidate_table"] == "cached"
    assert fresh.payload["stats"]["timing"]["candidate_table"] == "built, not cached"
    assert _comparable(cached.payload) == _comparable(fresh.payload)


@pytest.mark.parametrize("change", [
    {"models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                 "slo": {"ttft_ms": 800, "tpot_ms": 30}}]},  # a tighter TPOT SLO
    {"models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 1024, "output_tokens": 128, "request_rate_per_s": 4},
                 "slo": {"ttft_ms": 800, "tpot_ms": 40}}]},  # longer prompts
    {"models": [{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 8},
                 "slo": {"ttft_ms": 800, "tpot_ms": 40}}]},  # twice the demand
    {"search": {"tp": [1, 2], "batch_sizes": [4, 16], "max_replicas": 3}},  # fewer replicas allowed (the demand check)
    {"hardware": {"gpus": ["l40s", "a10g"], "max_gpus": 8, "inventory": {"a10g": 0}}},  # a GPU type without inventory
    {"prediction": {"serving_model": "burst", "slo_margin": 1.2}},
    {"frameworks": ["sglang"]},
], ids=["slo", "lengths", "demand", "max_replicas", "zero_inventory", "slo_margin", "framework"])
def test_an_input_of_the_candidates_changes_the_key(cache, change):
    base = small_problem(**QUICK)
    changed = small_problem(**(QUICK | change))
    table_cache.cached_build(base)
    table, source = table_cache.cached_build(changed)
    assert source == "built"
    assert _rows(table) == _rows(build_space(changed))


def test_the_key_follows_the_files_the_problem_names(cache, tmp_path, write_hf_config, monkeypatch):
    # an LLM given as a config.json: editing the file gives another LLM, so another table
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
              "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
              "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}
    path = write_hf_config(config)
    llm = {"id": str(path), "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4}, "slo": {"ttft_ms": 800}}
    problem = small_problem(**(QUICK | {"models": [llm]}))
    assert table_cache.cached_build(problem)[1] == "built"
    assert table_cache.cached_build(problem)[1] == "cached"
    write_hf_config(config | {"num_hidden_layers": 32})
    table, source = table_cache.cached_build(problem)
    assert source == "built" and _rows(table) == _rows(build_space(problem))

    # a calibration file: other fitted factors, another table (the file written by guide-opt calibrate)
    calibration = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--source", "lmdeploy", "--out", str(calibration)]) == 0
    data = yaml.safe_load(calibration.read_text())
    data["entries"] = [dict(e, gpu="l40s", framework="vllm") for e in data["entries"][:1]]
    calibration.write_text(yaml.safe_dump(data))
    calibrated = small_problem(**(QUICK | {"prediction": {"serving_model": "burst", "calibration": str(calibration)}}))
    assert table_cache.cached_build(calibrated)[1] == "built"
    assert table_cache.cached_build(calibrated)[1] == "cached"
    data["entries"][0]["efficiency"]["compute_efficiency"] /= 2
    calibration.write_text(yaml.safe_dump(data))
    table, source = table_cache.cached_build(calibrated)
    assert source == "built" and _rows(table) == _rows(build_space(calibrated))

    # guide-opt's code or catalog: another release never reads an older table
    monkeypatch.setattr(table_cache, "code_and_catalog_digest", lambda: "another release")
    assert table_cache.cached_build(calibrated)[1] == "built"


def test_bad_input_is_refused_on_a_cached_table_as_on_a_build(cache):
    table_cache.cached_build(small_problem(**QUICK))
    bad = small_problem(**(QUICK | {"hardware": {"gpus": ["l40s"], "max_gpus": 8, "inventory": {"no-such-gpu": 2}}}))
    with pytest.raises(InputError) as cached:
        table_cache.cached_build(bad)
    with pytest.raises(InputError) as built:
        build_space(bad)
    assert str(cached.value) == str(built.value) and "hardware.inventory.no-such-gpu" in str(cached.value)


def test_an_unreadable_table_is_rebuilt_and_replaced(cache):
    problem = small_problem(**QUICK)
    table_cache.cached_build(problem)
    (stored,) = (cache / "tables").glob("*.pickle")
    stored.write_bytes(b"not a pickle")
    table, source = table_cache.cached_build(problem)
    assert source == "built" and _rows(table) == _rows(build_space(problem))
    assert table_cache.cached_build(problem)[1] == "cached"


def test_a_folder_that_cannot_be_written_leaves_the_solve_uncached(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, str(blocker / "tables"))  # a folder inside a file cannot be made
    table, source = table_cache.cached_build(small_problem(**QUICK))
    assert source == "built, not cached" and table.candidate_count > 0


def test_off_and_no_cache_neither_read_nor_write(cache, monkeypatch, tmp_path, capsys):
    problem_file = tmp_path / "problem.yaml"
    problem_file.write_text(json.dumps(small_problem(**QUICK).model_dump(mode="json", exclude_none=True)))
    assert main(["solve", str(problem_file), "--format", "json", "--no-cache", "--no-explain"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["timing"]["candidate_table"] == "built, not cached"
    assert not cache.exists()
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, "off")
    assert disk_cache.cache_dir() is None
    assert table_cache.cached_build(small_problem(**QUICK))[1] == "built, not cached"
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, str(cache))
    assert main(["solve", str(problem_file), "--no-explain"]) == 0
    assert main(["solve", str(problem_file), "--no-explain"]) == 0
    assert "candidate table read from the cache" in capsys.readouterr().out.split("searched")[-1]


def test_the_folder_keeps_the_most_recently_used_tables(cache, monkeypatch):
    monkeypatch.setattr(disk_cache, "MAX_FILES", 2)
    problems = [small_problem(**(QUICK | {"search": {"tp": [1], "batch_sizes": [b]}})) for b in (4, 8, 16)]
    table_cache.cached_build(problems[0])
    table_cache.cached_build(problems[1])
    assert table_cache.cached_build(problems[0])[1] == "cached"  # used again: now the most recent
    table_cache.cached_build(problems[2])  # a third table: the least recently used one (problems[1]) goes
    assert len(list((cache / "tables").glob("*.pickle"))) == 2
    assert [table_cache.cached_build(p)[1] for p in (problems[2], problems[0])] == ["cached", "cached"]
    assert table_cache.cached_build(problems[1])[1] == "built"


def test_the_folder_keeps_its_tables_within_the_byte_limit(cache, monkeypatch):
    problems = [small_problem(**(QUICK | {"search": {"tp": [1], "batch_sizes": [b]}})) for b in (4, 8)]
    table_cache.cached_build(problems[0])
    (first,) = (cache / "tables").glob("*.pickle")
    monkeypatch.setattr(disk_cache, "MAX_BYTES", first.stat().st_size + 1)  # room for one table of this size
    table_cache.cached_build(problems[1])
    assert len(list((cache / "tables").glob("*.pickle"))) == 1 and not first.exists()  # the older one went, the new one stays
    assert table_cache.cached_build(problems[1])[1] == "cached"


def test_a_folder_others_may_write_to_is_not_used(cache):
    # tables are pickles, which run code when read: a folder writable by others is never read or written
    cache.mkdir(mode=0o700)
    assert table_cache.cached_build(small_problem(**QUICK))[1] == "built"
    cache.chmod(0o777)
    assert table_cache.cached_build(small_problem(**QUICK))[1] == "built, not cached"
    cache.chmod(0o700)
    assert table_cache.cached_build(small_problem(**QUICK))[1] == "cached"


def test_a_table_that_cannot_be_stored_leaves_no_partial_file(cache, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(disk_cache.pickle, "dump", disk_full)
    table, source = table_cache.cached_build(small_problem(**QUICK))
    assert source == "built, not cached" and table.candidate_count > 0
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_partial_file_a_killed_writer_left_is_deleted_once_stale(cache):
    tables = cache / "tables"
    tables.mkdir(mode=0o700, parents=True)
    cache.chmod(0o700)
    stale, fresh = tables / f".old{disk_cache.PARTIAL_SUFFIX}", tables / f".new{disk_cache.PARTIAL_SUFFIX}"
    for path in (stale, fresh):
        path.write_bytes(b"half a table")
    old_ns = time.time_ns() - int(2 * disk_cache.STALE_PARTIAL_S * 1e9)
    os.utime(stale, ns=(old_ns, old_ns))
    table_cache.cached_build(small_problem(**QUICK))  # a write trims the folder
    assert not stale.exists() and fresh.exists()  # a recent one may still be being written


def test_the_default_folder_is_the_users_cache_and_off_without_a_home(monkeypatch, tmp_path):
    monkeypatch.delenv(disk_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert disk_cache.cache_dir() == tmp_path / "xdg" / "guide-opt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert disk_cache.cache_dir() == tmp_path / "home" / ".cache" / "guide-opt"
    monkeypatch.setenv("HOME", "not-absolute")  # what expanduser gives a user without a home folder
    assert disk_cache.cache_dir() is None


def test_a_long_build_reports_its_progress_and_a_cached_one_does_not(cache, monkeypatch):
    import guide_opt.api as api

    monkeypatch.setattr(api, "BUILD_PROGRESS_EVERY_S", 0.0)  # report after every shape
    problem = small_problem(**QUICK)
    lines: list[str] = []
    solve(problem, preset=load_preset(), seed=0, explain=False, progress=lines.append)
    shapes = len(table_cache.resolve_search(problem, table_cache.load_catalog())[0][0].shapes)  # one LLM: its shapes
    reports = [line for line in lines if line.startswith("evaluated ")]
    assert shapes >= 2
    # one line per shape but the last (the build's end is said by the next stage's line), counting up to it
    assert [r.split(" of ")[0] for r in reports] == [f"evaluated {k}" for k in range(1, shapes)]
    assert all(f" of {shapes} shapes (" in r and "s left" in r for r in reports)
    lines.clear()
    solve(problem, preset=load_preset(), seed=0, explain=False, progress=lines.append)
    assert not [line for line in lines if line.startswith("evaluated ")]


def test_a_plan_check_is_read_back_and_equals_a_fresh_simulation(cache, monkeypatch):
    # The check is a seeded simulation: checking the same plan again reads the stored verdict, which must equal what
    # a fresh simulation (cache off) finds; anything that changes the simulation (seed, requests, replicas, SLO) misses.
    import guide_opt.refine as refine
    from guide_opt.simcheck import check_plan

    problem = small_problem(**(QUICK | {"prediction": {"serving_model": "steady_state"}}))
    answer = solve(problem, preset=load_preset(), seed=0, explain=False)
    plan = answer.solution.deployments
    stored = check_plan(problem, plan)  # the solve checked this plan: read back
    with disk_cache.switched_off():
        fresh = check_plan(problem, plan)
    assert [dataclasses.replace(c, simulation_s=0.0) for c in stored] == [dataclasses.replace(c, simulation_s=0.0) for c in fresh]
    assert stored[0].simulation_s > 0  # the stored verdict keeps what its simulation cost

    runs: list[int] = []
    simulate = refine.simulate_deployments
    monkeypatch.setattr(refine, "simulate_deployments", lambda *a, **k: runs.append(1) or simulate(*a, **k))
    check_plan(problem, plan)
    assert runs == []  # read back, not simulated
    check_plan(problem, plan, seed=1)
    check_plan(problem, plan, num_requests=500)
    check_plan(problem, [dataclasses.replace(plan[0], replicas=plan[0].replicas + 1)])
    tighter = problem.model_copy(update={"models": [problem.models[0].model_copy(update={"slo": problem.models[0].slo.model_copy(update={"tpot_ms": 35})})]})
    check_plan(tighter, plan)
    assert len(runs) == 4
    check_plan(problem, plan, catalog=table_cache.load_catalog())  # a caller's own catalog is never cached
    assert len(runs) == 5


def test_a_warm_solve_answers_as_a_solve_without_the_cache(cache, monkeypatch):
    import guide_opt.parallel as parallel

    problem = small_problem(**(QUICK | {"prediction": {"serving_model": "steady_state"}}))
    preset = load_preset()
    solve(problem, preset=preset, seed=0)  # fills the cache: table and plan checks
    mapped: list[int] = []
    forked_map = parallel.forked_map
    monkeypatch.setattr(parallel, "forked_map", lambda function, items, *a, **k: mapped.append(len(items)) or forked_map(function, items, *a, **k))
    warm = solve(problem, preset=preset, seed=0)
    assert not any(mapped)  # every check, the optimum's and the alternatives', read back: no worker started
    monkeypatch.setattr(parallel, "forked_map", forked_map)
    fresh = solve(problem, preset=preset, seed=0, use_cache=False)
    assert warm.payload["stats"]["timing"]["candidate_table"] == "cached"
    assert _comparable(warm.payload) == _comparable(fresh.payload)
    assert any(a.get("meets_slo_in_simulation") is not None for a in warm.payload["alternatives"])


def test_the_parsed_catalog_is_read_back_and_reparsed_when_a_file_changes(cache, monkeypatch):
    import guide_opt.catalog as catalog_module
    from guide_opt.data_files import data_dir

    parsed = catalog_module.load_catalog_from(data_dir("hardware_db"))  # independent: the YAML files parsed now
    load = catalog_module.load_catalog.__wrapped__  # past the in-process memo: what a new process does
    assert load() == parsed  # parsed and stored
    assert len(list((cache / "catalog").glob("*.pickle"))) == 1

    def no_parsing(root):
        raise AssertionError("the catalog was parsed again")

    monkeypatch.setattr(catalog_module, "load_catalog_from", no_parsing)
    assert load() == parsed  # read back
    monkeypatch.setattr(disk_cache, "code_and_catalog_digest", lambda: "an edited hardware_db file")
    with pytest.raises(AssertionError, match="parsed again"):
        load()


#: The quick problem under the steady-state model: its step tables are what a what-if reuses.
STEADY = QUICK | {"prediction": {"serving_model": "steady_state"}}


def _what_if(problem, rate: float, ttft_ms: float):
    """``problem`` with another request rate and TTFT SLO (the what-if of a deployment)."""
    model = problem.models[0]
    return problem.model_copy(update={"models": [model.model_copy(update={
        "workload": model.workload.model_copy(update={"request_rate_per_s": rate}),
        "slo": model.slo.model_copy(update={"ttft_ms": ttft_ms})})]})


def test_another_demand_starts_from_the_kept_step_tables_and_makes_the_table_of_a_fresh_build(cache):
    first = small_problem(**STEADY)
    _, source = table_cache.cached_build(first)
    assert source == "built"
    assert len(list((cache / "steps").glob("*.pickle"))) == 1
    for rate, ttft_ms in ((9.0, 800), (4.0, 400)):  # another rate, then another SLO
        problem = _what_if(first, rate, ttft_ms)
        space, source = table_cache.cached_build(problem)
        assert source.startswith("built from ") and source.endswith(" step tables kept"), source
        fresh = build_space(problem)  # independent: no cache involved
        assert _rows(space) == _rows(fresh)
        assert _rows(space) != _rows(build_space(first))  # the what-if changed the candidates, not only where they came from


def test_other_lengths_find_no_kept_step_table(cache):
    from guide_opt.perf import steady_state

    problem = small_problem(**STEADY)
    table_cache.cached_build(problem)
    (path,) = (cache / "steps").glob("*.pickle")
    kept = disk_cache.read(path, dict)
    longer = problem.model_copy(update={"models": [problem.models[0].model_copy(update={
        "workload": problem.models[0].workload.model_copy(update={"input_tokens": 1024})})]})
    _, source = table_cache.cached_build(longer)  # other lengths: other tables, none of them kept before
    assert source == "built"
    assert all(isinstance(m, steady_state.TableMemory) and m.answers for m in kept.values())


def test_a_large_problem_keeps_no_step_tables(cache, monkeypatch):
    monkeypatch.setattr(table_cache, "STEP_TABLE_MAX_MODELS", 0)
    problem = small_problem(**STEADY)
    table_cache.cached_build(problem)
    _, source = table_cache.cached_build(_what_if(problem, 9.0, 800))
    assert source == "built"
    assert not list((cache / "steps").glob("*.pickle"))


def test_the_solve_report_says_its_table_was_built_from_kept_step_tables(cache, tmp_path, capsys):
    problem = small_problem(**STEADY)
    for name, p in (("first.yaml", problem), ("what-if.yaml", _what_if(problem, 9.0, 800))):
        (tmp_path / name).write_text(json.dumps(p.model_dump(mode="json", exclude_none=True)))
        assert main(["solve", str(tmp_path / name), "--no-explain"]) == 0
    out = capsys.readouterr().out.split("searched")[-1]
    assert "step tables kept by earlier solves of these LLMs (--no-cache builds it anew)" in out, out


def test_a_pickle_past_its_byte_limit_is_not_stored_and_the_old_file_stays(cache):
    folder, path = cache / "steps", cache / "steps" / "x.pickle"
    assert disk_cache.write(folder, path, {"small": 1}, max_bytes=1000)
    assert not disk_cache.write(folder, path, {"large": "x" * 2000}, max_bytes=1000)  # 2,000 characters pickle to more than 1,000 bytes
    assert disk_cache.read(path, dict) == {"small": 1}
    assert [p.name for p in folder.iterdir()] == ["x.pickle"]  # no partial file left
