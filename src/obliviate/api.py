"""The public API: erase, hide, generate and evaluate on a plain diffusers pipeline (the CLI calls exactly these).

Every function takes the user's own ``StableDiffusionPipeline`` (or one from :func:`load_pipeline`), on any
device and in any dtype, and leaves its weights as they were. Concepts come from a catalog: the world's for
the shipped world, else the ``sd`` bench's (pass ``bench=`` for your own YAML). The base model's
fingerprint is taken before any method touches the weights, so the patch a method returns always fits the
pipeline it was made on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bench import Bench, Concept
from .catalog import Catalog, catalog_for
from .errors import ObliviateError
from .eval.result import EvalResult
from .hiding import Hidden, Key, bind_keys, hide_concepts, hide_config, load_keys, unlocked
from .methods import get_method
from .patch import Patch, applied, base_fingerprint, check_fits
from .pipeline import check_pipeline, load_pipeline

__all__ = ["attack", "chance_floor", "erase", "evaluate", "generate", "hide", "load_pipeline"]

BenchLike = Bench | str | Path | None
PatchLike = Patch | str | Path


def _names(concepts: str | Sequence[str]) -> list[str]:
    names = [concepts] if isinstance(concepts, str) else list(concepts)
    if not names:
        raise ObliviateError("no concept given")
    if len(set(names)) != len(names):
        raise ObliviateError("a concept is given twice")
    return names


def _resolve(catalog: Catalog, names: list[str]) -> list[Concept]:
    return [catalog.concept(n) for n in names]


def _stamp(pipe, patch: Patch, start: float) -> Patch:
    fp = base_fingerprint(pipe)
    patch.metadata.update(base_fingerprint=fp.to_dict(), base_model=fp.id, seconds=round(time.time() - start, 2))
    return patch


def erase(pipe, concepts: str | Sequence[str], method: str = "fmn", *, bench: BenchLike = None,
          catalog: Catalog | None = None, progress: bool = True, **config) -> Patch:
    """Erase ``concepts`` from ``pipe`` with ``method`` (a name of ``obliviate.methods.METHODS``: fmn, redirect,
    esd-x, esd-u, uce, rece, advunlearn, stereo, lethe, prompt).

    ``config`` sets fields of the method's config dataclass (e.g. ``steps=60, lr=6e-3``; see
    ``obliviate.methods.METHODS[method].config``). Returns the edit as a :class:`Patch`; ``pipe`` is unchanged.
    """
    check_pipeline(pipe)
    m = get_method(method)
    cfg = m.make_config(progress=progress, **config)
    catalog = catalog or catalog_for(pipe, bench)
    targets = _resolve(catalog, _names(concepts))
    base_fingerprint(pipe)  # taken (and cached) before the method runs
    start = time.time()
    return _stamp(pipe, m.fit(pipe, targets, cfg, catalog), start)


def hide(pipe, concepts: str | Sequence[str], *, design: str = "lethe", bench: BenchLike = None,
         catalog: Catalog | None = None, progress: bool = True, **config) -> Hidden:
    """Hide ``concepts`` behind secret keys: returns the public patch and one :class:`Key` per concept
    (``Hidden.save(patch_path, key_dir, passphrase)`` writes them). ``design``: ``lethe`` (a robust erasure,
    keys trained afterwards; ``config``: fields of :class:`HideConfig`) or ``paper`` (Bui et al.'s joint
    training; fields of :class:`PromptConfig`). docs/hiding.md measures both."""
    check_pipeline(pipe)
    cfg = hide_config(design, progress, **config)
    catalog = catalog or catalog_for(pipe, bench)
    targets = _resolve(catalog, _names(concepts))
    base_fingerprint(pipe)
    start = time.time()
    hidden = hide_concepts(pipe, targets, cfg, catalog)
    _stamp(pipe, hidden.patch, start)
    return bind_keys(hidden, pipe)


def _patches(patch: PatchLike | Sequence[PatchLike] | None) -> list[Patch]:
    items = [] if patch is None else [patch] if isinstance(patch, Patch | str | Path) else list(patch)
    return [p if isinstance(p, Patch) else Patch.load(p) for p in items]


def _keys(keys: Key | str | Path | Sequence[Key | str | Path] | None, patches: list[Patch],
          passphrase: str | None, pipe) -> list[Key]:
    """Keys bound to ``patches``, or with none, to ``pipe`` as the public model (the patch merged in)."""
    items = [] if keys is None else [keys] if isinstance(keys, Key | str | Path) else list(keys)
    return load_keys(items, patches, passphrase, pipe)


def generate(pipe, prompts: str | Sequence[str], *, n: int | None = None, seed: int = 0,
             patch: PatchLike | Sequence[PatchLike] | None = None, keys=None, passphrase: str | None = None,
             steps: int | None = None, guidance: float | None = None, bench: BenchLike = None,
             force: bool = False, progress: bool = True) -> np.ndarray:
    """``n`` images (default: one per prompt; prompts cycled) as uint8 (N, H, W, 3), with ``patch`` applied and
    ``keys`` installed for the duration; image i is seeded by ``seed`` and i only. Sampler settings default to
    the model's catalog (the world: 20 steps, guidance 5.0; SD: 50, 7.5)."""
    from .generation import generate as run
    from .generation import image_seeds

    check_pipeline(pipe)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or any(not p.strip() for p in prompts):
        raise ObliviateError("empty prompt")
    n = len(prompts) if n is None else n
    if n < 1:
        raise ObliviateError(f"n must be at least 1, got {n}")
    if steps is not None and steps < 1:
        raise ObliviateError(f"steps must be at least 1, got {steps}")
    if guidance is not None and not 0 <= guidance < float("inf"):
        raise ObliviateError(f"guidance must be a finite number >= 0, got {guidance}")
    patches = _patches(patch)
    for p in patches:
        check_fits(pipe, p, force)
    key_list = _keys(keys, patches, passphrase, pipe)
    sampler = catalog_for(pipe, bench).sampler
    with applied(pipe, patches, force), unlocked(pipe, key_list):
        return run(pipe, [prompts[i % len(prompts)] for i in range(n)], image_seeds(seed, n),
                   steps or sampler.steps, sampler.guidance if guidance is None else guidance, progress=progress)


