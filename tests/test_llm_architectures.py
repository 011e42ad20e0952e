"""LlmSpec of MoE, MLA, sliding-window and pre-quantized LLMs: published parameter counts and config.json import.

Every config dict below holds the keys guide-opt reads from the upstream ``config.json`` of
the named HuggingFace repository; every expected count is the published one (model card or
technical report), never today's output.
"""

from __future__ import annotations

import pytest

from guide_opt.errors import InputError
from guide_opt.llm import LlmSpec

# huggingface.co/Qwen/Qwen3-30B-A3B config.json
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
    "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
    "max_position_embeddings": 40960, "sliding_window": None, "use_sliding_window": False, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "hidden_act": "silu",
}
# huggingface.co/Qwen/Qwen1.5-MoE-A2.7B config.json
QWEN15_MOE_A27B = {
    "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
    "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1, "vocab_size": 151936,
    "max_position_embeddings": 8192, "sliding_window": 32768, "use_sliding_window": False, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "hidden_act": "silu",
}
# huggingface.co/deepseek-ai/DeepSeek-V3 config.json
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_shared_experts": 1, "n_routed_experts": 256, "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "num_nextn_predict_layers": 1, "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "hidden_act": "silu",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
}
# huggingface.co/google/gemma-2-9b config.json
GEMMA_2_9B = {
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
    "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
    "max_position_embeddings": 8192, "sliding_window": 4096, "hidden_activation": "gelu_pytorch_tanh", "torch_dtype": "float32",
}
# huggingface.co/google/gemma-3-1b-it config.json
GEMMA_3_1B = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912,
    "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
    "max_position_embeddings": 32768, "sliding_window": 512, "sliding_window_pattern": 6, "hidden_activation": "gelu_pytorch_tanh",
    "torch_dtype": "bfloat16",
}
# huggingface.co/hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4 config.json
LLAMA_31_70B_AWQ = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
    "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "float16", "hidden_act": "silu",
    "quantization_config": {"bits": 4, "group_size": 128, "quant_method": "awq", "version": "gemm", "zero_point": True},
}
# huggingface.co/google-bert/bert-base-uncased config.json
BERT_BASE = {
    "architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
    "num_hidden_layers": 12, "vocab_size": 30522, "max_position_embeddings": 512, "hidden_act": "gelu",
}

#: (catalog id, upstream config, published total parameters, published activated parameters or None, relative
#: precision of the activated figure). Totals are checked within 1%.
PUBLISHED = [
    # Qwen3 model card: 30.5B total, 3.3B activated.
    ("qwen3-30b-a3b", QWEN3_30B_A3B, 30.5e9, 3.3e9, 0.02),
    # Qwen1.5-MoE-A2.7B model card: 14.3B total, 2.7B activated.
    ("qwen1.5-moe-a2.7b", QWEN15_MOE_A27B, 14.3e9, 2.7e9, 0.02),
    # DeepSeek-V3 technical report (arXiv 2412.19437), Section 1: 671B total, 37B activated (2 significant digits).
    ("deepseek-v3", DEEPSEEK_V3, 671e9, 37e9, 0.02),
    # Gemma 2 report (arXiv 2408.00118) Table 2: 917,504,000 embedding + 8,324,201,984 non-embedding parameters.
    ("gemma-2-9b", GEMMA_2_9B, 917_504_000 + 8_324_201_984, None, None),
    # The AWQ checkpoint keeps Llama-3.1-70B's architecture: 70.6B (Meta model card).
    ("llama-3.1-70b-awq", LLAMA_31_70B_AWQ, 70.6e9, None, None),
]


