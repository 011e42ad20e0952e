"""Hostile-input fuzzing of the ``guide-opt`` CLI: hypothesis strategies for the four input kinds
and the property every run must satisfy.

Input kinds: problem files (``solve``), calibration benchmark CSVs (``calibrate``), HuggingFace
``config.json`` files (``estimate --model PATH``) and command-line flags (``estimate``,
``simulate``, ``solve``). Each case runs the CLI in-process (:func:`guide_opt.cli.main`).

The property (:func:`check`):
- the exit code is 0, 1 or 2 (never 3, the internal-error code, and never an exception);
- exit 1 prints exactly one line, ``error: FIELD: ...``, naming the field;
- no traceback is ever printed;
- exit 0 / 2 outputs pass the checker of their kind: a solve's deployments re-verified with
  :func:`guide_opt.verify.verify_deployments`, an infeasible answer carries its explanation,
  estimates and simulations report finite metrics, a calibration file loads back;
- a case finishes within :data:`CASE_TIME_BOUND_S`.

Used by ``tests/fuzz/test_fuzz.py`` (a few examples by default, thousands with ``-m slow``)
and ``benchmarks/bench_reliability.py`` (the counts in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import strategies as st

from guide_opt.cli import main

#: Wall-clock bound of one fuzzed case, seconds (the work bounds of guide_opt.limits keep every case far below it).
CASE_TIME_BOUND_S = 60.0
#: An exit-1 line: ``error: `` then a field (a file path, a dotted key or an option) and a colon.
_ERROR_LINE = re.compile(r"^error: (?:Invalid value for '--[a-z0-9-]+'|Missing option '--[a-z0-9-]+'|No such option: --?\S+|\S[^:]*): \S")

# ---- values a hostile user might write --------------------------------------------------------
_EDGE_NUMBERS = [0, -1, 1, 0.5, 1e-300, 1e300, 2**31, 2**63, 2**70, -(2**63), float("nan"), float("inf"), float("-inf")]
hostile_numbers = st.one_of(
    st.sampled_from(_EDGE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=1, max_value=300),
    st.floats(min_value=0.01, max_value=2000),
)
hostile_scalars = st.one_of(hostile_numbers, st.none(), st.booleans(), st.text(max_size=12),
                            st.sampled_from(["", "all", "nan", ".inf", "h100-sxm", "vllm", "bf16", "1e999", "~"]))
hostile_values = st.one_of(hostile_scalars, st.lists(hostile_scalars, max_size=4),
                           st.dictionaries(st.text(max_size=8), hostile_scalars, max_size=3))


def _set(data: dict, path: str, value) -> None:
    """Set the dotted ``path`` of ``data`` to ``value`` (silently skipped where an earlier edit changed the shape)."""
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                return
            node = node[int(k)]
        elif isinstance(node, dict):
            node = node.setdefault(k, {})
        else:
            return
    if isinstance(node, dict):
        node[keys[-1]] = value


# ---- problem files ------------------------------------------------------------------------------
def base_problem() -> dict:
    """A small valid problem (Llama-3.2-1B on two GPU types; a few candidates, solved in well under a second)."""
    return {
        "name": "fuzz",
        "models": [{"id": "llama-3.2-1b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 5},
                    "slo": {"ttft_ms": 500, "tpot_ms": 50}}],
        "hardware": {"gpus": ["l4", "a100-80gb-sxm"], "max_gpus": 8},
        "frameworks": ["vllm"],
        "budget_per_hour": 30,
        "objective": "min_cost",
        "search": {"tp": [1, 2], "batch_sizes": [4, 16, 64]},
    }


PROBLEM_PATHS = [
    "name", "models.0.id", "models.0.workload.input_tokens", "models.0.workload.output_tokens", "models.0.workload.request_rate_per_s",
    "models.0.workload.concurrent_users", "models.0.workload.preset", "models.0.workload.requests", "models.0.workload.deadline_h",
    "models.0.slo.ttft_ms", "models.0.slo.tpot_ms", "models.0.slo.percentile", "models.0.precision_tolerance",
    "hardware.gpus", "hardware.max_gpus", "hardware.inventory", "hardware.prices", "hardware.prices.l4", "hardware.inventory.l4",
    "hardware.price_table", "frameworks", "quantizations", "budget_per_hour", "objective", "search.tp", "search.pp",
    "search.batch_sizes", "search.max_replicas", "search.kv_cache_dtypes", "prediction.slo_margin", "prediction.calibration",
    "scheduling.enabled", "scheduling.time_quantum_s", "unknown_key", "models.0.workload.histogram", "models.0.workload.trace",
    "models.0.workload", "models.0.slo", "models", "hardware", "search",
]
_GOOD_CHOICES = {
    "objective": ["min_cost", "max_throughput", "min_latency", "max_served", "pareto"],
    "frameworks": [["vllm", "sglang"], ["tensorrt-llm"], ["deepspeed-fastgen"], []],
    "hardware.gpus": [["t4", "v100-16gb"], ["mi300x"], ["h100-sxm"], "all", []],
    "quantizations": [["fp8"], ["w4a16"], ["bf16", "w8a8"]],
    "models.0.precision_tolerance": ["none", "10%", "20%", "50%"],
    "models.0.id": ["llama-3.1-8b", "mistral-7b", "llama-2-70b"],
}


def alias_bomb(levels: int = 8, fan_out: int = 9) -> str:
    """A 'billion laughs' YAML: each level lists the previous one ``fan_out`` times (fan_out**levels values)."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan_out) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan_out) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: fuzz\ndescription: *l{levels - 1}\n"


