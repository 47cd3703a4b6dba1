"""Which images a report shows: each target, two of its neighbours and every damaged concept open, the rest folded."""

from __future__ import annotations

from .report import ReportGrid, damaged
from .run import EvalRun


def report_grids(run: EvalRun, neighbours: int = 2) -> list[ReportGrid]:
    rows = run.result.concepts
    targets = run.result.targets or []
    chosen: dict[str, str] = {}  # name -> title, in the order shown open
    if targets:
        for t in targets:
            chosen[t] = f"{t} (target)"
            cat = run.result.concept(t).category
            near = [r.name for r in rows if r.category == cat and r.name not in targets][:neighbours]
            chosen |= {n: f"{n} (neighbour of {t})" for n in near if n not in chosen}
        dicts = {r.name: {"name": r.name, "m_base": r.m_base, "m": r.m, "interval": r.interval,
                          "base_interval": r.base_interval} for r in rows}
        chosen |= {r.name: f"{r.name} (damaged)" for r in rows
                   if r.name not in chosen and damaged(dicts[r.name], set(targets))}
    else:
        seen = set()
        for r in rows:
            if r.category not in seen:
                seen.add(r.category)
                chosen[r.name] = r.name
    shown = [(name, title, False) for name, title in chosen.items()]
    shown += [(r.name, f"{r.name} ({r.category})", True) for r in rows if r.name not in chosen]
    grids = []
    for name, title, collapsed in shown:
        edited = run.edited.thumbs[name] if run.edited is not None else None
        grids.append(ReportGrid(title, run.base.thumbs[name], edited, run.base.prompts[name],
                                base_found=run.base.thumb_hits.get(name),
                                edited_found=run.edited.thumb_hits.get(name) if run.edited is not None else None,
                                concept=name, total=run.result.concept(name).n_images, collapsed=collapsed))
    return grids + attack_grids(run)


def attack_grids(run: EvalRun) -> list[ReportGrid]:
    """Per target and attack: the edited model's images of the target's own prompts beside the attack's."""
    grids = []
    for target, results in (run.result.attacks or {}).items():
        prompts = run.base.prompts[target]  # the no-attack images cycle the target's prompts, as these do
        for r in results:
            if r.images is None or not len(r.images):
                continue
            k = min(len(r.images), len(r.clean_images), len(prompts))
            clean_hits, hits = run.attack_hits.get(target, {}).get(r.attack, (None, None))
            # An attack without text (learned tokens, completion of noised images) leaves its prompt cells empty.
            attack_prompts = [r.prompts[i % len(r.prompts)] if r.prompts else "" for i in range(k)]
            how = "each image's prompt is under it" if r.prompts else (
                "the no-attack images' prompts are under them; the attack's images have no text prompt (it "
                "learns tokens or completes noised images of the target)")
            grids.append(ReportGrid(
                f"{target} under {r.attack} (ASR {r.asr:.2f} over {r.n_images} images)", r.clean_images[:k],
                r.images[:k], prompts[:k], captions=("no attack", r.attack),
                note=(f"The first {k} of the {r.n_images} images per row (same seeds): the edited model on the "
                      f"target's own prompts, then under the attack; {how}."),
                base_found=None if clean_hits is None else clean_hits[:k],
                edited_found=None if hits is None else hits[:k], edited_prompts=attack_prompts, concept=target))
    return grids
