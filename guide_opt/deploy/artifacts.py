"""From a plan to files a person can run: launch commands, Kubernetes manifests and the SLO benchmark.

:func:`build_artifacts` turns each :class:`~guide_opt.solution.Deployment` of a solution (with
the problem's workload and SLOs for its LLM) into :class:`DeploymentArtifacts`;
:meth:`DeploymentArtifacts.to_json` is what ``solve --format json`` adds to each deployment and
:func:`write_artifacts` writes ``solve --emit DIR``: per deployment a folder with ``launch.sh``,
``kubernetes.yaml``, ``bench.sh`` (and TensorRT-LLM's options file when it needs one).

A replica whose ``tp x pp`` GPUs exceed one node of its GPU type is split over
``ceil(tp x pp / gpus_per_node)`` nodes along its pipeline stages (``pp`` must divide evenly);
tensor parallelism never crosses a node. Engines or forms guide-opt does not emit
(DeepSpeed-FastGen, multi-node TensorRT-LLM) get ``unavailable`` with the reason.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from guide_opt.catalog import Catalog
from guide_opt.deploy.checks import program_of
from guide_opt.deploy.commands import (LAUNCHABLE_ENGINES, SERVE_PORT, BenchSettings, EngineSettings, NodeRole, bench_argv,
                                       checkpoint_note, launch_argv, trtllm_options_yaml)
from guide_opt.deploy.kubernetes import POD_INDEX_ENV, k8s_name, leader_host, multi_node_manifests, pod_plan, single_node_manifests
from guide_opt.problem import LlmRequirement
from guide_opt.simulate.workloads import FixedLengths, RangeLengths, users_lengths
from guide_opt.solution import Deployment

#: Placeholder for the leader node's address in the shell form of a multi-node launch.
LEADER_HOST_VAR = "$LEADER_HOST"


@dataclass(frozen=True)
class DeploymentArtifacts:
    """Everything emitted for one deployment.

    launch: (role, argv) pairs -- ``server`` for a one-node replica, ``leader`` and ``worker``
    for a replica spanning ``nodes`` nodes (the worker's rank is ``$NODE_RANK`` in the shell form).
    manifests: Kubernetes objects. bench: the ``vllm bench serve`` command. files: extra files
    (name -> text). notes: what the user must know (checkpoint, lengths). unavailable: why
    nothing was emitted, or None.
    """

    model: str
    name: str
    engine: str
    nodes: int = 1
    launch: tuple[tuple[str, tuple[str, ...]], ...] = ()
    manifests: tuple[dict, ...] = ()
    bench: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    unavailable: str | None = None

    def to_json(self) -> dict:
        """The ``artifacts`` object of a deployment in ``solve --format json``."""
        if self.unavailable:
            return {"name": self.name, "unavailable": self.unavailable}
        return {"name": self.name, "nodes_per_replica": self.nodes,
                "launch": {role: shell_command(argv) for role, argv in self.launch},
                "benchmark": shell_command(self.bench), "kubernetes": [f"{d['kind']}/{d['metadata']['name']}" for d in self.manifests],
                "notes": list(self.notes)}


def shell_command(argv: tuple[str, ...]) -> str:
    """``argv`` as one shell line; ``$LEADER_HOST`` / ``$NODE_RANK`` stay expandable."""
    return " ".join(f'"{w}"' if w in (LEADER_HOST_VAR, "$NODE_RANK") else shlex.quote(w) for w in argv)


def bench_lengths(req: LlmRequirement, llm_max_positions: int) -> RangeLengths | None:
    """The load test's lengths for stated (fixed) lengths: exactly them under Poisson arrivals, spread for users in a
    closed loop as the plan check simulates them (:func:`~guide_opt.simulate.users_lengths`); None for a distribution."""
    w = req.workload
    if w.input_tokens is None or w.output_tokens is None:
        return None
    if w.request_rate_per_s is not None:
        return RangeLengths(w.input_tokens, w.output_tokens, 0.0)
    return users_lengths(FixedLengths(w.input_tokens, w.output_tokens), llm_max_positions)


def max_model_len(req: LlmRequirement, llm_max_positions: int) -> int:
    """The longest request the server must accept: the longest the load test sends for stated lengths
    (:func:`bench_lengths`), else the LLM's context."""
    lengths = bench_lengths(req, llm_max_positions)
    return llm_max_positions if lengths is None else min(lengths.longest_tokens, llm_max_positions)


def nodes_per_replica(tp: int, pp: int, gpus_per_node: int) -> int | None:
    """Nodes one replica spans (stages split evenly), or None when it cannot be split without TP crossing a node."""
    nodes = math.ceil(tp * pp / gpus_per_node)
    if nodes == 1:
        return 1
    if tp > gpus_per_node or pp % nodes:
        return None
    return nodes


def _bench_settings(req: LlmRequirement, d: Deployment, llm_name: str, name: str, llm_max_positions: int) -> BenchSettings:
    w = req.workload
    input_tokens, output_tokens = w.token_lengths()
    if w.request_rate_per_s is not None:
        rate, users = w.request_rate_per_s, None
    elif w.concurrent_users is not None:
        rate, users = None, w.concurrent_users
    else:  # a batch job or no demand: keep every planned sequence busy
        rate, users = None, d.replicas * d.max_batch
    metadata = (("model", d.model), ("gpu", d.gpu), ("tp", str(d.tp)), ("framework", d.framework), ("quantization", d.quantization))
    lengths = bench_lengths(req, llm_max_positions)
    return BenchSettings(f"http://{name}:{SERVE_PORT}", d.model, llm_name, int(input_tokens), int(output_tokens), rate, users,
                         req.slo.ttft_ms, req.slo.tpot_ms, req.slo.percentile, metadata, f"bench-{name}.json",
                         range_ratio=0.0 if lengths is None else lengths.range_ratio)


def deployment_artifacts(req: LlmRequirement, d: Deployment, catalog: Catalog, name: str) -> DeploymentArtifacts:
    """The artifacts of deployment ``d`` serving requirement ``req`` (``name``: its Kubernetes name)."""
    llm, gpu, framework = catalog.llm(req.id), catalog.gpu(d.gpu), catalog.framework(d.framework)
    if d.framework not in LAUNCHABLE_ENGINES:
        return DeploymentArtifacts(d.model, name, d.framework, unavailable=f"guide-opt writes launch commands for {', '.join(LAUNCHABLE_ENGINES)}, not {d.framework}")
    nodes = nodes_per_replica(d.tp, d.pp, gpu.gpus_per_node)
    if nodes is None:
        return DeploymentArtifacts(d.model, name, d.framework, unavailable=f"TP={d.tp} x PP={d.pp} cannot be split into whole pipeline stages per "
                                   f"{gpu.gpus_per_node}-GPU node")
    if nodes > 1 and d.framework == "tensorrt-llm":
        return DeploymentArtifacts(d.model, name, d.framework, nodes, unavailable="multi-node TensorRT-LLM runs under MPI (mpirun / Slurm), which guide-opt does not emit")
    settings = EngineSettings(d.framework, llm.name, d.model, d.tp, d.pp, d.max_batch, framework.max_num_batched_tokens,
                              framework.gpu_memory_utilization, d.quantization, d.kv_cache_dtype, max_model_len(req, llm.max_position_embeddings))
    options = trtllm_options_yaml(settings) if d.framework == "tensorrt-llm" else None
    plan = pod_plan(name, d.framework, d.gpu, gpu.vendor, d.tp * d.pp // nodes, options)
    program_words = len(program_of(launch_argv(settings))[1].program)
    if nodes == 1:
        argv = launch_argv(settings)
        launch = (("server", argv),)
        manifests = single_node_manifests(plan, d.replicas, argv, program_words)
    else:
        launch = (("leader", launch_argv(settings, NodeRole(nodes, "0", LEADER_HOST_VAR))),
                  ("worker", launch_argv(settings, NodeRole(nodes, "$NODE_RANK", LEADER_HOST_VAR))))
        manifests = multi_node_manifests(
            plan, d.replicas, nodes,
            lambda r: launch_argv(settings, NodeRole(nodes, "0", leader_host(plan, r))),
            lambda r: launch_argv(settings, NodeRole(nodes, f"$({POD_INDEX_ENV})", leader_host(plan, r))), program_words)
    notes = []
    if checkpoint_note(settings):
        notes.append(f"{llm.name} must be replaced by {checkpoint_note(settings)}")
    if gpu.vendor != "nvidia":
        notes.append(f"{gpu.id} is an {gpu.vendor.upper()} GPU: replace the image {plan.image} with the engine's ROCm build")
    w = req.workload
    if w.input_tokens is None:
        notes.append(f"the benchmark uses the workload's mean lengths; the server accepts up to {settings.max_model_len} tokens per request")
    files = {"extra-llm-api-options.yaml": options} if options else {}
    return DeploymentArtifacts(d.model, name, d.framework, nodes, launch, tuple(manifests), bench_argv(_bench_settings(req, d, llm.name, name, llm.max_position_embeddings)),
                               files, tuple(notes))


def build_artifacts(requirements: tuple[LlmRequirement, ...] | list[LlmRequirement], deployments: tuple[Deployment, ...],
                    catalog: Catalog) -> list[DeploymentArtifacts]:
    """Artifacts for each deployment, paired in order with the problem's LLM requirements; names made unique."""
    out, used = [], set()
    for i, (req, d) in enumerate(zip(requirements, deployments)):
        name = k8s_name(d.model, d.framework, d.gpu)
        if name in used:
            name = k8s_name(d.model, d.framework, d.gpu, str(i))
        used.add(name)
        out.append(deployment_artifacts(req, d, catalog, name))
    return out


def _script(title: str, sections: list[tuple[str, tuple[str, ...]]], notes: tuple[str, ...]) -> str:
    lines = ["#!/usr/bin/env bash", f"# {title}", "# Written by guide-opt solve --emit."]
    lines += [f"# NOTE: {n}" for n in notes]
    lines += ["set -euo pipefail", ""]
    for comment, argv in sections:
        lines += [f"# {comment}", shell_command(argv).replace(" --", " \\\n  --"), ""]
    return "\n".join(lines)


def write_artifacts(artifacts: list[DeploymentArtifacts], out_dir: str | Path) -> list[Path]:
    """Write each deployment's folder under ``out_dir`` and return the files written."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for a in artifacts:
        folder = out_dir / a.name
        folder.mkdir(parents=True, exist_ok=True)
        if a.unavailable:
            path = folder / "UNAVAILABLE.txt"
            path.write_text(a.unavailable + "\n")
            written.append(path)
            continue
        if a.nodes == 1:
            sections = [("one replica (run once per replica)", a.launch[0][1])]
        else:
            sections = [(f"node 0 of {a.nodes} (leader, serves the API); LEADER_HOST is this node's address", a.launch[0][1]),
                        (f"nodes 1..{a.nodes - 1}: set NODE_RANK and LEADER_HOST", a.launch[1][1])]
        files = {"launch.sh": _script(f"launch {a.model} with {a.engine}", sections, a.notes),
                 "bench.sh": _script(f"check the SLOs of {a.model} on the running server (vllm bench serve)",
                                     [("BASE_URL defaults to the Kubernetes Service; override --base-url when port-forwarding", a.bench)], ()),
                 "kubernetes.yaml": yaml.safe_dump_all(list(a.manifests), sort_keys=False), **a.files}
        for file_name, text in files.items():
            path = folder / file_name
            path.write_text(text)
            if file_name.endswith(".sh"):
                path.chmod(0o755)
            written.append(path)
    return written