@st.composite
def problem_texts(draw) -> str:
    """YAML text of a problem: a valid base with 0-3 hostile or edge-case edits, or (rarely) a hostile file."""
    whole = draw(st.integers(0, 19))
    if whole == 0:
        return draw(st.sampled_from([
            alias_bomb(),
            "a: &x [1, *x]\n", "[" * 200 + "]" * 200, "name: [unclosed\n", "", "- just\n- a list\n", "\x00\x01\x02binary\xff",
        ]))
    data = base_problem()
    if draw(st.booleans()):
        data["models"].append({"id": "llama-3.1-8b", "workload": {"input_tokens": 256, "output_tokens": 64, "request_rate_per_s": 2},
                               "slo": {"ttft_ms": 800}})
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PROBLEM_PATHS))
        good = _GOOD_CHOICES.get(path)
        value = draw(st.sampled_from(good)) if good and draw(st.booleans()) else draw(hostile_values)
        _set(data, path, value)
    return yaml.safe_dump(data, allow_unicode=True)


# ---- calibration CSVs ---------------------------------------------------------------------------
CSV_COLUMNS = ("model", "gpu", "framework", "tp", "batch", "input_tokens", "output_tokens", "ttft_ms", "tpot_ms", "throughput_tokens_per_s")


@st.composite
def calibration_csvs(draw) -> str:
    """A benchmark CSV: plausible rows with hostile cells, dropped columns, or (rarely) a hostile file."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(["", "\x00\xff\xfe", "model,gpu\n", "a,b,c\n1,2,3\n", ",,,,\n" * 3]))
    columns = list(CSV_COLUMNS)
    if draw(st.integers(0, 9)) == 0:
        columns.remove(draw(st.sampled_from(columns)))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        hostile = draw(st.integers(0, 5)) == 0  # most rows are plausible, so fits run too
        choose = (lambda good, bad: draw(st.sampled_from(good + bad))) if hostile else (lambda good, bad: draw(st.sampled_from(good)))
        row = {"model": choose(["llama-3.1-8b", "llama-2-7b", "mistral-7b"], ["nope", ""]),
               "gpu": choose(["a100-80gb-sxm", "h100-sxm", "l4"], ["mi300x", "t4", "nope"]),
               "framework": choose(["vllm", "sglang", "tensorrt-llm"], ["deepspeed-fastgen", "nope"]),
               "tp": choose([1, 2], [3, 0, -1, 2**70]), "batch": choose([1, 8, 64], [0, 10**12]),
               "input_tokens": choose([128, 1024], [0, 10**9]), "output_tokens": choose([64, 256], [0, -5]),
               "ttft_ms": draw(st.floats(1, 5000)), "tpot_ms": draw(st.floats(1, 200)), "throughput_tokens_per_s": draw(st.floats(10, 1e5))}
        if hostile:
            row[draw(st.sampled_from(columns))] = draw(hostile_scalars)
        rows.append(",".join("" if row.get(c) is None else str(row.get(c)).replace(",", " ").replace("\n", " ") for c in columns))
    return ",".join(columns) + "\n" + "".join(r + "\n" for r in rows)


# ---- HuggingFace config.json --------------------------------------------------------------------
def base_config_json() -> dict:
    """A Llama-like config.json (the fields guide-opt reads)."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
            "max_position_embeddings": 8192, "torch_dtype": "bfloat16", "tie_word_embeddings": True}


