"""Learnable-prompt erasure (Bui et al. 2024) and key-locked hiding (Bui et al. 2025).

A prompt memory of ``m`` key/value tokens is appended after the text tokens in attn2. Training alternates:
(a) without the prompt, the edited UNet subset follows ESD's negative-guidance target (weight 1.0);
(b) with the concept's prompt, the model reproduces the frozen original on the concept (weight 0.1 as in
the paper; 2.0 when hiding, so the key brings the concept back), both in x0-space. (b) trains the prompt
and the weights (``recall_edits_weights=False``: the prompt only, an ablation). The prompt becomes an
extra memory that absorbs the concept, so the weight edit can remove it with less collateral damage.
For hiding (our protocol, see METHODS.md §5) two more terms make the prompt a key: (c) with the key,
other concepts still match the original; (d) with another concept's key, or a random prompt of the same
shape, the concept stays erased.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attention import Attn2Processor, PromptMemory, attn2_processors
from ..errors import ObliviateError
from ..patch import Patch
from ..pipeline import Model
from .common import config_dict, editing, encode_prompts, take_patch
from .concepts import resolve_target
from .esd import _partial_sample


@dataclass
class PromptConfig:
    """World defaults (see docs/benchmarks.md); the paper's public runs use m=10, lr 1e-5, 1000 iterations."""

    steps: int = 200
    lr: float = 1e-3
    prompt_lr: float = 2e-2
    batch_size: int = 4
    tokens: int = 10
    placement: str = "all"
    eta: float = 1.0
    erase_weight: float = 1.0
    recall_weight: float | None = None  # None: the paper's 0.1 erasing; 2.0 hiding, where the key must recall
    lock_weight: float = 1.0       # hiding only: (c) and (d)
    ddim_steps: int = 10
    start_guidance: float = 3.0
    trainable: str = "attn2"
    recall_edits_weights: bool = True  # (b) trains the weights too (the paper); False: the prompt only
    seed: int = 0
    progress: bool = True


@dataclass
class PromptResult:
    patch: Patch
    prompts: dict[str, PromptMemory]  # per concept; never part of the patch


