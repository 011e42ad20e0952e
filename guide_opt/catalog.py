"""Load ``hardware_db/`` and resolve ids to specs.

:func:`load_catalog` reads every file once (cached) and validates it with the pydantic
models of :mod:`guide_opt.hardware`, :mod:`guide_opt.llm`, :mod:`guide_opt.frameworks`,
:mod:`guide_opt.quantization` and :mod:`guide_opt.prices`. A broken file raises
:class:`~guide_opt.errors.InputError` naming the file and the field.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from guide_opt import disk_cache
from guide_opt.data_files import data_dir
from guide_opt.errors import InputError, unknown_id_error
from guide_opt.frameworks import FrameworkProfile
from guide_opt.hardware import GpuSpec
from guide_opt.kernel_profile import KernelProfile
from guide_opt.limits import MAX_ARCH_SIZE, check_yaml_node_size, read_text_file
from guide_opt.llm import LlmSpec
from guide_opt.prices import PriceTable
from guide_opt.quantization import QuantizationSpec

SpecT = TypeVar("SpecT", bound=BaseModel)

DEFAULT_PRICE_TABLE = "default"
#: PyYAML's safe loader, on libyaml's C parser where PyYAML was built with it (the same documents, node graph and
#: error marks; a 1,000-service problem file parses in 0.12 s instead of 0.77 s).
SAFE_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, field: str | None = None) -> object:
    """Parse one YAML file, turning every failure into an :class:`InputError` naming the file (or ``field``).

    The file must be UTF-8 text within :data:`~guide_opt.limits.MAX_INPUT_FILE_BYTES`, and
    its document, aliases expanded, within :data:`~guide_opt.limits.MAX_YAML_NODES` values
    and :data:`~guide_opt.limits.MAX_YAML_DEPTH` levels (checked on the composed node graph,
    before anything is built).
    """
    return parse_yaml_text(read_text_file(path, field), field or str(path))


def parse_yaml_text(text: str, field: str) -> object:
    """Parse YAML ``text`` within the work bounds of :func:`read_yaml`; errors name ``field``."""
    loader = SAFE_YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_yaml_node_size(node, field)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(field, f"invalid YAML{where}", "fix the syntax") from None
    except RecursionError:
        raise InputError(field, "the YAML nests too deeply", "flatten the file") from None
    finally:
        loader.dispose()


def validation_error_to_input_error(source: str, exc: ValidationError) -> InputError:
    """Turn pydantic's first error into one :class:`InputError` naming the field and a fix."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        problem, fix = "unknown key", "remove it or check its spelling"
    elif kind == "missing":
        problem, fix = "required key is missing", "add it"
    else:
        problem, fix = err["msg"], f"got {err.get('input')!r}"
    return InputError(f"{source}: {field}", problem, fix)


def load_spec(path: Path, model: type[SpecT]) -> SpecT:
    """Read and validate one YAML file as ``model``."""
    data = read_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_input_error(str(path), exc) from None


def _load_folder(folder: Path, model: type[SpecT]) -> dict[str, SpecT]:
    specs: dict[str, SpecT] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = load_spec(path, model)
        if spec.id != path.stem:
            raise InputError(f"{path}: id", f"id '{spec.id}' differs from the file name", f"rename the file or set id: {path.stem}")
        specs[spec.id] = spec
    return specs


def check_arch_sizes(spec: LlmSpec, field: str) -> LlmSpec:
    """``spec`` when every number of an imported architecture is finite and at most :data:`~guide_opt.limits.MAX_ARCH_SIZE`."""
    for name, value in spec.model_dump().items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or abs(value) > MAX_ARCH_SIZE:
            raise InputError(f"{field}: {name}", f"{float(value):g} is not a finite size at most {MAX_ARCH_SIZE:,}", "give the architecture's real size")
    return spec


@dataclass(frozen=True)
class Catalog:
    """Everything in ``hardware_db/``, keyed by id."""

    gpus: dict[str, GpuSpec]
    llms: dict[str, LlmSpec]
    frameworks: dict[str, FrameworkProfile]
    quantizations: dict[str, QuantizationSpec]
    price_tables: dict[str, PriceTable]

    def gpu(self, gpu_id: str, field: str = "gpu") -> GpuSpec:
        """Return the GPU ``gpu_id`` or raise an :class:`InputError` naming ``field``."""
        return _lookup(self.gpus, gpu_id, field, "GPU")

    def llm(self, llm_id_or_path: str, field: str = "model") -> LlmSpec:
        """Return the LLM with this catalog id, or read it from a local HF ``config.json`` path."""
        if llm_id_or_path in self.llms:
            return self.llms[llm_id_or_path]
        path = Path(llm_id_or_path)
        if path.suffix == ".json" or path.is_file() or path.is_dir():
            if path.is_dir():
                path = path / "config.json"
            read_text_file(path, field)  # a missing, oversized or binary file is named before it is parsed
            try:
                return check_arch_sizes(LlmSpec.from_hf_config(path), f"{field} {path.name}")
            except InputError:
                raise
            except (TypeError, ValueError, ArithmeticError, KeyError, AttributeError, RecursionError) as exc:
                # a JSON value of the wrong type or size in a key the importer reads
                raise InputError(f"{field} {path.name}", f"cannot read the architecture ({type(exc).__name__}: {str(exc)[:120]})",
                                 "give a HuggingFace config.json whose sizes are whole numbers") from None
        raise unknown_id_error(field, llm_id_or_path, list(self.llms), "LLM")

    def framework(self, framework_id: str, field: str = "framework") -> FrameworkProfile:
        """Return the serving-engine profile ``framework_id``."""
        return _lookup(self.frameworks, framework_id, field, "framework")

    def quantization(self, quantization_id: str, field: str = "quantization") -> QuantizationSpec:
        """Return the quantization scheme ``quantization_id`` (aliases such as ``fp16`` accepted)."""
        for spec in self.quantizations.values():
            if quantization_id == spec.id or quantization_id in spec.aliases:
                return spec
        raise unknown_id_error(field, quantization_id, list(self.quantizations), "quantization")

    def price_table(self, table_id: str = DEFAULT_PRICE_TABLE, field: str = "price_table") -> PriceTable:
        """Return the price table ``table_id``."""
        return _lookup(self.price_tables, table_id, field, "price table")