@st.composite
def config_jsons(draw) -> str:
    """config.json text: the base with 0-3 hostile fields, extra/missing keys, or (rarely) not JSON at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(["", "{", "[]", "null", "\x00\xff", '{"hidden_size": NaN}', '{"hidden_size": Infinity}',
                                     "[" * 100_000 + "]" * 100_000, '{"hidden_size": 1e999}']))
    data = base_config_json()
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*data, "num_local_experts", "num_experts_per_tok", "head_dim", "n_embd", "unknown"]))
        if draw(st.integers(0, 4)) == 0:
            data.pop(key, None)
        else:
            data[key] = draw(hostile_values)
    return json.dumps(data, allow_nan=True, default=str)


# ---- command-line flags -------------------------------------------------------------------------
flag_values = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1", "2", "4", "1e309", "1e-309", "0x10", "", "99999999999999999999999",
                     "2147483648", "1.5", "abc", "8", "64", "1000001", "200001"]),
    st.integers(-5, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


_GOOD_FLAG_VALUES = {
    "--tp": ["1", "2", "4"], "--pp": ["1", "2"], "--input-tokens": ["128", "512", "2048"], "--output-tokens": ["16", "128"],
    "--batch": ["1", "8", "64"], "--h2o-kept-fraction": ["1", "0.5"], "--rate": ["0.5", "5", "50"], "--users": ["1", "8", "64"],
    "--seed": ["0", "7", "2147483647"], "--replicas": ["1", "2"], "--max-num-seqs": ["8", "64"], "--ttft-slo-ms": ["200", "1000"],
    "--tpot-slo-ms": ["20", "100"], "--time-limit-s": ["5", "0.5"], "--slo-margin": ["1", "1.5", "3"],
}


@st.composite
def cli_argvs(draw, problem_file: str, out_dir: str) -> list[str]:
    """argv for estimate, simulate or solve: each optional flag absent, plausible or hostile."""
    verb = draw(st.sampled_from(["estimate", "simulate", "solve"]))

    def value(flag: str) -> str:
        good = _GOOD_FLAG_VALUES.get(flag)
        return draw(st.sampled_from(good)) if good and draw(st.integers(0, 4)) else draw(flag_values)

    def maybe(flag: str, choices=None) -> list[str]:
        if draw(st.booleans()):
            return []
        return [flag, draw(choices) if choices is not None else value(flag)]

    def pick(good: list[str], bad: list[str]) -> str:
        return draw(st.sampled_from(good if draw(st.integers(0, 5)) else bad))

    models = st.sampled_from(["llama-3.2-1b", "llama-3.1-8b", "mistral-7b", "nope"])
    frameworks = st.sampled_from(["vllm", "sglang", "tensorrt-llm", "deepspeed-fastgen", "nope"])
    quants = st.sampled_from(["bf16", "fp8", "w8a8", "w4a16", "fp16", "nope"])
    if verb in ("estimate", "simulate"):
        gpu = pick(["h100-sxm", "a100-80gb-sxm", "l4", "l40s"], ["t4", "mi300x", "v100-16gb", "nope", ""])
        argv = [verb, "--model", draw(models), "--gpu", gpu, *maybe("--framework", frameworks), *maybe("--quantization", quants),
                *maybe("--tp"), *maybe("--pp"), *maybe("--input-tokens"), *maybe("--output-tokens"), "--format", "json"]
        if verb == "estimate":
            return argv + maybe("--batch") + maybe("--h2o-kept-fraction")
        arrival = draw(st.sampled_from(["--rate", "--users", "--rate", "--users", "both", "none"]))
        for flag in (["--rate", "--users"] if arrival == "both" else [] if arrival == "none" else [arrival]):
            argv += [flag, value(flag)]
        requests = draw(st.one_of(st.integers(1, 300).map(str), flag_values))
        if requests.lstrip("-").isdigit() and 300 < int(requests) <= 200_000:
            requests = "300"  # valid large runs are timed by bench_simulator, not fuzzed
        return argv + ["--requests", requests, *maybe("--seed"), *maybe("--replicas"), *maybe("--max-num-seqs"),
                       *maybe("--ttft-slo-ms"), *maybe("--tpot-slo-ms")]
    plot = draw(st.sampled_from([None, None, f"{out_dir}/chart.png", f"{out_dir}/missing/chart.png", f"{out_dir}/chart.txt", out_dir]))
    return ["solve", problem_file, "--format", "json", "--no-explain", *maybe("--time-limit-s"), *maybe("--seed"), *maybe("--slo-margin"),
            *maybe("--solver", st.sampled_from(["cpsat", "cpsat", "exhaustive", "nope"])),
            *maybe("--preset", st.sampled_from(["fast", "exact", "nope"])), *(["--plot", plot] if plot else [])]


# ---- running and checking -----------------------------------------------------------------------
@dataclass
class Outcome:
    """One fuzzed CLI run: its argv, exit code, output and time, and what the property found wrong."""

    kind: str
    argv: list[str]
    code: int | str
    stdout: str
    stderr: str
    seconds: float
    problems: list[str] = field(default_factory=list)


def run_cli(kind: str, argv: list[str]) -> Outcome:
    """Run ``guide-opt argv`` in this process, capturing stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str = main(argv)
        except BaseException as exc:  # noqa: BLE001 -- the property counts it
            code = f"raised {type(exc).__name__}: {exc}"
    return Outcome(kind, argv, code, out.getvalue(), err.getvalue(), time.perf_counter() - started)


