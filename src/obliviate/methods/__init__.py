"""Erasure methods: each a config dataclass and a ``fit(pipe, concepts, config, catalog) -> Patch``; a registry.

Methods take a plain diffusers pipeline and concepts already resolved by a catalog; they never write files,
never change the pipeline's weights (the edit trains functionally, see :mod:`.loop`) and never learn which
model family or catalog they run on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import partial
from typing import Any

from ..errors import ObliviateError


@dataclass(frozen=True)
class Method:
    """A registry entry. The method's module (and torch with it) is imported on first use of ``config`` or
    ``fit``, so the CLI can list methods and check options before any heavy import."""

    name: str
    module: str  # obliviate.methods.<module>: a config dataclass ``config_name`` and ``fit``
    config_name: str
    summary: str
    defaults: dict = field(default_factory=dict)  # config values that make this method out of a shared fit
    fit_options: dict = field(default_factory=dict)

    @property
    def config(self) -> type:
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.config_name)

    @property
    def fit(self) -> Callable:
        fit = importlib.import_module(f"{__name__}.{self.module}").fit
        return partial(fit, **self.fit_options) if self.fit_options else fit

    def option_names(self) -> set[str]:
        return {f.name for f in fields(self.config)}

    def default(self, option: str) -> Any:
        """The value ``option`` takes when the user does not set it (``MISSING`` if it has none)."""
        if option in self.defaults:
            return self.defaults[option]
        f = {f.name: f for f in fields(self.config)}[option]
        return f.default_factory() if f.default_factory is not MISSING else f.default

    def make_config(self, **overrides):
        unknown = sorted(set(overrides) - self.option_names())
        if unknown:
            raise ObliviateError(f"method {self.name} does not take {unknown[0]!r} "
                                 f"(it takes: {', '.join(sorted(self.option_names()))})")
        return self.config(**{**self.defaults, **overrides})


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("fmn", "fmn", "FMNConfig", "Forget-Me-Not attention re-steering (+ a preservation anchor)"),
    Method("redirect", "redirect", "RedirectConfig",
           "concept correction: the concept's prompts draw another concept (--redirect Y)"),
    Method("esd-x", "esd", "ESDConfig", "ESD negative guidance, cross-attention only", fit_options={"method": "esd-x"}),
    Method("esd-u", "esd", "ESDConfig", "ESD negative guidance, everything but cross-attention",
           {"trainable": "non-attn2", "lr": 3e-4, "x_t_from": "edited"}, fit_options={"method": "esd-u"}),
    Method("uce", "uce", "UCEConfig", "UCE closed-form edit of attn2 keys and values"),
    Method("rece", "rece", "RECEConfig",
           "RECE: UCE, then closed-form rounds that erase the embeddings still reaching the concept"),
    Method("advunlearn", "advunlearn", "AdvUnlearnConfig",
           "AdvUnlearn: ESD against an embedding adversary, with a retain set (the text encoder)"),
    Method("stereo", "stereo", "STEREOConfig",
           "STEREO: collect concept-inversion embeddings, then erase them all at once"),
    Method("lethe", "lethe", "LetheConfig",
           "Lethe (obliviate): the denoiser unlearns the concept's images under every prompt, the rest distilled"),
    Method("prompt", "prompt", "PromptConfig",
           "learnable-prompt erasure: a prompt memory absorbs the concept, the release drops it"),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ObliviateError(f"unknown method {name!r} (available: {', '.join(METHODS)})")
    return METHODS[name]
