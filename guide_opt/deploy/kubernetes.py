"""Kubernetes manifests for one planned deployment (plain dicts, ready for ``yaml.safe_dump_all``).

Two forms:

- **One node per replica** (``tp x pp`` GPUs fit in one node): a ``Deployment`` with
  ``replicas`` pods, each requesting ``tp x pp`` GPUs and selecting nodes by the GPU product
  label, and a ``Service`` in front of them.
- **A replica spanning nodes** (pipeline stages on several nodes): per replica, a headless
  ``Service`` and two ``StatefulSet``s -- a leader (node rank 0, serves the API) and workers
  whose ordinals start at 1 (``spec.ordinals.start``, Kubernetes >= 1.31), so each worker's
  pod-index label *is* its node rank, passed to the engine through the downward API. One
  ``Service`` spreads requests over the replicas' leaders.

Why StatefulSets and not a LeaderWorkerSet: LWS expresses the same leader/worker group (with
restart of the whole group when one pod fails, which these StatefulSets do not do) but is a
custom resource that needs its controller installed, and its schema is not part of Kubernetes,
so the manifests could not be validated offline against the Kubernetes schema. StatefulSets
are core API objects that any cluster runs and ``kubernetes-validate`` checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guide_opt.deploy.commands import SERVE_PORT, TRTLLM_OPTIONS_PATH
from guide_opt.deploy.tables import kubernetes_table

#: Label carrying a pod's index in its StatefulSet (set by the StatefulSet controller).
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
#: Environment variable the worker command reads its node rank from.
POD_INDEX_ENV = "POD_INDEX"
#: Shared memory for the engines' inter-process communication (NCCL, tokenizer workers).
SHM_SIZE = "16Gi"


@dataclass(frozen=True)
class PodPlan:
    """What every engine pod of a deployment needs: image, GPU resource and node selector."""

    name: str
    engine: str
    image: str
    gpu_resource: str
    gpus_per_pod: int
    node_selector: dict[str, str]
    options_yaml: str | None = None


def k8s_name(*parts: str, limit: int = 52) -> str:
    """A DNS-1123 name from ``parts`` (lowercase alphanumerics and '-'), at most ``limit`` characters.

    52, not 63: a StatefulSet's pods carry a ``controller-revision-hash`` label made of the
    name plus an 11-character hash, which must fit in 63.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:limit].rstrip("-")
    return name or "llm"


def pod_plan(name: str, engine: str, gpu_id: str, vendor: str, gpus_per_pod: int, options_yaml: str | None = None) -> PodPlan:
    """The :class:`PodPlan` of a deployment from the Kubernetes table (vendor resource, node label, image)."""
    table = kubernetes_table()
    v = table.vendors[vendor]
    return PodPlan(name, engine, table.images[engine], v.resource, gpus_per_pod, {v.node_label: table.node_label_values[gpu_id]}, options_yaml)


def _container(plan: PodPlan, argv: tuple[str, ...], program_words: int, *, rank_from_pod_index: bool, serves: bool) -> dict:
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}}]
    if rank_from_pod_index:
        env.append({"name": POD_INDEX_ENV, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}})
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if plan.options_yaml is not None:
        mounts.append({"name": "engine-options", "mountPath": TRTLLM_OPTIONS_PATH.rsplit("/", 1)[0], "readOnly": True})
    gpus = {plan.gpu_resource: str(plan.gpus_per_pod)}
    container = {
        "name": plan.engine.replace("-", ""),
        "image": plan.image,
        "command": list(argv[:program_words]),
        "args": list(argv[program_words:]),
        "env": env,
        "resources": {"requests": dict(gpus), "limits": dict(gpus)},
        "volumeMounts": mounts,
    }
    if serves:
        container["ports"] = [{"name": "http", "containerPort": SERVE_PORT}]
        # model download and load take minutes: probe readiness, do not kill a loading server
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": SERVE_PORT}, "periodSeconds": 10, "failureThreshold": 3}
        container["startupProbe"] = {"httpGet": {"path": "/health", "port": SERVE_PORT}, "periodSeconds": 10, "failureThreshold": 180}
    return container


def _pod_template(plan: PodPlan, labels: dict[str, str], container: dict) -> dict:
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}]
    if plan.options_yaml is not None:
        volumes.append({"name": "engine-options", "configMap": {"name": f"{plan.name}-options"}})
    return {"metadata": {"labels": dict(labels)}, "spec": {"nodeSelector": dict(plan.node_selector), "containers": [container], "volumes": volumes}}


def _service(name: str, selector: dict[str, str], *, headless: bool = False) -> dict:
    spec: dict = {"selector": dict(selector), "ports": [{"name": "http", "port": SERVE_PORT, "targetPort": SERVE_PORT}]}
    if headless:
        # workers must resolve the leader before it is ready (it waits for them to join)
        spec.update(clusterIP="None", publishNotReadyAddresses=True)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"app": selector["app"]}}, "spec": spec}


def _options_config_map(plan: PodPlan) -> list[dict]:
    if plan.options_yaml is None:
        return []
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{plan.name}-options", "labels": {"app": plan.name}},
             "data": {TRTLLM_OPTIONS_PATH.rsplit("/", 1)[1]: plan.options_yaml}}]


def single_node_manifests(plan: PodPlan, replicas: int, argv: tuple[str, ...], program_words: int) -> list[dict]:
    """A Deployment of ``replicas`` one-node pods and its Service (plus the engine-options ConfigMap, if any)."""
    labels = {"app": plan.name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": plan.name, "labels": dict(labels)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                 "template": _pod_template(plan, labels, _container(plan, argv, program_words, rank_from_pod_index=False, serves=True))},
    }
    return [*_options_config_map(plan), deployment, _service(plan.name, labels)]


def leader_host(plan: PodPlan, replica: int) -> str:
    """The stable DNS name of replica ``replica``'s leader pod (``<leader>-0.<headless service>``)."""
    return f"{group_name(plan, replica)}-leader-0.{group_name(plan, replica)}-nodes"


def group_name(plan: PodPlan, replica: int) -> str:
    """Name of replica ``replica``'s leader/worker group."""
    return k8s_name(plan.name, f"r{replica}", limit=44)  # leaves room for '-leader' / '-worker' within 52


def multi_node_manifests(plan: PodPlan, replicas: int, nodes: int, leader_argv, worker_argv, program_words: int) -> list[dict]:
    """Per replica a headless Service, a leader StatefulSet and a worker StatefulSet (ordinals from 1); one Service over the leaders.

    ``leader_argv(replica)`` and ``worker_argv(replica)`` give the commands (the worker's rank is
    ``$(POD_INDEX)``).
    """
    docs = list(_options_config_map(plan))
    for r in range(replicas):
        group = group_name(plan, r)
        group_labels = {"app": plan.name, "group": group}
        docs.append(_service(f"{group}-nodes", group_labels, headless=True))
        for role, count, argv, start in (("leader", 1, leader_argv(r), 0), ("worker", nodes - 1, worker_argv(r), 1)):
            labels = {**group_labels, "role": role}
            container = _container(plan, argv, program_words, rank_from_pod_index=role == "worker", serves=role == "leader")
            spec = {"replicas": count, "serviceName": f"{group}-nodes", "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": dict(labels)}, "template": _pod_template(plan, labels, container)}
            if start:
                spec["ordinals"] = {"start": start}
            docs.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": f"{group}-{role}", "labels": dict(labels)}, "spec": spec})
    docs.append(_service(plan.name, {"app": plan.name, "role": "leader"}))
    return docs
