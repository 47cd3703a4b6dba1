"""Evaluation: M-Score per concept and category; with a patch, efficacy, preservation and drift.

Base-model results are cached on disk by (base fingerprint, dtype, device, bench spec, seed, images per
concept, sampler settings), so evaluating a second patch on the same model does not regenerate the base
images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bench import Concept
from ..catalog import Catalog
from ..errors import ObliviateError
from ..families import denoiser
from ..files import cache_root
from ..patch import Patch, base_fingerprint
from ..pipeline import model_name
from ..under_test import ModelUnderTest
from .detectors import hits_many
from .metrics import (
    efficacy,
    frechet_distance,
    harmonic_mean,
    mean_feature_distance,
    preservation,
    wilson_interval,
    worst_preserved,
)
from .mscore import ConceptImages, generate_concepts
from .result import CategoryScore, ConceptScore, Drift, Elsewhere, EvalResult, ModelInfo, PromptScore


def default_cache_dir() -> Path:
    return cache_root() / "eval"


@dataclass
class EvalConfig:
    concepts: list[str] | None = None
    images_per_concept: int | None = None  # None: the bench's
    seed: int = 0
    inversion: bool = False
    attacks: list[str] | None = None  # attack names run on every target (needs a patch or keys)
    attack_images: int | None = None  # images per attack (None: images per concept)
    progress: bool = True
    cache: bool = True
    grid_images: int = 8


@dataclass
class Pass:
    """One model state's measurements: M-Score, detector features and a few images per concept."""

    scores: dict[str, float]
    features: dict[str, np.ndarray]
    thumbs: dict[str, np.ndarray]
    prompts: dict[str, list[str]] = field(default_factory=dict)
    by_prompt: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # concept -> prompt -> [M, n]
    found: dict[str, dict[str, float]] = field(default_factory=dict)  # concept -> whose prompts -> rate seen
    thumb_hits: dict[str, list[bool]] = field(default_factory=dict)  # the detector's verdict on each kept image


def _per_prompt(prompts: list[str], hits: np.ndarray) -> dict[str, list[float]]:
    by: dict[str, list[float]] = {}
    for prompt, hit in zip(prompts, hits, strict=True):
        by.setdefault(prompt, []).append(float(hit))
    return {p: [float(np.mean(h)), len(h)] for p, h in by.items()}


def _measure(pipe, catalog: Catalog, concepts: list[Concept], n: int, seed: int, detector, keep: int,
             progress: bool, stage: str) -> Pass:
    sets: list[ConceptImages] = generate_concepts(pipe, concepts, n, seed, catalog.sampler, progress, desc=stage)
    seen = {s.concept.name: hits_many(detector, s.images, concepts) for s in sets}  # images' concept -> concept
    hits = {name: by[name] for name, by in seen.items()}
    return Pass(
        scores={name: float(np.mean(h)) for name, h in hits.items()},
        features={s.concept.name: detector.features(s.images) for s in sets},
        thumbs={s.concept.name: s.images[:keep] for s in sets},
        prompts={s.concept.name: s.prompts[:keep] for s in sets},
        by_prompt={s.concept.name: _per_prompt(s.prompts, hits[s.concept.name]) for s in sets},
        found={c.name: {other: float(np.mean(by[c.name])) for other, by in seen.items() if other != c.name}
               for c in concepts},
        thumb_hits={name: [bool(x) for x in h[:keep]] for name, h in hits.items()},
    )


def _cache_key(pipe, catalog: Catalog, concepts: list[Concept], n: int, seed: int) -> str:
    spec = json.dumps({"bench": catalog.bench.name, "concepts": [(c.name, c.category, c.prompts) for c in concepts],
                       "n": n, "seed": seed, "sampler": [catalog.sampler.steps, catalog.sampler.guidance],
                       "fingerprint": base_fingerprint(pipe).id, "dtype": str(denoiser(pipe).dtype),
                       "device": denoiser(pipe).device.type, "scheduler": type(pipe.scheduler).__name__, "v": 4},
                      sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:20]


