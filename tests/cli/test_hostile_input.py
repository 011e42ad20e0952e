"""The measured failure classes of hostile input, one test each: exit 1 with one line naming the field.

Each expected field and limit comes from the documented limits (problems/README.md, "Limits";
guide_opt/limits.py) or from the sourced engine profiles in hardware_db/frameworks.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import yaml

from guide_opt.cli import main
from guide_opt.errors import InputError
from guide_opt.quanta import to_quanta
from problem_fixtures import small_problem_data


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def bad_input(argv: list[str], *needles: str) -> str:
    code, _out, err = run(argv)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, (code, err)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def problem_file(tmp_path, **overrides) -> str:
    data = small_problem_data(**{k: v for k, v in overrides.items() if "." not in k})
    for dotted, value in overrides.items():
        if "." in dotted:
            node = data
            *parents, last = dotted.split(".")
            for p in parents:
                node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
            node[last] = value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(("key", "value", "field"), [
    ("models.0.workload.request_rate_per_s", float("inf"), "request_rate_per_s"),
    ("budget_per_hour", float("inf"), "budget_per_hour"),
    ("budget_per_hour", 1e300, "budget_per_hour"),  # above the $10,000,000/h limit: would overflow CP-SAT's int64
    ("hardware.prices", {"l40s": float("inf")}, "prices"),
    ("models.0.slo.ttft_ms", float("nan"), "ttft_ms"),
    ("hardware.gpus", [], "hardware.gpus"),
    ("frameworks", [], "frameworks"),
    ("search.tp", [], "search.tp"),
    ("prediction.slo_margin", float("nan"), "slo_margin"),
])
def test_problem_numbers_and_choices_are_checked(tmp_path, key, value, field):
    bad_input(["solve", problem_file(tmp_path, **{key: value}), "--no-explain"], field)


def test_a_fleet_is_bounded_by_its_llms_and_its_candidates(tmp_path):
    """1,000 LLMs are accepted when their candidates fit the 250,000 bound (guide_opt/limits.py); 1,001 are refused,
    and so are 1,000 LLMs whose search asks for 1,000 x 2 GPU types x 1 engine x 1 precision x 2 TP x 64 batch sizes
    = 256,000 candidates."""
    from guide_opt.errors import InputError
    from guide_opt.problem import Problem

    llm = small_problem_data()["models"][0]
    narrow = {"tp": [1], "batch_sizes": [16]}  # 1,000 x 2 GPU types x 1 x 1 x 1 x 1 = 2,000 candidates at most
    fleet = dict(quantizations=["bf16"], search=narrow)
    assert len(Problem.from_dict(small_problem_data(models=[llm] * 1000, **fleet)).models) == 1000
    bad_input(["solve", problem_file(tmp_path, models=[llm] * 1001, **fleet), "--no-explain"], "models", "too many entries")
    with pytest.raises(InputError, match="256,000 candidates"):
        Problem.from_dict(small_problem_data(models=[llm] * 1000, quantizations=["bf16"], search={"tp": [1, 2], "batch_sizes": list(range(1, 65))}))


@pytest.mark.parametrize(("flags", "field"), [
    (["--slo-margin", "nan"], "--slo-margin"),  # NaN would switch every SLO check off
    (["--slo-margin", "inf"], "--slo-margin"),
    (["--time-limit-s", "nan"], "--time-limit-s"),
    (["--seed", str(2**64)], "--seed"),  # CP-SAT's seed is 32-bit
])
def test_solve_flags_are_finite_and_bounded(tmp_path, flags, field):
    bad_input(["solve", problem_file(tmp_path), "--no-explain", *flags], field)


@pytest.mark.parametrize(("flags", "field"), [
    (["--rate", "nan"], "--rate"),
    (["--rate", "inf"], "--rate"),
    (["--rate", "1", "--requests", "100000000"], "200000"),  # MAX_SIMULATED_REQUESTS
    (["--rate", "1", "--input-tokens", "1000000"], "context"),  # Llama-3.2-1B's context is 131,072 tokens
])
def test_simulate_flags(flags, field):
    bad_input(["simulate", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", *flags], field)


@pytest.mark.parametrize(("gpu", "framework", "quantization"), [
    ("mi300x", "tensorrt-llm", "bf16"),  # TensorRT-LLM supported hardware: NVIDIA only
    ("t4", "deepspeed-fastgen", "bf16"),  # DeepSpeed-MII quick start: compute capability >= 8.0
    ("v100-16gb", "sglang", "bf16"),  # SGLang sm75 EOL: Ampere or newer
    ("h100-sxm", "deepspeed-fastgen", "fp8"),  # FastGen serves fp16/bf16 only
])
def test_engines_run_only_where_their_profile_says(gpu, framework, quantization):
    bad_input(["estimate", "--model", "llama-3.2-1b", "--gpu", gpu, "--framework", framework, "--quantization", quantization], framework)


def test_vllm_runs_on_t4():
    # vLLM GPU installation docs: compute capability 7.0 or higher (T4 is 7.5); bf16 runs as fp16 there
    assert run(["estimate", "--model", "llama-3.2-1b", "--gpu", "t4", "--framework", "vllm"])[0] == 0


def test_request_longer_than_context_is_bad_input_in_solve(tmp_path):
    # Llama-3.1-8B's context is 131,072 tokens
    bad_input(["solve", problem_file(tmp_path, **{"models.0.workload.input_tokens": 200_000}), "--no-explain"], "models[0].workload", "context")


def test_binary_problem_file_is_bad_input(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(bytes(range(256)))
    bad_input(["solve", str(path)], str(path), "UTF-8")


def test_plot_into_a_missing_folder_is_refused_before_the_solve(tmp_path):
    target = tmp_path / "missing" / "chart.png"
    bad_input(["solve", problem_file(tmp_path), "--no-explain", "--plot", str(target)], "--plot", "does not exist")
    assert not target.parent.exists()  # never creates folders


def test_calibrate_out_into_a_missing_folder_is_refused(tmp_path):
    data = tmp_path / "bench.csv"
    data.write_text("model,gpu,framework,tp,batch,input_tokens,output_tokens,tpot_ms\nllama-3.1-8b,h100-sxm,vllm,1,8,512,128,10\n")
    target = tmp_path / "missing" / "cal.yaml"
    bad_input(["calibrate", "--data", str(data), "--out", str(target)], "--out")
    assert not target.parent.exists()


def test_solve_help_lists_exit_code_3_and_the_optuna_solver():
    code, out, _ = run(["solve", "--help"])
    assert code == 0 and "optuna" in out and "3 for an internal error" in " ".join(out.split())


def test_to_quanta_refuses_what_int64_sums_cannot_hold():
    with pytest.raises(InputError, match="budget_per_hour"):
        to_quanta(1e300, 1e-6, field="budget_per_hour")
    assert to_quanta(10_000_000, 1e-6) == 10**13  # the budget limit in $1e-6 quanta, hand computed


def test_fleet_alternatives_name_their_llms():
    from guide_opt.cli.solve_cmd import plan_summary

    two = [{"model": "a", "summary": "1 x x"}, {"model": "b", "summary": "2 x y"}]
    assert plan_summary(two) == "a: 1 x x + b: 2 x y"
    assert plan_summary(two[:1]) == "1 x x"


def test_long_chart_titles_wrap_to_the_figure_width():
    # 9 characters per inch of an 11-inch figure: at most 99 characters per title line (plotting._TITLE_CHARS_PER_IN)
    from matplotlib.figure import Figure

    from guide_opt.plotting import _suptitle

    fig = Figure(figsize=(11, 4))
    title = "Overnight batch of five jobs on a shared pool with a very long descriptive problem name -- min_makespan schedule (OPTIMAL): makespan 6.42 h, cost $236.48"
    _suptitle(fig, title)
    lines = fig._suptitle.get_text().split("\n")
    assert len(lines) >= 2 and all(len(line) <= 99 for line in lines)
    assert " ".join(lines).replace("\\$", "$") == title


def test_config_json_sizes_are_bounded(tmp_path):
    # found by the fuzzer: an integral 1e300 hidden_size passed the import and overflowed the memory model
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1e300, "intermediate_size": 8192,
              "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
              "max_position_embeddings": 8192}
    path = tmp_path / "config.json"
    path.write_text(__import__("json").dumps(config))
    bad_input(["estimate", "--model", str(path), "--gpu", "h100-sxm"], "hidden_size", "2,147,483,647")


def test_benchmark_csv_with_an_infinite_count_is_bad_input(tmp_path):
    # found by the fuzzer: int(float("inf")) raised OverflowError while reading the tp cell
    data = tmp_path / "bench.csv"
    data.write_text("model,gpu,framework,tp,batch,input_tokens,output_tokens,tpot_ms\nllama-3.1-8b,h100-sxm,vllm,inf,8,512,128,10\n")
    bad_input(["calibrate", "--data", str(data), "--out", str(tmp_path / "cal.yaml")], "tp")


def test_trace_csv_that_is_binary_or_infinite_is_bad_input(tmp_path):
    binary = tmp_path / "trace.csv"
    binary.write_bytes(b"\x00\xff\xfe")
    base = ["simulate", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", "--users", "2", "--requests", "5", "--workload"]
    bad_input([*base, str(binary)], "--workload", "UTF-8")
    infinite = tmp_path / "inf.csv"
    infinite.write_text("n_input_tokens,n_output_tokens\ninf,5\n")
    bad_input([*base, str(infinite)], "--workload", "line 2")


def test_sqlite_storage_without_a_file_is_bad_input(tmp_path):
    # sqlite:/// is a per-connection in-memory database: the study's tables would vanish between transactions
    bad_input(["solve", problem_file(tmp_path), "--no-explain", "--refine", "--trials", "1", "--storage", "sqlite:///"], "--storage")
