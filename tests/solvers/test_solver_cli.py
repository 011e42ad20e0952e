"""``guide-opt solve`` from the command line: exit codes, JSON contract, readable table."""

from __future__ import annotations

import json

from guide_opt.cli import main

from problem_fixtures import PROBLEMS_DIR


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_solve_json_contract(capsys):
    code, out, _ = run(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["status"] == "OPTIMAL" and payload["verified"] is True
    assert payload["gap"] == 0.0 and payload["bound"] == payload["objective"]
    assert payload["deployments"][0]["model"] == "llama-3.1-8b"
    assert payload["binding_constraints"]


def test_solve_table_says_how_to_run_it(capsys):
    code, out, _ = run(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--no-explain")
    assert code == 0
    assert "status OPTIMAL" in out and "max-num-seqs" in out and "verified with the full model: yes" in out


def test_infeasible_exits_2_with_reasons(capsys):
    code, out, _ = run(capsys, "solve", str(PROBLEMS_DIR / "infeasible-tpot.yaml"))
    assert code == 2
    assert "Why it is infeasible" in out and "relax models[0].slo.tpot_ms" in out


def test_missing_file_exits_1(capsys, tmp_path):
    code, _, err = run(capsys, "solve", str(tmp_path / "nope.yaml"))
    assert code == 1 and "no such file" in err and "Traceback" not in err


def test_bad_key_exits_1_with_one_line(capsys, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nmodels:\n  - id: llama-3.1-8b\n    workload: {input_tokens: 5, output_tokens: 5}\n    slo: {ttft: 3}\n")
    code, _, err = run(capsys, "solve", str(path))
    assert code == 1
    assert err.strip().count("\n") == 0 and "models[0].slo.ttft" in err and "unknown key" in err


def test_unknown_solver_and_preset_exit_1(capsys):
    assert run(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--solver", "gurobi")[0] == 1
    code, _, err = run(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--preset", "turbo")
    assert code == 1 and "fast" in err


def test_exhaustive_solver_from_cli_agrees(capsys):
    _, a, _ = run(capsys, "solve", str(PROBLEMS_DIR / "llm-pilot-200-users.yaml"), "--format", "json", "--no-explain")
    _, b, _ = run(capsys, "solve", str(PROBLEMS_DIR / "llm-pilot-200-users.yaml"), "--format", "json", "--no-explain", "--solver", "exhaustive")
    assert json.loads(a)["objective"] == json.loads(b)["objective"]


def test_refine_options_need_refine_and_a_supported_objective(capsys):
    code, _, err = run(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--trials", "5")
    assert code == 1 and "--refine" in err
    code, _, err = run(capsys, "solve", str(PROBLEMS_DIR / "pareto-chat-8b.yaml"), "--refine")
    assert code == 1 and "pareto" in err


def test_refine_json_reports_incumbent_and_refined(capsys):
    code, out, _ = run(capsys, "solve", str(PROBLEMS_DIR / "llm-pilot-200-users.yaml"), "--refine", "--trials", "6",
                       "--format", "json", "--no-explain")
    assert code == 0
    refinement = json.loads(out)["refinement"]
    assert refinement["incumbent"] and refinement["refined"]


def test_solve_table_reads_a_closed_loop_against_the_open_loop_capacity(capsys):
    # A closed loop keeps every slot busy and may pass the open-loop capacity (defined at the stability limit of the slots),
    # so its share is named as a throughput; min-latency-codegen plans 16 users, the quickstart a request rate.
    code, out, _ = run(capsys, "solve", str(PROBLEMS_DIR / "min-latency-codegen.yaml"), "--no-explain")
    assert code == 0
    load = next(line for line in out.splitlines() if "users per replica" in line)
    assert "of the open-loop capacity)" in load
    code, out, _ = run(capsys, "solve", str(PROBLEMS_DIR / "quickstart.yaml"), "--no-explain")
    load = next(line for line in out.splitlines() if "requests/s per replica" in line)
    assert code == 0 and "% of capacity)" in load and "open-loop" not in load
