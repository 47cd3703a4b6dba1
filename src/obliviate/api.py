"""The public API: erase, hide, generate, evaluate and attack on a plain diffusers pipeline (the command line calls
exactly these).

Every function takes the user's own pipeline (or one from :func:`load_pipeline`), on any device and in any dtype,
and leaves its weights as they were. Concepts come from a catalog: the world's for the shipped world, else the
``sd`` bench's (pass ``bench=`` for your own YAML). Generation, evaluation and attacks take the model under test
as a pipeline with ``patch=`` / ``keys=``, or as one :class:`~obliviate.under_test.ModelUnderTest`
(:func:`under_test`). Every value is checked before any work (:mod:`.preflight`); the base model's fingerprint
is taken before any method touches the weights, so a patch always fits the pipeline it was made on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bench import Bench
from .catalog import Catalog, catalog_for
from .errors import ObliviateError
from .eval.result import EvalResult
from .families import family_of
from .files import oracle_without
from .hiding import Hidden, bind_keys, hide_concepts, hide_config
from .methods import get_method
from .options import Check, at_least, non_negative
from .patch import Patch, base_fingerprint
from .pipeline import check_pipeline, load_pipeline
from .preflight import attack_request, check_count, concept_names, erased_by, resolve_oracle
from .under_test import ModelUnderTest, under_test

__all__ = ["attack", "chance_floor", "erase", "evaluate", "generate", "hide", "load_pipeline", "under_test"]

BenchLike = Bench | str | Path | None


def _stamp(pipe, patch: Patch, start: float) -> Patch:
    fp = base_fingerprint(pipe)
    patch.metadata.update(base_fingerprint=fp.to_dict(), base_model=fp.id, family=family_of(pipe).key,
                          seconds=round(time.time() - start, 2))
    return patch


def _number(value: float | int | None, check: Check, what: str) -> None:
    if value is not None and not check.test(value):
        raise ObliviateError(f"{what} must be {check.rule}, got {value!r}")


def erase(pipe, concepts: str | Sequence[str], method: str = "fmn", *, preset: str | None = None, config=None,
          bench: BenchLike = None, catalog: Catalog | None = None, progress: bool = True, **options) -> Patch:
    """Erase ``concepts`` from ``pipe`` with ``method`` (a name of ``obliviate.METHODS``: fmn, redirect, esd-x,
    esd-u, uce, rece, advunlearn, stereo, lethe, prompt).

    ``options`` set fields of the method's config (``obliviate.METHODS[method].config``, e.g. ``steps=60``;
    nested options by their flat name, ``adversary_steps=3``), on top of ``preset`` (a named, measured setting:
    ``METHODS[method].presets``, or one picked per erasure by a probe of ``pipe``: ``METHODS[method].chosen``,
    lethe's ``auto``); or pass a ready ``config``. Returns the edit as a :class:`Patch`; ``pipe`` is unchanged.
    """
    m = get_method(method)
    if config is not None and (options or preset):
        raise ObliviateError("give either a config or options (and a preset), not both")
    cfg = config if config is not None else m.make_config(preset, progress=progress, **options)
    names = concept_names(concepts)
    check_pipeline(pipe)
    catalog = catalog or catalog_for(pipe, bench)
    targets = [catalog.concept(n) for n in names]
    base_fingerprint(pipe)  # taken (and cached) before the method runs
    start = time.time()
    chosen = {}
    if preset in m.chosen:  # the probe picks the preset (its time counts as the erasure's)
        from .decided import EARLY, decided_early

        contrast = decided_early(pipe, targets, catalog, seed=cfg.seed)
        picked = m.chosen[preset] if any(rho > EARLY for rho in contrast.values()) else None
        cfg = m.make_config(picked, progress=progress, **options)
        chosen = {"preset_chosen": picked or "defaults", "prompt_contrast": contrast}
    patch = m.fit(pipe, targets, cfg, catalog)
    if preset is not None:
        patch.metadata.update(preset=preset, **chosen)
    return _stamp(pipe, patch, start)


def hide(pipe, concepts: str | Sequence[str], *, design: str = "lethe", config=None, bench: BenchLike = None,
         catalog: Catalog | None = None, progress: bool = True, **options) -> Hidden:
    """Hide ``concepts`` behind secret keys: returns the public patch and one :class:`~obliviate.Key` per concept
    (``Hidden.save(patch_path, key_dir, passphrase)`` writes them). ``design``: ``lethe`` (a robust erasure,
    keys trained afterwards; ``options``: :class:`~obliviate.hiding.HideConfig`'s, e.g. ``steps`` per concept,
    ``key_steps``) or ``paper`` (Bui et al.'s joint training; :class:`~obliviate.hiding.PaperHideConfig`'s).
    docs/hiding.md measures both."""
    if config is not None and options:
        raise ObliviateError("give either a config or options, not both")
    cfg = config if config is not None else hide_config(design, progress, **options)
    names = concept_names(concepts)
    check_pipeline(pipe)
    catalog = catalog or catalog_for(pipe, bench)
    targets = [catalog.concept(n) for n in names]
    base_fingerprint(pipe)
    start = time.time()
    hidden = hide_concepts(pipe, targets, cfg, catalog)
    _stamp(pipe, hidden.patch, start)
    return bind_keys(hidden, pipe)


def generate(pipe, prompts: str | Sequence[str], *, n: int | None = None, seed: int = 0, patch=None, keys=None,
             passphrase: str | None = None, steps: int | None = None, guidance: float | None = None,
             bench: BenchLike = None, force: bool = False, progress: bool = True) -> np.ndarray:
    """``n`` images (default: one per prompt; prompts cycled) as uint8 (N, H, W, 3), with ``patch`` applied and
    ``keys`` installed for the duration (or ``pipe`` a :class:`ModelUnderTest`); image i is seeded by ``seed``
    and i only. Sampler settings default to the model's catalog (the world: 20 steps, guidance 5.0; SD: 50,
    7.5)."""
    from .generation import generate as run
    from .generation import image_seeds

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or any(not p.strip() for p in prompts):
        raise ObliviateError("empty prompt")
    n = len(prompts) if n is None else n
    _number(n, at_least(1), "n")
    _number(steps, at_least(1), "steps")
    _number(guidance, non_negative, "guidance")
    model = under_test(pipe, patch, keys, passphrase, force)
    sampler = catalog_for(model.pipe, bench).sampler
    with model.applied():
        return run(model.pipe, [prompts[i % len(prompts)] for i in range(n)], image_seeds(seed, n),
                   steps or sampler.steps, sampler.guidance if guidance is None else guidance, progress=progress)


def evaluate(pipe, *, patch=None, keys=None, passphrase: str | None = None, bench: BenchLike = None,
             concepts: Sequence[str] | None = None, images_per_concept: int | None = None, seed: int = 0,
             inversion: bool = False, detector=None, clip_path: str | Path | None = None,
             nudenet_threshold: float = 0.6, report: str | Path | None = None, cache: bool = True,
             force: bool = False, progress: bool = True, attacks: str | Sequence[str] | None = None,
             attack_images: int | None = None, oracle: str | Path | bool | None = None) -> EvalResult:
    """Measure every bench concept's M-Score on the model under test and, for an edit, its efficacy,
    preservation, neighbour preservation, drift and where each target went (its rate in other concepts'
    images). ``detector``: "world", "clip", "nudenet" or a detector object (default: the bench's). ``attacks``
    ("all", a name or names) also red-teams every target (ASR per attack, base ceiling). ``report`` also
    writes the HTML report (and .md beside it). ``oracle`` (True, or an oracle world's folder) also evaluates
    the world retrained without the erased concepts as if it were their erasure (``result.oracle``: what a
    perfect erasure scores and costs) and runs every attack on it; on the unedited world, a folder's oracle is
    evaluated against it."""
    from .eval.report import check_report_path, write_report
    from .eval.report_grids import report_grids
    from .eval.run import EvalConfig, run_evaluation

    if report is not None:
        check_report_path(report)
    check_count(images_per_concept, "images_per_concept")
    check_count(attack_images, "attack_images")
    concepts = None if concepts is None else list(concepts)
    if concepts is not None and not concepts:
        raise ObliviateError("the list of concepts is empty")
    model = under_test(pipe, patch, keys, passphrase, force)
    floor, without = _oracle(model, [], oracle)
    chosen = attack_request(attacks, model.edited or floor is not None, model.keys)
    catalog = catalog_for(model.pipe, bench)
    for name in concepts or []:
        catalog.bench.concept(name)
    detector = _detector(detector, catalog, clip_path, nudenet_threshold)
    cfg = EvalConfig(concepts=concepts, images_per_concept=images_per_concept, seed=seed, inversion=inversion,
                     cache=cache, progress=progress, attacks=chosen or None, attack_images=attack_images)
    run = run_evaluation(model, catalog, detector, cfg, oracle=floor, oracle_without=without)
    if report is not None:
        write_report(run.result.to_dict(), report, report_grids(run))
    return run.result


def _oracle(model: ModelUnderTest, concepts: Sequence[str], oracle: str | Path | bool | None) \
        -> tuple[object | None, list[str]]:
    """The oracle pipeline to compare with, on the model's device and dtype, and the concepts it never saw
    ((None, []): none asked): the world retrained without the concepts the model under test erased (else
    ``concepts``)."""
    folder = resolve_oracle(model.pipe, erased_by([p.concepts for p in model.patches], concepts), oracle)
    if folder is None:
        return None, []
    from .world.oracle import load_oracle

    return load_oracle(folder, like=model.pipe), oracle_without(folder) or []


def _detector(detector, catalog: Catalog, clip_path: str | Path | None, nudenet_threshold: float = 0.6):
    """A detector object as it is; a name ("world", "clip", "nudenet") or None (the bench's) made for the bench."""
    if detector is not None and not isinstance(detector, str):
        return detector
    from .eval.detectors import make_detector

    return make_detector(detector, catalog.bench, clip_path, nudenet_threshold=nudenet_threshold)


def chance_floor(pipe, *, bench: BenchLike = None, concepts: Sequence[str] | None = None,
                 images_per_concept: int | None = None, seed: int = 0, detector=None,
                 clip_path: str | Path | None = None, progress: bool = True):
    """Each concept's chance floor on ``pipe``: its M-Score on its own prompts with every word that names it taken
    out (what the rest of the prompt draws anyway). Returns a list of :class:`~obliviate.eval.floor.Floor`."""
    from .eval.floor import chance_floors

    check_pipeline(pipe)
    check_count(images_per_concept, "images_per_concept")
    catalog = catalog_for(pipe, bench)
    chosen = catalog.bench.concepts if concepts is None else [catalog.bench.concept(c) for c in
                                                              concept_names(concepts)]
    n = images_per_concept or catalog.bench.images_per_concept
    return chance_floors(pipe, chosen, _detector(detector, catalog, clip_path), n, seed, catalog.bench.sampler,
                         progress=progress)


def attack(pipe, concept: str, attack: str | Sequence[str] = "inversion", *, patch=None, keys=None,
           passphrase: str | None = None, bench: BenchLike = None, detector=None,
           clip_path: str | Path | None = None, n_images: int = 16, seed: int = 0, force: bool = False,
           progress: bool = True, ceiling: bool = True, oracle: str | Path | bool | None = None,
           configs: list | None = None, **options):
    """Red-team ``concept`` on the model under test: each attack's success rate (ASR: share of its images in which
    the detector finds the concept), beside the same attack on the base model (its ceiling) and the rate with
    no attack. ``attack``: a name, a list of names, or "all". Returns an
    :class:`~obliviate.attacks.AttackResult`, or a list of them for several attacks. ``options`` go to every
    attack that takes them (e.g. ``steps``; one that no chosen attack takes is an error); ``ceiling=False``
    skips the base-model run (``asr_base`` None); ``oracle`` (True, or an oracle world's folder) also runs each
    attack on the world retrained without the erased concepts (``asr_oracle``: what it reaches against exact
    unlearning; an attack that succeeds there teaches rather than recovers); ``configs``: ready configs, one per chosen
    attack, instead."""
    from .attacks import attack_configs, attack_names, get_attack, run_attack, with_keys

    names = attack_names(attack)
    check_count(n_images, "n_images")
    model = under_test(pipe, patch, keys, passphrase, force)
    attacks = [get_attack(a) for a in with_keys(names, attack, model.keys)]
    if configs is not None and (options or len(configs) != len(attacks)):
        raise ObliviateError("give one config per chosen attack, or options, not both")
    configs = configs if configs is not None else attack_configs(attacks, options, seed, progress)
    catalog = catalog_for(model.pipe, bench)
    target = catalog.bench.concept(concept)  # an attack needs the concept's prompts and a detector for it
    floor, _ = _oracle(model, [concept], oracle)
    detector = _detector(detector, catalog, clip_path)
    results = [run_attack(model, target, a, cfg, catalog, detector, n_images, ceiling=ceiling, oracle=floor)
               for a, cfg in zip(attacks, configs, strict=True)]
    return results[0] if isinstance(attack, str) and attack != "all" and "," not in attack else results


__all__ += ["ModelUnderTest"]