def _finite_tree(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_tree(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_tree(v) for v in value)
    return True


def _check_solve(o: Outcome) -> list[str]:
    from guide_opt.plan import verification_problem
    from guide_opt.problem import Problem
    from guide_opt.solution import Deployment
    from guide_opt.verify import verify_deployments

    payload = json.loads(o.stdout)
    if o.code == 2:
        explained = payload.get("explanation") or payload.get("status") == "UNKNOWN"
        return [] if payload.get("status") in ("INFEASIBLE", "UNKNOWN") and explained else [f"exit 2 without an explained INFEASIBLE/UNKNOWN: {payload.get('status')}"]
    if "points" in payload or "schedule" in payload:
        return [] if payload.get("verified") else ["a pareto/schedule answer was not verified"]
    fields = ("model", "gpu", "tp", "pp", "replicas", "framework", "quantization", "max_batch", "cost_per_hour", "metrics", "kv_cache_dtype", "slo_margin")
    deployments = [Deployment(**{k: d[k] for k in fields}) for d in payload["deployments"]]
    problem = Problem.from_yaml(o.argv[1])
    if "--slo-margin" in o.argv:
        from guide_opt.cli.solve_cmd import with_prediction_options

        problem = with_prediction_options(problem, None, float(o.argv[o.argv.index("--slo-margin") + 1]))
    violations = verify_deployments(verification_problem(problem, deployments), deployments)
    return [f"verification: {v.text}" for v in violations]


def check(o: Outcome) -> list[str]:
    """Every way ``o`` breaks the property (empty when it holds)."""
    problems = []
    text = o.stdout + o.stderr
    if "Traceback (most recent call last)" in text:
        problems.append("traceback printed")
    if o.code not in (0, 1, 2):
        problems.append(f"exit code {o.code}")
    elif o.code == 1:
        lines = [line for line in o.stderr.splitlines() if line.strip()]
        if len(lines) != 1:
            problems.append(f"exit 1 printed {len(lines)} lines on stderr")
        elif not _ERROR_LINE.match(lines[0]):
            problems.append(f"exit 1 line does not name a field: {lines[0][:120]}")
    else:
        try:
            payload = json.loads(o.stdout) if o.stdout.strip() else None
            if o.argv[0] == "solve":
                problems += _check_solve(o)
            elif o.argv[0] in ("estimate", "simulate"):
                if payload is None or not _finite_tree(payload.get("metrics", payload)):
                    problems.append(f"{o.argv[0]} printed non-finite or no metrics")
                # `estimate --help`: exit 0 when the engine serves it -- a burst resident or in waves (`runs`), a
                # steady state resident and within capacity (`fits` and `stable`); else 2. `simulate` reports `fits`.
                served = payload.get("runs", payload.get("fits")) if payload else None
                if payload is not None and payload.get("stable") is False:
                    served = False
                if served is not None and (o.code == 0) != bool(served):
                    problems.append(f"exit {o.code} but fits={payload.get('fits')}, runs={payload.get('runs')}, stable={payload.get('stable')}")
            elif o.argv[0] == "calibrate" and o.code == 0:
                from guide_opt.validation.calibration import load_calibration

                load_calibration(o.argv[o.argv.index("--out") + 1])
        except Exception as exc:  # noqa: BLE001 -- a checker failure is a finding
            problems.append(f"output check failed: {type(exc).__name__}: {exc}")
    if o.seconds > CASE_TIME_BOUND_S:
        problems.append(f"took {o.seconds:.1f} s (bound {CASE_TIME_BOUND_S:.0f} s)")
    o.problems = problems
    return problems


def run_case(kind: str, payload, work_dir: Path) -> Outcome:
    """Write ``payload`` (file text, or argv for ``flags``) under ``work_dir`` and run the CLI on it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if kind == "flags":
        outcome = run_cli(kind, payload)
    else:
        name = {"problem": "problem.yaml", "csv": "bench.csv", "config": "config.json"}[kind]
        path = work_dir / name
        path.write_bytes(payload.encode("utf-8", "surrogateescape") if "\x00" not in payload else payload.encode("latin-1", "replace"))
        argv = {"problem": ["solve", str(path), "--format", "json", "--no-explain", "--time-limit-s", "10"],
                "csv": ["calibrate", "--data", str(path), "--out", str(work_dir / "cal.yaml"), "--no-cross-validate", "--format", "json"],
                "config": ["estimate", "--model", str(path), "--gpu", "h100-sxm", "--format", "json"]}[kind]
        (work_dir / "cal.yaml").unlink(missing_ok=True)
        outcome = run_cli(kind, argv)
    check(outcome)
    return outcome


def flag_problem_file(work_dir: Path) -> str:
    """The small valid problem the ``flags`` kind solves."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "flags-problem.yaml"
    path.write_text(yaml.safe_dump(base_problem()))
    return str(path)
