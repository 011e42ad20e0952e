"""Hostile input gets a clean answer: the fuzz property of :mod:`fuzz_harness` over the four input kinds.

The default run draws a few examples per kind; ``pytest -m slow tests/fuzz`` draws thousands.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_harness import alias_bomb, calibration_csvs, cli_argvs, config_jsons, flag_problem_file, problem_texts, run_case

QUICK = settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
THOROUGH = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _assert_clean(outcome) -> None:
    assert not outcome.problems, f"{outcome.argv}: {outcome.problems}; exit {outcome.code}; stderr {outcome.stderr[-400:]!r}"


def _problem(tmp_path_factory, text):
    _assert_clean(run_case("problem", text, tmp_path_factory.mktemp("p")))


def _csv(tmp_path_factory, text):
    _assert_clean(run_case("csv", text, tmp_path_factory.mktemp("c")))


def _config(tmp_path_factory, text):
    _assert_clean(run_case("config", text, tmp_path_factory.mktemp("j")))


def _flags(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("f")
    _assert_clean(run_case("flags", data.draw(cli_argvs(flag_problem_file(work), str(work))), work))


@QUICK
@given(text=problem_texts())
def test_problem_files(tmp_path_factory, text):
    _problem(tmp_path_factory, text)


@QUICK
@given(text=calibration_csvs())
def test_calibration_csvs(tmp_path_factory, text):
    _csv(tmp_path_factory, text)


@QUICK
@given(text=config_jsons())
def test_config_jsons(tmp_path_factory, text):
    _config(tmp_path_factory, text)


@QUICK
@given(data=st.data())
def test_cli_flags(tmp_path_factory, data):
    _flags(tmp_path_factory, data)


def test_alias_bomb_is_refused_quickly(tmp_path):
    # 9**8 = 43 million values once expanded, far above MAX_YAML_NODES (200,000): refused before it is built.
    outcome = run_case("problem", alias_bomb(), tmp_path)
    assert outcome.code == 1 and "200,000" in outcome.stderr and outcome.seconds < 5


@pytest.mark.slow
@THOROUGH
@given(text=problem_texts())
def test_problem_files_thoroughly(tmp_path_factory, text):
    _problem(tmp_path_factory, text)


@pytest.mark.slow
@THOROUGH
@given(text=calibration_csvs())
def test_calibration_csvs_thoroughly(tmp_path_factory, text):
    _csv(tmp_path_factory, text)


@pytest.mark.slow
@THOROUGH
@given(text=config_jsons())
def test_config_jsons_thoroughly(tmp_path_factory, text):
    _config(tmp_path_factory, text)


@pytest.mark.slow
@THOROUGH
@given(data=st.data())
def test_cli_flags_thoroughly(tmp_path_factory, data):
    _flags(tmp_path_factory, data)
