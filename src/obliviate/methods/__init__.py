"""Erasure methods: each a config dataclass and a ``fit(model, concepts, config) -> Patch``; a registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ObliviateError
from . import esd, fmn, prompt, uce


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    fit: Callable
    summary: str
    defaults: dict = field(default_factory=dict)  # config values that make this method out of a shared fit

    def make_config(self, **overrides):
        return self.config(**{**self.defaults, **overrides})


METHODS: dict[str, Method] = {
    "fmn": Method("fmn", fmn.FMNConfig, fmn.fit, "Forget-Me-Not attention re-steering"),
    "esd-x": Method("esd-x", esd.ESDConfig, esd.fit, "ESD negative guidance, cross-attention only"),
    "esd-u": Method("esd-u", esd.ESDConfig, esd.fit, "ESD negative guidance, everything but cross-attention",
                    {"trainable": "non-attn2", "lr": 3e-4}),
    "uce": Method("uce", uce.UCEConfig, uce.fit, "UCE closed-form edit of attn2 keys and values"),
    "prompt": Method("prompt", prompt.PromptConfig, prompt.fit,
                     "learnable-prompt erasure: a prompt memory absorbs the concept, the release drops it"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ObliviateError(f"unknown method {name!r} (available: {', '.join(METHODS)})")
    return METHODS[name]
