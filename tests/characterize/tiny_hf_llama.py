"""A tiny random-weight Llama with a word-level tokenizer, written as a local HuggingFace folder
with numpy alone (config.json, model.safetensors, tokenizer.json), for ``transformers serve``.

Nothing is downloaded and no torch is needed to write it. The tokenizer has one token per word
("▁the", "▁of", ... and "▁w0".."▁w199") and adds no BOS, so a prompt of n words is n tokens. The
LM-head rows of the special tokens are zero while the word rows are random, so greedy decoding
never picks <unk>, <s> or </s>: every answer is exactly max_tokens long.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SPECIALS = ("<unk>", "<s>", "</s>")
HIDDEN, INTERMEDIATE, LAYERS, HEADS = 256, 768, 4, 4


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors layout: 8-byte little-endian header length, JSON header, raw little-endian data."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for blob in blobs:
            handle.write(blob)


def _tokenizer_json(vocab: dict[str, int]) -> dict:
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, t in enumerate(SPECIALS)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": metaspace, "post_processor": None, "decoder": metaspace,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}


def write_tiny_hf_llama(out_dir: Path, words: list[str], seed: int = 0) -> Path:
    """Write the model folder ``out_dir`` for prompt words ``words`` (plus w0..w199); return it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces = list(dict.fromkeys(f"▁{w}" for w in [*words, *(f"w{i}" for i in range(200))]))
    vocab = {t: i for i, t in enumerate([*SPECIALS, *pieces])}
    rng = np.random.default_rng(seed)

    def noise(*shape: int, scale: float = 0.05) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * scale

    lm_head = noise(len(vocab), HIDDEN, scale=1.0)
    lm_head[: len(SPECIALS)] = 0.0
    tensors = {"model.embed_tokens.weight": noise(len(vocab), HIDDEN, scale=1.0), "model.norm.weight": np.ones(HIDDEN, np.float32),
               "lm_head.weight": lm_head}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        tensors.update({f"{p}.input_layernorm.weight": np.ones(HIDDEN, np.float32), f"{p}.post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
                        **{f"{p}.self_attn.{n}_proj.weight": noise(HIDDEN, HIDDEN) for n in "qkvo"},
                        f"{p}.mlp.gate_proj.weight": noise(INTERMEDIATE, HIDDEN), f"{p}.mlp.up_proj.weight": noise(INTERMEDIATE, HIDDEN),
                        f"{p}.mlp.down_proj.weight": noise(HIDDEN, INTERMEDIATE)})
    _safetensors(out_dir / "model.safetensors", tensors)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(vocab), "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
              "tie_word_embeddings": False, "dtype": "float32"}
    (out_dir / "config.json").write_text(json.dumps(config, indent=1))
    (out_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}))
    (out_dir / "tokenizer.json").write_text(json.dumps(_tokenizer_json(vocab), ensure_ascii=False))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                                                               "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 2048}))
    return out_dir
