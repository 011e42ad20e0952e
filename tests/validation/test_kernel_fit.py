"""Fitting kernel curves: known parameters are recovered from synthetic tables; files and scores are complete."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
import yaml

from guide_opt.catalog import attach_kernel_profiles, load_spec
from guide_opt.errors import InputError
from guide_opt.kernel_profile import KernelProfile
from guide_opt.validation.kernel_fit import beyond_cache_reach, cache_reach_bytes, decode_rows, fit_all, read_table

#: The engine behind the synthetic tables (what the fit must find).
TRUE_GEMM = {"peak_fraction": 0.75, "half": 50.0, "bandwidth_fraction": 0.8, "latency_us": 4.0}
TRUE_ATTENTION = {"peak_fraction": 0.6, "half": 1500.0, "bandwidth_fraction": 0.85, "latency_us": 12.0, "per_sequence_us": 0.1}
TRUE_ALL_REDUCE = {2: (8.0, 0.5), 4: (12.0, 0.6), 8: (20.0, 0.7)}  # latency us, bus-bandwidth fraction
#: A PCIe box whose 4/8-GPU ring crosses a slower path (the shape of the measured L40S tables).
TRUE_PCIE_ALL_REDUCE = {2: (7.0, 0.6), 4: (12.0, 0.15), 8: (23.0, 0.05)}
NVLINK_SYSTEMS = (("h100_sxm", "h100-sxm", TRUE_ALL_REDUCE), ("b200_sxm", "b200", TRUE_ALL_REDUCE))
#: How much faster than the DRAM a synthetic kernel streams a working set its cache holds.
CACHE_RATE_X = 2.5
#: HBM fraction of the synthetic FP8-cache kernels (they dequantize while reading: slower than 16-bit's 0.85).
TRUE_FP8_KV_BANDWIDTH_FRACTION = 0.65


def _gemm_ms(gpu, m: int, n: int, k: int) -> float:
    """bf16 GEMM time by the curve's formula: max(compute, latency + bytes / rate)."""
    t = TRUE_GEMM
    compute = 2 * m * n * k / (gpu.bf16_dense_tflops * 1e12 * t["peak_fraction"] * m / (m + t["half"]))
    memory = t["latency_us"] * 1e-6 + (n * k + m * (n + k)) * 2 / (gpu.hbm_bandwidth_gbps * 1e9 * t["bandwidth_fraction"])
    return max(compute, memory) * 1e3


def _attention_ms(gpu, batch: int, size: float, flops: float, bytes_moved: float, bandwidth_fraction: float = TRUE_ATTENTION["bandwidth_fraction"]) -> float:
    t = TRUE_ATTENTION
    compute = flops / (gpu.bf16_dense_tflops * 1e12 * t["peak_fraction"] * size / (size + t["half"]))
    memory = (t["latency_us"] + t["per_sequence_us"] * batch) * 1e-6 + bytes_moved / (gpu.hbm_bandwidth_gbps * 1e9 * bandwidth_fraction)
    return max(compute, memory) * 1e3


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with gzip.open(path, "wt", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)


