"""LlmSpec: parameter counts of catalog LLMs, and reading HuggingFace config.json files."""

from __future__ import annotations

import pytest

from guide_opt.errors import InputError
from guide_opt.llm import LlmSpec

# Published parameter counts (model cards / papers).
PUBLISHED_PARAMS = {
    "llama-2-7b": 6.74e9,
    "llama-2-13b": 13.0e9,
    "llama-2-70b": 69e9,
    "llama-3.1-8b": 8.03e9,
    "llama-3.1-70b": 70.6e9,
    "llama-3.2-1b": 1.24e9,
    "mixtral-8x7b": 46.7e9,
    "qwen2-7b": 7.62e9,
    "qwen3-32b": 32.8e9,
    "gpt-neox-20b": 20.55e9,
    "starcoder-15b": 15.5e9,
    "opt-6.7b": 6.7e9,
    "chatglm3-6b": 6.24e9,
    "mistral-7b": 7.24e9,
    "qwen2-72b": 72.7e9,
}

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
}
LLAMA_2_7B = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "tie_word_embeddings": False, "torch_dtype": "float16", "hidden_act": "silu",
}
STARCODER = {
    "model_type": "gpt_bigcode", "n_embd": 6144, "n_head": 48, "n_layer": 40, "n_inner": 24576, "n_positions": 8192,
    "vocab_size": 49152, "multi_query": True, "activation_function": "gelu_pytorch_tanh", "tie_word_embeddings": True,
}
CHATGLM3 = {
    "model_type": "chatglm", "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32, "multi_query_attention": True,
    "multi_query_group_num": 2, "kv_channels": 128, "ffn_hidden_size": 13696, "padded_vocab_size": 65024, "seq_length": 8192,
    "torch_dtype": "float16",
}
MPT_7B = {
    "model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32, "expansion_ratio": 4, "max_seq_len": 2048,
    "vocab_size": 50432, "tie_word_embeddings": True,
}
MIXTRAL = {
    "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 32000, "max_position_embeddings": 32768, "tie_word_embeddings": False, "hidden_act": "silu",
}
QWEN3_32B = {
    "model_type": "qwen3", "hidden_size": 5120, "head_dim": 128, "intermediate_size": 25600, "num_attention_heads": 64,
    "num_hidden_layers": 64, "num_key_value_heads": 8, "vocab_size": 151936, "max_position_embeddings": 40960,
    "tie_word_embeddings": False,
}
# Upstream config.json files (only the keys guide-opt reads): mistralai/Mistral-7B-v0.1 and Qwen/Qwen2-72B.
MISTRAL_7B = {
    "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
}
QWEN2_72B = {
    "model_type": "qwen2", "hidden_size": 8192, "intermediate_size": 29568, "num_attention_heads": 64, "num_hidden_layers": 80,
    "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "hidden_act": "silu",
}
OPT_67B = {
    "model_type": "opt", "hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32, "ffn_dim": 16384,
    "vocab_size": 50272, "max_position_embeddings": 2048, "activation_function": "relu", "torch_dtype": "float16",
}


# ---- catalog parameter counts ------------------------------------------------------------------
@pytest.mark.parametrize(("llm_id", "published"), sorted(PUBLISHED_PARAMS.items()))
def test_catalog_total_params_match_published(need, llm_id, published):
    llm = need("llms", llm_id)
    assert llm.total_params == pytest.approx(published, rel=0.05)


def test_mixtral_active_params(need):
    llm = need("llms", "mixtral-8x7b")
    assert llm.is_moe and llm.active_params_per_token == pytest.approx(12.9e9, rel=0.05)


def test_llama_2_7b_parameter_breakdown_by_hand(need):
    llm = need("llms", "llama-2-7b")
    assert llm.attention_params_per_layer == 4 * 4096 * 4096
    assert llm.mlp_params_per_layer == 3 * 4096 * 11008
    assert llm.total_params == 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 2 * 32000 * 4096 == 6_738_149_376
    assert llm.active_params_per_token == 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 32000 * 4096


