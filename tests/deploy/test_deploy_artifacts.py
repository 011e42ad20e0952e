"""Emitted artifacts: every bundled plan's launch, benchmark and manifests pass their checkers,
and they carry the plan's numbers.

Expected values come from the problem files and the catalog (cited per test), Kubernetes'
StatefulSet DNS rule (pod ``<set>-<ordinal>.<serviceName>``), and the engine argument table.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from guide_opt.cli import main
from guide_opt.deploy import build_artifacts, check_command, check_manifests
from guide_opt.deploy.tables import kubernetes_table
from guide_opt.problem import Problem
from guide_opt.solution import Deployment

from problem_fixtures import PROBLEMS_DIR


def _solve_json(path: Path, emit_dir: Path) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["solve", str(path), "--format", "json", "--no-explain", "--emit", str(emit_dir)])
    return code, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def emitted(tmp_path_factory, bundled_space) -> dict[str, tuple[dict, Path]]:
    """Every bundled problem that solves: its solve JSON and the --emit folder.

    The CLI runs as a user runs it; each problem's candidate table is the test run's shared build
    (``bundled_space`` stores it in the run's table cache, which ``guide-opt solve`` reads): these tests are about
    what is emitted.
    """
    out = {}
    for path in sorted(PROBLEMS_DIR.glob("*.yaml")):
        bundled_space(path.name)
        emit_dir = tmp_path_factory.mktemp(path.stem)
        code, payload = _solve_json(path, emit_dir)
        assert payload["stats"]["timing"]["candidate_table"] == "cached", path.name
        if code == 0:
            out[path.name] = (payload, emit_dir)
    return out


def test_most_bundled_problems_solve(emitted):
    # 20 bundled problems, 2 of them infeasible by design (infeasible-tpot, batch-infeasible-deadline)
    assert len(emitted) >= 15


def test_every_emitted_command_passes_the_engine_cli_table(emitted):
    checked = 0
    for name, (payload, _) in emitted.items():
        for d in payload["deployments"]:
            artifacts = d["artifacts"]
            assert "unavailable" not in artifacts, f"{name}: {artifacts}"
            for role, line in artifacts["launch"].items():
                assert check_command(shlex.split(line)) == [], f"{name} {role}: {line}"
                checked += 1
            assert check_command(shlex.split(artifacts["benchmark"])) == [], f"{name}: {artifacts['benchmark']}"
    assert checked >= len(emitted)


def test_emitted_scripts_are_valid_bash_running_the_same_commands(emitted):
    for name, (payload, emit_dir) in emitted.items():
        for d in payload["deployments"]:
            folder = emit_dir / d["artifacts"]["name"]
            for script, expected in (("launch.sh", d["artifacts"]["launch"]["server"]), ("bench.sh", d["artifacts"]["benchmark"])):
                path = folder / script
                assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, f"{name}: {path}"
                lines = [line for line in path.read_text().splitlines() if line and not line.startswith(("#", "set "))]
                assert shlex.split(" ".join(line.rstrip("\\") for line in lines)) == shlex.split(expected), f"{name}: {script}"


def test_every_emitted_manifest_validates_against_the_kubernetes_schema(emitted):
    for name, (payload, emit_dir) in emitted.items():
        files = sorted(emit_dir.glob("*/kubernetes.yaml"))
        assert len(files) == len({d["artifacts"]["name"] for d in payload["deployments"]}), name
        for f in files:
            docs = list(yaml.safe_load_all(f.read_text()))
            assert check_manifests(docs) == [], f"{name}: {f}"


def test_manifests_carry_the_plan(emitted):
    # replicas, GPUs per pod (tp x pp on one node) and the node selector of the GPU type
    # (hardware_db/deploy/kubernetes.yaml) come from the plan's deployment record.
    table = kubernetes_table()
    for name, (payload, emit_dir) in emitted.items():
        for d in payload["deployments"]:
            docs = list(yaml.safe_load_all((emit_dir / d["artifacts"]["name"] / "kubernetes.yaml").read_text()))
            deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
            pod = deployment["spec"]["template"]["spec"]
            container = pod["containers"][0]
            vendor = "amd" if d["gpu"].startswith("mi") else "nvidia"
            assert deployment["spec"]["replicas"] == d["replicas"], name
            assert container["resources"]["limits"] == {table.vendors[vendor].resource: str(d["tp"] * d["pp"])}, name
            assert pod["nodeSelector"] == {table.vendors[vendor].node_label: table.node_label_values[d["gpu"]]}, name
            assert container["command"] + container["args"] == shlex.split(d["artifacts"]["launch"]["server"]), name


def test_quickstart_launch_has_the_planned_values(emitted):
    # problems/quickstart.yaml: 1024 input + 256 output tokens, 20 requests/s, SLOs TTFT 500 ms, TPOT 40 ms.
    payload, _ = emitted["quickstart.yaml"]
    d = payload["deployments"][0]
    words = shlex.split(d["artifacts"]["launch"]["server"])
    engine_flags = {"vllm": ("--tensor-parallel-size", "--max-num-seqs", "--max-model-len"),
                    "sglang": ("--tp-size", "--max-running-requests", "--context-length"),
                    "tensorrt-llm": ("--tp_size", "--max_batch_size", "--max_seq_len")}[d["framework"]]
    values = [words[words.index(flag) + 1] for flag in engine_flags]
    assert values == [str(d["tp"]), str(d["max_batch"]), str(1024 + 256)]
    bench = shlex.split(d["artifacts"]["benchmark"])
    for flag, value in (("--random-input-len", "1024"), ("--random-output-len", "256"), ("--request-rate", "20")):
        assert bench[bench.index(flag) + 1] == value
    i = bench.index("--goodput")
    assert bench[i + 1:i + 3] == ["ttft:500", "tpot:40"]


def test_a_closed_loop_load_test_spreads_the_lengths_and_the_server_accepts_them(emitted):
    # problems/fleet-mixed-inventory.yaml: Qwen3-32B for 64 concurrent users, 1024 input + 512 output
    # tokens (Qwen3-32B's context is 40,960). Users of equal lengths stay in lock-step, so the load test
    # spreads them by 0.5 (vLLM's random dataset: uniform on floor(L x 0.5) .. floor(L x 1.5)), and the
    # server must accept the longest: 1536 + 768 = 2304 tokens. The Poisson services keep exact lengths.
    payload, _ = emitted["fleet-mixed-inventory.yaml"]
    by_model = {d["model"]: d for d in payload["deployments"]}
    users = by_model["qwen3-32b"]
    bench = shlex.split(users["artifacts"]["benchmark"])
    assert bench[bench.index("--max-concurrency") + 1] == "64"
    assert bench[bench.index("--random-range-ratio") + 1] == "0.5"
    words = shlex.split(users["artifacts"]["launch"]["server"])
    assert words[words.index("--context-length") + 1] == str(1536 + 768)
    poisson = shlex.split(by_model["llama-3.1-8b"]["artifacts"]["benchmark"])
    assert poisson[poisson.index("--random-range-ratio") + 1] == "0"


def test_amd_gpus_request_the_amd_resource(catalog):
    # an MI300X deployment (vendor amd in hardware_db/gpus/mi300x.yaml) asks Kubernetes for amd.com/gpu, not nvidia.com/gpu
    d = Deployment("llama-3.1-8b", "mi300x", 1, 1, 1, "vllm", "bf16", 64, 0.0, {})
    (a,) = build_artifacts(_requirement(), (d,), catalog)
    assert a.unavailable is None and check_manifests(a.manifests) == []
    limits = next(doc for doc in a.manifests if doc["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert list(limits) == ["amd.com/gpu"]


def _requirement():
    return Problem.from_yaml(PROBLEMS_DIR / "quickstart.yaml").models


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_pipeline_stages_across_nodes_form_a_leader_worker_group(catalog, engine):
    # TP=8 x PP=2 on h100-sxm: 16 GPUs, 8 per node (hardware_db/gpus/h100-sxm.yaml) -> 2 nodes per replica
    d = Deployment("llama-3.1-8b", "h100-sxm", 8, 2, 2, engine, "bf16", 64, 0.0, {})
    (a,) = build_artifacts(_requirement(), (d,), catalog)
    assert a.nodes == 2 and a.unavailable is None
    assert check_manifests(a.manifests) == []
    for _, argv in a.launch:
        assert check_command(argv) == []
    sets = {doc["metadata"]["name"]: doc for doc in a.manifests if doc["kind"] == "StatefulSet"}
    assert len(sets) == 4  # a leader and a worker set per replica
    for leader in (s for s in sets.values() if s["metadata"]["labels"]["role"] == "leader"):
        worker = sets[leader["metadata"]["name"].replace("-leader", "-worker")]
        assert leader["spec"]["replicas"] == 1 and worker["spec"]["replicas"] == 1
        assert worker["spec"]["ordinals"] == {"start": 1}  # worker pod index == its node rank
        args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--node-rank") + 1] == "$(POD_INDEX)"
        # a StatefulSet pod's DNS name is <set>-<ordinal>.<serviceName>: the leader pod is ordinal 0
        leader_dns = f"{leader['metadata']['name']}-0.{leader['spec']['serviceName']}"
        addr_flag = "--master-addr" if engine == "vllm" else "--dist-init-addr"
        assert args[args.index(addr_flag) + 1].split(":")[0] == leader_dns
        gpus = worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == "8"
        if engine == "vllm":
            assert "--headless" in args  # vLLM's worker nodes serve no API (parallelism_scaling docs)


def test_engines_and_forms_guide_opt_does_not_emit_say_why(catalog):
    req = _requirement()
    trt = Deployment("llama-3.1-8b", "h100-sxm", 8, 2, 1, "tensorrt-llm", "bf16", 64, 0.0, {})
    ds = Deployment("llama-3.1-8b", "h100-sxm", 1, 1, 1, "deepspeed-fastgen", "bf16", 64, 0.0, {})
    (a,) = build_artifacts(req, (trt,), catalog)
    (b,) = build_artifacts(req, (ds,), catalog)
    assert "MPI" in a.unavailable
    assert "deepspeed-fastgen" in b.unavailable


def test_fp8_kv_cache_reaches_each_engine(catalog):
    # engine spellings from hardware_db/deploy/engine_cli.yaml (kv_cache_dtype table)
    req = _requirement()
    for engine, expected in (("vllm", ["--kv-cache-dtype", "fp8"]), ("sglang", ["--kv-cache-dtype", "fp8_e4m3"])):
        d = Deployment("llama-3.1-8b", "h100-sxm", 1, 1, 1, engine, "fp8", 64, 0.0, {}, kv_cache_dtype="fp8")
        (a,) = build_artifacts(req, (d,), catalog)
        argv = list(a.launch[0][1])
        i = argv.index(expected[0])
        assert argv[i:i + 2] == expected
    d = Deployment("llama-3.1-8b", "h100-sxm", 1, 1, 1, "tensorrt-llm", "fp8", 64, 0.0, {}, kv_cache_dtype="fp8")
    (a,) = build_artifacts(req, (d,), catalog)
    assert yaml.safe_load(a.files["extra-llm-api-options.yaml"]) == {"kv_cache_config": {"dtype": "fp8"}}
    assert check_manifests(a.manifests) == []
    assert any("Model Optimizer" in n for n in a.notes)  # fp8 weights need a pre-quantized checkpoint


@pytest.mark.parametrize("argv, fragment", [
    (["vllm", "serve", "m", "--tp", "2"], "--tp is not a documented argument"),
    (["vllm", "serve", "m", "--tensor-parallel-size", "0"], "at least 1"),
    (["vllm", "serve", "m", "--gpu-memory-utilization", "1.5"], "at most 1"),
    (["vllm", "serve", "m", "--kv-cache-dtype", "fp16"], "use one of"),
    (["vllm", "serve", "--max-num-seqs", "8"], "the model must follow"),
    (["python3", "-m", "sglang.launch_server", "--tp-size", "2"], "--model-path (the model) is missing"),
    (["trtllm-serve", "m", "--tp-size", "2"], "--tp-size is not a documented argument"),
    (["vllm", "bench", "serve", "--goodput", "ttft=500"], "NAME:MILLISECONDS"),
    (["vllm", "bench", "serve", "--request-rate", "-3"], "above 0"),
    (["llama-server", "-m", "x"], "unknown program"),
])
def test_command_checker_rejects_what_the_engines_reject(argv, fragment):
    problems = check_command(argv)
    assert problems and fragment in " ".join(problems)


def test_manifest_checker_rejects_schema_and_consistency_errors(catalog):
    d = Deployment("llama-3.1-8b", "h100-sxm", 2, 1, 1, "vllm", "bf16", 64, 0.0, {})
    (a,) = build_artifacts(_requirement(), (d,), catalog)
    deployment = next(doc for doc in a.manifests if doc["kind"] == "Deployment")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    assert any("resourcez" in p for p in check_manifests([typo]))
    unset = json.loads(json.dumps(deployment))
    unset["spec"]["template"]["spec"]["containers"][0]["args"] += ["--node-rank", "$(RANK)"]
    assert any("$(RANK) is not defined" in p for p in check_manifests([unset]))
    uneven = json.loads(json.dumps(deployment))
    uneven["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = {"nvidia.com/gpu": "1"}
    assert any("differ from limits" in p for p in check_manifests([uneven]))