def _x0_mse(pred: torch.Tensor, goal: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """MSE of the x0 estimates implied by two noise predictions at the same x_t."""
    del x_t
    scale = ((1 - alpha) / alpha).sqrt()
    return F.mse_loss(pred * scale, goal * scale)


def train(model: Model, concepts: list[str], cfg: PromptConfig, hiding: bool, method_name: str) -> PromptResult:
    start = time.time()
    if not concepts:
        raise ObliviateError("no concept given")
    if cfg.recall_weight is None:  # hiding zorvik: 1.0 let its key bring it back to 0.81 of base, 2.0 to 1.00
        cfg = replace(cfg, recall_weight=2.0 if hiding else 0.1)
    pipe, unet = model.pipe, model.pipe.unet
    if pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise ObliviateError("the learnable-prompt method needs an epsilon-prediction model")
    targets = [resolve_target(model, c) for c in concepts]
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    frozen = copy.deepcopy(unet).requires_grad_(False)
    width = pipe.text_encoder.config.hidden_size
    uncond1 = encode_prompts(model, [""])
    conds = [encode_prompts(model, list(t.prompts)) for t in targets]
    others = []
    if hiding and model.is_world:
        from ..world import concepts as world_concepts

        others = [p for c in world_concepts() if c.name not in concepts for p in c.prompts[:1]]
    other_conds = encode_prompts(model, others) if others else None
    scale = pipe.text_encoder.get_input_embeddings().weight.std().item()
    memories = {t.name: PromptMemory(torch.randn(cfg.tokens, width, generator=gen) * scale,
                                     torch.randn(cfg.tokens, width, generator=gen) * scale) for t in targets}
    for m in memories.values():
        m.keys.requires_grad_(True)
        m.values.requires_grad_(True)
    alphas = pipe.scheduler.alphas_cumprod
    with editing(model, cfg.trainable) as params:
        opt = torch.optim.Adam([{"params": params, "lr": cfg.lr},
                                {"params": [t for m in memories.values() for t in (m.keys, m.values)],
                                 "lr": cfg.prompt_lr}])
        processor = Attn2Processor()
        names = [t.name for t in targets]
        for step in tqdm(range(cfg.steps), desc=f"{method_name} {', '.join(concepts)}", disable=not cfg.progress):
            k = step % len(targets)
            idx = torch.randint(len(conds[k]), (cfg.batch_size,), generator=gen)
            cond, uncond = conds[k][idx], uncond1.expand(cfg.batch_size, -1, -1)
            stop = int(torch.randint(0, cfg.ddim_steps - 1, (1,), generator=gen))
            with attn2_processors(unet, processor, cfg.placement):
                processor.memory = None
                x_t, t = _partial_sample(model, cond, uncond, stop, _SamplerView(cfg), gen)
            a = alphas[t]
            with torch.no_grad():
                e0 = frozen(x_t, t, uncond).sample
                ep = frozen(x_t, t, cond).sample
            with attn2_processors(unet, processor, cfg.placement):
                processor.memory = None
                erased = unet(x_t, t, cond).sample
                loss = cfg.erase_weight * _x0_mse(erased, e0 - cfg.eta * (ep - e0), x_t, a)
                processor.memory = memories[names[k]]
                with _frozen_unless(params, cfg.recall_edits_weights):
                    recalled = unet(x_t, t, cond).sample
                loss = loss + cfg.recall_weight * _x0_mse(recalled, ep, x_t, a)
                if hiding and other_conds is not None:
                    j = torch.randint(len(other_conds), (cfg.batch_size,), generator=gen)
                    with torch.no_grad():
                        keep_goal = frozen(x_t, t, other_conds[j]).sample
                    loss = loss + cfg.lock_weight * _x0_mse(unet(x_t, t, other_conds[j]).sample, keep_goal, x_t, a)
                if hiding:  # (d): another concept's key, and a random prompt, leave this concept erased
                    wrong = [memories[n] for n in names if n != names[k]]
                    decoys = [PromptMemory(torch.randn(cfg.tokens, width, generator=gen) * scale,
                                           torch.randn(cfg.tokens, width, generator=gen) * scale)]
                    if wrong:  # not detached: the other key itself learns to open nothing but its own concept
                        decoys.append(wrong[(step // len(targets)) % len(wrong)])
                    for decoy in decoys:
                        processor.memory = decoy
                        loss = loss + cfg.lock_weight * _x0_mse(unet(x_t, t, cond).sample, erased.detach(), x_t, a)
            if not torch.isfinite(loss):
                raise ObliviateError(f"loss became {loss.item()} at step {step}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        meta = {"method": method_name, "concepts": names, "config": config_dict(cfg),
                "seconds": round(time.time() - start, 2)}
        patch = take_patch(model, cfg.trainable, meta)
    prompts = {n: PromptMemory(m.keys.detach().clone(), m.values.detach().clone()) for n, m in memories.items()}
    return PromptResult(patch, prompts)


@contextmanager
def _frozen_unless(params: list[torch.nn.Parameter], trainable: bool) -> Iterator[None]:
    """Forward passes inside build no graph to ``params`` unless ``trainable``."""
    if trainable:
        yield
        return
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class _SamplerView:
    """The sampler settings :func:`esd._partial_sample` reads."""

    cfg: PromptConfig

    @property
    def ddim_steps(self) -> int:
        return self.cfg.ddim_steps

    @property
    def start_guidance(self) -> float:
        return self.cfg.start_guidance


def fit(model: Model, concepts: list[str], cfg: PromptConfig) -> Patch:
    """``--method prompt``: erase with a learnable prompt; the released patch is used without it."""
    return train(model, concepts, cfg, hiding=False, method_name="prompt").patch