def test_gqa_shrinks_attention_params():
    dense = LlmSpec._from_hf_dict(dict(LLAMA_31_8B, num_key_value_heads=32), "dense", "test")
    gqa = LlmSpec._from_hf_dict(LLAMA_31_8B, "gqa", "test")
    # K and V go from 32 to 8 heads of 128: 2 x 4096 x (4096 - 1024) fewer weights per layer.
    assert dense.attention_params_per_layer - gqa.attention_params_per_layer == 2 * 4096 * (4096 - 1024)


def test_tied_embeddings_are_stored_once():
    tied = LlmSpec._from_hf_dict(dict(LLAMA_2_7B, tie_word_embeddings=True), "tied", "test")
    untied = LlmSpec._from_hf_dict(LLAMA_2_7B, "untied", "test")
    assert untied.total_params - tied.total_params == 32000 * 4096
    assert tied.active_params_per_token == untied.active_params_per_token  # the LM head is still read


def test_spec_validation_rejects_inconsistent_heads_and_experts():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        LlmSpec._from_hf_dict(dict(LLAMA_2_7B, num_key_value_heads=5), "x", "test")  # InputError is a ValueError
    with pytest.raises(ValueError, match="experts_per_token"):
        LlmSpec._from_hf_dict(dict(MIXTRAL, num_experts_per_tok=9), "x", "test")


# ---- from_hf_config ----------------------------------------------------------------------------
def test_llama_gqa_config(write_hf_config, catalog):
    spec = LlmSpec.from_hf_config(write_hf_config(LLAMA_31_8B, "Llama-3.1-8B"))
    assert (spec.id, spec.hidden_size, spec.num_layers, spec.num_attention_heads, spec.num_kv_heads) == ("Llama-3.1-8B", 4096, 32, 32, 8)
    assert (spec.head_dim, spec.intermediate_size, spec.vocab_size, spec.mlp_kind) == (128, 14336, 128256, "gated")
    assert spec.max_position_embeddings == 131072 and spec.dtype == "bfloat16" and not spec.is_moe
    assert spec.total_params == pytest.approx(8.03e9, rel=0.05)
    if "llama-3.1-8b" in catalog.llms:
        assert spec.total_params == catalog.llms["llama-3.1-8b"].total_params


def test_hf_config_matches_catalog_entry(write_hf_config, need):
    entry = need("llms", "llama-2-7b")
    spec = LlmSpec.from_hf_config(write_hf_config(LLAMA_2_7B), llm_id="llama-2-7b")
    keep = set(LlmSpec.model_fields) - {"id", "name", "source"}
    assert spec.model_dump(include=keep) == entry.model_dump(include=keep)


@pytest.mark.parametrize(("llm_id", "config"), [("mistral-7b", MISTRAL_7B), ("qwen2-72b", QWEN2_72B)])
def test_upstream_config_matches_catalog_entry_within_one_percent(write_hf_config, need, llm_id, config):
    entry = need("llms", llm_id)
    spec = LlmSpec.from_hf_config(write_hf_config(config), llm_id=llm_id)
    keep = set(LlmSpec.model_fields) - {"id", "name", "source"}
    assert spec.model_dump(include=keep) == entry.model_dump(include=keep)
    assert entry.total_params == pytest.approx(PUBLISHED_PARAMS[llm_id], rel=0.01)


def test_gpt_bigcode_multi_query(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(STARCODER, "starcoder"))
    assert (spec.hidden_size, spec.num_layers, spec.num_attention_heads, spec.num_kv_heads, spec.head_dim) == (6144, 40, 48, 1, 128)
    assert (spec.intermediate_size, spec.mlp_kind, spec.max_position_embeddings) == (24576, "standard", 8192)
    assert spec.kv_dim == 128 and spec.total_params == pytest.approx(15.5e9, rel=0.05)


def test_chatglm_multi_query_group_num(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(CHATGLM3, "chatglm3-6b"))
    assert (spec.num_layers, spec.num_attention_heads, spec.num_kv_heads, spec.head_dim) == (28, 32, 2, 128)
    assert (spec.intermediate_size, spec.vocab_size, spec.max_position_embeddings) == (13696, 65024, 8192)
    assert spec.mlp_kind == "gated" and spec.dtype == "float16"
    assert spec.total_params == pytest.approx(6.24e9, rel=0.05)