def _lookup(table: dict[str, SpecT], item_id: str, field: str, kind: str) -> SpecT:
    """``table[item_id]``, or an :class:`InputError` naming ``field`` with close ids."""
    try:
        return table[item_id]
    except KeyError:
        raise unknown_id_error(field, item_id, list(table), kind) from None


def kernel_profile_for(gpu: GpuSpec, profiles: dict[str, KernelProfile], *, own: bool = True) -> KernelProfile | None:
    """The kernel curves ``gpu`` gets: its own profile, else ``generic-<link kind>``, else ``generic-nvlink``
    (a GPU fabric such as XGMI is closer to NVLink than to PCIe), else None.

    ``own=False``: the generic curves it would get without a file of its own (the starting point
    of an end-to-end fit, :mod:`guide_opt.validation.profile_fit`).
    """
    for key in ((gpu.id,) if own else ()) + (f"generic-{gpu.link_kind}", "generic-nvlink"):
        profile = profiles.get(key)
        if profile is not None and (key != gpu.id or profile.scope == "gpu"):
            return profile
    return None


def load_kernel_profiles(root: Path | None = None) -> dict[str, KernelProfile]:
    """The kernel profiles of ``root/kernels`` by id (default ``root``: the bundled ``hardware_db``)."""
    return _load_folder((root or data_dir("hardware_db")) / "kernels", KernelProfile)


def attach_kernel_profiles(gpus: dict[str, GpuSpec], profiles: dict[str, KernelProfile]) -> dict[str, GpuSpec]:
    """``gpus`` with :attr:`GpuSpec.kernels` set from ``hardware_db/kernels`` (a GPU's inline curves are kept)."""
    for profile in profiles.values():
        if profile.scope == "gpu" and profile.id not in gpus:
            raise InputError(f"kernels/{profile.id}.yaml: id", f"no GPU '{profile.id}' in hardware_db/gpus", "name the file after a GPU id or set scope: generic")
        if profile.scope == "generic" and not profile.id.startswith("generic-"):
            raise InputError(f"kernels/{profile.id}.yaml: id", "a generic profile must be named generic-<link kind>", "rename it")
    return {gid: g if g.kernels is not None else g.model_copy(update={"kernels": kernel_profile_for(g, profiles)}) for gid, g in gpus.items()}


def load_catalog_from(root: Path) -> Catalog:
    """Load and validate a ``hardware_db``-shaped folder at ``root``."""
    quant_file = root / "quantizations.yaml"
    raw = read_yaml(quant_file)
    if not isinstance(raw, list):
        raise InputError(str(quant_file), "expected a list of quantization schemes", "write one '- id: ...' entry per scheme")
    quantizations = {}
    for i, entry in enumerate(raw):
        try:
            spec = QuantizationSpec.model_validate(entry)
        except ValidationError as exc:
            raise validation_error_to_input_error(f"{quant_file}[{i}]", exc) from None
        quantizations[spec.id] = spec
    catalog = Catalog(
        gpus=attach_kernel_profiles(_load_folder(root / "gpus", GpuSpec), load_kernel_profiles(root)),
        llms=_load_folder(root / "llms", LlmSpec),
        frameworks=_load_folder(root / "frameworks", FrameworkProfile),
        quantizations=quantizations,
        price_tables=_load_folder(root / "prices", PriceTable),
    )
    for framework in catalog.frameworks.values():
        unknown = sorted(set(framework.quantizations) - set(quantizations))
        if unknown:
            raise InputError(f"{root}/frameworks/{framework.id}.yaml: quantizations", f"unknown quantization id(s) {', '.join(unknown)}",
                             f"use ids from {quant_file.name}")
    for table in catalog.price_tables.values():
        for quote in table.quotes:
            if quote.gpu not in catalog.gpus:
                raise InputError(f"{root}/prices/{table.id}.yaml: quotes", f"unknown GPU id '{quote.gpu}'", "use an id from hardware_db/gpus")
    return catalog


@functools.cache
def load_catalog() -> Catalog:
    """Load the bundled ``hardware_db/`` (cached for the life of the process).

    Parsing and validating its YAML files takes about 0.15 s, so the parsed catalog is also kept in
    the disk cache (:mod:`guide_opt.disk_cache`, subfolder ``catalog``) under the digest of
    guide-opt's code and ``hardware_db/`` files: a later process reads it back in milliseconds, and
    an edited catalog file is parsed (and validated) anew.
    """
    folder = disk_cache.folder("catalog")
    path = None if folder is None else folder / f"{disk_cache.key_of({'catalog': disk_cache.code_and_catalog_digest()})}.pickle"
    if path is not None and (found := disk_cache.read(path, Catalog)) is not None:
        return found
    catalog = load_catalog_from(data_dir("hardware_db"))
    if path is not None:
        disk_cache.write(folder, path, catalog)
    return catalog