def _base_pass(pipe, catalog: Catalog, concepts: list[Concept], n: int, cfg: EvalConfig, detector,
               stage: str = "base model images") -> Pass:
    """A model's measurements with no edit applied (the base model, an oracle), cached by its fingerprint."""
    path = default_cache_dir() / f"{_cache_key(pipe, catalog, concepts, n, cfg.seed)}.npz"
    if cfg.cache and path.is_file():
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
        return Pass(meta["scores"], {c.name: data[f"f_{i}"] for i, c in enumerate(concepts)},
                    {c.name: data[f"t_{i}"] for i, c in enumerate(concepts)}, meta["prompts"], meta["by_prompt"],
                    meta["found"], meta["thumb_hits"])
    result = _measure(pipe, catalog, concepts, n, cfg.seed, detector, cfg.grid_images, cfg.progress, stage)
    if cfg.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"f_{i}": result.features[c.name] for i, c in enumerate(concepts)}
        arrays |= {f"t_{i}": result.thumbs[c.name] for i, c in enumerate(concepts)}
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        meta = {"scores": result.scores, "prompts": result.prompts, "by_prompt": result.by_prompt,
                "found": result.found, "thumb_hits": result.thumb_hits}
        np.savez(tmp, meta=json.dumps(meta), **arrays)
        os.replace(tmp, path)
    return result


def _attack_all(model: ModelUnderTest, catalog: Catalog, detector, targets: list[Concept], names: list[str],
                cfg: EvalConfig, n: int, ceiling: bool = True, oracle=None) -> dict[str, list]:
    """Per target, each attack's result (with ``cfg.grid_images`` of its images kept for the report)."""
    from ..attacks import get_attack, run_attack

    out = {}
    for t in targets:
        out[t.name] = [run_attack(model, t, a, a.make_config(seed=cfg.seed, progress=cfg.progress), catalog, detector,
                                  n, ceiling=ceiling, keep_images=cfg.grid_images, oracle=oracle)
                       for a in map(get_attack, names)]
    return out


Verdicts = tuple[list[bool], list[bool]]  # the detector's verdicts on an attack's kept (no-attack, attack) images


@dataclass
class EvalRun:
    result: EvalResult
    base: Pass
    edited: Pass | None
    attack_hits: dict[str, dict[str, Verdicts]] = field(default_factory=dict)  # target -> attack -> verdicts


def run_evaluation(model: ModelUnderTest, catalog: Catalog, detector, cfg: EvalConfig, oracle=None,
                   oracle_without: list[str] | None = None) -> EvalRun:
    """Measure the model under test (and its base model) on ``catalog``'s bench; given ``oracle`` (the world
    retrained without ``oracle_without``, the model's targets if it has any), the oracle too, as an erasure of
    those concepts (``result.oracle``), and every attack on it."""
    start = time.time()
    bench = catalog.bench
    pipe, patches, keys = model.pipe, model.patches, model.keys
    n = cfg.images_per_concept or bench.images_per_concept
    targets = list(dict.fromkeys(t for p in patches for t in p.concepts))
    if oracle is not None and not targets:
        targets = list(oracle_without or [])
    for t in targets:
        if catalog.known(t) is None:
            raise ObliviateError(f"the patch erases {t!r}, which bench {bench.name!r} does not list; evaluate "
                                 "it with a bench that does (--bench FILE)")
    names = list(dict.fromkeys([*(cfg.concepts or [c.name for c in bench.concepts]), *targets]))
    concepts = bench.select(names)

    base = _base_pass(pipe, catalog, concepts, n, cfg, detector)
    edited = inversion = None
    if model.edited:
        with model.applied():
            edited = _measure(pipe, catalog, concepts, n, cfg.seed, detector, cfg.grid_images, cfg.progress,
                              "edited model images")
    floor = _base_pass(oracle, catalog, concepts, n, cfg, detector, "oracle images") if oracle is not None else None
    attacks = _attack_all(model, catalog, detector, [bench.concept(t) for t in targets], cfg.attacks, cfg,
                          cfg.attack_images or n, oracle=oracle) if cfg.attacks else None
    if cfg.inversion and attacks and "inversion" in cfg.attacks and (cfg.attack_images or n) == n:  # just measured
        inversion = {name: next(r.asr for r in results if r.attack == "inversion") for name, results in attacks.items()}
    elif cfg.inversion:  # the concept-inversion attack's ASR, on the targets (else every concept), no ceiling run
        inverted = _attack_all(model, catalog, detector, [bench.concept(t) for t in targets] or concepts,
                               ["inversion"], cfg, n, ceiling=False)
        inversion = {name: results[0].asr for name, results in inverted.items()}

    edit_targets = targets if model.edited else []
    result = _result(pipe, catalog, cfg, concepts, base, edited, n, edit_targets, patch=_patch_summary(patches),
                     inversion=inversion, keys=[k.concept for k in keys] or None, attacks=attacks)
    if floor is not None:
        result.targets = targets
        result.oracle = _result(oracle, catalog, cfg, concepts, base, floor, n, targets,
                                patch={"oracle": True, "concepts": targets})
    result.seconds = round(time.time() - start, 2)
    return EvalRun(result, base, edited, _attack_hits(detector, bench, attacks))