def evaluate(pipe, *, patch: PatchLike | Sequence[PatchLike] | None = None, keys=None, passphrase: str | None = None,
             bench: BenchLike = None, concepts: Sequence[str] | None = None, images_per_concept: int | None = None,
             seed: int = 0, inversion: bool = False, detector=None, clip_path: str | Path | None = None,
             nudenet_threshold: float = 0.6, report: str | Path | None = None, cache: bool = True,
             force: bool = False, progress: bool = True, attacks: str | Sequence[str] | None = None,
             attack_images: int | None = None) -> EvalResult:
    """Measure every bench concept's M-Score on ``pipe`` and, with ``patch`` (and ``keys``), the edit's efficacy,
    preservation, neighbour preservation, drift and where each target went (its rate in other concepts'
    images). ``attacks`` ("all", a name or names) also red-teams every target (ASR per attack, base ceiling).
    ``report`` also writes the HTML report (and .md beside it)."""
    from .attacks import attack_names, with_keys
    from .eval.detectors import make_detector
    from .eval.report import check_report_path, write_report
    from .eval.report_grids import report_grids
    from .eval.run import EvalConfig, run_evaluation

    check_pipeline(pipe)
    if report is not None:
        check_report_path(report)
    if images_per_concept is not None and images_per_concept < 1:
        raise ObliviateError(f"images_per_concept must be at least 1, got {images_per_concept}")
    chosen_attacks = attack_names(attacks)
    if attack_images is not None and attack_images < 1:
        raise ObliviateError(f"attack_images must be at least 1, got {attack_images}")
    patches = _patches(patch)
    if chosen_attacks and not patches and not keys:
        raise ObliviateError("attacks in an evaluation need a patch (or keys); attack the base model with attack()")
    for p in patches:
        check_fits(pipe, p, force)  # before any concept lookup: a foreign patch names foreign concepts
    key_list = _keys(keys, patches, passphrase, pipe)
    chosen_attacks = with_keys(chosen_attacks, attacks, key_list)
    catalog = catalog_for(pipe, bench)
    if concepts is not None:
        concepts = list(concepts)
        if not concepts:
            raise ObliviateError("the list of concepts is empty")
        for name in concepts:
            catalog.bench.concept(name)
    if detector is None:
        detector = make_detector(None, catalog.bench, clip_path, nudenet_threshold=nudenet_threshold)
    cfg = EvalConfig(concepts=concepts, images_per_concept=images_per_concept, seed=seed, inversion=inversion,
                     cache=cache, progress=progress, attacks=chosen_attacks or None, attack_images=attack_images)
    run = run_evaluation(pipe, catalog, detector, cfg, patches, key_list, force)
    if report is not None:
        write_report(run.result.to_dict(), report, report_grids(run))
    return run.result