def write_tables(root: Path, catalog, systems=NVLINK_SYSTEMS, fp8_kv_gpus: tuple[str, ...] = (), cache_bytes: dict[str, float] | None = None) -> Path:
    """An aiconfigurator-shaped folder generated from the TRUE_* curves (constant columns in INDEX.csv), one
    folder per (data GPU, catalog id, all-reduce truth) of ``systems``; the data GPUs of ``fp8_kv_gpus``
    also have FP8-cache attention rows (a ``kv_cache_dtype`` column) read at :data:`TRUE_FP8_KV_BANDWIDTH_FRACTION`.
    On a data GPU of ``cache_bytes`` (data GPU -> bytes), decode rows whose KV cache is at most that stream at
    :data:`CACHE_RATE_X` times the DRAM rate (a kernel repeated on a working set its L2 cache holds)."""
    index = [["gpu", "table", "version", "rows", "constant_columns"]]
    for data_gpu, gpu_id, all_reduce in systems:
        gpu = catalog.gpu(gpu_id)
        cached = (cache_bytes or {}).get(data_gpu, 0.0)
        folder = root / data_gpu
        folder.mkdir(parents=True)
        gemm = [["bfloat16", m, n, k, _gemm_ms(gpu, m, n, k)] for m in (1, 8, 32, 128, 512, 2048, 8192) for n in (1024, 4096) for k in (1024, 8192)]
        _write(folder / "gemm.csv.gz", ["gemm_dtype", "m", "n", "k", "latency"], gemm)
        h, kv, d = 32, 8, 128
        caches = (("bfloat16", 2, TRUE_ATTENTION["bandwidth_fraction"]), ("fp8", 1, TRUE_FP8_KV_BANDWIDTH_FRACTION))[:2 if data_gpu in fp8_kv_gpus else 1]
        prefill = [[b, s, h, kv, dtype, _attention_ms(gpu, b, s + 1, 4 * b * h * d * s * (s + 1) / 2, b * s * (2 * h * d * 2 + 2 * kv * d * kvb), frac)]
                   for dtype, kvb, frac in caches for b in (1, 4) for s in (16, 256, 2048, 8192)]
        _write(folder / "context_attention.csv.gz", ["batch_size", "isl", "num_heads", "num_key_value_heads", "kv_cache_dtype", "latency"], prefill)
        decode = [[b, h, kv, c, dtype, _attention_ms(gpu, b, 2 * c, 4 * b * h * d * c, b * c * 2 * kv * d * kvb + b * 2 * h * d * 2,
                                                     frac * (CACHE_RATE_X if b * c * 2 * kv * d * kvb <= cached else 1.0))]
                  for dtype, kvb, frac in caches for b in (1, 16, 64) for c in (128, 1024, 8192)]
        _write(folder / "generation_attention.csv.gz", ["batch_size", "num_heads", "num_key_value_heads", "step", "kv_cache_dtype", "latency"], decode)
        nccl = []
        for n, (lat_us, frac) in all_reduce.items():
            for elements in (256, 65536, 16777216):
                nccl.append(["all_reduce", "half", n, elements, (lat_us * 1e-6 + 2 * (n - 1) / n * 2 * elements / (frac * gpu.link_bandwidth_gbps * 1e9)) * 1e3])
        _write(folder / "nccl.csv.gz", ["op_name", "nccl_dtype", "num_gpus", "message_size", "latency"], nccl)
        index += [[data_gpu, "gemm", "9.9", len(gemm), "kernel_source=torch; op_name=gemm"],
                  [data_gpu, "context_attention", "9.9", len(prefill), "kernel_source=fa; head_dim=128"],
                  [data_gpu, "generation_attention", "9.9", len(decode), "kernel_source=fa; head_dim=128"],
                  [data_gpu, "nccl", "1.0", len(nccl), "kernel_source=NCCL"]]
    with (root / "INDEX.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(index)
    return root


@pytest.fixture(scope="module")
def fitted(catalog, tmp_path_factory):
    root = write_tables(tmp_path_factory.mktemp("kernels") / "aiconfigurator", catalog)
    return root, fit_all(root, catalog, "synthetic")


def test_constant_columns_come_from_the_index(fitted):
    root, _run = fitted
    row = read_table(root, "h100_sxm", "context_attention")[0]
    assert row["head_dim"] == "128" and row["kv_cache_dtype"] == "bfloat16" and row["version"] == "9.9"


def test_an_fp8_cache_gets_its_own_hbm_fraction_where_it_was_measured(catalog, tmp_path):
    """Synthetic tables whose FP8-cache kernels read at 0.65 of the HBM peak and 16-bit ones at 0.85: the fit
    finds both on the GPU with FP8 rows; the GPU without them, and the generic curve, keep ``None`` (the 16-bit figure applies)."""
    root = write_tables(tmp_path / "aiconfigurator", catalog, fp8_kv_gpus=("h100_sxm",))
    run = fit_all(root, catalog, "synthetic")
    h100, b200 = run.profiles["h100-sxm"].attention, run.profiles["b200"].attention
    assert h100.decode_bandwidth_fraction == pytest.approx(TRUE_ATTENTION["bandwidth_fraction"], rel=0.03)
    assert h100.fp8_kv_decode_bandwidth_fraction == pytest.approx(TRUE_FP8_KV_BANDWIDTH_FRACTION, rel=0.03)
    assert h100.kv_bandwidth_fraction(True) == h100.fp8_kv_decode_bandwidth_fraction
    assert b200.fp8_kv_decode_bandwidth_fraction is None and b200.kv_bandwidth_fraction(True) == b200.decode_bandwidth_fraction
    scores = {(s.data_gpu, s.kind): s for s in run.held_out}
    assert scores[("h100_sxm", "attention_decode_fp8_kv")].in_sample_mape < 2.0
    assert scores[("h100_sxm", "attention_decode_bf16_kv")].in_sample_mape < 2.0
    assert ("b200_sxm", "attention_decode_fp8_kv") not in scores
    # the generic curve fits the FP8 rows with their own fraction (so its 16-bit one stays the true 0.85) but does not carry it
    generic = run.profiles["generic-nvlink"].attention
    assert generic.fp8_kv_decode_bandwidth_fraction is None
    assert generic.decode_bandwidth_fraction == pytest.approx(TRUE_ATTENTION["bandwidth_fraction"], rel=0.03)


def test_fit_recovers_the_synthetic_curves(fitted):
    _root, run = fitted
    p = run.profiles["h100-sxm"]
    g = p.gemm["bf16"]
    assert g.peak_fraction == pytest.approx(TRUE_GEMM["peak_fraction"], rel=0.05)
    assert g.bandwidth_fraction == pytest.approx(TRUE_GEMM["bandwidth_fraction"], rel=0.05)
    assert g.latency_us == pytest.approx(TRUE_GEMM["latency_us"], abs=1.0)
    a = p.attention
    assert a.prefill_peak_fraction == pytest.approx(TRUE_ATTENTION["peak_fraction"], rel=0.05)
    assert a.decode_bandwidth_fraction == pytest.approx(TRUE_ATTENTION["bandwidth_fraction"], rel=0.05)
    for fit in p.all_reduce:
        lat, frac = TRUE_ALL_REDUCE[fit.num_gpus]
        assert fit.latency_us == pytest.approx(lat, rel=0.02) and fit.bus_bandwidth_fraction == pytest.approx(frac, rel=0.02)
    assert p.quality["gemm_bf16"].mape_pct < 2.0


def test_every_measured_gpu_is_scored_in_sample_and_held_out(fitted):
    _root, run = fitted
    assert set(run.profiles) == {"h100-sxm", "b200", "generic-nvlink"}
    kinds = {(s.data_gpu, s.kind) for s in run.held_out}
    for gpu in ("h100_sxm", "b200_sxm"):
        assert {(gpu, k) for k in ("gemm_bf16", "attention_prefill", "attention_decode", "all_reduce")} <= kinds
    # the synthetic GPUs share one engine, so the other GPU's curves transfer nearly exactly
    assert all(s.held_out_mape < 5.0 for s in run.held_out)


def test_profiles_round_trip_through_yaml_and_the_catalog(fitted, tmp_path, catalog):
    _root, run = fitted
    path = tmp_path / "h100-sxm.yaml"
    path.write_text(yaml.safe_dump(run.profiles["h100-sxm"].model_dump(mode="json")))
    loaded = load_spec(path, KernelProfile)
    assert loaded == run.profiles["h100-sxm"]
    gpus = attach_kernel_profiles({"h100-sxm": catalog.gpu("h100-sxm").model_copy(update={"kernels": None})}, {"h100-sxm": loaded})
    assert gpus["h100-sxm"].kernels == loaded


def test_bad_profiles_are_bad_input(fitted, tmp_path, catalog):
    _root, run = fitted
    data = run.profiles["h100-sxm"].model_dump(mode="json")
    path = tmp_path / "h100-sxm.yaml"
    path.write_text(yaml.safe_dump({**data, "surprise": 1}))
    with pytest.raises(InputError, match="surprise"):
        load_spec(path, KernelProfile)
    path.write_text(yaml.safe_dump({**data, "gemm": {}}))
    with pytest.raises(InputError, match="bf16"):
        load_spec(path, KernelProfile)
    stray = run.profiles["h100-sxm"].model_copy(update={"id": "no-such-gpu"})
    with pytest.raises(InputError, match="no-such-gpu"):
        attach_kernel_profiles(dict(catalog.gpus), {"no-such-gpu": stray})


def test_missing_data_folder_is_bad_input(catalog, tmp_path):
    with pytest.raises(InputError, match="--data-dir"):
        fit_all(tmp_path / "nothing", catalog, "x")


@pytest.fixture(scope="module")
def fitted_with_pcie(catalog, tmp_path_factory):
    systems = NVLINK_SYSTEMS + (("l40s", "l40s", TRUE_PCIE_ALL_REDUCE),)
    return fit_all(write_tables(tmp_path_factory.mktemp("kernels_pcie") / "aiconfigurator", catalog, systems), catalog, "synthetic")


def test_pcie_all_reduce_takes_the_2_gpu_bandwidth_where_one_box_measured_more(fitted_with_pcie, catalog):
    """One PCIe box measured: neither its own profile nor the generic PCIe one keeps its 4/8-GPU drop (a
    property of that box's topology: NVIDIA's own L40S systems run TP 8 about as fast as TP 4, RESULTS.md
    section 14); both use the 2-GPU bus bandwidth with each count's own latency. Expected times by hand
    from TRUE_PCIE_ALL_REDUCE."""
    run = fitted_with_pcie
    link = catalog.gpu("l40s").link_bandwidth_bytes_per_s  # 32 GB/s per direction
    message = 32 * 2**20  # bytes
    own = run.profiles["l40s"].all_reduce_fit(4)
    assert own.latency_us == pytest.approx(12.0, rel=0.02) and own.bus_bandwidth_fraction == pytest.approx(0.6, rel=0.02)
    assert run.profiles["l40s"].all_reduce_fit(2).bus_bandwidth_fraction == pytest.approx(0.6, rel=0.02)
    generic = run.profiles["generic-pcie"].all_reduce_fit(4)
    # 12 us + 2 x 3/4 x 33554432 B / (0.6 x 32e9 B/s) = 12 us + 2621.44 us
    assert generic.latency_us * 1e-6 + 1.5 * message / (generic.bus_bandwidth_fraction * link) == pytest.approx(12e-6 + 2621.44e-6, rel=0.02)
    assert run.profiles["generic-pcie"].all_reduce_fit(8).bus_bandwidth_fraction == pytest.approx(0.6, rel=0.02)
    assert run.profiles["generic-pcie"].all_reduce_fit(8).latency_us == pytest.approx(23.0, rel=0.02)
    # two NVLink systems measured every count: the pooled per-count fits stay
    assert run.profiles["generic-nvlink"].all_reduce_fit(4).bus_bandwidth_fraction == pytest.approx(0.6, rel=0.02)
    assert "4, 8 GPUs" in run.rules["generic-pcie"] and "every count" in run.rules["generic-nvlink"]


def test_decode_rows_served_from_the_cache_are_left_out_of_the_fit(catalog, tmp_path):
    """Synthetic L40S decode kernels whose KV cache of up to 100 MB streams 2.5x faster than the DRAM (a kernel
    repeated on what its L2 holds): the 67 MB one then moves 1.3 TB/s against the 864 GB/s GDDR6 peak (by hand:
    12 + 16 x 0.1 us + 67.1 MB / (2.5 x 0.85 x 864 GB/s)). The fit keeps the rows beyond that working set
    (268, 537 and 2147 MB) and finds the true DRAM fraction 0.85; the H100's identical tables are untouched."""
    systems = NVLINK_SYSTEMS + (("l40s", "l40s", TRUE_PCIE_ALL_REDUCE),)
    root = write_tables(tmp_path / "aiconfigurator", catalog, systems, cache_bytes={"l40s": 100e6})
    run = fit_all(root, catalog, "synthetic")
    assert run.profiles["l40s"].attention.decode_bandwidth_fraction == pytest.approx(TRUE_ATTENTION["bandwidth_fraction"], rel=0.03)
    scores = {(s.data_gpu, s.kind): s for s in run.held_out}
    assert scores[("l40s", "attention_decode")].rows == 3
    assert scores[("l40s", "attention_decode")].in_sample_mape < 2.0
    assert scores[("h100_sxm", "attention_decode")].rows == 9


L40S_DECODE_ROWS = Path(__file__).resolve().parents[1] / "data" / "l40s_decode_rows.csv"
#: The L40S's L2 cache: 96 MB (NVIDIA Ada Lovelace architecture whitepaper: AD102, 98,304 KB of L2).
L40S_L2_BYTES = 98_304 * 1024


def test_the_measured_l40s_cache_reach_is_within_its_l2(catalog):
    """Measured L40S decode kernels (tests/data/l40s_decode_rows.csv, copied from the kernel tables): the 34 and 67 MB
    KV caches stream at 1.5x and 2.1x the 864 GB/s GDDR6 peak, possible only from the 96 MB L2; from 134 MB on they
    run at 0.70-0.74 of it. The reach is the 67 MB row's working set, and only the three larger rows are kept."""
    with L40S_DECODE_ROWS.open() as fh:
        raw = [row for row in csv.DictReader(line for line in fh if not line.startswith("#"))]
    rows = decode_rows(raw, catalog.gpu("l40s"), "l40s")
    kv_bytes = 16 * 1023 * 2 * 8 * 128 * 2
    queries_bytes = 16 * 2 * 32 * 128 * 2
    assert cache_reach_bytes(rows) == kv_bytes + queries_bytes
    assert cache_reach_bytes(rows) < L40S_L2_BYTES
    kept, left_out, reach = beyond_cache_reach(rows)
    assert left_out == 3 and reach == kv_bytes + queries_bytes
    rate = kept.bytes_moved / kept.measured_s / kept.hbm_bytes_per_s
    assert ((rate > 0.69) & (rate < 0.75)).all()