def _result(pipe, catalog: Catalog, cfg: EvalConfig, concepts: list[Concept], base: Pass, edited: Pass | None,
            n: int, targets: list[str], **extra) -> EvalResult:
    """The result of one model state against the base model's pass (``edited`` None: the base model alone)."""
    after = edited or base
    rows = [ConceptScore(c.name, c.category, base.scores[c.name], after.scores[c.name], n,
                         wilson_interval(after.scores[c.name], n), wilson_interval(base.scores[c.name], n),
                         _prompt_rows(base, after, c.name)) for c in concepts]
    categories = {cat: _category([r for r in rows if r.category == cat], n)
                  for cat in dict.fromkeys(r.category for r in rows)}
    fp = base_fingerprint(pipe)
    result = EvalResult(
        model=ModelInfo(model_name(pipe), fp.id, str(denoiser(pipe).device),
                        str(denoiser(pipe).dtype).replace("torch.", "")),
        seed=cfg.seed, bench=catalog.bench.name,
        sampler={"steps": catalog.sampler.steps, "guidance": catalog.sampler.guidance},
        concepts=rows, categories=categories, targets=targets or None, **extra)
    if edited is not None:
        _edit_metrics(result, targets, base, edited)
    return result


def _category(rows: list[ConceptScore], n: int) -> CategoryScore:
    m_base, m = float(np.mean([r.m_base for r in rows])), float(np.mean([r.m for r in rows]))
    total = n * len(rows)
    return CategoryScore(m_base, m, total, wilson_interval(m, total), wilson_interval(m_base, total))


def _attack_hits(detector, bench, attacks: dict[str, list] | None) -> dict[str, dict[str, Verdicts]]:
    """The detector's verdict on each image an attack result kept, so the report can show it under the image."""
    out: dict[str, dict[str, Verdicts]] = {}
    for target, results in (attacks or {}).items():
        concept = bench.concept(target)
        for r in results:
            if r.images is not None and len(r.images) and r.clean_images is not None and len(r.clean_images):
                verdicts = [[bool(x) for x in detector.hits(imgs, concept)] for imgs in (r.clean_images, r.images)]
                out.setdefault(target, {})[r.attack] = (verdicts[0], verdicts[1])
    return out


def _elsewhere(base: Pass, edited: Pass, target: str, n: int) -> Elsewhere:
    """How often the detector finds ``target`` in images of every other concept's prompts, base and edited:
    an edit that moved the concept instead of removing it shows up here, not in the target's own M-Score."""
    others = list(edited.found[target])
    m = float(np.mean([edited.found[target][o] for o in others])) if others else 0.0
    m_base = float(np.mean([base.found[target][o] for o in others])) if others else 0.0
    by = {o: (base.found[target][o], edited.found[target][o]) for o in others
          if base.found[target][o] > 0 or edited.found[target][o] > 0}
    total = n * len(others)
    return Elsewhere(m_base, m, total, wilson_interval(m, total), wilson_interval(m_base, total),
                     dict(sorted(by.items(), key=lambda kv: -kv[1][1])))


def _prompt_rows(base: Pass, after: Pass, name: str) -> list[PromptScore]:
    rows = []
    for p, (m_base, k) in base.by_prompt[name].items():
        m = after.by_prompt[name][p][0]
        rows.append(PromptScore(p, m_base, m, int(k), wilson_interval(m, int(k)), wilson_interval(m_base, int(k))))
    return rows


def _patch_summary(patches: list[Patch]) -> dict | None:
    if not patches:
        return None
    # The file a patch was read from and its hash name it for a reader; a patch made in memory has neither.
    metas = [{k: v for k, v in p.metadata.items() if k not in ("content_sha256", "base_fingerprint")}
             | ({"file": p.file, "content_sha256": p.file_sha256} if p.file else {}) for p in patches]
    return metas[0] if len(metas) == 1 else {"method": "+".join(m.get("method", "?") for m in metas),
                                              "concepts": [c for m in metas for c in m.get("concepts", [])],
                                              "patches": metas}


