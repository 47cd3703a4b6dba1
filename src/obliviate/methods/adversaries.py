"""The adversaries that erasures train against, in one place: AdvUnlearn's inner attack, Lethe's persistent
concept-inversion adversary, and the fine-tuning adversary on the weights that hiding may add to Lethe.

* **Signed token attack** (AdvUnlearn, Zhang et al. 2024): prefix (or replacing) token embeddings p,
  ``steps`` signed-gradient steps per outer step, warm-started from the previous one (the paper restarts it):

      p <- p - lr * sign( grad_p || f_theta'(x_t, [p; c], t) - f_theta(x_t, c, t) ||^2 )

* **Inversion adversary** (Lethe's ``adversary``): token embeddings v that take Adam steps of concept
  inversion's own loss against the edit as it is before every training step,

      v <- v - lr * Adam( grad_v || f_theta'(x_t, c(v), t) - target(x0_c, eps, t) ||^2 ),   x0_c ~ images of c

  and condition extra forget rows: the rounds' inversions see the edit at a few moments, this one follows it.
* **Weight adversary** (hiding's ``weight_adversary``): per concept, a LoRA of the key-learning attack's shape
  that keeps fine-tuning the edit back toward the concept with the ordinary denoising loss, a few Adam steps
  per outer step, restarted from zero every ``reset`` of them; the forget term is applied under it on extra
  rows (theta' + A, A held fixed). First-order meta-unlearning (Gao et al. 2024, "Meta-Unlearning on
  Diffusion Models"; TAR's weight-space adversary, Tamirisa et al. 2024). Measured in docs/hiding.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion import generator, randint, randn, seed_stream
from ..families import Conditioning, encode, token_embeddings
from ..inversion import LearnedTokens, TokenRows, installed
from ..terms import denoising_loss, distance, training_prompts
from .configs import InversionAdversary, WeightAdversary
from .loop import Edit

__all__ = ["InversionAdversaryRun", "SignedTokenAttack", "WeightAdversaryRun", "weight_adversary_term"]


class SignedTokenAttack:
    """AdvUnlearn's adversary: token rows moved by signed gradient steps, warm-started across outer steps."""

    def __init__(self, rows: torch.Tensor, step_size: float, steps: int) -> None:
        self.rows, self.step_size, self.steps = rows, step_size, steps

    def step(self, loss_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``steps`` signed steps down ``loss_of(rows)``; returns the rows found."""
        for _ in range(self.steps):
            adv = self.rows.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_of(adv), adv)
            self.rows = self.rows - self.step_size * grad.sign()
        return self.rows


class InversionAdversaryRun:
    """Token embeddings that keep learning to make the edit draw the concept again (concept inversion's loss),
    a few Adam steps against the edit as it is at each outer step. A context manager: its tokens are installed
    in a copy of the text encoder while it runs."""

    def __init__(self, pipe, cfg: InversionAdversary, tokens: int, gen: torch.Generator, tag: str) -> None:
        self.pipe, self.cfg, self.gen = pipe, cfg, gen
        emb = token_embeddings(pipe)
        init = emb.mean(0, keepdim=True) + randn((tokens, emb.shape[1]), gen, emb) * emb.std()
        self.learned = LearnedTokens([f"<{tag}{j}>" for j in range(tokens)], init.cpu())

    def __enter__(self) -> InversionAdversaryRun:
        self._installed = installed(self.pipe, self.learned)
        phrase = self._installed.__enter__()
        self.encoder = TokenRows(self.pipe, self.learned.tokens)
        self.rows = self.learned.embeddings.to(self.encoder.device).clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.rows], lr=self.cfg.lr)
        self.ids = self.encoder.token_ids([f"a photo of {phrase}"])
        return self

    def __exit__(self, *exc) -> None:
        self._installed.__exit__(*exc)

    def cond(self, n: int) -> Conditioning:
        return self.encoder.encode(self.ids, self.rows).expand(n)

    def step(self, edit: Edit, sched, latents: torch.Tensor) -> Conditioning:
        """``steps`` Adam steps against ``edit`` (no gradient reaches the edit); the conditioning found."""
        b = self.cfg.batch
        for _ in range(self.cfg.steps):
            loss = denoising_loss(sched, latents, b, self.gen,
                                  lambda x_t, t: edit.edited(x_t, t, self.cond(b), detach=True))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        with torch.no_grad():
            return self.cond(1)


class WeightAdversaryRun:
    """A LoRA that keeps fine-tuning ``edit`` back toward one concept (the key-learning attack's objective), a
    few Adam steps at a time, restarted from zero after ``cfg.reset`` of them."""

    def __init__(self, edit: Edit, cfg: WeightAdversary, latents: torch.Tensor, conds: Conditioning, seed: int,
                 tag: str) -> None:
        self.edit, self.cfg, self.latents, self.conds, self.seed, self.tag = edit, cfg, latents, conds, seed, tag
        self.gen = generator(seed, f"lethe/weight-adversary/{tag}")
        self.taken, self.restarts = 0, 0
        self._restart()

    def _restart(self) -> None:
        seed = seed_stream(self.seed, f"lethe/weight-adversary/{self.tag}/{self.restarts}")
        self.lora = Edit(self.edit.pipe, "lora", rank=self.cfg.rank, seed=seed)
        self.opt = torch.optim.Adam(self.lora.parameters(), lr=self.cfg.lr)
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
        """``cfg.steps`` Adam steps of the fine-tune against the edit as it is now."""
        if self.taken >= self.cfg.reset:
            self.taken = 0
            self._restart()
        b, device = self.cfg.batch, self.latents.device
        for _ in range(self.cfg.steps):
            loss = denoising_loss(sched, self.latents, b, self.gen, lambda x_t, t: self.edit.edited(
                x_t, t, self.conds[randint(len(self.conds), b, self.gen, device)], detach=True,
                override=self.weights(False)))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.taken += self.cfg.steps

    def under(self, x_t: torch.Tensor, t: torch.Tensor, y: Conditioning) -> torch.Tensor:
        """The edited model's output with the LoRA added (gradients reach the edit only)."""
        return self.edit.edited(x_t, t, y, override=self.weights(True))


def weight_adversary_term(cfg: WeightAdversary):
    """A term for Lethe's loss (``fit(..., extra=...)``): the forget term on extra rows of one concept per step
    (in turn) under that concept's weight adversary, which first takes its steps against the edit."""

    def make(forget) -> Callable[[int], torch.Tensor]:
        n = forget.n_images
        runs = [WeightAdversaryRun(forget.edit, cfg, forget.latents[k * n:(k + 1) * n],
                                   encode(forget.pipe, training_prompts(c)), forget.seed, c.name)
                for k, c in enumerate(forget.concepts)]

        def term(step: int) -> torch.Tensor:
            k = step % len(runs)
            run = runs[k]
            run.step(forget.sched)
            m, gen, device = forget.batch_size - forget.batch_size // 2, forget.gen, forget.latents.device
            x_t, t, goal = forget.rows(k * n + randint(n, m, gen, device), randint(len(forget.anchors), m, gen, device))
            return distance(run.under(x_t, t, run.conds[randint(len(run.conds), m, gen, device)]), goal)

        return term

    return make


