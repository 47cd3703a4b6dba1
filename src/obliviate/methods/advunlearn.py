"""AdvUnlearn (Zhang et al., "Defensive Unlearning with Adversarial Training for Robust Concept Erasure in
Diffusion Models", NeurIPS 2024): ESD's unlearning against an adversary, with a utility-retaining term.

    min_theta  E [ || eps_theta(x_t, [p*; c], t) - (eps*(x_t, {}, t) - eta (eps*(x_t, c, t) - eps*(x_t, {}, t))) ||^2 ]
               + gamma E_{c_r} [ || eps_theta(x_r, c_r, t) - eps*(x_r, c_r, t) ||^2 ]
    p* = argmin_p  || eps_theta(x_t, [p; c], t) - eps*(x_t, c, t) ||^2

eps* is the frozen model, c a prompt of the concept, p ``attack_tokens`` prefix token embeddings (continuous:
the attack is in embedding space, which is what concept inversion also searches), found by ``attack_steps``
signed-gradient steps before every outer step, c_r the prompts of the other concepts (the retain set) on
their own noised renderings where the catalog renders them. The paper's finding is that the text encoder is
the module to edit (``trainable="text-encoder"``: its transformer layers; ``attn2`` edits the UNet instead).
``attack_at="replace"`` puts the adversarial tokens in place of the concept's words (concept inversion's threat
model) instead of the paper's prefix. Departure: the adversary is warm-started from the previous outer step
(the paper restarts it), so a few inner steps per outer step keep it strong at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    ddim_scheduler,
    encode_prompts,
    generator,
    latent_shape,
    noised,
    partial_sample,
    predict_each,
    randint,
    randn,
    random_stop,
    random_timesteps,
    token_ids,
    training_scheduler,
)
from ..errors import ObliviateError
from ..inversion import LearnedTokens, installed
from ..patch import Patch
from .esd import negative_guidance, training_prompts
from .keep import keep_bank
from .loop import Edit, LoopSettings, make_patch, train
from .uce import replace_words


@dataclass
class AdvUnlearnConfig:
    steps: int = 100
    lr: float = 3e-4  # world defaults (docs/methods.md); the paper: 1e-5 on SD's text encoder
    batch_size: int = 4
    eta: float = 1.0
    ddim_steps: int = 10  # partial sampling to x_t, as ESD
    start_guidance: float = 3.0
    trainable: str = "text-encoder"  # the paper's choice; or "attn2" (the UNet's cross-attention)
    attack_tokens: int = 5  # prefix length, as UnlearnDiffAtk
    attack_at: str = "prefix"  # the paper's prefix to the prompt, or "replace": in place of the concept's words
    attack_steps: int = 3  # inner steps per outer step
    attack_lr: float = 0.1  # signed step, in units of the token table's standard deviation
    preserve_weight: float = 3.0  # gamma
    preserve: tuple[str, ...] | None = None  # the retain set; None: every other concept of the catalog
    train_on: str = "named"
    seed: int = 0
    progress: bool = True


def fit(pipe, concepts: list[Concept], cfg: AdvUnlearnConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` by adversarial unlearning; edits the text encoder (default) or the UNet's attn2."""
    if cfg.attack_at not in ("prefix", "replace"):
        raise ObliviateError(f"attack_at must be 'prefix' or 'replace', got {cfg.attack_at!r}")
    if cfg.trainable not in ("text-encoder", "attn2"):
        raise ObliviateError(f"advunlearn edits 'text-encoder' or 'attn2', got {cfg.trainable!r}")
    for name in ("attack_tokens", "ddim_steps"):
        if getattr(cfg, name) < 1:
            raise ObliviateError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    gen = generator(cfg.seed)
    device = pipe.unet.device
    pairs = [(c, p) for c in concepts for p in training_prompts(c, cfg.train_on)]
    prompts = [p for _, p in pairs]
    conds = encode_prompts(pipe, prompts)
    uncond = encode_prompts(pipe, [""]).expand(cfg.batch_size, -1, -1)
    sampler, sched = ddim_scheduler(pipe, cfg.ddim_steps), training_scheduler(pipe)
    bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed)
    table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
    step_size = cfg.attack_lr * table.std().item()
    names = [f"<advunlearn_{i}>" for i in range(cfg.attack_tokens)]
    start = table[randint(len(table), cfg.attack_tokens, gen, table.device)]

    with installed(pipe, LearnedTokens(names, start.cpu())) as phrase:
        text_encoder = pipe.text_encoder  # the installed copy: it knows the adversarial tokens
        table_name = next(n for n, p in text_encoder.named_parameters()
                          if p is text_encoder.get_input_embeddings().weight)
        row_ids = torch.tensor(pipe.tokenizer.convert_tokens_to_ids(names), device=table.device)
        adversarial = [f"{phrase} {p}" if cfg.attack_at == "prefix" else replace_words(p, c, phrase) for c, p in pairs]
        adv_ids = token_ids(pipe.tokenizer, adversarial).to(table.device)
        keep_ids = None if bank is None else token_ids(pipe.tokenizer, bank.prompts).to(table.device)
        text_edit = cfg.trainable == "text-encoder"
        edit = Edit(text_encoder, "text-encoder", component="text_encoder", seed=cfg.seed) if text_edit \
            else Edit(pipe.unet, "attn2", seed=cfg.seed)
        rows = start.to(table.device).clone()
        full_table = text_encoder.get_input_embeddings().weight.detach()

        def encode(ids: torch.Tensor, adv: torch.Tensor | None, detach: bool = False) -> torch.Tensor:
            override = {} if adv is None else {table_name: full_table.index_put((row_ids,), adv.to(full_table.dtype))}
            if text_edit:
                return edit.call(ids, detach=detach, override=override)[0].to(pipe.unet.dtype)
            return functional_call(text_encoder, override, (ids,))[0].to(pipe.unet.dtype)

        def frozen(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return pipe.unet(x, t, encoder_hidden_states=cond).sample

        def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, detach: bool = False) -> torch.Tensor:
            if text_edit:  # the frozen UNet; the gradient reaches the text encoder through ``cond``
                return frozen(x, t, cond)
            return edit.edited(x, t, cond, detach=detach)

        def loss(step: int) -> torch.Tensor:
            nonlocal rows
            b = cfg.batch_size
            pick = randint(len(prompts), b, gen, device)
            cond, ids = conds[pick], adv_ids[pick.to(adv_ids.device)]
            stop = random_stop(cfg.ddim_steps, gen)
            start = randn(latent_shape(pipe, b), gen, cond)
            keeping = bank is not None and cfg.preserve_weight
            if keeping:
                k = randint(len(bank.cond), b, gen, device)
                if bank.latents is not None:
                    t_r = random_timesteps(sched, b, gen, device)
                    x_r = noised(sched, bank.latents[k], t_r, gen)
            with torch.no_grad():
                x_t, t = partial_sample(frozen, sampler, start, cond, uncond, stop, cfg.start_guidance)
                if keeping and bank.latents is None:
                    x_r, t_r = x_t, t
                calls = [(x_t, t, cond), (x_t, t, uncond)] + ([(x_r, t_r, bank.cond[k])] if keeping else [])
                e_cond, e_uncond, *goal = predict_each(frozen, *calls)
            for _ in range(cfg.attack_steps):  # the adversary: make the edited model draw the concept again
                adv = rows.clone().requires_grad_(True)
                attack = F.mse_loss(predict(x_t, t, encode(ids, adv, detach=True), detach=True).float(),
                                    e_cond.float())
                (grad,) = torch.autograd.grad(attack, adv)
                rows = rows - step_size * grad.sign()
            target = negative_guidance(e_uncond, e_cond, cfg.eta).float()
            if not keeping:
                return F.mse_loss(predict(x_t, t, encode(ids, rows)).float(), target)
            states = encode(torch.cat([ids, keep_ids[k.to(keep_ids.device)]]), rows)  # no adversarial token kept
            unlearned, kept = predict_each(predict, (x_t, t, states[:b]), (x_r, t_r, states[b:]))
            return F.mse_loss(unlearned.float(), target) + cfg.preserve_weight * F.mse_loss(kept.float(),
                                                                                           goal[0].float())

        settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress)
        train(edit, loss, settings, f"advunlearn {', '.join(c.name for c in concepts)}")
        return make_patch(edit.tensors(), "advunlearn", concepts, cfg)

