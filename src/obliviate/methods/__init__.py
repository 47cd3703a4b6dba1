"""Erasure methods: each a config dataclass and a ``fit(pipe, concepts, config, catalog) -> Patch``; a registry.

Methods take a plain diffusers pipeline and concepts already resolved by a catalog; they never write files,
never change the pipeline's weights (the edit trains functionally, see :mod:`.loop`) and never learn which
model family or catalog they run on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial

from ..errors import ObliviateError
from . import advunlearn, esd, fmn, prompt, rece, redirect, stereo, uce


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    fit: Callable
    summary: str
    defaults: dict = field(default_factory=dict)  # config values that make this method out of a shared fit

    def option_names(self) -> set[str]:
        return {f.name for f in fields(self.config)}

    def make_config(self, **overrides):
        unknown = sorted(set(overrides) - self.option_names())
        if unknown:
            raise ObliviateError(f"method {self.name} does not take {unknown[0]!r} "
                                 f"(it takes: {', '.join(sorted(self.option_names()))})")
        return self.config(**{**self.defaults, **overrides})


METHODS: dict[str, Method] = {
    "fmn": Method("fmn", fmn.FMNConfig, fmn.fit, "Forget-Me-Not attention re-steering (+ a preservation anchor)"),
    "redirect": Method("redirect", redirect.RedirectConfig, redirect.fit,
                       "concept correction: the concept's prompts draw another concept (--redirect Y)"),
    "esd-x": Method("esd-x", esd.ESDConfig, partial(esd.fit, method="esd-x"),
                    "ESD negative guidance, cross-attention only"),
    "esd-u": Method("esd-u", esd.ESDConfig, partial(esd.fit, method="esd-u"),
                    "ESD negative guidance, everything but cross-attention",
                    {"trainable": "non-attn2", "lr": 3e-4, "x_t_from": "edited"}),
    "uce": Method("uce", uce.UCEConfig, uce.fit, "UCE closed-form edit of attn2 keys and values"),
    "rece": Method("rece", rece.RECEConfig, rece.fit,
                   "RECE: UCE, then closed-form rounds that erase the embeddings still reaching the concept"),
    "advunlearn": Method("advunlearn", advunlearn.AdvUnlearnConfig, advunlearn.fit,
                         "AdvUnlearn: ESD against an embedding adversary, with a retain set (the text encoder)"),
    "stereo": Method("stereo", stereo.STEREOConfig, stereo.fit,
                     "STEREO: collect concept-inversion embeddings, then erase them all at once"),
    "prompt": Method("prompt", prompt.PromptConfig, prompt.fit,
                     "learnable-prompt erasure: a prompt memory absorbs the concept, the release drops it"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ObliviateError(f"unknown method {name!r} (available: {', '.join(METHODS)})")
    return METHODS[name]
