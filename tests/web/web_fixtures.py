"""Shared by the web planner tests: the forms of two bundled problems, an HF config, CLI helpers.

A module of its own (not conftest.py) so ``from web_fixtures import ...`` is unambiguous.

The web answers are checked against the command line run on the same problem file (another
front-end over the same library), against the bundled problems and price table, and against
hand computations; never against a stored copy of today's output.
"""

from __future__ import annotations

import json
from pathlib import Path

from guide_opt.cli import main

#: meta-llama/Llama-2-7b-hf's published config.json (the HuggingFace Hub file, trimmed to the
#: architecture keys). The catalog's llama-2-7b entry describes the same architecture.
LLAMA_2_7B_HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
    "vocab_size": 32000, "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "torch_dtype": "float16",
}

#: The form as a person fills it for problems/quickstart.yaml (the file's values, key by key).
QUICKSTART_FORM = {
    "model": "llama-3.1-8b", "lengths": "custom", "input_tokens": 1024, "output_tokens": 256, "demand": "rate",
    "request_rate_per_s": 20, "ttft_ms": 500, "tpot_ms": 40, "percentile": 50, "precision_tolerance": "none",
    "gpus": ["a100-80gb-sxm", "h100-sxm", "l40s", "a10g"], "max_gpus": 16, "frameworks": ["vllm", "sglang"],
    "budget_per_hour": 40, "objective": "min_cost",
}

#: The form for problems/infeasible-tpot.yaml (Llama-2-70B, TPOT <= 5 ms on A100-80GB).
INFEASIBLE_FORM = {
    "model": "llama-2-70b", "lengths": "custom", "input_tokens": 512, "output_tokens": 128, "demand": "rate",
    "request_rate_per_s": 1, "ttft_ms": 1000, "tpot_ms": 5, "percentile": 50, "precision_tolerance": "none",
    "gpus": ["a100-80gb-sxm"], "max_gpus": None, "frameworks": ["vllm"], "budget_per_hour": 100, "objective": "min_cost",
}

PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "problems"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``guide-opt ARGV``: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, *argv) -> dict:
    """The JSON ``guide-opt ARGV --format json`` prints."""
    code, out, err = run_cli(capsys, *argv, "--format", "json")
    assert code in (0, 2), err
    return json.loads(out)
