"""The simulator engine compiled with mypyc at install (hatch_build.py) against its Python source.

The compiled engine must be the source's arithmetic to the last bit: the expected values here are the results of
``engine.py`` itself, loaded from the source file and run through the same cluster. Where the install could not
compile the engine (no C compiler), the comparison is skipped, unless ``GUIDE_OPT_REQUIRE_COMPILED_ENGINE=1`` (set by
``.ci/run``) says a compiled engine must be there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from guide_opt.simulate import FixedLengths, HistogramLengths, PRESETS, Workload, cluster, simulate
from guide_opt.simulate.compiled import ENGINE_FOLDER, STAMP_NAME, compiled_state, engine_is_compiled

REQUIRED = os.environ.get("GUIDE_OPT_REQUIRE_COMPILED_ENGINE") == "1"


@pytest.fixture(scope="module")
def configs(make_config):
    base = make_config("llama-2-7b", "a100-80gb-sxm", "vllm")
    whole = dataclasses.replace(base, framework=base.framework.model_copy(update={"prefill_mode": "whole"}))
    small_kv = dataclasses.replace(base, gpu_memory_utilization=0.2)  # preemptions by recompute
    return {"chunked": base, "whole": whole, "small-kv": small_kv}


CASES = [
    ("chunked", Workload.open_loop(PRESETS["conversational"], 12.0), 3, "random"),
    ("chunked", Workload.closed_loop(FixedLengths(1024, 256), 48), 2, "least_loaded"),
    ("whole", Workload.open_loop(FixedLengths(900, 120), 6.0), 1, "round_robin"),
    ("small-kv", Workload.closed_loop(HistogramLengths(((500, 1.0), (2500, 1.0)), ((200, 1.0), (900, 1.0))), 64), 1, "round_robin"),
]


def test_the_engine_in_use_is_compiled_where_the_install_must_compile_it():
    state = compiled_state(ENGINE_FOLDER)
    if not REQUIRED:
        pytest.skip(f"GUIDE_OPT_REQUIRE_COMPILED_ENGINE is not 1 (the compiled engine is {state})")
    assert state == "current" and engine_is_compiled()


@pytest.mark.parametrize("config_name, workload, replicas, balancer", CASES)
def test_compiled_engine_gives_the_python_sources_results_bit_for_bit(configs, source_engine, config_name, workload,
                                                                      replicas, balancer):
    if not engine_is_compiled():
        if REQUIRED:
            pytest.fail("the compiled engine is missing or stale")
        pytest.skip("the engine runs as Python here: nothing compiled to compare")
    config = configs[config_name]
    compiled = simulate(config, workload, num_requests=400, seed=5, replicas=replicas, balancer=balancer)
    with cluster.using_engine(source_engine):
        source = simulate(config, workload, num_requests=400, seed=5, replicas=replicas, balancer=balancer)
    assert compiled.metrics() == source.metrics()
    for field in ("finish_s", "first_token_s", "replica"):
        assert np.array_equal(getattr(compiled.requests, field), getattr(source.requests, field), equal_nan=True), field
    assert (compiled.steps, compiled.preemptions, compiled.kv_utilization_mean) == (source.steps, source.preemptions, source.kv_utilization_mean)
    if config_name == "small-kv":
        assert source.preemptions > 0  # the case exercises the preemption path it is meant to


def test_a_binary_counts_only_with_the_stamp_of_the_source_beside_it(tmp_path):
    (tmp_path / "engine.py").write_text("X = 1\n")
    assert compiled_state(tmp_path) == "absent"
    (tmp_path / f"engine{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert compiled_state(tmp_path) == "stale"  # no stamp: built by hand, or by an older build
    (tmp_path / STAMP_NAME).write_text(hashlib.sha256(b"X = 1\n").hexdigest() + "\n")
    assert compiled_state(tmp_path) == "current"
    (tmp_path / "engine.py").write_text("X = 2\n")  # the source edited after the build
    assert compiled_state(tmp_path) == "stale"


def test_an_edited_source_runs_instead_of_the_older_binary(tmp_path):
    # A copy of the package whose engine.py was edited after the build: importing the engine must load the edit and warn.
    if compiled_state(ENGINE_FOLDER) != "current":
        pytest.skip("no current compiled engine to leave stale")
    package = Path(__file__).resolve().parents[2] / "guide_opt"
    copy = tmp_path / "guide_opt"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "simulate" / "engine.py", "a") as source:
        source.write("\nEDITED_AFTER_THE_BUILD = True\n")
    code = ("import guide_opt.simulate.engine as e, guide_opt.simulate.compiled as c; "
            "print(e.__file__, getattr(e, 'EDITED_AFTER_THE_BUILD', False), c.engine_is_compiled())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path, edited, compiled = done.stdout.split()
    assert path == str(copy / "simulate" / "engine.py") and edited == "True" and compiled == "False"
    assert "built from another engine.py" in done.stderr


def test_numpy_integers_in_the_arguments_run_as_python_ints(configs):
    # The compiled engine takes Python ints only (mypyc checks them at run time: a numpy int64 raised TypeError there):
    # simulate() converts its counts at the boundary, so counts read from numpy arrays give the same run as plain ints.
    config = configs["chunked"]
    workload = Workload.open_loop(FixedLengths(np.int64(500), np.int64(100)), np.float64(5.0))
    counts = dict(num_requests=60, max_num_seqs=64, max_num_batched_tokens=4096, num_kv_blocks=2000, replicas=2, seed=3)
    from_numpy = simulate(config, workload, **{name: np.int64(value) for name, value in counts.items()})
    assert from_numpy.metrics() == simulate(config, workload, **counts).metrics()
