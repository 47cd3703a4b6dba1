"""The one edit loop every training method runs, and the edit it trains.

An :class:`Edit` holds float32 master copies of a subset of the UNet's weights (or LoRA factors on it) and
runs the UNet *functionally* with them (``torch.func.functional_call``): the pipeline's own weights are never
written, so they serve as the frozen reference for free (no copy of the UNet), a half-precision model trains
in float32, and nothing needs restoring afterwards, even when training fails. :func:`train` is the loop:
optimizer, progress bar, NaN check, gradient clipping, learning-rate schedule, timing, and the patch at the
end. A method supplies only its loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.func import functional_call

from ..attention import AttnCall, kwargs
from ..bench import Concept
from ..diffusion import generator
from ..errors import ObliviateError
from ..patch import Patch
from ..progress import bar

TRAINABLE_SETS = ("attn2", "attn2-kv", "attn2-qk", "unet", "non-attn2", "lora", "lora-kv", "text-encoder")
LORA_TARGETS = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
LORA_KV_TARGETS = ("attn2.to_k", "attn2.to_v")  # the projections of the prompt: a LoRA there acts per prompt


def trainable_names(module, which: str) -> list[str]:
    """Parameters a set names: ``attn2`` (cross-attention), its ``-kv`` / ``-qk`` projections, ``non-attn2``
    (everything else, ESD-u), ``unet`` (all), ``lora`` (the attn2 projection weights a LoRA wraps), ``lora-kv``
    (its to_k/to_v weights only) of a UNet; ``text-encoder``: a text encoder's transformer layers (its token
    and position tables stay, so the patch does not carry the vocabulary)."""
    if (which == "text-encoder") != hasattr(module, "get_input_embeddings"):
        raise ObliviateError(f"trainable set {which!r} does not name parameters of a {type(module).__name__}")
    names = [n for n, _ in module.named_parameters()]
    chosen = {
        "attn2": [n for n in names if ".attn2." in n],
        "attn2-kv": [n for n in names if ".attn2.to_k." in n or ".attn2.to_v." in n],  # a function of the prompt
        "attn2-qk": [n for n in names if ".attn2.to_q." in n or ".attn2.to_k." in n],  # where attention is decided
        "non-attn2": [n for n in names if ".attn2." not in n],
        "unet": names,
        "lora": [n for n in names if n.endswith(".weight") and any(f".{t}.weight" in f".{n}" for t in LORA_TARGETS)],
        "lora-kv": [n for n in names if n.endswith(".weight")
                    and any(f".{t}.weight" in f".{n}" for t in LORA_KV_TARGETS)],
        "text-encoder": [n for n in names if "embeddings." not in n],
    }.get(which)
    if chosen is None:
        raise ObliviateError(f"unknown trainable set {which!r} (choose from {', '.join(TRAINABLE_SETS)})")
    if not chosen:
        raise ObliviateError(f"the model has no parameters in set {which!r}")
    return chosen


class Edit:
    """Trainable float32 copies of a UNet subset (or LoRA factors on it), applied functionally; ``component``
    names the pipeline part the module is (``unet``, or ``text_encoder`` with the set ``text-encoder``)."""

    def __init__(self, module, which: str, rank: int = 4, seed: int = 0, component: str = "unet") -> None:
        self.module = module
        self.which = which
        self.component = component
        self.dtype = module.dtype
        names = trainable_names(module, which)
        self.base = {n: module.get_parameter(n).detach() for n in names}
        self.masters: dict[str, torch.Tensor] = {}
        self.down: dict[str, torch.Tensor] = {}
        self.up: dict[str, torch.Tensor] = {}
        if which.startswith("lora"):  # peft's init: down Gaussian (std 1/rank), up zeros: training starts at the base
            gen = generator(seed, "lora-init")
            for n, w in self.base.items():
                down = torch.randn(rank, w.shape[1], generator=gen) / rank
                self.down[n] = down.to(w.device).requires_grad_()
                self.up[n] = torch.zeros(w.shape[0], rank, device=w.device, requires_grad=True)
        else:
            self.masters = {n: w.float().clone().requires_grad_() for n, w in self.base.items()}

    def parameters(self) -> list[torch.Tensor]:
        return [*self.masters.values(), *self.down.values(), *self.up.values()]

    def weights(self) -> dict[str, torch.Tensor]:
        """The edited tensors, in the model's dtype (gradients flow back to the float32 masters)."""
        if self.which.startswith("lora"):
            return {n: (w.float() + self.up[n] @ self.down[n]).to(self.dtype) for n, w in self.base.items()}
        return {n: m.to(self.dtype) for n, m in self.masters.items()}

    def call(self, *args, detach: bool = False, override: dict[str, torch.Tensor] | None = None, **kw):
        """The edited module's forward (``detach``: no gradient reaches the edit; ``override``: more weights to
        substitute, e.g. a token table with adversarial rows)."""
        weights = self.weights()
        if detach:
            weights = {n: w.detach() for n, w in weights.items()}
        return functional_call(self.module, {**weights, **(override or {})}, args, kw, strict=False)

    def edited(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, call: AttnCall | None = None,
               detach: bool = False) -> torch.Tensor:
        """The edited model's UNet output (``detach``: no gradient reaches the edit through this call)."""
        extra = {"cross_attention_kwargs": kwargs(call)} if call is not None else {}
        return self.call(x, t, encoder_hidden_states=cond, detach=detach, **extra).sample

    @torch.no_grad()
    def frozen(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, call: AttnCall | None = None) \
            -> torch.Tensor:
        """The base model's UNet output (the pipeline's own, untouched weights)."""
        extra = {"cross_attention_kwargs": kwargs(call)} if call is not None else {}
        return self.module(x, t, encoder_hidden_states=cond, **extra).sample

    @torch.no_grad()
    def tensors(self) -> dict[str, torch.Tensor]:
        """The edit as patch tensors: float32 deltas of the changed weights, or LoRA factors."""
        if self.which.startswith("lora"):
            out = {}
            for n in self.base:
                module = n[: -len(".weight")]
                out[f"lora_down.{self.component}.{module}"] = self.down[n].detach().float().cpu().clone()
                out[f"lora_up.{self.component}.{module}"] = self.up[n].detach().float().cpu().clone()
            return out
        out = {}
        for n, m in self.masters.items():
            delta = (m.detach() - self.base[n].float()).cpu()
            if torch.count_nonzero(delta):
                out[f"delta.{self.component}.{n}"] = delta
        return out


