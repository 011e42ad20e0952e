"""LLM architectures (:class:`LlmSpec`): the decoder-only transformer being served.

Fields follow a HuggingFace ``config.json`` with explicit names. Catalog entries live in
``hardware_db/llms/<id>.yaml``; :meth:`LlmSpec.from_hf_config` reads a local ``config.json``
(no network access), so every CLI option taking an LLM id also takes such a path.

What a spec can describe:

- dense decoders with multi-head, grouped-query or multi-query attention;
- mixture of experts: ``num_experts`` routed experts of width ``moe_intermediate_size``
  (top ``experts_per_token``), always-active shared experts of total width
  ``shared_expert_intermediate_size`` (Qwen2-MoE; DeepSeek's ``n_shared_experts x
  moe_intermediate_size``), and ``num_dense_layers`` layers whose MLP is dense
  (DeepSeek's ``first_k_dense_replace``);
- multi-head latent attention (MLA, DeepSeek-V2/V3): each token caches one compressed latent of
  ``kv_lora_rank`` plus a shared rotary key of ``qk_rope_head_dim`` per layer, whatever the
  head count;
- sliding-window attention: ``num_sliding_layers`` layers attend to the last ``sliding_window``
  tokens only (Mistral: every layer; Gemma-2: every other layer; Gemma-3: five of six);
- pre-quantized checkpoints (``quantization_config``: AWQ/GPTQ 4-bit, FP8), see
  :class:`CheckpointQuantization`.

Encoder-only (BERT-style) and encoder-decoder (T5, BART) models are refused on import.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, model_validator

from guide_opt.errors import InputError

#: HF ``model_type`` values whose MLP is gated (SwiGLU/GeGLU: gate, up and down matrices).
GATED_MLP_MODEL_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "chatglm", "gemma", "gemma2", "gemma3", "gemma3_text",
     "phi3", "internlm2", "deepseek_v2", "deepseek_v3"}
)
#: HF ``model_type`` values that are not decoder-only and therefore out of scope.
ENCODER_DECODER_MODEL_TYPES = frozenset({"t5", "mt5", "bart", "umt5", "pegasus", "marian", "mbart", "longt5", "switch_transformers"})
#: HF ``model_type`` values of encoder-only models (no autoregressive generation).
ENCODER_ONLY_MODEL_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "camembert", "mpnet", "modernbert"}
)

#: HF ``model_type`` values whose config class ties the LM head to the embedding when
#: ``tie_word_embeddings`` is absent (transformers' Gemma configs default to True).
TIED_BY_DEFAULT_MODEL_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Bytes of one weight the engines keep unquantized (embedding, LM head, MoE router): 16-bit.
UNQUANTIZED_WEIGHT_BYTES = 2.0
#: Bytes of one per-group scale of an AWQ/GPTQ checkpoint (fp16).
GROUP_SCALE_BYTES = 2.0


class CheckpointQuantization(BaseModel):
    """How a pre-quantized checkpoint stores its decoder-layer weights (``quantization_config``).

    method: ``awq`` or ``gptq`` (4-bit integer weights, served weight-only as ``w4a16``) or
        ``fp8`` (E4M3 weights, served as ``fp8``).
    bits: bits per weight.
    group_size: weights sharing one fp16 scale (AWQ/GPTQ ``group_size``); None for FP8, whose
        per-tensor, per-channel or 128x128-block scales add under 0.03% of the weight bytes.
    zero_point: True when each group also stores a packed ``bits``-wide zero point (AWQ with
        ``zero_point``; GPTQ always stores ``qzeros``).

    The embedding, the LM head and MoE routers stay 16-bit in all three formats (AutoAWQ,
    AutoGPTQ and FP8 checkpoints quantize the decoder layers' linear projections only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["awq", "gptq", "fp8"]
    bits: Literal[4, 8]
    group_size: PositiveInt | None = None
    zero_point: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> "CheckpointQuantization":
        if self.method == "fp8" and (self.bits != 8 or self.group_size is not None or self.zero_point):
            raise ValueError("an fp8 checkpoint has bits 8, no group_size and no zero_point")
        if self.method in ("awq", "gptq") and self.bits != 4:
            raise ValueError(f"{self.method} with {self.bits} bits is not modelled; guide-opt serves 4-bit AWQ/GPTQ checkpoints (w4a16)")
        return self

    @property
    def weight_bytes_per_param(self) -> float:
        """Stored bytes per quantized weight: the packed weight plus its share of the group's scale and zero point."""
        if self.group_size is None:
            return self.bits / 8
        per_group = GROUP_SCALE_BYTES + (self.bits / 8 if self.zero_point else 0.0)
        return self.bits / 8 + per_group / self.group_size

    @property
    def scheme_id(self) -> str:
        """The quantization scheme (``hardware_db/quantizations.yaml``) that serves this checkpoint."""
        return "fp8" if self.method == "fp8" else "w4a16"


class LlmSpec(BaseModel):
    """Architecture of a decoder-only transformer LLM.

    ``mlp_kind`` is ``gated`` for SwiGLU-style MLPs (three matrices) and ``standard`` for
    two-matrix MLPs (GELU/ReLU). Mixture-of-experts models set ``num_experts`` > 1 and
    ``experts_per_token`` (top-k); dense models leave both at 1. ``intermediate_size`` is the
    width of a dense MLP (every layer of a dense model, the ``num_dense_layers`` of an MoE);
    ``moe_intermediate_size`` the width of one routed expert (None: ``intermediate_size``, as
    in Mixtral). For MLA models ``head_dim`` is the query/key head width (``qk_nope_head_dim +
    qk_rope_head_dim``) and ``v_head_dim`` the value head width.
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
    moe_intermediate_size: PositiveInt | None = None
    shared_expert_intermediate_size: NonNegativeInt = 0
    num_dense_layers: NonNegativeInt = 0
    kv_lora_rank: PositiveInt | None = None
    q_lora_rank: PositiveInt | None = None
    qk_rope_head_dim: NonNegativeInt = 0
    v_head_dim: PositiveInt | None = None
    sliding_window: PositiveInt | None = None
    num_sliding_layers: NonNegativeInt = 0
    checkpoint_quantization: CheckpointQuantization | None = None
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
        moe_only = {"moe_intermediate_size": self.moe_intermediate_size, "shared_expert_intermediate_size": self.shared_expert_intermediate_size,
                    "num_dense_layers": self.num_dense_layers}
        if not self.is_moe and any(moe_only.values()):
            raise ValueError(f"{', '.join(k for k, v in moe_only.items() if v)} apply to mixture-of-experts models only (num_experts > 1)")
        if self.num_dense_layers >= self.num_layers:
            raise ValueError(f"num_dense_layers ({self.num_dense_layers}) leaves no MoE layer of the {self.num_layers}")
        mla_only = {"q_lora_rank": self.q_lora_rank, "qk_rope_head_dim": self.qk_rope_head_dim, "v_head_dim": self.v_head_dim}
        if self.kv_lora_rank is None and any(mla_only.values()):
            raise ValueError(f"{', '.join(k for k, v in mla_only.items() if v)} apply to multi-head latent attention only (set kv_lora_rank)")
        if self.kv_lora_rank is not None and (self.v_head_dim is None or self.qk_rope_head_dim >= self.head_dim):
            raise ValueError("multi-head latent attention needs v_head_dim and a qk_rope_head_dim smaller than head_dim")
        if (self.sliding_window is None) != (self.num_sliding_layers == 0):
            raise ValueError("sliding_window and num_sliding_layers go together (both set, or neither)")
        if self.num_sliding_layers > self.num_layers:
            raise ValueError(f"num_sliding_layers ({self.num_sliding_layers}) exceeds num_layers ({self.num_layers})")
        return self

    # ---- kinds --------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        """True for mixture-of-experts models."""
        return self.num_experts > 1

    @property
    def is_mla(self) -> bool:
        """True for multi-head latent attention (DeepSeek-V2/V3)."""
        return self.kv_lora_rank is not None

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices of one MLP: 3 when gated (gate, up, down), else 2."""
        return 3 if self.mlp_kind == "gated" else 2

    # ---- attention (parameter counts, not bytes) ------------------------------------------------
    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads x head_dim)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of one of the K or V projection outputs (kv heads x head_dim)."""
        return self.num_kv_heads * self.head_dim

    @property
    def value_head_dim(self) -> int:
        """Width of one head's value vector and attention output (``v_head_dim`` for MLA, else ``head_dim``)."""
        return self.v_head_dim or self.head_dim

    @property
    def kv_cache_elements_per_token_per_layer(self) -> int:
        """Elements one token adds to one layer's KV cache, all heads together.

        MLA caches the compressed latent and the shared rotary key (``kv_lora_rank +
        qk_rope_head_dim``, DeepSeek-V2 paper Section 2.1.2); other attention caches K and V of
        every KV head.
        """
        if self.kv_lora_rank is not None:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_dim

    def attention_params(self, heads: int, kv_heads: int) -> int:
        """Parameters of the attention projections that serve ``heads`` query heads and ``kv_heads`` KV heads.

        With the full head counts this is one layer's attention; with one GPU's share under
        tensor parallelism, that GPU's. MLA's down-projections (``q_a``: hidden -> q_lora_rank,
        ``kv_a``: hidden -> kv_lora_rank + rope) are not per head and are replicated on every
        GPU, as in vLLM's DeepSeek implementation; its up-projections and the output projection
        are per head.
        """
        hidden = self.hidden_size
        if self.kv_lora_rank is None:
            return hidden * (heads + 2 * kv_heads) * self.head_dim + heads * self.head_dim * hidden
        replicated = hidden * (self.kv_lora_rank + self.qk_rope_head_dim) + (hidden * self.q_lora_rank if self.q_lora_rank else 0)
        q_in = self.q_lora_rank or hidden
        nope = self.head_dim - self.qk_rope_head_dim
        per_head = q_in * self.head_dim + self.kv_lora_rank * (nope + self.value_head_dim) + self.value_head_dim * hidden
        return replicated + heads * per_head

    @property
    def attention_params_per_layer(self) -> int:
        """Parameters of one layer's attention projections (Q, K, V and O, or MLA's)."""
        return self.attention_params(self.num_attention_heads, self.num_kv_heads)

    # ---- MLP and experts ------------------------------------------------------------------------
    def mlp_params(self, width: float) -> float:
        """Parameters of one MLP of intermediate ``width``."""
        return self.mlp_matrices * self.hidden_size * width

    @property
    def expert_intermediate_size(self) -> int:
        """Intermediate width of one routed expert (``moe_intermediate_size``, else ``intermediate_size``)."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert (the whole MLP for dense models)."""
        return int(self.mlp_params(self.expert_intermediate_size))

    @property
    def shared_expert_params(self) -> int:
        """Parameters of the always-active shared experts of one MoE layer (0 when there are none)."""
        return int(self.mlp_params(self.shared_expert_intermediate_size))

    @property
    def router_params(self) -> int:
        """Parameters of one MoE layer's router (hidden x experts; 0 for dense models)."""
        return self.hidden_size * self.num_experts if self.is_moe else 0

    @property
    def num_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts."""
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def num_dense_mlp_layers(self) -> int:
        """Layers whose MLP is dense, of width ``intermediate_size``."""
        return self.num_layers - self.num_moe_layers

    @property
    def dense_mlp_params(self) -> int:
        """Parameters of one dense MLP of width ``intermediate_size``."""
        return int(self.mlp_params(self.intermediate_size))

    @property
    def mlp_params_per_layer(self) -> int:
        """Parameters of one MLP layer: all experts, shared experts and the router for MoE models, else the dense MLP."""
        if not self.is_moe:
            return self.dense_mlp_params
        return self.num_experts * self.expert_params + self.shared_expert_params + self.router_params

    @property
    def active_mlp_params_per_moe_layer(self) -> int:
        """MLP parameters one token touches in an MoE layer: top-k experts, shared experts, router."""
        return self.experts_per_token * self.expert_params + self.shared_expert_params + self.router_params

    # ---- sliding window ---------------------------------------------------------------------------
    @property
    def num_global_layers(self) -> int:
        """Layers attending to the whole context."""
        return self.num_layers - self.num_sliding_layers

    # ---- whole model ---------------------------------------------------------------------------
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
        layers = self.num_layers * self.attention_params_per_layer + self.num_dense_mlp_layers * self.dense_mlp_params
        if self.is_moe:
            layers += self.num_moe_layers * self.mlp_params_per_layer
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return layers + self.embedding_params + head

    @property
    def active_params_per_token(self) -> int:
        """Parameters touched to produce one token (top-k and shared experts only, embedding lookup excluded)."""
        layers = self.num_layers * self.attention_params_per_layer + self.num_dense_mlp_layers * self.dense_mlp_params
        layers += self.num_moe_layers * self.active_mlp_params_per_moe_layer
        return layers + self.lm_head_params

    @property
    def activated_params(self) -> int:
        """Active parameters as model cards count them: :attr:`active_params_per_token` plus an untied input embedding."""
        return self.active_params_per_token + (0 if self.tie_word_embeddings else self.embedding_params)

    @property
    def unquantized_params(self) -> int:
        """Parameters that stay 16-bit under weight quantization: embedding, LM head, MoE routers."""
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return self.embedding_params + head + self.num_moe_layers * self.router_params

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, path: str | Path, llm_id: str | None = None) -> "LlmSpec":
        """Read a local HuggingFace ``config.json`` and return its :class:`LlmSpec`.

        Understands the key spellings of Llama/Mistral/Mixtral/Qwen (dense and MoE), DeepSeek-V2/V3,
        Gemma-2/3, OPT, GPT-NeoX, GPT-BigCode (StarCoder), MPT, CodeGen and ChatGLM configs, and
        AWQ/GPTQ/FP8 ``quantization_config``. Raises :class:`InputError` naming the key for
        anything it cannot represent (a missing key, an encoder, an unknown quantization
        method). Never touches the network.
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
        _refuse_non_decoder(config, source)
        top = config
        if isinstance(config.get("text_config"), dict) and "hidden_size" not in config:
            # Multimodal wrappers (Gemma-3, Llava) keep the language model under text_config;
            # the vision tower is left out (a few percent of the weights).
            config = {**config["text_config"], "quantization_config": top.get("quantization_config")}
        model_type = str(config.get("model_type") or top.get("model_type") or "").lower()

        def pick(*keys: str, default=None):
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            if default is not None:
                return default
            raise InputError(f"{source}: {keys[0]}", f"missing key {' / '.join(keys)}", "add it to the config.json or use a catalog id")

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
        act = str(config.get("hidden_act") or config.get("hidden_activation") or config.get("activation_function") or "")
        gated = model_type in GATED_MLP_MODEL_TYPES or "glu" in act.lower()
        data = {
            "id": llm_id,
            "name": str(top.get("_name_or_path") or llm_id),
            "hidden_size": hidden,
            "num_layers": layers,
            "num_attention_heads": heads,
            "num_kv_heads": kv_heads,
            "head_dim": head_dim,
            "intermediate_size": intermediate,
            "vocab_size": int(pick("padded_vocab_size", "vocab_size")),
            "mlp_kind": "gated" if gated else "standard",
            "tie_word_embeddings": bool(config.get("tie_word_embeddings", top.get("tie_word_embeddings", model_type in TIED_BY_DEFAULT_MODEL_TYPES))),
            "max_position_embeddings": int(
                pick("max_position_embeddings", "seq_length", "n_positions", "max_seq_len", "max_sequence_length", default=2048)
            ),
            "dtype": dtype if dtype in DTYPE_BYTES else "bfloat16",
            "source": source,
        }
        data |= _hf_moe_fields(config, layers)
        data |= _hf_mla_fields(config, source)
        data |= _hf_sliding_window_fields(config, model_type, layers, data["max_position_embeddings"])
        if config.get("quantization_config") is not None:
            data["checkpoint_quantization"] = _hf_checkpoint_quantization(config["quantization_config"], source)
        try:
            return cls(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            message = err["msg"].removeprefix("Value error, ")
            # Cross-field checks have no location; their message starts with the spec field.
            field = ".".join(map(str, err["loc"])) or message.split(" ", 1)[0]
            key = HF_KEY_OF_FIELD.get(field, field)
            raise InputError(f"{source}: {key}", message, "check the config.json") from None


#: :class:`LlmSpec` field -> the usual ``config.json`` key it is read from (for error messages).
HF_KEY_OF_FIELD = {
    "num_layers": "num_hidden_layers", "num_kv_heads": "num_key_value_heads", "experts_per_token": "num_experts_per_tok",
    "num_dense_layers": "first_k_dense_replace", "num_sliding_layers": "sliding_window",
}


# ---- HuggingFace config.json readers (one per architecture feature) -----------------------------
def _refuse_non_decoder(config: dict, source: str) -> None:
    """Raise :class:`InputError` naming the field when ``config`` is an encoder-only or encoder-decoder model."""
    model_type = str(config.get("model_type", "")).lower()
    if config.get("is_encoder_decoder"):
        raise InputError(f"{source}: is_encoder_decoder", f"model_type '{model_type}' is an encoder-decoder model",
                         "guide-opt models decoder-only LLMs")
    if model_type in ENCODER_DECODER_MODEL_TYPES:
        raise InputError(f"{source}: model_type", f"'{model_type}' is an encoder-decoder model", "guide-opt models decoder-only LLMs")
    architectures = [str(a) for a in config.get("architectures") or []]
    encoder_heads = [a for a in architectures if a.endswith("ForMaskedLM")]
    if encoder_heads or model_type in ENCODER_ONLY_MODEL_TYPES:
        what = f"'{encoder_heads[0]}'" if encoder_heads else f"model_type '{model_type}'"
        field = "architectures" if encoder_heads or architectures else "model_type"
        raise InputError(f"{source}: {field}", f"{what} is an encoder-only model (it does not generate text)",
                         "guide-opt models decoder-only LLMs")


def _hf_moe_fields(config: dict, layers: int) -> dict:
    """MoE fields: expert count, top-k, per-expert width, shared experts, dense layers."""
    experts = int(config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts") or 1)
    if experts <= 1:
        return {}
    fields: dict = {"num_experts": experts, "experts_per_token": int(config.get("num_experts_per_tok") or 1)}
    expert_width = config.get("moe_intermediate_size")
    if expert_width:
        fields["moe_intermediate_size"] = int(expert_width)
    if config.get("shared_expert_intermediate_size"):  # Qwen2-MoE: one shared expert of this width
        fields["shared_expert_intermediate_size"] = int(config["shared_expert_intermediate_size"])
    elif config.get("n_shared_experts"):  # DeepSeek: n experts of the routed width, fused into one MLP
        fields["shared_expert_intermediate_size"] = int(config["n_shared_experts"]) * int(expert_width or config["intermediate_size"])
    fields["num_dense_layers"] = sum(1 for i in range(layers) if not _is_moe_layer(config, i))
    return fields


def _is_moe_layer(config: dict, layer: int) -> bool:
    """Whether layer ``layer`` (0-based) has an MoE MLP, per DeepSeek's and Qwen-MoE's layout keys."""
    if layer < int(config.get("first_k_dense_replace") or 0):  # DeepSeek: the first k layers are dense
        return False
    if layer in (config.get("mlp_only_layers") or []):  # Qwen-MoE
        return False
    every = int(config.get("decoder_sparse_step") or config.get("moe_layer_freq") or 1)
    offset = int(config.get("first_k_dense_replace") or 0)
    if "decoder_sparse_step" in config:
        return (layer + 1) % every == 0  # Qwen2/3-MoE: layer i is sparse when (i + 1) % step == 0
    return (layer - offset) % every == 0  # DeepSeek: every moe_layer_freq-th layer after the dense ones


def _hf_mla_fields(config: dict, source: str) -> dict:
    """Multi-head latent attention fields (DeepSeek-V2/V3); empty for other attention."""
    if not config.get("kv_lora_rank"):
        return {}
    for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        if not config.get(key):
            raise InputError(f"{source}: {key}", "missing key for multi-head latent attention (kv_lora_rank is set)",
                             "add it to the config.json")
    fields = {
        "kv_lora_rank": int(config["kv_lora_rank"]),
        "qk_rope_head_dim": int(config["qk_rope_head_dim"]),
        "v_head_dim": int(config["v_head_dim"]),
        "head_dim": int(config["qk_nope_head_dim"]) + int(config["qk_rope_head_dim"]),
    }
    if config.get("q_lora_rank"):
        fields["q_lora_rank"] = int(config["q_lora_rank"])
    return fields


def _hf_sliding_window_fields(config: dict, model_type: str, layers: int, context: int) -> dict:
    """Sliding-window fields: the window and how many layers use it (Mistral all, Gemma-2 half, Gemma-3 by pattern)."""
    window = config.get("sliding_window")
    if not window or config.get("use_sliding_window") is False or int(window) >= context:
        return {}
    if isinstance(config.get("layer_types"), list):
        sliding = sum(1 for kind in config["layer_types"] if kind == "sliding_attention")
    elif config.get("sliding_window_pattern"):  # Gemma-3: every pattern-th layer is global
        sliding = layers - layers // int(config["sliding_window_pattern"])
    elif model_type == "gemma2":  # Gemma-2: even layers (0, 2, ...) are local, odd layers global
        sliding = math.ceil(layers / 2)
    else:  # Mistral, Phi-3: every layer
        sliding = layers
    return {"sliding_window": int(window), "num_sliding_layers": sliding} if sliding else {}


def _hf_checkpoint_quantization(qc: object, source: str) -> dict:
    """The ``checkpoint_quantization`` fields of a ``quantization_config`` (AWQ, GPTQ, FP8)."""
    field = f"{source}: quantization_config"
    if not isinstance(qc, dict):
        raise InputError(field, "not a JSON object", "give the quantization_config of an AWQ, GPTQ or FP8 checkpoint")
    method = str(qc.get("quant_method", "")).lower()
    if method == "fp8":
        return {"method": "fp8", "bits": 8}
    if method not in ("awq", "gptq"):
        raise InputError(f"{field}.quant_method", f"'{method}' is not a checkpoint format guide-opt models",
                         "use an AWQ, GPTQ or FP8 checkpoint, or the unquantized config.json with --quantization")
    bits = qc.get("bits", qc.get("w_bit"))
    if bits != 4:
        raise InputError(f"{field}.bits", f"{bits}-bit {method} is not modelled", "use a 4-bit AWQ/GPTQ checkpoint (served as w4a16)")
    group = qc.get("group_size", qc.get("q_group_size"))
    group = int(group) if group and int(group) > 0 else None  # -1: one scale per output channel
    zero_point = bool(qc.get("zero_point", True)) if method == "awq" else True  # GPTQ always stores qzeros
    return {"method": method, "bits": 4, "group_size": group, "zero_point": zero_point}
