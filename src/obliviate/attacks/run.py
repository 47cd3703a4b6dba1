"""Run an attack and measure its success rate on the model under test and on the base model."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..bench import Concept
from ..catalog import Catalog
from ..under_test import ModelUnderTest
from . import Attack, with_keys
from .base import AttackResult, Probe, probe_images

REACHED = 0.9  # the rate at which a learning attack counts as having brought the concept back


def _rate(detector, images: np.ndarray, concept: Concept) -> float:
    return float(np.mean(detector.hits(images, concept)))


def _asr(detector, images: np.ndarray, probe: Probe, concept: Concept, n: int) -> dict[str, float]:
    """ASR overall and, for completion, per strength (the images come in blocks of ``n`` per strength)."""
    if not probe.strengths:
        return {"all": _rate(detector, images, concept)}
    return {str(s): _rate(detector, images[i * n:(i + 1) * n], concept) for i, s in enumerate(probe.strengths)}


def _learning_curve(pipe, probe: Probe, detector, concept: Concept, n: int, seed: int, sampler,
                    final: float | None) -> dict:
    """For attacks that learn (relearning): the concept's rate at each checkpoint up to the first at which it
    reached ``REACHED``, and that checkpoint's step and seconds (None: not within the budget). ``final``: the
    rate already measured on the probe itself, which is the last checkpoint."""
    if not probe.checkpoints:
        return {}
    by_step, reached = {}, (None, None)
    last = len(probe.checkpoints) - 1
    for i, (step, seconds, key) in enumerate(probe.checkpoints):
        shown = replace(probe, key=key, checkpoints=[])
        by_step[step] = final if i == last else \
            _rate(detector, probe_images(pipe, shown, n, seed, sampler)[0], concept)
        if by_step[step] >= REACHED:
            reached = (step, round(seconds, 2))
            break
    return {"rate_by_step": by_step, "steps_to_reach": reached[0], "seconds_to_reach": reached[1],
            "reach": REACHED, "budget": probe.checkpoints[-1][0]}


def _on(pipe, attack: Attack, concept: Concept, cfg, catalog: Catalog, prepared, detector, n: int) \
        -> tuple[dict[str, float], dict]:
    """The attack on a model with no edit to apply (the base model, the oracle): its ASR and learning curve."""
    probe = attack.run(pipe, concept, cfg, catalog, prepared)
    rates = _asr(detector, probe_images(pipe, probe, n, cfg.seed, catalog.sampler)[0], probe, concept, n)
    return rates, _learning_curve(pipe, probe, detector, concept, n, cfg.seed, catalog.sampler, rates.get("all"))


def run_attack(model: ModelUnderTest, concept: Concept, attack: Attack, cfg, catalog: Catalog, detector,
               n_images: int, ceiling: bool = True, keep_images: int = 0, oracle=None) -> AttackResult:
    """Attack ``concept`` on the model under test (``cfg``: the attack's config, its seed the images' too), on
    the base model and, given ``oracle`` (a pipeline of the world retrained without the concept), on it.

    The completion probe reports its ASR at the strongest noise level at which the base model still completes
    the concept (>= 0.8; else the weakest level): beyond it, a miss says nothing about the edit.
    ``ceiling=False`` skips the base-model run; ``keep_images`` keeps that many of the attack's images and of
    the no-attack images on the result (for reports; not in its JSON). The oracle run starts from what the
    attacker prepared on the base model, as the run on the model under test does.
    """
    with_keys([attack.name], attack.name, model.keys)  # raises for the relearning attacks
    pipe, sampler, seed, edited = model.pipe, catalog.sampler, cfg.seed, model.edited
    start = time.time()
    prepared = attack.prepare(pipe, concept, cfg, catalog) if attack.prepare else None  # on the base model
    seconds = time.time() - start
    base = None
    base_curve: dict = {}
    if edited and ceiling:  # the same attack where the concept exists: its ceiling
        base, base_curve = _on(pipe, attack, concept, cfg, catalog, prepared, detector, n_images)
    floor, floor_curve = _on(oracle, attack, concept, cfg, catalog, prepared, detector, n_images) \
        if oracle is not None else (None, {})
    with model.applied():
        plain, _ = probe_images(pipe, Probe(list(concept.prompts)), n_images, seed, sampler)
        start = time.time()
        probe = attack.run(pipe, concept, cfg, catalog, prepared)
        images, _ = probe_images(pipe, probe, n_images, seed, sampler)
        seconds += time.time() - start
        rates = _asr(detector, images, probe, concept, n_images)
        curve = _learning_curve(pipe, probe, detector, concept, n_images, seed, sampler, rates.get("all"))
    base = base or (rates if not edited else None)
    details: dict = {}
    if curve:
        details = {**curve, **{f"{who}_{k}": other[k] for who, other in (("base", base_curve), ("oracle", floor_curve))
                               if other for k in ("steps_to_reach", "seconds_to_reach")}}
    key = "all"
    if probe.strengths:
        usable = [s for s in rates if base is not None and base[s] >= 0.8]
        key = usable[-1] if usable else next(iter(rates))
        details = {"strength": float(key), "asr_by_strength": rates, "asr_base_by_strength": base}
        if floor is not None:
            details["asr_oracle_by_strength"] = floor
    texts = None if probe.init_images is not None or probe.learned is not None else list(probe.prompts)
    result = AttackResult(concept.name, attack.name, rates[key], None if base is None else base[key],
                          _rate(detector, plain, concept), n_images, round(seconds, 2), texts, details,
                          asr_oracle=None if floor is None else floor[key])
    if keep_images:
        shown = images if not probe.strengths else images[list(rates).index(key) * n_images:][:n_images]
        result.images, result.clean_images = shown[:keep_images], plain[:keep_images]
    return result
