"""``guide-opt estimate``, ``hardware list`` and ``models list`` through :func:`guide_opt.cli.main`."""

from __future__ import annotations

import json

import pytest

from guide_opt.cli import main

ESTIMATE = ["estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm"]
METRIC_KEYS = {"ttft_ms", "tpot_ms", "batch_latency_s", "throughput_tokens_per_s", "memory_utilization"}


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, err)


def test_estimate_json(capsys):
    code, out, err = run(capsys, ESTIMATE + ["--batch", "16", "--input-tokens", "512", "--output-tokens", "256", "--format", "json"])
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload["metrics"]) == METRIC_KEYS
    assert all(isinstance(v, float) and v > 0 for v in payload["metrics"].values())
    assert (payload["model"], payload["gpu"], payload["batch"], payload["fits"]) == ("llama-2-7b", "a100-80gb-sxm", 16, True)
    m = payload["metrics"]
    assert m["throughput_tokens_per_s"] == pytest.approx(16 * 256 / m["batch_latency_s"])
    assert m["ttft_ms"] < m["batch_latency_s"] * 1e3
    assert payload["bounds"] == {"prefill": "compute", "decode": "memory"}
    assert payload["max_batch"] > 16 and payload["memory"]["weights_gib"] == pytest.approx(6_738_149_376 * 2 / 2**30)


def test_estimate_table(capsys):
    code, out, _ = run(capsys, ESTIMATE + ["--batch", "4"])
    assert code == 0
    assert "TTFT" in out and "TPOT" in out and "llama-2-7b" in out and "max batch" in out


def test_estimate_guide2024_estimator(capsys):
    code, out, _ = run(capsys, ESTIMATE + ["--estimator", "guide-2024", "--format", "json"])
    assert code == 0 and json.loads(out)["estimator"] == "guide-2024"


def test_unknown_model_is_bad_input(capsys):
    code, out, err = run(capsys, ["estimate", "--model", "llama-2-7", "--gpu", "a100-80gb-sxm"])
    assert code == 1 and out == ""
    assert_one_line_error(err, "--model", "llama-2-7")


def test_unknown_gpu_is_bad_input(capsys):
    code, _, err = run(capsys, ["estimate", "--model", "llama-2-7b", "--gpu", "a100"])
    assert code == 1
    assert_one_line_error(err, "--gpu")


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_bad_batch_is_bad_input(capsys, value):
    code, _, err = run(capsys, ESTIMATE + ["--batch", value])
    assert code == 1
    assert_one_line_error(err, "--batch")