def _edit_metrics(result: EvalResult, targets: list[str], base: Pass, edited: Pass) -> None:
    by_name = {r.name: r for r in result.concepts}
    target_cats = {by_name[t].category for t in targets}
    n = by_name[targets[0]].n_images if targets else 0
    for t in targets:
        by_name[t].efficacy = efficacy(by_name[t].m_base, by_name[t].m)
        by_name[t].elsewhere = _elsewhere(base, edited, t, n)
    effs = [by_name[t].efficacy for t in targets if by_name[t].efficacy is not None]
    others = [r for r in result.concepts if r.name not in targets]
    result.efficacy = float(np.mean(effs)) if effs else None
    result.preservation = preservation([(r.m_base, r.m) for r in others])
    result.neighbour_preservation = preservation([(r.m_base, r.m) for r in others if r.category in target_cats])
    result.worst_preserved = worst_preserved([(r.name, r.m_base, r.m) for r in others])
    result.h = harmonic_mean(result.efficacy, result.preservation)
    if others:
        fa = np.concatenate([base.features[r.name] for r in others])
        fb = np.concatenate([edited.features[r.name] for r in others])
        result.drift = Drift(frechet_distance(fa, fb), mean_feature_distance(fa, fb))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _headline(result: dict) -> str:
    return (f"efficacy {_fmt(result['efficacy'])}  preservation {_fmt(result['preservation'])}  "
            f"neighbour preservation {_fmt(result['neighbour_preservation'])}  H {_fmt(result['h'])}")


def format_table(result: dict) -> str:
    """A Markdown table: one row per concept, then per-category means, then the headline numbers; with an
    oracle, its M-Score per concept and its headline beside them."""
    edited = result["patch"] is not None or bool(result.get("keys"))
    oracle = result.get("oracle")
    by_oracle = {r["name"]: r for r in oracle["concepts"]} if oracle else {}
    head = ("| concept | category | M base | M | 95% interval |" if edited else
            "| concept | category | M-Score | 95% interval |") + (" M oracle |" if oracle else "") + " images |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    targets = set(result["targets"] or [])
    for r in result["concepts"]:
        name = f"**{r['name']}** (target)" if r["name"] in targets else r["name"]
        lo, hi = r["interval"]
        cells = [name, r["category"]] + ([f"{r['m_base']:.3f}"] if edited else []) + [
            f"{r['m']:.3f}", f"{lo:.2f}-{hi:.2f}"] + ([f"{by_oracle[r['name']]['m']:.3f}"] if oracle else []) + [
            str(r["n_images"])]
        lines.append("| " + " | ".join(cells) + " |")
    for cat, v in result["categories"].items():
        cells = ["mean", cat] + ([f"{v['m_base']:.3f}"] if edited else []) + [f"{v['m']:.3f}", ""] + (
            [f"{oracle['categories'][cat]['m']:.3f}"] if oracle else []) + [""]
        lines.append("| " + " | ".join(cells) + " |")
    if edited:
        lines.append("")
        lines.append(_headline(result))
        worst = result.get("worst_preserved")
        if worst:
            lines.append(f"worst preserved: {worst['concept']} {worst['preservation']:.3f}")
        if result["drift"]:
            lines.append(f"drift: frechet {result['drift']['frechet']:.3f}  "
                         f"mean feature distance {result['drift']['mean_feature_distance']:.3f}")
        for r in result["concepts"]:
            if r["name"] in targets and r.get("prompts"):
                lines.append(f"{r['name']} by prompt (M base -> M): " + ", ".join(
                    f"'{p['prompt']}' {p['m_base']:.2f} -> {p['m']:.2f}" for p in r["prompts"]))
        for r in result["concepts"]:
            e = r.get("elsewhere")
            if e:
                top = ", ".join(f"{k}'s prompts {b:.2f} -> {m:.2f}" for k, (b, m) in list(e["by_concept"].items())[:3])
                lines.append(f"{r['name']} elsewhere (in other concepts' images): {e['m_base']:.3f} -> {e['m']:.3f}"
                             + (f" ({top})" if top else ""))
    if oracle:
        drift = oracle.get("drift") or {}
        lines.append("")
        lines.append(f"oracle (the world retrained without {', '.join(oracle['targets'] or [])}): "
                     + _headline(oracle) + (f"  drift: frechet {drift['frechet']:.3f}" if drift else ""))
    for target, rs in (result.get("attacks") or {}).items():
        lines.append(f"{target} under attack (ASR, base model in brackets"
                     + (", then the oracle" if any(r.get("asr_oracle") is not None for r in rs) else "")
                     + f"; no attack {rs[0]['asr_no_attack']:.3f}): "
                     + ", ".join(f"{r['attack']} {r['asr']:.3f}"
                                 + ("" if r["asr_base"] is None else f" ({r['asr_base']:.3f})")
                                 + ("" if r.get("asr_oracle") is None else f" [oracle {r['asr_oracle']:.3f}]")
                                 for r in rs))
    if result.get("inversion"):
        lines.append("inversion M-Score: " + ", ".join(f"{k} {v:.3f}" for k, v in result["inversion"].items()))
    return "\n".join(lines)
