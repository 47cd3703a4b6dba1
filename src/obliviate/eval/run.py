"""``obliviate eval``: M-Score per concept and category; with a patch, efficacy, preservation and drift.

Base-model results are cached on disk by (model fingerprint, bench spec, seed, images per concept, sampler
settings), so evaluating a second patch on the same model does not regenerate the base images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ObliviateError
from ..patch import Patch, apply_patch, remove_patch
from ..pipeline import Model
from .anchors import anchor_images
from .bench import Bench, BenchConcept, world_bench
from .detectors import WorldDetector
from .metrics import efficacy, frechet_distance, harmonic_mean, mean_feature_distance, preservation
from .mscore import ConceptImages, generate_concepts


def default_cache_dir() -> Path:
    root = os.environ.get("OBLIVIATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "obliviate")
    return Path(root) / "eval"


@dataclass
class EvalConfig:
    concepts: list[str] | None = None
    images_per_concept: int | None = None  # None: the bench's
    seed: int = 0
    inversion: bool = False
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
    by_prompt: dict[str, dict[str, float]] = field(default_factory=dict)  # concept -> prompt -> M-Score


def _per_prompt(prompts: list[str], hits: np.ndarray) -> dict[str, float]:
    """M-Score of each prompt on its own: erasure often holds for one phrasing and not another."""
    by: dict[str, list[float]] = {}
    for prompt, hit in zip(prompts, hits, strict=True):
        by.setdefault(prompt, []).append(float(hit))
    return {p: float(np.mean(h)) for p, h in by.items()}


def _measure(model: Model, concepts: list[BenchConcept], n: int, seed: int, detector, keep: int,
             progress: bool) -> Pass:
    sets: list[ConceptImages] = generate_concepts(model, concepts, n, seed, progress)
    hits = {s.concept.name: detector.hits(s.images, s.concept) for s in sets}
    return Pass(
        scores={name: float(np.mean(h)) for name, h in hits.items()},
        features={s.concept.name: detector.features(s.images) for s in sets},
        thumbs={s.concept.name: s.images[:keep] for s in sets},
        prompts={s.concept.name: s.prompts[:keep] for s in sets},
        by_prompt={s.concept.name: _per_prompt(s.prompts, hits[s.concept.name]) for s in sets},
    )


def _cache_key(model: Model, bench: Bench, concepts: list[BenchConcept], n: int, seed: int) -> str:
    spec = json.dumps({"bench": bench.name, "concepts": [(c.name, c.category, c.prompts) for c in concepts],
                       "n": n, "seed": seed, "steps": model.steps, "guidance": model.guidance,
                       "fingerprint": model.fingerprint}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:20]


def _base_pass(model: Model, bench: Bench, concepts: list[BenchConcept], n: int, cfg: EvalConfig,
               detector) -> Pass:
    path = default_cache_dir() / f"{_cache_key(model, bench, concepts, n, cfg.seed)}.npz"
    if cfg.cache and path.is_file():
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
        if "by_prompt" in meta:  # caches written before per-prompt scores are measured again
            return Pass(meta["scores"], {c.name: data[f"f_{i}"] for i, c in enumerate(concepts)},
                        {c.name: data[f"t_{i}"] for i, c in enumerate(concepts)}, meta["prompts"], meta["by_prompt"])
    result = _measure(model, concepts, n, cfg.seed, detector, cfg.grid_images, cfg.progress)
    if cfg.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"f_{i}": result.features[c.name] for i, c in enumerate(concepts)}
        arrays |= {f"t_{i}": result.thumbs[c.name] for i, c in enumerate(concepts)}
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        meta = {"scores": result.scores, "prompts": result.prompts, "by_prompt": result.by_prompt}
        np.savez(tmp, meta=json.dumps(meta), **arrays)
        os.replace(tmp, path)
    return result


def _inversion_scores(model: Model, bench: Bench, concepts: list[BenchConcept], anchors: dict[str, np.ndarray],
                      cfg: EvalConfig, detector) -> dict[str, float]:
    """Per concept: learn tokens on its anchor images with the model under test, then the M-Score they reach."""
    from ..generate import generate, image_seeds
    from ..inversion import InversionConfig, installed, invert

    out = {}
    n = cfg.images_per_concept or bench.images_per_concept
    for c in concepts:
        learned = invert(model, anchors[c.name], InversionConfig(seed=cfg.seed, progress=cfg.progress))
        with installed(model, learned) as phrase:
            prompts = [_replace_concept(p, c, phrase) for p in c.prompts]
            prompts = [prompts[i % len(prompts)] for i in range(n)]
            images = generate(model, prompts, image_seeds(cfg.seed, n), progress=False)
        out[c.name] = float(np.mean(detector.hits(images, c)))
    return out


def _replace_concept(prompt: str, concept: BenchConcept, phrase: str) -> str:
    for word in sorted({concept.name, *concept.synonyms, "gory"} if concept.category == "unsafe"
                       else {concept.name, *concept.synonyms}, key=len, reverse=True):
        if word in prompt:
            return prompt.replace(word, phrase)
    return f"{prompt} {phrase}"


@dataclass
class EvalRun:
    result: dict
    base: Pass
    edited: Pass | None


def evaluate(model: Model, cfg: EvalConfig, bench: Bench | None = None, detector=None,
             patches: list[Patch] | None = None, force: bool = False, unlock=None) -> EvalRun:
    """Measure ``model`` (optionally with ``patches`` applied, and ``unlock`` entered as a context)."""
    start = time.time()
    bench = bench or world_bench()
    detector = detector or WorldDetector()
    patches = patches or []
    n = cfg.images_per_concept or bench.images_per_concept
    targets = list(dict.fromkeys(t for p in patches for t in p.concepts))
    for t in targets:
        bench.concept(t)  # a target the bench does not know cannot be measured
    names = list(dict.fromkeys([*(cfg.concepts or [c.name for c in bench.concepts]), *targets]))
    concepts = bench.select(names)

    base = _base_pass(model, bench, concepts, n, cfg, detector)
    edited = None
    inversion = None
    inverted = [bench.concept(t) for t in targets] or concepts
    # anchors come from the base model (or the world's renderer), before any patch is applied
    anchors = {c.name: anchor_images(model, bench, c, 32, cfg.seed) for c in inverted} if cfg.inversion else {}
    if patches:
        with ExitStack() as stack:
            for p in patches:
                handle = apply_patch(model.pipe, p, force=force)
                stack.callback(remove_patch, model.pipe, handle)
            if unlock is not None:
                stack.enter_context(unlock(model))
            edited = _measure(model, concepts, n, cfg.seed, detector, cfg.grid_images, cfg.progress)
            if cfg.inversion:
                inversion = _inversion_scores(model, bench, inverted, anchors, cfg, detector)
    elif cfg.inversion:
        inversion = _inversion_scores(model, bench, inverted, anchors, cfg, detector)

    after = edited or base
    rows = [{"name": c.name, "category": c.category, "m_base": base.scores[c.name], "m": after.scores[c.name],
             "n_images": n, "prompts": _prompt_rows(base, after, c.name)} for c in concepts]
    categories = {cat: {"m_base": float(np.mean([r["m_base"] for r in rows if r["category"] == cat])),
                        "m": float(np.mean([r["m"] for r in rows if r["category"] == cat]))}
                  for cat in dict.fromkeys(r["category"] for r in rows)}
    result = {
        "model": {"name": model.name, "fingerprint": model.fingerprint},
        "patch": _patch_summary(patches),
        "seed": cfg.seed,
        "bench": bench.name,
        "concepts": rows,
        "categories": categories,
        "targets": targets or None,
        "efficacy": None, "preservation": None, "neighbour_preservation": None, "h": None, "drift": None,
    }
    if edited is not None:
        result.update(_edit_metrics(rows, targets, base, edited))
    if inversion is not None:
        result["inversion"] = inversion
    result["seconds"] = round(time.time() - start, 2)
    return EvalRun(result, base, edited)


def _prompt_rows(base: Pass, after: Pass, name: str) -> list[dict]:
    return [{"prompt": p, "m_base": m, "m": after.by_prompt[name][p]} for p, m in base.by_prompt[name].items()]


def _patch_summary(patches: list[Patch]) -> dict | None:
    if not patches:
        return None
    metas = [{k: v for k, v in p.metadata.items() if k != "content_sha256"} for p in patches]
    return metas[0] if len(metas) == 1 else {"method": "+".join(m.get("method", "?") for m in metas),
                                              "concepts": [c for m in metas for c in m.get("concepts", [])],
                                              "patches": metas}


def _edit_metrics(rows: list[dict], targets: list[str], base: Pass, edited: Pass) -> dict:
    by_name = {r["name"]: r for r in rows}
    target_cats = {by_name[t]["category"] for t in targets}
    effs = [efficacy(by_name[t]["m_base"], by_name[t]["m"]) for t in targets]
    for t, e in zip(targets, effs, strict=True):
        by_name[t]["efficacy"] = e
    effs_known = [e for e in effs if e is not None]
    others = [r for r in rows if r["name"] not in targets]
    eff = float(np.mean(effs_known)) if effs_known else None
    pres = preservation([(r["m_base"], r["m"]) for r in others])
    neigh = preservation([(r["m_base"], r["m"]) for r in others if r["category"] in target_cats])
    drift = None
    if others:
        fa = np.concatenate([base.features[r["name"]] for r in others])
        fb = np.concatenate([edited.features[r["name"]] for r in others])
        drift = {"frechet": frechet_distance(fa, fb), "mean_feature_distance": mean_feature_distance(fa, fb)}
    return {"efficacy": eff, "preservation": pres, "neighbour_preservation": neigh,
            "h": harmonic_mean(eff, pres), "drift": drift}


def check_concepts_exist(bench: Bench, names: list[str] | None) -> None:
    if names:
        for n in names:
            bench.concept(n)
    if names is not None and not names:
        raise ObliviateError("--concepts is empty")


def format_table(result: dict) -> str:
    """A Markdown table: one row per concept, then per-category means, then the headline numbers."""
    edited = result["patch"] is not None
    head = "| concept | category | M base | M | images |" if edited else "| concept | category | M-Score | images |"
    lines = [head, "|---|---|---|---|---|" if edited else "|---|---|---|---|"]
    targets = set(result["targets"] or [])
    for r in result["concepts"]:
        name = f"**{r['name']}** (target)" if r["name"] in targets else r["name"]
        cells = [name, r["category"]] + ([f"{r['m_base']:.3f}"] if edited else []) + [f"{r['m']:.3f}",
                                                                                       str(r["n_images"])]
        lines.append("| " + " | ".join(cells) + " |")
    for cat, v in result["categories"].items():
        cells = ["mean", cat] + ([f"{v['m_base']:.3f}"] if edited else []) + [f"{v['m']:.3f}", ""]
        lines.append("| " + " | ".join(cells) + " |")
    if edited:
        def fmt(x):
            return "n/a" if x is None else f"{x:.3f}"

        lines.append("")
        lines.append(f"efficacy {fmt(result['efficacy'])}  preservation {fmt(result['preservation'])}  "
                     f"neighbour preservation {fmt(result['neighbour_preservation'])}  H {fmt(result['h'])}")
        if result["drift"]:
            lines.append(f"drift: frechet {result['drift']['frechet']:.3f}  "
                         f"mean feature distance {result['drift']['mean_feature_distance']:.3f}")
        for r in result["concepts"]:
            if r["name"] in targets and r.get("prompts"):
                lines.append(f"{r['name']} by prompt (M base -> M): " + ", ".join(
                    f"'{p['prompt']}' {p['m_base']:.2f} -> {p['m']:.2f}" for p in r["prompts"]))
    if result.get("inversion"):
        lines.append("inversion M-Score: " + ", ".join(f"{k} {v:.3f}" for k, v in result["inversion"].items()))
    return "\n".join(lines)