def test_batch_beyond_the_kv_cache_runs_in_waves_and_exits_0(capsys):
    code, out, _ = run(capsys, ESTIMATE + ["--batch", "1000", "--input-tokens", "2048", "--output-tokens", "2048", "--format", "json"])
    assert code == 0
    payload = json.loads(out)
    assert payload["fits"] is False and payload["runs"] is True and payload["metrics"]["ttft_ms"] > 0
    # ceil(1000 / max_batch) waves, as the reason says.
    assert payload["waves"] == -(-1000 // payload["max_batch"]) and f"{payload['waves']} waves" in payload["reason"]


def test_configuration_that_cannot_serve_one_request_exits_2(capsys):
    code, out, _ = run(capsys, ESTIMATE + ["--model", "llama-2-70b", "--format", "json"])
    assert code == 2
    payload = json.loads(out)
    assert payload["fits"] is False and payload["runs"] is False and payload["metrics"]["ttft_ms"] is None and payload["bounds"] is None
    assert "cannot serve one request" in payload["reason"] and payload["max_batch"] == 0


def test_not_fitting_table_says_so(capsys):
    code, out, _ = run(capsys, ["estimate", "--model", "llama-2-70b", "--gpu", "a100-80gb-sxm"])
    assert code == 2 and "NO" in out


def test_fp8_on_a100_names_quantization(capsys):
    code, _, err = run(capsys, ESTIMATE + ["--quantization", "fp8"])
    assert code == 1
    assert_one_line_error(err, "--quantization", "fp8")


def test_tp_not_dividing_heads_names_tp(capsys):
    code, _, err = run(capsys, ESTIMATE + ["--tp", "3"])
    assert code == 1
    assert_one_line_error(err, "--tp", "32 attention heads")


def test_unknown_framework_names_framework(capsys):
    code, _, err = run(capsys, ESTIMATE + ["--framework", "vllm2"])
    assert code == 1
    assert_one_line_error(err, "--framework", "vllm")


def test_hf_config_path_as_model(capsys, write_hf_config):
    path = write_hf_config({
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 32,
        "num_hidden_layers": 22, "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048,
    }, "tiny-llama")
    code, out, err = run(capsys, ["estimate", "--model", str(path), "--gpu", "a100-80gb-sxm", "--format", "json"])
    assert code == 0, err
    payload = json.loads(out)
    assert payload["model"] == "tiny-llama" and set(payload["metrics"]) == METRIC_KEYS


def test_broken_config_path_is_bad_input(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    code, _, err = run(capsys, ["estimate", "--model", str(path), "--gpu", "a100-80gb-sxm"])
    assert code == 1
    assert_one_line_error(err, str(path), "JSON")


def test_hardware_list_json(capsys, catalog):
    code, out, _ = run(capsys, ["hardware", "list", "--format", "json"])
    assert code == 0
    rows = json.loads(out)
    assert {r["id"] for r in rows} == set(catalog.gpus)
    a100 = next(r for r in rows if r["id"] == "a100-80gb-sxm")
    assert a100["memory_gib"] == 80 and a100["usd_per_gpu_hour"] == catalog.price_table().usd_per_gpu_hour().get("a100-80gb-sxm")


def test_hardware_list_table(capsys):
    code, out, _ = run(capsys, ["hardware", "list"])
    assert code == 0 and "a100-80gb-sxm" in out and "HBM GB/s" in out


def test_hardware_list_unknown_price_table(capsys):
    code, _, err = run(capsys, ["hardware", "list", "--price-table", "nope"])
    assert code == 1
    assert_one_line_error(err, "--price-table")


def test_models_list_json(capsys, catalog):
    code, out, _ = run(capsys, ["models", "list", "--format", "json"])
    assert code == 0
    rows = json.loads(out)
    assert {r["id"] for r in rows} == set(catalog.llms)
    llama = next(r for r in rows if r["id"] == "llama-2-7b")
    assert llama["total_params"] == 6_738_149_376 and llama["num_layers"] == 32


def test_models_list_table(capsys):
    code, out, _ = run(capsys, ["models", "list"])
    assert code == 0 and "llama-2-7b" in out and "6.74B" in out


def test_unknown_command_is_bad_input(capsys):
    code, _, err = run(capsys, ["estimat"])
    assert code == 1 and "Traceback" not in err and err.startswith("error:")


def test_request_beyond_the_context_is_bad_input(capsys):
    from guide_opt.cli import main

    code = main(["estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--input-tokens", "5000"])
    err = capsys.readouterr().err
    assert code == 1 and "--input-tokens" in err and "4096" in err


# ---- config.json files the model cannot represent: exit 1, one line naming the key --------------------
BERT_BASE = {  # huggingface.co/google-bert/bert-base-uncased config.json (the keys that matter)
    "architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 768, "intermediate_size": 3072,
    "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 30522, "max_position_embeddings": 512,
}
T5_SMALL = {  # huggingface.co/google-t5/t5-small config.json
    "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 512, "d_ff": 2048, "num_heads": 8,
    "num_layers": 6, "vocab_size": 32128, "is_encoder_decoder": True,
}


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (BERT_BASE, "architectures"),
        (T5_SMALL, "is_encoder_decoder"),
        (dict(BERT_BASE, architectures=["LlamaForCausalLM"], model_type="llama",
              quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}), "quantization_config.quant_method"),
    ],
)
def test_config_json_the_model_cannot_represent_is_bad_input(capsys, write_hf_config, config, key):
    path = write_hf_config(config, "odd")
    code, out, err = run(capsys, ["estimate", "--model", str(path), "--gpu", "a100-80gb-sxm"])
    assert code == 1 and out == ""
    assert_one_line_error(err, f"{path}: {key}")


