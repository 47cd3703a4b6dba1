"""The one edit loop every training method runs, and the edit it trains.

An :class:`Edit` holds float32 master copies of a subset of the denoiser's weights (or LoRA factors on it) and
runs it *functionally* with them (``torch.func.functional_call``): the pipeline's own weights are never
written, so they serve as the frozen reference for free (no copy of the UNet), a half-precision model trains
in float32, and nothing needs restoring afterwards, even when training fails. :func:`train` is the loop:
optimizer, progress bar, NaN check, gradient clipping, learning-rate schedule, timing, and the patch at the
end. A method supplies only its loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from ..attention import AttnCall
from ..bench import Concept
from ..diffusion import generator
from ..errors import ObliviateError
from ..families import Conditioning, family_of, predict, trainable_names
from ..options import to_dict
from ..patch import Patch
from ..progress import bar


class Edit:
    """Trainable float32 copies of a parameter set of the pipeline's ``component`` (default: its denoiser), or
    LoRA factors on it, applied functionally; ``which`` names the set (:func:`~obliviate.families.trainable_names`)."""

    def __init__(self, pipe, which: str, rank: int = 4, seed: int = 0, component: str | None = None) -> None:
        self.pipe = pipe
        self.component = component or family_of(pipe).denoiser
        self.module = module = getattr(pipe, self.component)
        self.which = which
        self.dtype = module.dtype
        names = trainable_names(pipe, which, self.component)
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

    def weights(self, detach: bool = False) -> dict[str, torch.Tensor]:
        """The edited tensors, in the model's dtype (gradients flow back to the float32 masters unless
        ``detach``)."""
        if self.which.startswith("lora"):
            out = {n: (w.float() + self.up[n] @ self.down[n]).to(self.dtype) for n, w in self.base.items()}
        else:
            out = {n: m.to(self.dtype) for n, m in self.masters.items()}
        return {n: w.detach() for n, w in out.items()} if detach else out

    def forward(self, detach: bool = False, override: dict[str, torch.Tensor] | None = None):
        """The edited module's forward, functionally (``detach``: no gradient reaches the edit; ``override``: more
        weights to substitute, e.g. a weight adversary's or a token table with adversarial rows)."""
        weights = {**self.weights(detach), **(override or {})}
        return lambda *args, **kw: functional_call(self.module, weights, args, kw, strict=False)

    def edited(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, call: AttnCall | None = None,
               detach: bool = False, override: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The edited denoiser's output (``detach``: no gradient reaches the edit through this call)."""
        return predict(self.pipe, x, t, cond, forward=self.forward(detach, override), attention=call)

    @torch.no_grad()
    def frozen(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, call: AttnCall | None = None) \
            -> torch.Tensor:
        """The base model's output (the pipeline's own, untouched weights)."""
        return predict(self.pipe, x, t, cond, attention=call)

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


def make_patch(tensors: dict[str, torch.Tensor], method: str, concepts: list[Concept], cfg, **extra) -> Patch:
    """The patch a method returns: its tensors, name, concepts and config (the caller adds the base model's
    fingerprint and the time taken)."""
    if not tensors:
        raise ObliviateError(f"{method} changed no weight (too few steps, or a learning rate of zero?)")
    meta = {"method": method, "concepts": [c.name for c in concepts], "config": to_dict(cfg), **extra}
    if any(k.startswith("lora_") for k in tensors):
        meta["lora_scale"] = 1.0
    return Patch(tensors, meta)
