"""Which image grids a report shows: each target and two of its neighbours, else one concept per category."""

from __future__ import annotations

from .report import ReportGrid
from .run import EvalRun


def report_grids(run: EvalRun, neighbours: int = 2) -> list[ReportGrid]:
    rows = run.result.concepts
    targets = run.result.targets or []
    chosen: list[tuple[str, str]] = []
    if targets:
        for t in targets:
            chosen.append((t, f"{t} (target)"))
            cat = run.result.concept(t).category
            near = [r.name for r in rows if r.category == cat and r.name not in targets][:neighbours]
            chosen += [(n, f"{n} (neighbour of {t})") for n in near if n not in dict(chosen)]
    else:
        seen = set()
        for r in rows:
            if r.category not in seen:
                seen.add(r.category)
                chosen.append((r.name, r.name))
    grids = []
    for name, title in chosen:
        edited = run.edited.thumbs[name] if run.edited is not None else None
        grids.append(ReportGrid(title, run.base.thumbs[name], edited, run.base.prompts[name]))
    return grids + attack_grids(run)


def attack_grids(run: EvalRun) -> list[ReportGrid]:
    """Per target and attack: the edited model's images of the target's own prompts beside the attack's."""
    grids = []
    for target, results in (run.result.attacks or {}).items():
        for r in results:
            if r.images is None or not len(r.images):
                continue
            k = min(len(r.images), len(r.clean_images))
            prompts = run.result.concept(target).prompts
            shown = "; ".join(r.prompts[:2]) if r.prompts else "learned or image-conditioned (see the attack)"
            grids.append(ReportGrid(f"{target} under {r.attack} (ASR {r.asr:.2f})", r.clean_images[:k],
                                    r.images[:k], [p.prompt for p in prompts][:1] * k,
                                    captions=("no attack", r.attack),
                                    note=f"{k} images each, same seeds; attack prompts: {shown}"))
    return grids