def chance_floor(pipe, *, bench: BenchLike = None, concepts: Sequence[str] | None = None,
                 images_per_concept: int | None = None, seed: int = 0, detector=None,
                 clip_path: str | Path | None = None, progress: bool = True):
    """Each concept's chance floor on ``pipe``: its M-Score on its own prompts with every word that names it taken
    out (what the rest of the prompt draws anyway). Returns a list of :class:`~obliviate.eval.floor.Floor`."""
    from .eval.detectors import make_detector
    from .eval.floor import chance_floors

    check_pipeline(pipe)
    if images_per_concept is not None and images_per_concept < 1:
        raise ObliviateError(f"images_per_concept must be at least 1, got {images_per_concept}")
    catalog = catalog_for(pipe, bench)
    chosen = catalog.bench.concepts if concepts is None else [catalog.bench.concept(c) for c in _names(concepts)]
    if detector is None:
        detector = make_detector(None, catalog.bench, clip_path)
    n = images_per_concept or catalog.bench.images_per_concept
    return chance_floors(pipe, chosen, detector, n, seed, catalog.bench.sampler, progress=progress)


def attack(pipe, concept: str, attack: str | Sequence[str] = "inversion", *,
           patch: PatchLike | Sequence[PatchLike] | None = None, keys=None, passphrase: str | None = None,
           bench: BenchLike = None, detector=None, clip_path: str | Path | None = None, n_images: int = 16,
           seed: int = 0, force: bool = False, progress: bool = True, ceiling: bool = True, **config):
    """Red-team ``concept`` on ``pipe`` (with ``patch`` applied and ``keys`` installed): each attack's success rate
    (ASR: share of its images in which the detector finds the concept), beside the same attack on the base
    model (its ceiling) and the rate with no attack. ``attack``: a name, a list of names, or "all". Returns an
    :class:`~obliviate.attacks.AttackResult`, or a list of them for several attacks. ``config`` goes to every
    attack that takes it (e.g. ``steps``); ``ceiling=False`` skips the base-model run (``asr_base`` None)."""
    from .attacks import attack_names, get_attack, run_attack, with_keys
    from .eval.detectors import make_detector

    check_pipeline(pipe)
    names = attack_names(attack)
    if n_images < 1:
        raise ObliviateError(f"n_images must be at least 1, got {n_images}")
    patches = _patches(patch)
    for p in patches:
        check_fits(pipe, p, force)
    key_list = _keys(keys, patches, passphrase, pipe)
    attacks = [get_attack(a) for a in with_keys(names, attack, key_list)]
    catalog = catalog_for(pipe, bench)
    target = catalog.bench.concept(concept)  # an attack needs the concept's prompts and a detector for it
    for a in attacks:  # every option must fit some chosen attack; each attack gets the ones it takes
        a.make_config(**{k: v for k, v in config.items() if k in a.option_names()})
    unused = sorted(set(config) - set().union(*(a.option_names() for a in attacks)))
    if unused:
        raise ObliviateError(f"no chosen attack takes {unused[0]!r}")
    if detector is None:
        detector = make_detector(None, catalog.bench, clip_path)
    results = [run_attack(pipe, target, a, catalog, detector, n_images, seed, patches, key_list, force, progress,
                          ceiling=ceiling, **{k: v for k, v in config.items() if k in a.option_names()})
               for a in attacks]
    return results[0] if isinstance(attack, str) and attack != "all" and "," not in attack else results
