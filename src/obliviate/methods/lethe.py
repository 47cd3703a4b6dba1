"""Lethe: obliviate's erasure built against the attacks that bring erased concepts back.

What the attack table shows: every published edit removes a *route* to the concept (its words, the
embeddings an adversary found) and leaves the denoiser able to draw it, so concept inversion finds a new
route and the completion probe needs none: noised images of the concept are denoised back into it. Lethe
trains the denoiser itself on noised images of the concept, under every conditioning an attacker could
supply, to denoise them into images *without* it, and distils everything else from the frozen model:

    x_t = sqrt(a_t) x0_c + sqrt(1 - a_t) eps,            x0_c ~ images of the concept
    L_forget = E || f_theta'(x_t, y, t) - target(x0_a, x_t, t) ||^2,   y ~ {c's prompts, the neutral prompt,
                                                                            anchor prompts, adversarial y}
    L_keep   = E || f_theta'(x_k, y_k, t) - f_theta(x_k, y_k, t) ||^2  (other concepts' prompts on their images,
                                                                       and the neutral prompt on them)
    L = L_forget + lambda * L_keep

``target(x0_a, x_t, t)`` is the output (noise, velocity or sample, whatever the model predicts) that denoises
x_t into x0_a, an image the base model draws for the concept's prompt with its words removed (the anchor):
where ESD steers the prompt's prediction away, Lethe moves the denoiser's fixed point off the concept, which
is what completion and inversion both rely on. The forget term uses t in [t_min, t_max]: below t_min the
image is decided (any denoiser keeps it), above t_max the latent is noise that every prompt shares.
The adversarial y are STEREO's stage-one embeddings (Srivatsan et al., CVPR 2025: concept inversion against
the edit so far); the keep term is FMN's/AdvUnlearn's distillation anchor on the other concepts.

``adversary_steps`` > 0 adds a persistent adversary, AdvUnlearn's warm-started inner attack with concept
inversion's objective: before every outer step, Adam steps on token embeddings v

    v <- v - lr * Adam( grad_v || f_theta'(x_t, c(v), t) - target(x0_c, eps, t) ||^2 ),   x0_c ~ images of c

(the ordinary denoising loss on the concept's images against the edit as it is now), and c(v) conditions half
a batch of extra forget rows. The rounds' inversions see the edit at a few moments; this one follows it at every
step, so the edit cannot forget only the embeddings found so far.

``weight_adversary_steps`` > 0 adds an adversary on the weights: per concept, a LoRA of the key-learning attack's
shape (rank r on every attn2 projection; what a fine-tuning attacker trains) that keeps fine-tuning the edit
back toward the concept with that attack's objective, a few Adam steps per outer step,

    A <- A - lr * Adam( grad_A || f_theta'+A(x_t, y_c, t) - target(x0_c, eps, t) ||^2 ),   y_c ~ c's prompts

and the forget term is applied under it, to theta' + A (A held fixed), on half a batch of extra rows: the
edit must keep the concept out even after the fine-tune has begun. First-order meta-unlearning (the simulated
fine-tune of Gao et al. 2024, "Meta-Unlearning on Diffusion Models"; TAR's adversary on the weights, Tamirisa
et al. 2024). Each LoRA restarts from zero after ``weight_adversary_reset`` of its Adam steps, so the edit meets
a fresh attack's first steps (the ones an attacker's step count measures), not one long co-adapted LoRA. The
concepts' adversaries take turns, one per outer step.

``keep_neighbours`` > 0 draws that share of the keep rows from the concepts of the erased concepts' own
categories (their neighbours): an adversary that follows the edit drifts toward whatever the edit still draws
the concept from, and a neighbour that shares its features (a colour mixed from it) is such a place, so the
neighbours need more of the keep term than their share of the bank gives them.

``neutral_rows`` > 0 adds that many forget rows per step under the neutral prompt alone. Diffusion completion
denoises a partly noised image of the concept under the neutral prompt, and a sampler's unconditional branch
is that prompt too; in the pooled y it is one conditioning among many (on the world: one in 10-12 for one
concept, one in 19-23 for two), a sliver of the budget. Added, not carved out of the batch: a share of the
rows taken from the prompts and adversarial embeddings gave concept inversion its way back (docs/hiding.md).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    denoising_batch,
    encode_prompts,
    generator,
    images_to_latents,
    predict_each,
    randint,
    randn,
    seed_stream,
    token_ids,
    training_scheduler,
    training_target,
)
from ..errors import ObliviateError
from ..generation import generate, image_seeds
from ..inversion import InversionConfig, LearnedTokens, TokenRows, installed, invert
from ..patch import Patch
from .esd import training_prompts
from .keep import keep_bank
from .loop import Edit, LoopSettings, make_patch, train
from .stereo import adversarial_prompts
from .uce import replace_words


@dataclass
class LetheConfig:
    steps: int = 300
    lr: float = 1e-4
    batch_size: int = 4
    images: int = 32  # images of each concept (and as many anchor images) the forget term noises
    t_min: float = 0.1  # fraction of the schedule: the forget term's noise levels
    t_max: float = 0.7
    keep_weight: float = 3.0
    keep_neighbours: float = 0.0  # share of the keep rows drawn from the erased concepts' categories
    neutral_rows: int = 0  # forget rows per step added under the neutral prompt alone
    rounds: int = 2  # adversarial rounds: concept inversion against the edit so far, its tokens join y
    inversion_steps: int = 150
    inversion_tokens: int = 4
    adversary_steps: int = 0  # persistent inversion adversary: its Adam steps per outer step (0: off)
    adversary_lr: float = 2e-2
    adversary_batch: int = 4
    weight_adversary_steps: int = 0  # LoRA adversary on the weights: its Adam steps per outer step (0: off)
    weight_adversary_rank: int = 16
    weight_adversary_lr: float = 1e-3
    weight_adversary_reset: int = 100  # its Adam steps between restarts from zero
    trainable: str = "unet"
    preserve: tuple[str, ...] | None = None
    seed: int = 0
    progress: bool = True


def _timesteps(sched, n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    total = sched.config.num_train_timesteps
    first, last = int(lo * total), max(int(lo * total) + 1, int(hi * total))
    return (first + randint(last - first, n, gen, device)).long()


def _denoising_to(sched, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The UNet output that denoises ``x_t`` (at ``t``) into ``x0``: the training target of the noise that
    would have made ``x_t`` from ``x0``."""
    a = sched.alphas_cumprod.to(device=x_t.device, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    noise = (x_t.float() - a.sqrt() * x0.float()) / (1 - a).sqrt()
    return training_target(sched, x0.float(), noise, t)


class _Adversary:
    """Token embeddings that keep learning to make the edit draw the concept again (concept inversion's loss),
    a few Adam steps against the edit as it is at each outer step."""

    def __init__(self, pipe, cfg: LetheConfig, gen: torch.Generator, tag: str) -> None:
        self.pipe, self.cfg, self.gen = pipe, cfg, gen
        emb = pipe.text_encoder.get_input_embeddings().weight.detach().float()
        init = emb.mean(0, keepdim=True) + randn((cfg.inversion_tokens, emb.shape[1]), gen, emb) * emb.std()
        self.learned = LearnedTokens([f"<{tag}{j}>" for j in range(cfg.inversion_tokens)], init.cpu())

    def __enter__(self) -> _Adversary:
        self._installed = installed(self.pipe, self.learned)
        phrase = self._installed.__enter__()
        self.rows_encoder = TokenRows(self.pipe, self.learned.tokens)
        self.rows = self.learned.embeddings.to(self.rows_encoder.device).clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.rows], lr=self.cfg.adversary_lr)
        self.ids = token_ids(self.pipe.tokenizer, [f"a photo of {phrase}"]).to(self.rows_encoder.device)
        return self

    def __exit__(self, *exc) -> None:
        self._installed.__exit__(*exc)

    def cond(self, n: int) -> torch.Tensor:
        return self.rows_encoder.encode(self.ids, self.rows).to(self.pipe.unet.dtype).expand(n, -1, -1)

    def step(self, edited, sched, latents: torch.Tensor) -> torch.Tensor:
        """``adversary_steps`` steps against ``edited`` (no gradient reaches the edit); the conditioning found."""
        b = self.cfg.adversary_batch
        for _ in range(self.cfg.adversary_steps):
            z0, noise, t, x_t = denoising_batch(sched, latents, b, self.gen)
            pred = edited(x_t, t, self.cond(b), detach=True)
            loss = F.mse_loss(pred.float(), training_target(sched, z0.float(), noise.float(), t).float())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        with torch.no_grad():
            return self.cond(1)


