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
model) instead of the paper's prefix. The adversary (:class:`.adversaries.SignedTokenAttack`) is warm-started
from the previous outer step (the paper restarts it), so a few inner steps per outer step keep it strong at a
fraction of the cost.
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, partial_sampler, predict_each, randint, training_scheduler
from ..families import Conditioning, encode, predict, text_encoders, token_embeddings
from ..inversion import LearnedTokens, TokenRows, installed
from ..patch import Patch
from ..terms import distance, esd_point, esd_target, keep_bank, keep_rows, swap, training_prompts
from .adversaries import SignedTokenAttack
from .configs import AdvUnlearnConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["AdvUnlearnConfig", "fit"]


def fit(pipe, concepts: list[Concept], cfg: AdvUnlearnConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` by adversarial unlearning; edits the text encoder (default) or the UNet's attn2."""
    gen = generator(cfg.seed)
    pairs = [(c, p) for c in concepts for p in training_prompts(c, cfg.train_on)]
    conds = encode(pipe, [p for _, p in pairs])
    uncond = encode(pipe, [""]).expand(cfg.batch_size)
    sampler, sched = partial_sampler(pipe, cfg.ddim_steps), training_scheduler(pipe)
    bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed) if cfg.preserve_weight else None
    table = token_embeddings(pipe)
    names = [f"<advunlearn_{i}>" for i in range(cfg.attack.tokens)]
    start = table[randint(len(table), cfg.attack.tokens, gen, table.device)]

    with installed(pipe, LearnedTokens(names, start.cpu())) as phrase:
        tokens = TokenRows(pipe, names)  # in the installed copy of the text encoder, which knows the tokens
        adversary = SignedTokenAttack(start.to(table.device).clone(), cfg.attack.lr * table.std().item(),
                                      cfg.attack.steps)
        adv_ids = tokens.token_ids([f"{phrase} {p}" if cfg.attack.at == "prefix" else swap(p, c, phrase)
                                    for c, p in pairs])
        keep_ids = None if bank is None else tokens.token_ids(bank.prompts)
        text_edit = cfg.trainable == "text-encoder"
        # the paper's text-encoder edit covers every text encoder of the family (SDXL: both)
        edits = [Edit(pipe, "text-encoder", component=c, seed=cfg.seed) for c in text_encoders(pipe)] if text_edit \
            else [Edit(pipe, "attn2", seed=cfg.seed)]
        edit = edits[0]

        def encode_adv(ids: torch.Tensor, rows: torch.Tensor, detach: bool = False) -> Conditioning:
            weights = {f"{e.component}.{n}": w for e in edits for n, w in e.weights(detach).items()}
            return tokens.encode(ids, rows, weights if text_edit else None)

        def edited(x: torch.Tensor, t: torch.Tensor, cond: Conditioning, detach: bool = False) -> torch.Tensor:
            # a text-encoder edit reaches the frozen UNet through ``cond``
            return predict(pipe, x, t, cond) if text_edit else edit.edited(x, t, cond, detach=detach)

        def loss(step: int) -> torch.Tensor:
            b = cfg.batch_size
            pick = randint(len(conds), b, gen, conds.device)
            cond, ids = conds[pick], adv_ids[pick.to(adv_ids.device)]
            x_t, t = esd_point(pipe, edit.frozen, sampler, cond, uncond, gen, cfg.start_guidance)
            kept = keep_rows(bank, sched, b, gen) if bank is not None else None
            retain = [(kept.x, kept.t, kept.cond)] if kept is not None else []
            target, _, e_cond, goal = esd_target(edit.frozen, x_t, t, cond, uncond, cfg.eta, *retain)
            rows = adversary.step(lambda adv: distance(edited(x_t, t, encode_adv(ids, adv, detach=True), detach=True),
                                                       e_cond))  # the adversary: draw the concept again
            if kept is None:
                return distance(edited(x_t, t, encode_adv(ids, rows)), target)
            states = encode_adv(torch.cat([ids, keep_ids[kept.k.to(keep_ids.device)]]), rows)  # no token kept
            unlearned, retained = predict_each(edited, (x_t, t, states[:b]), (kept.x, kept.t, states[b:]))
            return distance(unlearned, target) + cfg.preserve_weight * distance(retained, goal[0])

        settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress,
                                extra_groups=[{"params": e.parameters(), "lr": cfg.lr} for e in edits[1:]])
        train(edit, loss, settings, f"advunlearn {', '.join(c.name for c in concepts)}")
        return make_patch({k: v for e in edits for k, v in e.tensors().items()}, "advunlearn", concepts, cfg)
