"""Erasure methods: each a config dataclass (:mod:`.configs`, torch-free) and a ``fit(pipe, concepts, config,
catalog) -> Patch`` (its own module); a registry.

Methods take a plain diffusers pipeline and concepts already resolved by a catalog; they never write files,
never change the pipeline's weights (the edit trains functionally, see :mod:`.loop`), never learn which model
family or catalog they run on, and never import another method: what they share lives in
:mod:`obliviate.terms`, :mod:`.loop`, :mod:`.closed_form` and :mod:`.adversaries`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..errors import ObliviateError
from ..options import Flat, build, default_of, flat_fields
from . import configs


@dataclass(frozen=True)
class Method:
    """A registry entry. The method's module (and torch with it) is imported on first use of ``fit``; its
    config lives in :mod:`.configs`, so the command line lists methods and checks options before any heavy
    import."""

    name: str
    module: str  # obliviate.methods.<module>: its ``fit``
    config: type
    summary: str
    defaults: dict = field(default_factory=dict)  # config values that make this method out of a shared fit
    fit_options: dict = field(default_factory=dict)

    @property
    def fit(self) -> Callable:
        fit = importlib.import_module(f"{__name__}.{self.module}").fit
        return partial(fit, **self.fit_options) if self.fit_options else fit

    @property
    def presets(self) -> dict[str, dict]:
        return configs.PRESETS.get(self.name, {})

    @property
    def chosen(self) -> dict[str, str]:
        """Presets picked per erasure by a probe of the model: name -> the preset for early-decided concepts."""
        return configs.CHOSEN.get(self.name, {})

    def option_names(self) -> set[str]:
        return {f.name for f in flat_fields(self.config)}

    def default(self, option: str | Flat) -> Any:
        """The value ``option`` (a flat option name) takes when the user does not set it."""
        flat = option if isinstance(option, Flat) else next(f for f in flat_fields(self.config) if f.name == option)
        return self.defaults.get(flat.name, default_of(self.config, flat))

    def make_config(self, preset: str | None = None, **overrides):
        """The method's config: its defaults, then ``preset``'s settings, then ``overrides`` (flat option names
        or nested configs); every value checked here, before any model loads."""
        if preset is not None and preset not in self.presets and preset not in self.chosen:
            offered = ", ".join([*self.presets, *self.chosen]) or "none"
            raise ObliviateError(f"method {self.name} has no preset {preset!r} (its presets: {offered})")
        unknown = sorted(set(overrides) - self.option_names() - {f for f in self.config.__dataclass_fields__})
        if unknown:
            raise ObliviateError(f"method {self.name} does not take {unknown[0]!r} "
                                 f"(it takes: {', '.join(sorted(self.option_names()))})")
        # a chosen preset is checked here with the defaults; the erasure picks its settings once the model is loaded
        return build(self.config, overrides, build(self.config, {**self.defaults, **self.presets.get(preset, {})}))


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("fmn", "fmn", configs.FMNConfig, "Forget-Me-Not attention re-steering (+ a preservation anchor)"),
    Method("redirect", "redirect", configs.RedirectConfig,
           "concept correction: the concept's prompts draw another concept (--redirect Y)"),
    Method("esd-x", "esd", configs.ESDConfig, "ESD negative guidance, cross-attention only",
           fit_options={"method": "esd-x"}),
    Method("esd-u", "esd", configs.ESDConfig, "ESD negative guidance, everything but cross-attention",
           {"trainable": "non-attn2", "lr": 3e-4, "x_t_from": "edited"}, fit_options={"method": "esd-u"}),
    Method("uce", "uce", configs.UCEConfig, "UCE closed-form edit of attn2 keys and values"),
    Method("rece", "rece", configs.RECEConfig,
           "RECE: UCE, then closed-form rounds that erase the embeddings still reaching the concept"),
    Method("advunlearn", "advunlearn", configs.AdvUnlearnConfig,
           "AdvUnlearn: ESD against an embedding adversary, with a retain set (the text encoder)"),
    Method("stereo", "stereo", configs.STEREOConfig,
           "STEREO: collect concept-inversion embeddings, then erase them all at once"),
    Method("lethe", "lethe", configs.LetheConfig,
           "Lethe (obliviate): the denoiser unlearns the concept's images under every prompt, the rest distilled"),
    Method("prompt", "prompt", configs.PromptConfig,
           "learnable-prompt erasure: a prompt memory absorbs the concept, the release drops it"),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ObliviateError(f"unknown method {name!r} (available: {', '.join(METHODS)})")
    return METHODS[name]


def preset_help() -> str:
    """Every method's presets, for ``--help``: the named ones with their settings, then the chosen ones."""
    named = [f"{method} {name}: {', '.join(f'{k}={v}' for k, v in values.items())}"
             for method, presets in configs.PRESETS.items() for name, values in presets.items()]
    chosen = [f"{method} {name}: {preset} where the model decides a concept in its noisiest steps (a probe of the "
              "model, obliviate.decided), else the defaults"
              for method, presets in configs.CHOSEN.items() for name, preset in presets.items()]
    return "; ".join(named + chosen)
