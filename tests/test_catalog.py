"""The bundled ``hardware_db/`` validates, and broken catalogs are rejected with errors naming file and field."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from guide_opt.catalog import load_catalog_from
from guide_opt.data_files import data_dir
from guide_opt.errors import InputError
from guide_opt.hardware import FIGURE_FIELDS

HARDWARE_DB = data_dir("hardware_db")

EXPECTED_GPUS = [
    "v100-16gb", "v100-32gb", "t4", "a10", "a10g", "a6000", "rtx-4090", "l4", "l40s", "a100-40gb",
    "a100-40gb-sxm", "a100-80gb-sxm", "a100-80gb-pcie", "h100-sxm", "h100-pcie", "h200", "b200", "mi300x",
]
EXPECTED_LLMS = [
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "qwen2-7b", "opt-6.7b", "chatglm3-6b", "gpt-neox-20b",
    "starcoder-15b", "mpt-7b", "codegen2-16b", "llama-3.1-8b", "llama-3.1-70b", "qwen3-32b", "mixtral-8x7b",
    "llama-3.2-1b", "mistral-7b", "qwen2-72b",
]
EXPECTED_FRAMEWORKS = ["vllm", "sglang", "tensorrt-llm", "deepspeed-fastgen"]
EXPECTED_PRICE_TABLES = ["default", "aws-llm-pilot"]
EXPECTED_QUANTIZATIONS = ["bf16", "fp8", "w8a8", "w4a16"]

# Plausible ranges that catch unit slips (TB/s for GB/s, bytes for GiB, sparse for dense peaks).
GPU_RANGES = {
    "memory_gib": (8, 512),
    "hbm_bandwidth_gbps": (100, 20_000),
    "bf16_dense_tflops": (10, 5_000),
    "link_bandwidth_gbps": (4, 2_000),
    "link_latency_us": (0.1, 100),
    "gpus_per_node": (1, 72),
}


# ---- the bundled catalog -----------------------------------------------------------------------
def test_bundled_catalog_loads_every_file():
    fresh = load_catalog_from(HARDWARE_DB)
    for kind, folder in (("gpus", "gpus"), ("llms", "llms"), ("frameworks", "frameworks"), ("price_tables", "prices")):
        assert set(getattr(fresh, kind)) == {p.stem for p in (HARDWARE_DB / folder).glob("*.yaml")}, kind
    assert fresh.quantizations


@pytest.mark.parametrize(
    ("kind", "item_id"),
    [("gpus", g) for g in EXPECTED_GPUS]
    + [("llms", m) for m in EXPECTED_LLMS]
    + [("frameworks", f) for f in EXPECTED_FRAMEWORKS]
    + [("price_tables", p) for p in EXPECTED_PRICE_TABLES]
    + [("quantizations", q) for q in EXPECTED_QUANTIZATIONS],
)
def test_expected_ids_are_present(catalog, kind, item_id):
    assert item_id in getattr(catalog, kind)


@pytest.mark.parametrize("folder", ["gpus", "llms", "frameworks", "prices"])
def test_ids_match_file_names(folder):
    files = sorted((HARDWARE_DB / folder).glob("*.yaml"))
    assert files, f"hardware_db/{folder} is empty"
    mismatched = [p.name for p in files if yaml.safe_load(p.read_text())["id"] != p.stem]
    assert not mismatched


def test_gpu_figures_positive_plausible_and_sourced(catalog):
    problems = []
    for gpu in catalog.gpus.values():
        for field in FIGURE_FIELDS:
            value = getattr(gpu, field)
            if value is None:
                continue
            if not value > 0:
                problems.append(f"{gpu.id}.{field} = {value} is not positive")
            if not str(gpu.sources.get(field, "")).strip():
                problems.append(f"{gpu.id}.{field} has no source")
        for field, (low, high) in GPU_RANGES.items():
            if not low <= getattr(gpu, field) <= high:
                problems.append(f"{gpu.id}.{field} = {getattr(gpu, field)} outside [{low}, {high}] (unit slip?)")
        # Lower precision never has a lower dense peak than bf16; HBM is faster than the GPU link.
        for field in ("fp8_dense_tflops", "int8_dense_tops", "int4_dense_tops"):
            value = getattr(gpu, field)
            if value is not None and value < gpu.bf16_dense_tflops:
                problems.append(f"{gpu.id}.{field} = {value} below bf16 peak {gpu.bf16_dense_tflops}")
        if gpu.link_bandwidth_gbps >= gpu.hbm_bandwidth_gbps:
            problems.append(f"{gpu.id}: link bandwidth {gpu.link_bandwidth_gbps} >= HBM bandwidth {gpu.hbm_bandwidth_gbps}")
    assert not problems, "\n".join(problems)


def test_llm_figures_positive_and_consistent(catalog):
    problems = []
    for llm in catalog.llms.values():
        for field in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size",
                      "max_position_embeddings", "num_experts", "experts_per_token"):
            if not getattr(llm, field) > 0:
                problems.append(f"{llm.id}.{field} is not positive")
        if llm.num_attention_heads % llm.num_kv_heads:
            problems.append(f"{llm.id}: kv heads do not divide heads")
        if not 1e8 <= llm.total_params <= 2e12:
            problems.append(f"{llm.id}: {llm.total_params:.3g} parameters is implausible")
        if not llm.source.strip():
            problems.append(f"{llm.id} has no source")
    assert not problems, "\n".join(problems)


def test_framework_profiles_sane(catalog):
    for fw in catalog.frameworks.values():
        e = fw.efficiency
        assert 0 < e.compute_efficiency <= 1 and 0 < e.memory_efficiency <= 1 and 0 < e.communication_efficiency <= 1, fw.id
        assert e.step_overhead_ms >= 0 and fw.runtime_reserve_gib >= 0, fw.id
        assert 0 < fw.gpu_memory_utilization <= 1 and fw.kv_block_size_tokens >= 1 and fw.max_num_batched_tokens >= 1, fw.id
        assert all(str(v).strip() for v in fw.sources.values()), fw.id


def test_quantizations_sane(catalog):
    bf16 = catalog.quantization("bf16")
    assert catalog.quantization("fp16") is bf16  # alias
    for q in catalog.quantizations.values():
        assert 0 < q.weight_bytes_per_param <= 2 and q.activation_bytes > 0 and q.source.strip(), q.id


def test_price_quotes_reference_known_gpus_once(catalog):
    for table in catalog.price_tables.values():
        gpus = [q.gpu for q in table.quotes]
        assert table.quotes, table.id
        assert len(gpus) == len(set(gpus)), f"{table.id} quotes a GPU twice"
        for quote in table.quotes:
            assert quote.gpu in catalog.gpus, f"{table.id}: {quote.gpu}"
            assert 0.01 <= quote.usd_per_gpu_hour <= 100, f"{table.id}: {quote.gpu} at ${quote.usd_per_gpu_hour}/h"
            assert quote.source.strip() and quote.as_of.strip() and quote.provider.strip()
        assert table.usd_per_gpu_hour() == {q.gpu: q.usd_per_gpu_hour for q in table.quotes}


def test_unknown_ids_name_the_field_and_suggest(catalog):
    with pytest.raises(InputError) as info:
        catalog.gpu("a100-80gb-sxn", field="--gpu")
    assert info.value.field == "--gpu" and "a100-80gb-sxm" in str(info.value)
    with pytest.raises(InputError) as info:
        catalog.llm("no-such-llm", field="--model")
    assert info.value.field == "--model" and "no-such-llm" in str(info.value)
    for method, field in ((catalog.framework, "framework"), (catalog.quantization, "quantization"), (catalog.price_table, "price_table")):
        with pytest.raises(InputError) as info:
            method("zzz")
        assert info.value.field == field


# ---- broken catalogs (a small copy in tmp_path) ------------------------------------------------
@pytest.fixture
def small_db(tmp_path) -> Path:
    """A minimal valid hardware_db: one GPU, one LLM, one framework, the quantizations, one price table."""
    root = tmp_path / "hardware_db"
    for sub in ("gpus", "llms", "frameworks", "prices"):
        (root / sub).mkdir(parents=True)
    shutil.copy(HARDWARE_DB / "gpus" / "a100-80gb-sxm.yaml", root / "gpus")
    shutil.copy(HARDWARE_DB / "llms" / "llama-2-7b.yaml", root / "llms")
    shutil.copy(HARDWARE_DB / "frameworks" / "vllm.yaml", root / "frameworks")
    shutil.copy(HARDWARE_DB / "quantizations.yaml", root)
    prices = {"id": "default", "description": "test", "quotes": [
        {"gpu": "a100-80gb-sxm", "provider": "x", "usd_per_gpu_hour": 2.0, "as_of": "2025-01", "source": "test"}]}
    (root / "prices" / "default.yaml").write_text(yaml.safe_dump(prices))
    return root


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def _load_error(root: Path) -> str:
    with pytest.raises(InputError) as info:
        load_catalog_from(root)
    return str(info.value)


def test_small_db_is_valid(small_db):
    cat = load_catalog_from(small_db)
    assert list(cat.gpus) == ["a100-80gb-sxm"] and list(cat.llms) == ["llama-2-7b"]
    assert cat.price_table().usd_per_gpu_hour() == {"a100-80gb-sxm": 2.0}


@pytest.mark.parametrize(
    ("relative", "change", "field"),
    [
        ("gpus/a100-80gb-sxm.yaml", lambda d: d.update(memory_gb=80), "memory_gb"),
        ("llms/llama-2-7b.yaml", lambda d: d.update(n_layers=32), "n_layers"),
        ("frameworks/vllm.yaml", lambda d: d.update(block_size=16), "block_size"),
        ("frameworks/vllm.yaml", lambda d: d["efficiency"].update(compute_eff=0.5), "efficiency.compute_eff"),
        ("prices/default.yaml", lambda d: d["quotes"][0].update(price=1.0), "quotes.0.price"),
        ("quantizations.yaml", lambda d: d[0].update(bits=16), "bits"),
    ],
)
def test_unknown_keys_rejected_naming_file_and_field(small_db, relative, change, field):
    _edit(small_db / relative, change)
    message = _load_error(small_db)
    assert str(small_db / relative) in message
    assert field in message and "unknown key" in message


def test_missing_key_named(small_db):
    _edit(small_db / "llms/llama-2-7b.yaml", lambda d: d.pop("vocab_size"))
    message = _load_error(small_db)
    assert "llama-2-7b.yaml" in message and "vocab_size" in message and "missing" in message


def test_non_positive_figure_rejected(small_db):
    _edit(small_db / "gpus/a100-80gb-sxm.yaml", lambda d: d.update(hbm_bandwidth_gbps=-1))
    message = _load_error(small_db)
    assert "a100-80gb-sxm.yaml" in message and "hbm_bandwidth_gbps" in message


def test_figure_without_source_rejected(small_db):
    _edit(small_db / "gpus/a100-80gb-sxm.yaml", lambda d: d["sources"].pop("hbm_bandwidth_gbps"))
    message = _load_error(small_db)
    assert "a100-80gb-sxm.yaml" in message and "hbm_bandwidth_gbps" in message and "sources" in message


def test_source_for_unknown_figure_rejected(small_db):
    _edit(small_db / "gpus/a100-80gb-sxm.yaml", lambda d: d["sources"].update(hbm_gbps="typo"))
    assert "hbm_gbps" in _load_error(small_db)


def test_id_differing_from_file_name_rejected(small_db):
    (small_db / "gpus/a100-80gb-sxm.yaml").rename(small_db / "gpus/a100.yaml")
    message = _load_error(small_db)
    assert "a100.yaml" in message and "a100-80gb-sxm" in message and "id" in message


def test_price_quote_for_unknown_gpu_rejected(small_db):
    _edit(small_db / "prices/default.yaml", lambda d: d["quotes"].append(
        {"gpu": "h100-sxm", "provider": "x", "usd_per_gpu_hour": 3.0, "as_of": "2025-01", "source": "t"}))
    message = _load_error(small_db)
    assert "default.yaml" in message and "h100-sxm" in message


def test_invalid_yaml_named_with_line(small_db):
    path = small_db / "llms/llama-2-7b.yaml"
    path.write_text(path.read_text() + "broken: [unclosed\n")
    message = _load_error(small_db)
    assert "llama-2-7b.yaml" in message and re.search(r"line \d+", message)


def test_quantizations_must_be_a_list(small_db):
    (small_db / "quantizations.yaml").write_text("bf16: {}\n")
    assert "quantizations.yaml" in _load_error(small_db)


def _slow_ampere(d: dict, architecture: str) -> None:
    """Give the vLLM profile half the compute efficiency on ``architecture``, with its source."""
    d["efficiency_by_architecture"] = {architecture: {**d["efficiency"], "compute_efficiency": 0.5}}
    d["sources"]["efficiency_by_architecture"] = "test"


def test_an_engine_may_set_its_efficiency_per_architecture(small_db):
    """vLLM with compute efficiency 0.5 on Ampere: the A100 (Ampere) plans with 0.5, and the profile's own factors
    stand for every other architecture."""
    from guide_opt.perf import ServingConfig

    _edit(small_db / "frameworks/vllm.yaml", lambda d: _slow_ampere(d, "ampere"))
    cat = load_catalog_from(small_db)
    vllm = cat.framework("vllm")
    config = ServingConfig(llm=cat.llms["llama-2-7b"], gpu=cat.gpus["a100-80gb-sxm"], framework=vllm, quantization=cat.quantization("bf16"),
                           tp=1, batch=1, input_tokens=128, output_tokens=16)
    assert config.factors.compute_efficiency == 0.5
    assert vllm.efficiency_on("hopper") == vllm.efficiency


def test_efficiency_for_an_architecture_the_engine_does_not_run_on_is_refused(small_db):
    _edit(small_db / "frameworks/vllm.yaml", lambda d: _slow_ampere(d, "pascal"))
    message = _load_error(small_db)
    assert "vllm.yaml" in message and "efficiency_by_architecture" in message and "pascal" in message