def test_moe_mla_config_json_estimates(capsys, write_hf_config):
    # A DeepSeek-V2-Lite-shaped config.json (huggingface.co/deepseek-ai/DeepSeek-V2-Lite): MLA without q_lora_rank,
    # 64 routed + 2 shared experts, first layer dense. 15.7B parameters per its model card.
    path = write_hf_config({
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
        "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 102400, "max_position_embeddings": 163840, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }, "deepseek-v2-lite")
    code, out, err = run(capsys, ["estimate", "--model", str(path), "--gpu", "h100-sxm", "--format", "json"])
    assert code == 0, err
    payload = json.loads(out)
    assert payload["memory"]["weights_gib"] == pytest.approx(15.7e9 * 2 / 2**30, rel=0.01)
    assert payload["metrics"]["tpot_ms"] > 0


def test_expert_parallel_flag(capsys):
    # Qwen1.5-MoE's 60 experts over 8 GPUs: whole experts put ceil(60 / 8) = 8 on the most loaded GPU
    # instead of 7.5 experts' worth of columns: 24 layers x half an expert (3 x 2048 x 1408 x 2 bytes) more.
    args = ["estimate", "--model", "qwen1.5-moe-a2.7b", "--gpu", "h100-sxm", "--tp", "8", "--format", "json"]
    tp = json.loads(run(capsys, args)[1])["memory"]["weights_gib"]
    code, out, _ = run(capsys, args + ["--expert-parallel"])
    assert code == 0
    assert (json.loads(out)["memory"]["weights_gib"] - tp) * 2**30 == pytest.approx(24 * 0.5 * 3 * 2048 * 1408 * 2, rel=1e-9)
    code, _, err = run(capsys, ESTIMATE + ["--expert-parallel"])
    assert code == 1
    assert_one_line_error(err, "--expert-parallel", "mixture-of-experts")

# ---- steady state (--concurrency / --rate) vs burst (--batch) ------------------------------------
STEADY = ["estimate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-tokens", "1024", "--output-tokens", "256"]


def test_burst_is_labelled(capsys):
    code, out, _ = run(capsys, ESTIMATE + ["--batch", "4", "--format", "json"])
    assert code == 0 and json.loads(out)["mode"] == "burst"
    code, out, _ = run(capsys, ESTIMATE + ["--batch", "4"])
    assert "burst" in out


def test_one_user_is_one_request_alone(capsys):
    # A closed loop of one user runs each request alone: its TTFT and TPOT are the burst
    # estimate of a batch of one (the same prefill step and decode steps).
    code, out, err = run(capsys, STEADY + ["--concurrency", "1", "--format", "json"])
    assert code == 0, err
    steady = json.loads(out)
    _, out, _ = run(capsys, STEADY + ["--batch", "1", "--format", "json"])
    burst = json.loads(out)
    assert steady["mode"] == "steady_state" and steady["load"] == {"loop": "closed", "concurrency": 1}
    assert steady["metrics"]["ttft_ms"] == pytest.approx(burst["metrics"]["ttft_ms"], rel=1e-9)
    assert steady["metrics"]["tpot_ms"] == pytest.approx(burst["metrics"]["tpot_ms"], rel=1e-9)
    assert steady["metrics"]["ttft_percentiles_ms"]["p99"] == pytest.approx(burst["metrics"]["ttft_ms"], rel=1e-9)


def test_rate_gives_bench_serve_style_metrics(capsys):
    code, out, err = run(capsys, STEADY + ["--rate", "5", "--format", "json"])
    assert code == 0, err
    payload = json.loads(out)
    m = payload["metrics"]
    assert payload["mode"] == "steady_state" and payload["load"] == {"loop": "open", "request_rate_per_s": 5.0}
    assert isinstance(m["ttft_ms"], float) and isinstance(m["tpot_ms"], float)  # plain numbers: the means
    for key in ("ttft_percentiles_ms", "tpot_percentiles_ms", "itl_percentiles_ms"):
        p = m[key]
        assert set(p) == {"p50", "p90", "p99"} and p["p50"] <= p["p90"] <= p["p99"]
    # Every request is served: the output throughput is the offered rate x output tokens.
    assert m["throughput_tokens_per_s"] == pytest.approx(5 * 256)
    assert payload["max_num_seqs"] == 256  # vLLM's default max-num-seqs, and 256 sequences of 1280 tokens fit
    code, out, _ = run(capsys, STEADY + ["--rate", "5"])
    assert code == 0 and "steady state" in out and "p99" in out and "output throughput" in out


def test_the_load_is_shown_as_a_share_of_capacity(capsys):
    # Open loop: the share is the offered rate over the JSON's capacity (5 / 14.6 requests/s = 34% today).
    _, out, _ = run(capsys, STEADY + ["--rate", "5", "--format", "json"])
    capacity = json.loads(out)["capacity_request_rate_per_s"]
    code, out, _ = run(capsys, STEADY + ["--rate", "5"])
    assert code == 0 and f"5 requests/s ({5 / capacity:.0%} of capacity {capacity:.4g} requests/s)" in out
    # Closed loop: its slots stay full, so its throughput is named against the open-loop capacity (the same figure).
    _, out, _ = run(capsys, STEADY + ["--concurrency", "64", "--format", "json"])
    payload = json.loads(out)
    rate = payload["metrics"]["throughput_tokens_per_s"] / 256
    code, out, _ = run(capsys, STEADY + ["--concurrency", "64"])
    assert code == 0 and f"(throughput {rate / capacity:.0%} of the open-loop capacity {capacity:.4g} requests/s)" in out


def test_rate_beyond_capacity_exits_2(capsys):
    code, out, _ = run(capsys, STEADY + ["--rate", "1000", "--format", "json"])
    payload = json.loads(out)
    assert code == 2 and payload["stable"] is False and payload["metrics"] is None
    assert payload["capacity_request_rate_per_s"] < 1000 and "capacity" in payload["reason"]


@pytest.mark.parametrize("extra, words", [
    (["--batch", "8", "--rate", "2"], ("--batch", "--rate")),
    (["--concurrency", "8", "--rate", "2"], ("--concurrency", "--rate")),
    (["--max-num-seqs", "8"], ("--max-num-seqs",)),
    (["--rate", "2", "--estimator", "guide-2024"], ("--estimator",)),
])
def test_mixed_modes_are_bad_input(capsys, extra, words):
    code, out, err = run(capsys, STEADY + extra)
    assert code == 1 and out == ""
    assert_one_line_error(err, *words)
