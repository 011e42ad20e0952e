"""Typed constraint families: the explanation reads a family's parameters from the object, and
the JSON names them as the answer contract does (/work/shared/DESIGN.md: ``conflicting_constraints``).

Expected texts are written by hand from the contract's naming: ``{models[i] (id)}.{kind}`` for
a family of one LLM, ``inventory[{gpu}]`` for a GPU type, the kind alone for a shared limit.
"""

from __future__ import annotations

from guide_opt.explain import FAMILY_KINDS, family_label
from guide_opt.families import Family, gpu_family, shared_family
from guide_opt.formulation import build_formulation
from guide_opt.space import build_space

from problem_fixtures import small_problem


def test_every_family_the_model_guards_is_named_and_known_to_the_explanation():
    problem = small_problem(hardware={"gpus": ["a100-80gb-sxm", "l40s"], "max_gpus": 8, "inventory": {"l40s": 2}},
                            models=[{"id": "llama-3.1-8b", "workload": {"input_tokens": 512, "output_tokens": 128, "request_rate_per_s": 4},
                                     "slo": {"ttft_ms": 800, "tpot_ms": 8}}])  # a TPOT some candidates miss
    space = build_space(problem)
    families = set(build_formulation(space, "min_cost", explain=True).family_literals)
    names = {f.name for f in families}
    assert {"budget", "max_gpus", "inventory[l40s]", "models[0] (llama-3.1-8b).tpot_slo"} <= names
    assert all(f.kind in FAMILY_KINDS for f in families)
    tpot = next(f for f in families if f.kind == "tpot_slo")
    assert (tpot.model_index, tpot.gpu_id) == (0, None)
    assert family_label(space, tpot) == "models[0].slo.tpot_ms (8 ms)"
    assert family_label(space, gpu_family("inventory", "l40s")) == "hardware.inventory.l40s (2)"
    assert family_label(space, shared_family("budget")) == "budget_per_hour ($20/h)"


def test_a_family_is_its_kind_and_parameters_not_its_text():
    # two LLMs whose labels share a prefix stay different families; equal parameters are one family
    a = Family("demand", model_index=1, llm_label="models[1] (llama-3.1-8b)")
    b = Family("demand", model_index=1, llm_label="models[1] (llama-3.1-8b)")
    assert a == b and hash(a) == hash(b)
    assert Family("demand", model_index=10, llm_label="models[10] (llama-3.1-8b)") != a
    assert gpu_family("inventory", "h100-sxm").name == "inventory[h100-sxm]"