@dataclass
class LoopSettings:
    """What the loop needs from a method's config."""

    steps: int
    lr: float
    seed: int = 0
    weight_decay: float = 0.0
    clip_grad: float | None = 1.0
    lr_decay: bool = False  # linear decay to zero over the run
    progress: bool = True
    extra_groups: list[dict] = field(default_factory=list)  # more optimizer groups: {"params": [...], "lr": x}


def train(edit: Edit, loss: Callable[[int], torch.Tensor], settings: LoopSettings, name: str) -> None:
    """Minimise ``loss(step)`` over ``edit`` (and ``settings.extra_groups``).

    Every method's loop: AdamW, gradient-norm clipping over all trained tensors, optional linear decay, a NaN
    check that names the step, and a progress bar.
    """
    if settings.steps < 1:
        raise ObliviateError(f"steps must be at least 1, got {settings.steps}")
    if not settings.lr > 0:
        raise ObliviateError(f"lr must be positive, got {settings.lr}")
    groups = [{"params": edit.parameters(), "lr": settings.lr}, *settings.extra_groups]
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    total = settings.steps
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / total if settings.lr_decay else 1.0)
    for step in bar(range(total), desc=name, unit="step", enabled=settings.progress):
        value = loss(step)
        if not torch.isfinite(value):
            raise ObliviateError(f"{name}: the loss became {value.item()} at step {step}: lower the learning rate")
        opt.zero_grad(set_to_none=True)
        value.backward()
        if settings.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, settings.clip_grad)
        opt.step()
        decay.step()


def config_dict(cfg) -> dict:
    """A method's config as patch metadata (display-only fields dropped)."""
    return {k: v for k, v in asdict(cfg).items() if k != "progress"}


def make_patch(tensors: dict[str, torch.Tensor], method: str, concepts: list[Concept], cfg, **extra) -> Patch:
    """The patch a method returns: its tensors, name, concepts and config (the caller adds the base model's
    fingerprint and the time taken)."""
    if not tensors:
        raise ObliviateError(f"{method} changed no weight (too few steps, or a learning rate of zero?)")
    meta = {"method": method, "concepts": [c.name for c in concepts], "config": config_dict(cfg), **extra}
    if any(k.startswith("lora_") for k in tensors):
        meta["lora_scale"] = 1.0
    return Patch(tensors, meta)