@pytest.mark.parametrize(("llm_id", "config", "total", "activated", "activated_rel"), PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_catalog_entry_matches_its_config_json_and_published_counts(write_hf_config, need, llm_id, config, total, activated, activated_rel):
    entry = need("llms", llm_id)
    spec = LlmSpec.from_hf_config(write_hf_config(config), llm_id=llm_id)
    keep = set(LlmSpec.model_fields) - {"id", "name", "source"}
    assert spec.model_dump(include=keep) == entry.model_dump(include=keep)
    assert entry.total_params == pytest.approx(total, rel=0.01)
    if activated is not None:
        assert entry.activated_params == pytest.approx(activated, rel=activated_rel)


def test_mixtral_keeps_its_published_counts(need):
    # Mistral AI's Mixtral announcement: 46.7B total, 12.9B used per token.
    llm = need("llms", "mixtral-8x7b")
    assert llm.total_params == pytest.approx(46.7e9, rel=0.01) and llm.activated_params == pytest.approx(12.9e9, rel=0.01)


def test_gemma_3_1b_counts_from_its_config():
    # Gemma 3 technical report (arXiv 2503.19786) Table 1: 1B = 302M embedding + 698M non-embedding parameters.
    spec = LlmSpec._from_hf_dict(GEMMA_3_1B, "gemma-3-1b", "test")
    assert spec.tie_word_embeddings  # Gemma configs tie by default (Gemma3TextConfig)
    assert spec.embedding_params == pytest.approx(302e6, rel=0.01)
    assert spec.total_params - spec.embedding_params == pytest.approx(698e6, rel=0.01)
    # sliding_window_pattern 6: layers 5, 11, 17, 23 are global, the other 22 local (transformers Gemma3).
    assert (spec.sliding_window, spec.num_sliding_layers) == (512, 22)


def test_qwen3_moe_reads_the_expert_width_not_intermediate_size():
    spec = LlmSpec._from_hf_dict(QWEN3_30B_A3B, "q", "test")
    # By hand: one expert is 3 x 2048 x 768; the layer holds 128 of them and a 2048 x 128 router.
    assert spec.expert_params == 3 * 2048 * 768
    assert spec.mlp_params_per_layer == 128 * 3 * 2048 * 768 + 2048 * 128
    assert spec.num_dense_layers == 0 and spec.num_moe_layers == 48


def test_deepseek_v3_layout_by_hand():
    spec = LlmSpec._from_hf_dict(DEEPSEEK_V3, "d", "test")
    assert (spec.num_dense_layers, spec.num_moe_layers) == (3, 58)  # first_k_dense_replace 3 of 61
    assert spec.shared_expert_intermediate_size == 2048  # n_shared_experts 1 x moe_intermediate_size
    assert spec.head_dim == 192 and spec.is_mla  # qk_nope 128 + qk_rope 64
    # MLA per layer by hand: q_a 7168x1536, kv_a 7168x(512+64), per head q_b 1536x192, kv_b 512x(128+128), o 128x7168.
    per_head = 1536 * 192 + 512 * 256 + 128 * 7168
    assert spec.attention_params_per_layer == 7168 * 1536 + 7168 * 576 + 128 * per_head
    # DeepSeek-V2 paper Section 2.1: the KV cache holds the 512 latent + 64 rotary-key elements per token and layer.
    assert spec.kv_cache_elements_per_token_per_layer == 576
    assert spec.checkpoint_quantization is not None and spec.checkpoint_quantization.scheme_id == "fp8"


def test_awq_bytes_per_weight_by_hand():
    spec = LlmSpec._from_hf_dict(LLAMA_31_70B_AWQ, "a", "test")
    q = spec.checkpoint_quantization
    # 4-bit weight + per 128 weights one fp16 scale (2 bytes) and one packed 4-bit zero (0.5 bytes).
    assert q.weight_bytes_per_param == 0.5 + 2.5 / 128
    assert q.scheme_id == "w4a16"
    gptq = LlmSpec._from_hf_dict(dict(LLAMA_31_70B_AWQ, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128,
                                                                             "desc_act": False, "sym": True}), "g", "test")
    assert gptq.checkpoint_quantization.weight_bytes_per_param == 0.5 + 2.5 / 128  # GPTQ stores qzeros even when symmetric


def test_mistral_sliding_window_covers_every_layer():
    spec = LlmSpec._from_hf_dict({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                                  "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000,
                                  "max_position_embeddings": 32768, "sliding_window": 4096}, "m", "test")
    assert (spec.sliding_window, spec.num_sliding_layers, spec.num_global_layers) == (4096, 32, 0)


def test_gemma_2_alternates_local_and_global_layers():
    spec = LlmSpec._from_hf_dict(GEMMA_2_9B, "g", "test")
    assert (spec.num_sliding_layers, spec.num_global_layers) == (21, 21)  # transformers Gemma2: even layers local


# ---- configs the model cannot represent: one InputError naming the key -------------------------------
@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        (BERT_BASE, "architectures", "encoder-only"),
        ({k: v for k, v in BERT_BASE.items() if k != "architectures"}, "model_type", "encoder-only"),
        (dict(LLAMA_31_70B_AWQ, quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}),
         "quantization_config.quant_method", "bitsandbytes"),
        (dict(LLAMA_31_70B_AWQ, quantization_config={"quant_method": "gptq", "bits": 3, "group_size": 128}),
         "quantization_config.bits", "3-bit"),
        ({k: v for k, v in DEEPSEEK_V3.items() if k != "v_head_dim"}, "v_head_dim", "latent attention"),
        (dict(QWEN3_30B_A3B, num_experts_per_tok=200), "num_experts_per_tok", "exceeds num_experts"),
    ],
)
def test_unrepresentable_config_names_the_key(write_hf_config, config, key, words):
    path = write_hf_config(config)
    with pytest.raises(InputError, match=words) as info:
        LlmSpec.from_hf_config(path)
    assert info.value.field == f"{path}: {key}"


def test_multimodal_wrapper_reads_its_text_config():
    # huggingface.co/google/gemma-3-4b-it config.json: the language model sits under text_config. Gemma 3 report
    # (arXiv 2503.19786) Table 1: 4B = 675M embedding + 3,209M non-embedding (+ a 417M vision encoder, left out).
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
                        "max_position_embeddings": 131072, "sliding_window": 1024, "sliding_window_pattern": 6},
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
    }
    spec = LlmSpec._from_hf_dict(config, "gemma-3-4b", "test")
    assert spec.tie_word_embeddings and spec.mlp_kind == "gated"
    assert spec.embedding_params == pytest.approx(675e6, rel=0.01)
    assert spec.total_params - spec.embedding_params == pytest.approx(3209e6, rel=0.01)
    assert (spec.sliding_window, spec.num_sliding_layers) == (1024, 34 - 34 // 6)
