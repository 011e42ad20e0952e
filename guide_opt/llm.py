"""LLM architectures (:class:`LlmSpec`): the decoder-only transformer being served.

Fields follow a HuggingFace ``config.json`` with explicit names. Catalog entries live in
``hardware_db/llms/<id>.yaml``; :meth:`LlmSpec.from_hf_config` reads a local ``config.json``
(no network access), so every CLI option taking an LLM id also takes such a path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from guide_opt.errors import InputError

#: HF ``model_type`` values whose MLP is gated (SwiGLU/GeGLU: gate, up and down matrices).
GATED_MLP_MODEL_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "chatglm", "gemma", "gemma2", "phi3", "internlm2"}
)
#: HF ``model_type`` values that are not decoder-only and therefore out of scope.
ENCODER_DECODER_MODEL_TYPES = frozenset({"t5", "mt5", "bart", "umt5", "pegasus", "marian"})

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class LlmSpec(BaseModel):
    """Architecture of a decoder-only transformer LLM.

    ``mlp_kind`` is ``gated`` for SwiGLU-style MLPs (three matrices) and ``standard`` for
    two-matrix MLPs (GELU/ReLU). Mixture-of-experts models set ``num_experts`` > 1 and
    ``experts_per_token`` (top-k); dense models leave both at 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
    name: str
    hidden_size: PositiveInt
    num_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    intermediate_size: PositiveInt
    vocab_size: PositiveInt
    mlp_kind: Literal["gated", "standard"]
    num_experts: PositiveInt = 1
    experts_per_token: PositiveInt = 1
    tie_word_embeddings: bool = False
    max_position_embeddings: PositiveInt
    dtype: Literal["float16", "bfloat16", "float32"] = "bfloat16"
    source: str

    @model_validator(mode="after")
    def _consistent(self) -> "LlmSpec":
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"experts_per_token ({self.experts_per_token}) exceeds num_experts ({self.num_experts})")
        return self

    # ---- derived sizes (parameter counts, not bytes) ---------------------------------------
    @property
    def is_moe(self) -> bool:
        """True for mixture-of-experts models."""
        return self.num_experts > 1

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads x head_dim)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of one of the K or V projection outputs (kv heads x head_dim)."""
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params_per_layer(self) -> int:
        """Parameters of Q, K, V and O projections in one layer."""
        return self.hidden_size * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden_size

    @property
    def expert_params(self) -> int:
        """Parameters of one MLP (one expert for MoE models)."""
        matrices = 3 if self.mlp_kind == "gated" else 2
        return matrices * self.hidden_size * self.intermediate_size

    @property
    def mlp_params_per_layer(self) -> int:
        """Parameters of all MLP experts (plus the router) in one layer."""
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        return self.num_experts * self.expert_params + router

    @property
    def embedding_params(self) -> int:
        """Parameters of the input embedding."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters of the output projection (shared with the embedding when tied, still read each step)."""
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        """All parameters stored on the GPUs (norms are negligible and left out)."""
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return self.num_layers * per_layer + self.embedding_params + head

    @property
    def active_params_per_token(self) -> int:
        """Parameters touched to produce one token (top-k experts only, embedding lookup excluded)."""
        per_layer = self.attention_params_per_layer + self.experts_per_token * self.expert_params
        return self.num_layers * per_layer + self.lm_head_params

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, path: str | Path, llm_id: str | None = None) -> "LlmSpec":
        """Read a local HuggingFace ``config.json`` and return its :class:`LlmSpec`.

        Understands the key spellings of Llama/Mistral/Mixtral/Qwen, OPT, GPT-NeoX, GPT-BigCode
        (StarCoder), MPT, CodeGen and ChatGLM configs. Raises :class:`InputError` naming the
        missing key for anything else. Never touches the network.
        """
        path = Path(path)
        try:
            config = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(str(path), f"cannot read the file ({exc.strerror})", "give the path of a local config.json") from None
        except json.JSONDecodeError as exc:
            raise InputError(str(path), f"not valid JSON ({exc.msg} at line {exc.lineno})", "give a HuggingFace config.json") from None
        if not isinstance(config, dict):
            raise InputError(str(path), "not a JSON object", "give a HuggingFace config.json")
        return cls._from_hf_dict(config, llm_id or path.parent.name or path.stem, source=str(path))

    @classmethod
    def _from_hf_dict(cls, config: dict, llm_id: str, source: str) -> "LlmSpec":
        model_type = str(config.get("model_type", "")).lower()
        if model_type in ENCODER_DECODER_MODEL_TYPES or config.get("is_encoder_decoder"):
            raise InputError(source, f"model_type '{model_type}' is an encoder-decoder model", "guide-opt models decoder-only LLMs")

        def pick(*keys: str, default=None):
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            if default is not None:
                return default
            raise InputError(source, f"missing key {' / '.join(keys)}", "add it to the config.json or use a catalog id")

        hidden = int(pick("hidden_size", "n_embd", "d_model"))
        heads = int(pick("num_attention_heads", "n_head", "n_heads", "num_heads"))
        layers = int(pick("num_hidden_layers", "n_layer", "n_layers", "num_layers"))
        if config.get("multi_query") is True:  # GPT-BigCode / StarCoder
            kv_heads = 1
        elif config.get("multi_query_attention") and config.get("multi_query_group_num"):  # ChatGLM
            kv_heads = int(config["multi_query_group_num"])
        else:
            kv_heads = int(pick("num_key_value_heads", "num_kv_heads", default=heads))
        head_dim = int(config.get("head_dim") or hidden // heads)
        expansion = config.get("expansion_ratio")  # MPT
        intermediate = int(
            pick("intermediate_size", "ffn_hidden_size", "ffn_dim", "n_inner", default=int((expansion or 4) * hidden))
        )
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        act = str(config.get("hidden_act") or config.get("activation_function") or "")
        gated = model_type in GATED_MLP_MODEL_TYPES or "glu" in act.lower()
        data = {
            "id": llm_id,
            "name": str(config.get("_name_or_path") or llm_id),
            "hidden_size": hidden,
            "num_layers": layers,
            "num_attention_heads": heads,
            "num_kv_heads": kv_heads,
            "head_dim": head_dim,
            "intermediate_size": intermediate,
            "vocab_size": int(pick("padded_vocab_size", "vocab_size")),
            "mlp_kind": "gated" if gated else "standard",
            "num_experts": int(config.get("num_local_experts") or config.get("num_experts") or 1),
            "experts_per_token": int(config.get("num_experts_per_tok") or 1),
            "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
            "max_position_embeddings": int(
                pick("max_position_embeddings", "seq_length", "n_positions", "max_seq_len", "max_sequence_length", default=2048)
            ),
            "dtype": dtype if dtype in DTYPE_BYTES else "bfloat16",
            "source": source,
        }
        try:
            return cls(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(source, f"{'.'.join(map(str, err['loc']))}: {err['msg']}", "check the config.json") from None
