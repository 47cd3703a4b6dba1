"""Resolve a concept name given on the command line to its category and the words that name it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ObliviateError
from ..pipeline import Model


@dataclass(frozen=True)
class Target:
    name: str
    category: str
    words: tuple[str, ...]        # the words whose tokens carry the concept (name and synonyms)
    prompts: tuple[str, ...]      # prompts that ask for it (for generated images and ESD's conditions)


def resolve_target(model: Model, name: str, category: str | None = None) -> Target:
    """On the world, the world's concept; elsewhere the ``sd`` bench's entry, or the name as given."""
    if not name.strip():
        raise ObliviateError("empty concept name")
    if model.is_world:
        from ..world import domain

        try:
            c = domain.concept_by_name(name)
        except KeyError as exc:
            raise ObliviateError(str(exc.args[0])) from None
        return Target(c.name, c.category, tuple(dict.fromkeys(c.synonyms + (c.name,))), c.prompts)
    from ..eval.bench import load_bench

    bench = load_bench("sd")
    for c in bench.concepts:
        if c.name.lower() == name.lower():
            return Target(c.name, category or c.category, tuple(dict.fromkeys((c.name, *c.synonyms))), c.prompts)
    cat = category or "object"
    prompt = f"a painting in the style of {name}" if cat == "style" else f"a photo of {name}"
    return Target(name, cat, (name,), (prompt,))


def preserved_concepts(model: Model, targets: list[Target], names: tuple[str, ...] | None = None) -> list[Target]:
    """Concepts an edit should leave alone: ``names`` if given, else every other concept of the model's bench."""
    if names is None:
        if model.is_world:
            from ..world import concepts

            names = tuple(c.name for c in concepts())
        else:
            from ..eval.bench import load_bench

            names = tuple(c.name for c in load_bench("sd").concepts)
    erased = {t.name for t in targets}
    return [resolve_target(model, n) for n in names if n not in erased]
