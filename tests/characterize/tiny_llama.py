"""A tiny random-weight Llama written as GGUF with the ``gguf`` package, for a real llama.cpp server.

Nothing is downloaded: the tokenizer is a small SentencePiece-style vocabulary (special tokens,
the 256 byte-fallback tokens, and word pieces such that every word of the load tester's prompts
is one token), the weights are seeded Gaussian noise. The output
projection rows of every token that is not a whole word (specials, bytes, partial pieces) are
zero, so greedy decoding always picks a word (the word rows give logits of both signs, and
the largest of ~200 of them is positive): each generated token is visible text and the end
of sequence is never chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from guide_opt.characterize.client import PROMPT_WORDS

#: Model size: small enough to write in a second, large enough that a decode step costs
#: measurable compute (~4 M parameters).
N_EMBD, N_HEAD, N_LAYER, N_FF, N_CTX = 256, 4, 4, 768, 2048
WORDS = [f"w{i}" for i in range(200)]


def _vocabulary() -> tuple[list[str], list[float], list[int], list[bool]]:
    """tokens, scores, token types (gguf.TokenType values), and whether each token is a whole word.

    Every word w (the load tester's prompt words and WORDS) is reachable by SentencePiece's
    bigram merges through its prefix chain "▁w[0]", "▁w[:2]", ..., "▁w", so "the of and" is one
    token per word.
    """
    import gguf

    T = gguf.TokenType
    tokens, scores, types, word = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [T.UNKNOWN, T.CONTROL, T.CONTROL], [False] * 3
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(T.BYTE)
        word.append(False)
    whole = [f"▁{w}" for w in (*PROMPT_WORDS, *WORDS)]
    pieces = ["▁", *"abcdefghijklmnopqrstuvwxyz0123456789"]
    for w in whole:
        pieces += [w[:k] for k in range(2, len(w) + 1)]
    whole_set = set(whole)
    for p in dict.fromkeys(pieces):  # unique, in order
        tokens.append(p)
        scores.append(float(len(p)))
        types.append(T.NORMAL)
        word.append(p in whole_set)
    return tokens, scores, [int(t) for t in types], word


def write_tiny_llama(path: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` (GGUF, f32) and return it."""
    import gguf

    tokens, scores, types, word = _vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def noise(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("guide-opt tiny test llama")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_tensor("token_embd.weight", noise(n_vocab, N_EMBD, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = noise(n_vocab, N_EMBD, scale=1.0)
    output[~np.array(word)] = 0.0  # only whole words can win the argmax
    writer.add_tensor("output.weight", output)
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", noise(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", noise(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", noise(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", noise(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