class _WeightAdversary:
    """A LoRA that keeps fine-tuning the edit back toward one concept (the key-learning attack's objective), a
    few Adam steps at a time, restarted from zero after ``weight_adversary_reset`` of them."""

    def __init__(self, edit: Edit, cfg: LetheConfig, latents: torch.Tensor, conds: torch.Tensor, tag: str) -> None:
        self.edit, self.cfg, self.latents, self.conds, self.tag = edit, cfg, latents, conds, tag
        self.gen = generator(cfg.seed, f"lethe/weight-adversary/{tag}")
        self.taken, self.restarts = 0, 0
        self._restart()

    def _restart(self) -> None:
        seed = seed_stream(self.cfg.seed, f"lethe/weight-adversary/{self.tag}/{self.restarts}")
        self.lora = Edit(self.edit.module, "lora", rank=self.cfg.weight_adversary_rank, seed=seed)
        self.opt = torch.optim.Adam(self.lora.parameters(), lr=self.cfg.weight_adversary_lr)
        self.restarts += 1

    def weights(self, train_edit: bool) -> dict[str, torch.Tensor]:
        """The edit's weights plus the LoRA: gradients reach the edit (``train_edit``) or the LoRA, not both."""
        edited = self.edit.weights()
        out = {}
        for n, w in self.lora.base.items():
            e = edited.get(n, w)
            delta = self.lora.up[n] @ self.lora.down[n]
            e, delta = (e, delta.detach()) if train_edit else (e.detach(), delta)
            out[n] = e + delta.to(e.dtype)
        return out

    def step(self, sched) -> None:
        """``weight_adversary_steps`` Adam steps of the fine-tune against the edit as it is now."""
        if self.taken >= self.cfg.weight_adversary_reset:
            self.taken = 0
            self._restart()
        b, device = self.cfg.adversary_batch, self.latents.device
        for _ in range(self.cfg.weight_adversary_steps):
            z0, noise, t, x_t = denoising_batch(sched, self.latents, b, self.gen)
            y = self.conds[randint(len(self.conds), b, self.gen, device)]
            pred = self.edit.call(x_t, t, encoder_hidden_states=y, detach=True, override=self.weights(False)).sample
            loss = F.mse_loss(pred.float(), training_target(sched, z0.float(), noise.float(), t).float())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.taken += self.cfg.weight_adversary_steps

    def under(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The edited model's output with the LoRA added (gradients reach the edit only)."""
        return self.edit.call(x_t, t, encoder_hidden_states=y, override=self.weights(True)).sample


def fit(pipe, concepts: list[Concept], cfg: LetheConfig, catalog: Catalog) -> Patch:
    if not 0 <= cfg.t_min < cfg.t_max <= 1:
        raise ObliviateError(f"need 0 <= t_min < t_max <= 1, got {cfg.t_min}, {cfg.t_max}")
    if cfg.images < 1:
        raise ObliviateError(f"images must be at least 1, got {cfg.images}")
    if not 0 <= cfg.keep_neighbours <= 1:
        raise ObliviateError(f"need keep_neighbours in [0, 1], got {cfg.keep_neighbours}")
    if cfg.neutral_rows < 0:
        raise ObliviateError(f"need neutral_rows >= 0, got {cfg.neutral_rows}")
    if cfg.adversary_steps < 0 or cfg.adversary_batch < 1:
        raise ObliviateError(f"need adversary_steps >= 0 and adversary_batch >= 1, got {cfg.adversary_steps}, "
                             f"{cfg.adversary_batch}")
    if cfg.weight_adversary_steps < 0 or cfg.weight_adversary_rank < 1 or cfg.weight_adversary_reset < 1:
        raise ObliviateError("need weight_adversary_steps >= 0, weight_adversary_rank >= 1 and "
                             f"weight_adversary_reset >= 1, got {cfg.weight_adversary_steps}, "
                             f"{cfg.weight_adversary_rank}, {cfg.weight_adversary_reset}")
    device = pipe.unet.device
    gen = generator(cfg.seed)
    sched = training_scheduler(pipe)
    neutral = catalog.bench.neutral

    named = [(c, p) for c in concepts for p in training_prompts(c)]
    anchors = [replace_words(p, c, "") for c, p in named]
    drawn = [a for a in dict.fromkeys(anchors) if a.strip()] or ([neutral] if neutral.strip() else [])
    bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed)
    conds = encode_prompts(pipe, list(dict.fromkeys([p for _, p in named] + anchors + [neutral])))

    concept_images = [catalog.images(pipe, c, cfg.images, seed_stream(cfg.seed, f"lethe/{c.name}"))
                      for c in concepts]
    concept_latents = torch.cat([images_to_latents(pipe, im) for im in concept_images])
    n = cfg.images * len(concepts)
    if drawn:  # the anchor: what the base model draws when the concept's words are taken out
        sampler = catalog.sampler
        prompts = [drawn[i % len(drawn)] for i in range(n)]
        anchor_images = generate(pipe, prompts, image_seeds(seed_stream(cfg.seed, "lethe/anchor"), n),
                                 sampler.steps, sampler.guidance, progress=False)
        anchor_latents = images_to_latents(pipe, anchor_images)
    else:  # an unconditional model has no anchor prompt: denoise into the mean latent (a flat image)
        anchor_latents = torch.zeros_like(concept_latents)
    uncond = encode_prompts(pipe, [neutral])
    edit = Edit(pipe.unet, cfg.trainable, seed=cfg.seed)
    b = cfg.batch_size
    fine_tunes = [_WeightAdversary(edit, cfg, concept_latents[k * cfg.images:(k + 1) * cfg.images],
                                   encode_prompts(pipe, training_prompts(c)), c.name)
                  for k, c in enumerate(concepts)] if cfg.weight_adversary_steps else []
    categories = {c.category for c in concepts}
    near = [j for j, c in enumerate(bank.categories) if c in categories] if bank and cfg.keep_neighbours else []
    near = torch.tensor(near, dtype=torch.long, device=device) if near else None

    def forget_rows(i: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The concept's images ``i`` noised to random levels, with the forget target: each denoised toward the
        anchor image ``a``."""
        t = _timesteps(sched, len(i), cfg.t_min, cfg.t_max, gen, device)
        x_t = sched.add_noise(concept_latents[i], randn(tuple(concept_latents[i].shape), gen, concept_latents), t)
        return x_t, t, _denoising_to(sched, anchor_latents[a], x_t, t)

    def loss(step: int) -> torch.Tensor:
        m = b - b // 2 if adversary is not None else 0  # extra rows under what the adversary found against the edit
        e = cfg.neutral_rows  # and under the neutral prompt alone
        i = randint(n, b + m + e, gen, device)
        a = randint(len(anchor_latents), b + m + e, gen, device)
        x_t, t, goal = forget_rows(i, a)
        y = forget_conds[randint(len(forget_conds), b, gen, device)]  # read at call time: grows each round
        if adversary is not None:
            y = torch.cat([y, adversary.step(edit.edited, sched, concept_latents).expand(m, -1, -1)])
        if e:
            y = torch.cat([y, uncond.expand(e, -1, -1)])
        if bank is None or not cfg.keep_weight:
            return F.mse_loss(edit.edited(x_t, t, y).float(), goal) + under_fine_tune(step)
        k = randint(len(bank.cond), b, gen, device)
        if near is not None:
            k = torch.where(torch.rand(b, generator=gen).to(device) < cfg.keep_neighbours,
                            near[randint(len(near), b, gen, device)], k)
        tk = randint(sched.config.num_train_timesteps, b, gen, device)
        z0 = bank.latents[k] if bank.latents is not None else anchor_latents[a[:b]]  # never the concept's
        x_k = sched.add_noise(z0, randn(tuple(z0.shape), gen, z0), tk)
        yk = torch.where((torch.rand(b, generator=gen) < 0.5).view(-1, 1, 1).to(device), bank.cond[k],
                         uncond.expand(b, -1, -1))
        forgot, kept = predict_each(edit.edited, (x_t, t, y), (x_k, tk, yk))
        value = F.mse_loss(forgot.float(), goal) + under_fine_tune(step)
        return value + cfg.keep_weight * F.mse_loss(kept.float(), edit.frozen(x_k, tk, yk).float())

    def under_fine_tune(step: int) -> torch.Tensor:
        """The forget term on extra rows of one concept with its weight adversary's LoRA added (0 when off)."""
        if not fine_tunes:
            return torch.zeros((), device=device)
        k = step % len(concepts)
        tuner = fine_tunes[k]
        tuner.step(sched)
        m = b - b // 2
        i = k * cfg.images + randint(cfg.images, m, gen, device)
        x_t, t, goal = forget_rows(i, randint(len(anchor_latents), m, gen, device))
        y = tuner.conds[randint(len(tuner.conds), m, gen, device)]
        return F.mse_loss(tuner.under(x_t, t, y).float(), goal)

    forget_conds = conds
    found: list[tuple[int, torch.Tensor]] = []
    phases = [cfg.steps // (cfg.rounds + 1)] * cfg.rounds
    phases.append(cfg.steps - sum(phases))
    adversarial = _Adversary(pipe, cfg, generator(cfg.seed, "lethe/adversary"), "lethe_adv") \
        if cfg.adversary_steps else nullcontext()
    with adversarial as adversary:
        for r, steps in enumerate(phases):
            if r:  # the edit so far: find the embeddings that still reach each concept, and forget under them too
                with Patch(edit.tensors()).applied(pipe, force=True):
                    for k in range(len(concepts)):
                        learned = invert(pipe, concept_images[k], InversionConfig(
                            n_tokens=cfg.inversion_tokens, steps=cfg.inversion_steps,
                            seed=seed_stream(cfg.seed, f"lethe/{r}/{k}"), progress=False))
                        found.append((k, learned.embeddings))
                forget_conds = torch.cat([conds, adversarial_prompts(pipe, found)])
            settings = LoopSettings(steps=steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress)
            train(edit, loss, settings, f"lethe {', '.join(c.name for c in concepts)} ({r + 1}/{len(phases)})")
    return make_patch(edit.tensors(), "lethe", concepts, cfg, adversarial_embeddings=len(found))
