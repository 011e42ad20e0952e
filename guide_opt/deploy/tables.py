"""The deployment data tables in ``hardware_db/deploy/``: engine command lines and Kubernetes facts.

``engine_cli.yaml`` lists, per engine (and for ``vllm bench serve``), every argument guide-opt
emits with its value format, the date it was checked and the documentation it was checked
against, plus how guide-opt's quantization and KV-cache ids map to engine arguments.
``kubernetes.yaml`` names the GPU resource and node label per vendor, the label value per GPU
id, the engines' images and the Kubernetes schema version manifests are validated against.
Both are validated here (pydantic, ``extra="forbid"``) so a typo in the data names its field.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guide_opt.catalog import read_yaml, validation_error_to_input_error
from guide_opt.data_files import data_dir


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArgumentSpec(_Frozen):
    """The value format of one command-line argument (see the header of ``engine_cli.yaml``)."""

    kind: Literal["int", "float", "str", "flag", "choice", "key_value", "metric_ms", "rate"]
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


class EngineCli(_Frozen):
    """One program's command line: the program words, where the model goes, the known arguments.

    model: ``positional`` (first word after the program), the name of the argument that carries
    it (``--model-path``), or ``none`` (no model argument).
    """

    program: tuple[str, ...]
    model: str
    source: str
    arguments: dict[str, ArgumentSpec]


class QuantizationArgs(_Frozen):
    """Engine arguments for one guide-opt quantization id, and what the checkpoint must hold."""

    args: dict[str, str] = {}
    checkpoint: str = ""


class EngineCliTable(_Frozen):
    """``hardware_db/deploy/engine_cli.yaml``."""

    checked_on: str
    engines: dict[str, EngineCli]
    quantization: dict[str, dict[str, QuantizationArgs]]
    kv_cache_dtype: dict[str, dict[str, str]]


class VendorKubernetes(_Frozen):
    """A GPU vendor's device-plugin resource and feature-discovery node label."""

    resource: str
    node_label: str
    source: str


class KubernetesTable(_Frozen):
    """``hardware_db/deploy/kubernetes.yaml``."""

    checked_on: str
    kubernetes_version: str
    vendors: dict[str, VendorKubernetes]
    node_label_values: dict[str, str] = Field(default_factory=dict)
    images: dict[str, str] = Field(default_factory=dict)


def _load(name: str, model: type[BaseModel]):
    path = data_dir("hardware_db") / "deploy" / name
    try:
        return model.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise validation_error_to_input_error(str(path), exc) from None


@functools.lru_cache(maxsize=1)
def engine_cli_table() -> EngineCliTable:
    """The engine command-line table (cached)."""
    return _load("engine_cli.yaml", EngineCliTable)


@functools.lru_cache(maxsize=1)
def kubernetes_table() -> KubernetesTable:
    """The Kubernetes table (cached)."""
    return _load("kubernetes.yaml", KubernetesTable)
