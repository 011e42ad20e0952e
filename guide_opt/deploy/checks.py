"""Checkers for emitted artifacts: engine command lines against the documented CLI table, and
Kubernetes manifests against the Kubernetes JSON schema (offline, ``kubernetes-validate``).

Both return a list of problems (empty when the artifact passes) so a caller can report all of
them at once; neither raises on a bad artifact.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from guide_opt.deploy.tables import ArgumentSpec, EngineCli, engine_cli_table, kubernetes_table

#: A Kubernetes dependent environment variable reference, ``$(NAME)``, expanded by the kubelet.
ENV_REFERENCE = re.compile(r"^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$")
#: A shell variable, ``$NAME``, in the shell form of a multi-node launch (set by the person running it).
SHELL_REFERENCE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")
#: Kinds whose value is one or more words up to the next ``--argument``.
_MULTI_VALUE_KINDS = frozenset({"key_value", "metric_ms"})


def program_of(argv: Iterable[str]) -> tuple[str, EngineCli] | None:
    """The (id, CLI) of the table entry whose program words start ``argv`` (longest match), or None."""
    words = tuple(argv)
    best = None
    for name, cli in engine_cli_table().engines.items():
        if words[:len(cli.program)] == cli.program and (best is None or len(cli.program) > len(best[1].program)):
            best = (name, cli)
    return best


def _number_problem(name: str, text: str, spec: ArgumentSpec, parse) -> str | None:
    try:
        value = parse(text)
    except ValueError:
        return f"{name} {text!r}: expected {'a whole number' if spec.kind == 'int' else 'a number'}"
    if not math.isfinite(value):
        return f"{name} {text!r}: must be finite"
    if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
        return f"{name} {text}: must be {'above' if spec.min_exclusive else 'at least'} {spec.min:g}"
    if spec.max is not None and value > spec.max:
        return f"{name} {text}: must be at most {spec.max:g}"
    return None


def value_problem(name: str, values: list[str], spec: ArgumentSpec) -> str | None:
    """Why ``values`` (the words after argument ``name``) do not fit ``spec``; None when they do."""
    if spec.kind == "flag":
        return f"{name} takes no value, got {' '.join(values)!r}" if values else None
    if not values:
        return f"{name}: missing value"
    if spec.kind not in _MULTI_VALUE_KINDS and len(values) > 1:
        return f"{name}: one value expected, got {' '.join(values)!r}"
    for text in values:
        if ENV_REFERENCE.match(text) or SHELL_REFERENCE.match(text):
            continue  # resolved by the kubelet or the shell; the manifest check looks $(NAME) up in the env
        if spec.kind == "int":
            problem = _number_problem(name, text, spec, int)
        elif spec.kind == "float":
            problem = _number_problem(name, text, spec, float)
        elif spec.kind == "rate":
            problem = None if text == "inf" else _number_problem(name, text, spec.model_copy(update={"min": 0.0, "min_exclusive": True}), float)
        elif spec.kind == "choice":
            problem = None if text in spec.choices else f"{name} {text!r}: use one of {', '.join(spec.choices)}"
        elif spec.kind == "key_value":
            problem = None if re.fullmatch(r"[A-Za-z_][\w.-]*=\S+", text) else f"{name} {text!r}: expected KEY=VALUE"
        elif spec.kind == "metric_ms":
            key, _, number = text.partition(":")
            problem = (f"{name} {text!r}: expected one of {', '.join(spec.keys)} as NAME:MILLISECONDS" if key not in spec.keys
                       else _number_problem(name, number, ArgumentSpec(kind="float", min=0.0, min_exclusive=True), float))
        else:  # str
            problem = None if text and not text.startswith("--") else f"{name}: empty value"
        if problem:
            return problem
    return None


def check_command(argv: Iterable[str]) -> list[str]:
    """Problems of one command line (program, then ``--argument [value...]`` pairs) against the table.

    Checks: the program is a known engine or benchmark, every argument is documented for it and
    appears once, every value has the documented format, and the model is given where the
    engine expects it.
    """
    words = list(argv)
    found = program_of(words)
    if found is None:
        return [f"unknown program {' '.join(words[:3])!r}: not an engine in hardware_db/deploy/engine_cli.yaml"]
    engine, cli = found
    rest = words[len(cli.program):]
    problems: list[str] = []
    if cli.model == "positional":
        if not rest or rest[0].startswith("--"):
            return [f"{engine}: the model must follow {' '.join(cli.program)}"]
        rest = rest[1:]
    seen: set[str] = set()
    i = 0
    while i < len(rest):
        name = rest[i]
        if not name.startswith("--"):
            problems.append(f"{engine}: unexpected word {name!r} (arguments start with --)")
            i += 1
            continue
        j = i + 1
        while j < len(rest) and not rest[j].startswith("--"):
            j += 1
        spec = cli.arguments.get(name)
        if spec is None:
            problems.append(f"{engine}: {name} is not a documented argument (checked {engine_cli_table().checked_on})")
        elif name in seen:
            problems.append(f"{engine}: {name} given twice")
        else:
            problem = value_problem(name, rest[i + 1:j], spec)
            if problem:
                problems.append(f"{engine}: {problem}")
        seen.add(name)
        i = j
    if cli.model not in ("positional", "none") and cli.model not in seen:
        problems.append(f"{engine}: {cli.model} (the model) is missing")
    return problems


# ---- Kubernetes ---------------------------------------------------------------------------------
def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    return list(pod.get("containers") or [])


def _container_problems(kind: str, name: str, container: dict) -> list[str]:
    where = f"{kind}/{name} container {container.get('name')}"
    argv = [*container.get("command", []), *container.get("args", [])]
    problems = [f"{where}: {p}" for p in check_command(argv)]
    defined = {e.get("name") for e in container.get("env", [])}
    for word in argv:
        ref = ENV_REFERENCE.match(word)
        if ref and ref.group(1) not in defined:
            problems.append(f"{where}: $({ref.group(1)}) is not defined in the container's env")
    resources = container.get("resources") or {}
    gpu_keys = {v.resource for v in kubernetes_table().vendors.values()}
    limits = {k: v for k, v in (resources.get("limits") or {}).items() if k in gpu_keys}
    requests = {k: v for k, v in (resources.get("requests") or {}).items() if k in gpu_keys}
    if not limits:
        problems.append(f"{where}: no GPU limit ({' or '.join(sorted(gpu_keys))})")
    elif requests and requests != limits:
        problems.append(f"{where}: GPU requests {requests} differ from limits {limits} (extended resources need them equal)")
    return problems


def check_manifests(docs: Iterable[dict[str, Any]], kubernetes_version: str | None = None) -> list[str]:
    """Problems of Kubernetes objects: strict schema validation, then guide-opt's own checks.

    Every object is validated with ``kubernetes_validate`` against the bundled JSON schema of
    ``kubernetes_version`` (default: the table's) in strict mode (unknown fields are errors);
    each GPU container's command is checked with :func:`check_command`, its ``$(VAR)``
    references must be defined in its env, and it must limit a GPU resource.
    """
    import kubernetes_validate

    version = kubernetes_version or kubernetes_table().kubernetes_version
    problems: list[str] = []
    for doc in docs:
        kind, name = doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?")
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{kind}/{name}: {path or '(top)'}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            problems.append(f"{kind}/{name}: no Kubernetes {version} schema ({exc})")
        for container in _containers(doc):
            problems.extend(_container_problems(kind, name, container))
    return problems