def test_chatglm_without_multi_query_keeps_all_heads(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(dict(CHATGLM3, multi_query_attention=False)))
    assert spec.num_kv_heads == 32


def test_mpt_d_model_n_heads_expansion_ratio(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(MPT_7B, "mpt-7b"))
    assert (spec.hidden_size, spec.num_attention_heads, spec.num_kv_heads, spec.num_layers) == (4096, 32, 32, 32)
    assert (spec.intermediate_size, spec.mlp_kind, spec.max_position_embeddings, spec.vocab_size) == (4 * 4096, "standard", 2048, 50432)
    assert spec.total_params == pytest.approx(6.7e9, rel=0.05)
    # A different expansion ratio changes the MLP width.
    assert LlmSpec.from_hf_config(write_hf_config(dict(MPT_7B, expansion_ratio=2), "mpt-x2")).intermediate_size == 8192


def test_mixtral_moe(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(MIXTRAL, "mixtral"))
    assert spec.is_moe and (spec.num_experts, spec.experts_per_token, spec.num_kv_heads) == (8, 2, 8)
    assert spec.mlp_params_per_layer == 8 * 3 * 4096 * 14336 + 4096 * 8  # experts + router
    assert spec.total_params == pytest.approx(46.7e9, rel=0.05)
    assert spec.active_params_per_token == pytest.approx(12.9e9, rel=0.05)


def test_explicit_head_dim_is_used(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(QWEN3_32B, "qwen3"))
    assert spec.head_dim == 128 and spec.q_dim == 64 * 128 and spec.mlp_kind == "gated"
    assert spec.total_params == pytest.approx(32.8e9, rel=0.05)


def test_opt_ffn_dim_relu(write_hf_config):
    spec = LlmSpec.from_hf_config(write_hf_config(OPT_67B, "opt"))
    assert (spec.intermediate_size, spec.mlp_kind, spec.dtype) == (16384, "standard", "float16")


def test_llm_id_override_and_source(write_hf_config):
    path = write_hf_config(LLAMA_2_7B, "some-folder")
    spec = LlmSpec.from_hf_config(path, llm_id="mine")
    assert spec.id == "mine" and spec.source == str(path)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"model_type": "t5", "d_model": 512, "num_heads": 8, "num_layers": 6, "d_ff": 2048, "vocab_size": 32128, "is_encoder_decoder": True},
         "is_encoder_decoder"),
        ({"model_type": "t5", "d_model": 512, "num_heads": 8, "num_layers": 6, "d_ff": 2048, "vocab_size": 32128}, "model_type"),
        (dict(LLAMA_2_7B, model_type="whisper", is_encoder_decoder=True), "is_encoder_decoder"),
    ],
)
def test_encoder_decoder_rejected_naming_the_key(write_hf_config, config, key):
    path = write_hf_config(config)
    with pytest.raises(InputError, match="encoder-decoder") as info:
        LlmSpec.from_hf_config(path)
    assert info.value.field == f"{path}: {key}"


def test_malformed_json_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 4096,')
    with pytest.raises(InputError, match="not valid JSON") as info:
        LlmSpec.from_hf_config(path)
    assert info.value.field == str(path)


def test_json_that_is_not_an_object_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(InputError, match="not a JSON object"):
        LlmSpec.from_hf_config(path)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        LlmSpec.from_hf_config(tmp_path / "nowhere" / "config.json")


def test_missing_key_named(write_hf_config):
    config = {k: v for k, v in LLAMA_2_7B.items() if k != "hidden_size"}
    with pytest.raises(InputError, match="hidden_size"):
        LlmSpec.from_hf_config(write_hf_config(config))


def test_invalid_value_rejected_as_input_error(write_hf_config):
    with pytest.raises(InputError, match="num_key_value_heads"):  # named as the config.json spells it
        LlmSpec.from_hf_config(write_hf_config(dict(LLAMA_2_7B, num_key_value_heads=0)))


def test_catalog_llm_accepts_a_config_path_or_folder(write_hf_config, catalog):
    path = write_hf_config(LLAMA_31_8B, "my-llama")
    by_file = catalog.llm(str(path))
    by_folder = catalog.llm(str(path.parent))
    assert by_file == by_folder and by_file.id == "my-llama" and by_file.num_kv_heads == 8
