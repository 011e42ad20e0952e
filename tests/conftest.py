"""Shared fixtures: the bundled catalog, a :class:`ServingConfig` factory, HF config writers.

A catalog id that a test needs but that ``hardware_db/`` does not hold fails the test: the
catalog is part of the product, so a missing entry is a defect, not a reason to skip.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import os

import pytest
from hypothesis import settings

from guide_opt.catalog import Catalog, load_catalog
from guide_opt.frameworks import FrameworkProfile
from guide_opt.hardware import GpuSpec
from guide_opt.llm import LlmSpec
from guide_opt.perf import ServingConfig
from guide_opt.quantization import QuantizationSpec


# Property tests draw the same examples on every run (``deterministic``), so that a clean clone's
# test run is repeatable; HYPOTHESIS_PROFILE=explore draws new ones (how new counterexamples are
# found -- each one found is then pinned as an explicit test).
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

# Every solve of a test run (in this process, in forked workers and in CLI subprocesses, which inherit
# the environment) shares one table cache in a folder of its own, never the user's ~/.cache: a bundled
# problem's candidate table is built once per run. Tests of the cache itself, and tests that compare
# two builds, point GUIDE_OPT_CACHE_DIR elsewhere or pass --no-cache.
_TABLE_CACHE = tempfile.TemporaryDirectory(prefix="guide-opt-tables-")
os.environ["GUIDE_OPT_CACHE_DIR"] = _TABLE_CACHE.name


def require(catalog: Catalog, kind: str, item_id: str):
    """Return ``catalog.<kind>[item_id]``; fail the test when the id is missing from the catalog."""
    table = getattr(catalog, kind)
    if item_id not in table:
        pytest.fail(f"{kind} id '{item_id}' is missing from hardware_db/")
    return table[item_id]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The bundled ``hardware_db/`` catalog (loaded once)."""
    return load_catalog()


@pytest.fixture(scope="session")
def need(catalog: Catalog) -> Callable[[str, str], object]:
    """``need(kind, id)``: the catalog entry (``kind`` is gpus, llms, frameworks or price_tables); a missing one fails."""
    return lambda kind, item_id: require(catalog, kind, item_id)


@pytest.fixture(scope="session")
def flat_gpu(catalog: Catalog) -> Callable[[str], GpuSpec]:
    """``flat_gpu(id)``: the catalog GPU without kernel curves, so the engine factors alone set the
    achieved fractions (the form in which per-operator rooflines are computed by hand)."""
    return lambda gpu_id: require(catalog, "gpus", gpu_id).model_copy(update={"kernels": None})


@pytest.fixture(scope="session")
def make_config(catalog: Catalog) -> Callable[..., ServingConfig]:
    """Factory: ``make_config(llm="llama-2-7b", gpu="a100-80gb-sxm", framework="vllm", quantization="bf16", **fields)``.

    Each of llm / gpu / framework / quantization is a catalog id or an already built spec;
    the remaining keyword arguments are :class:`ServingConfig` fields (tp, pp, batch, ...).
    """

    def make(
        llm: str | LlmSpec = "llama-2-7b",
        gpu: str | GpuSpec = "a100-80gb-sxm",
        framework: str | FrameworkProfile = "vllm",
        quantization: str | QuantizationSpec = "bf16",
        **fields,
    ) -> ServingConfig:
        return ServingConfig(
            llm=require(catalog, "llms", llm) if isinstance(llm, str) else llm,
            gpu=require(catalog, "gpus", gpu) if isinstance(gpu, str) else gpu,
            framework=require(catalog, "frameworks", framework) if isinstance(framework, str) else framework,
            quantization=catalog.quantization(quantization) if isinstance(quantization, str) else quantization,
            **fields,
        )

    return make


@pytest.fixture(scope="session")
def bundled_space() -> Callable[[str], tuple]:
    """``bundled_space(name)``: ``(problem, space)`` of ``problems/<name>``, the candidate table built once per test run.

    Solvers copy the space they are given before applying no-goods (``solvers.base.with_nogoods``), so tests that
    solve a bundled problem several ways (CP-SAT and exhaustive; static and simulation-checked) share one build.
    The table goes through the run's table cache (above), so ``guide-opt solve problems/<name>`` in a later test
    reads it too.
    """
    from guide_opt.problem import Problem
    from guide_opt.table_cache import cached_build

    from problem_fixtures import PROBLEMS_DIR

    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            problem = Problem.from_yaml(PROBLEMS_DIR / name)
            cache[name] = (problem, cached_build(problem)[0])
        return cache[name]

    return get


@pytest.fixture
def write_hf_config(tmp_path: Path) -> Callable[[dict, str], Path]:
    """Write ``config`` as ``tmp_path/<folder>/config.json`` and return the file's path."""

    def write(config: dict, folder: str = "my-llm") -> Path:
        path = tmp_path / folder / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        return path

    return write
