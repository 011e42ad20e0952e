"""Constraint families: typed names for the groups of constraints an explanation can switch off.

A family is a kind (``budget``, ``max_gpus``, ``inventory``, ``memory``, ``ttft_slo``,
``tpot_slo``, ``demand``, ``deadline_h``) and its parameters: the LLM (index and label) of a
per-LLM family, the GPU type of an inventory. The model builders
(:mod:`guide_opt.formulation`, :mod:`guide_opt.scheduling`) put each family behind one
enforcement literal keyed by its :class:`Family`; the explanation (:mod:`guide_opt.explain`)
reads the parameters from the object, never from the text. :attr:`Family.name` is the text
the JSON answer lists in ``conflicting_constraints`` (``budget``, ``inventory[h100-sxm]``,
``models[0] (llama-3.1-8b).tpot_slo``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One constraint family: its ``kind`` and parameters.

    model_index / llm_label: the LLM of a per-LLM family (``models[i] (id)``); gpu_id: the GPU
    type of an ``inventory`` family; both None for a shared limit.
    """

    kind: str
    model_index: int | None = None
    llm_label: str = ""
    gpu_id: str | None = None

    @property
    def name(self) -> str:
        """The family's text: ``{llm label}.{kind}``, ``{kind}[{gpu}]`` or ``{kind}``."""
        if self.model_index is not None:
            return f"{self.llm_label}.{self.kind}"
        if self.gpu_id is not None:
            return f"{self.kind}[{self.gpu_id}]"
        return self.kind

    def __str__(self) -> str:
        return self.name


def llm_family(kind: str, model_space) -> Family:
    """The ``kind`` family of one LLM (a :class:`~guide_opt.space.ModelSpace`: its index and label)."""
    return Family(kind, model_index=model_space.index, llm_label=model_space.label)


def gpu_family(kind: str, gpu_id: str) -> Family:
    """The ``kind`` family of one GPU type (``inventory``)."""
    return Family(kind, gpu_id=gpu_id)


def shared_family(kind: str) -> Family:
    """A family of the whole plan (``budget``, ``max_gpus``)."""
    return Family(kind)
