"""ConceptBench specs: which concepts exist, their category, the words that name them and the prompts that
ask for them, and the sampler settings their images are made with.

Specs are YAML (``benches/world.yaml``, ``benches/sd.yaml`` ship with the package; users pass a path) so a
benchmark can be extended without code. Methods read concepts from a bench too (through
:mod:`obliviate.catalog`). Every problem in a spec is reported as one ``ObliviateError`` line naming the
file, because a bad spec is user input, not a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ObliviateError

BENCH_DIR = Path(__file__).parent / "benches"
CATEGORIES = ("id", "object", "style", "color", "unsafe")
DETECTORS = ("world", "clip", "nudenet")

_TOP_KEYS = {"name", "detector", "images_per_concept", "templates", "concepts", "sampler", "neutral", "phrasing"}
_CONCEPT_KEYS = {"name", "category", "synonyms", "prompts", "detector", "implicit"}
_SAMPLER_KEYS = {"steps", "guidance"}


@dataclass(frozen=True)
class Sampler:
    """Sampler settings images are generated with (the scheduler is the pipeline's own)."""

    steps: int = 50
    guidance: float = 7.5


@dataclass(frozen=True)
class Concept:
    """One concept: its name, category, the prompts that ask for it and the words that name it."""

    name: str
    category: str
    prompts: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    detector: str | None = None  # overrides the bench's detector for this concept (e.g. nudenet for nudity)
    implicit: tuple[str, ...] = ()  # prompts that reach the concept without naming it (descriptions, misspellings)

    @property
    def words(self) -> tuple[str, ...]:
        """Every word or phrase that names the concept (its name first)."""
        return tuple(dict.fromkeys((self.name, *self.synonyms)))


@dataclass
class Bench:
    """A named set of concepts with prompts; ``images_per_concept`` images each, prompts cycled."""

    name: str
    concepts: list[Concept]
    images_per_concept: int = 16
    detector: str = "world"
    categories: tuple[str, ...] = field(default=())
    sampler: Sampler = field(default_factory=Sampler)
    neutral: str = ""  # a prompt that asks for no concept ("": unconditional); the completion probe uses it
    # category -> the one prompt ("{name}" for the concept) a method that takes a single prompt per concept
    # uses (FMN, redirect); a category not listed gets the method's paper template
    phrasing: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.categories:  # in order of appearance, so tables follow the spec's order
            self.categories = tuple(dict.fromkeys(c.category for c in self.concepts))

    def concept(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise ObliviateError(f"unknown concept {name!r} in bench {self.name!r} "
                             f"(known: {', '.join(c.name for c in self.concepts)})")

    def select(self, names: list[str] | None) -> list[Concept]:
        return list(self.concepts) if not names else [self.concept(n) for n in names]

    def detector_of(self, concept: Concept) -> str:
        """Which detector measures ``concept``: its own override, else the bench's."""
        return concept.detector or self.detector


def shipped_benches() -> list[str]:
    """Names of the benches that ship with the package."""
    return sorted(p.stem for p in BENCH_DIR.glob("*.yaml"))


def resolve_spec(spec: str | Path) -> Path:
    """A shipped bench name ("world", "sd") or a path to a YAML file -> the file to read."""
    if not isinstance(spec, Path) and (BENCH_DIR / f"{spec}.yaml").is_file() and not Path(spec).suffix:
        return BENCH_DIR / f"{spec}.yaml"
    path = Path(spec).expanduser()
    if not path.is_file():
        kind = "directory, not a file" if path.is_dir() else "not found"
        raise ObliviateError(f"bench spec {str(spec)!r}: {kind} (shipped benches: {', '.join(shipped_benches())})")
    return path


def load_bench(spec: str | Path, images_per_concept: int | None = None) -> Bench:
    """Load and validate a bench spec; ``images_per_concept`` overrides the spec's value."""
    path = resolve_spec(spec)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ObliviateError(f"{path}: invalid YAML{where}: {' '.join(str(problem).split())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ObliviateError(f"{path}: cannot read ({e})") from None
    bench = _parse(data, path)
    if images_per_concept is not None:
        bench.images_per_concept = _positive_int(images_per_concept, path, "images_per_concept")
    return bench


def world_bench(images_per_concept: int | None = None) -> Bench:
    """Every concept of the shipped world, with its own prompts (``benches/world.yaml``)."""
    return load_bench("world", images_per_concept)


# ------------------------------------------------------------------------------------------------ validation

def _fail(path: Path, msg: str) -> ObliviateError:
    return ObliviateError(f"{path}: {msg}")


def _positive_int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(path, f"{key} must be a positive integer, got {value!r}")
    return value


def _text(value: Any, path: Path, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def _texts(value: Any, path: Path, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(path, f"{where} must be a non-empty list of strings, got {value!r}")
    return tuple(_text(v, path, f"{where}[{i}]") for i, v in enumerate(value))


def _choice(value: Any, allowed: tuple[str, ...], path: Path, where: str, what: str) -> str:
    if value not in allowed:
        raise _fail(path, f"{where}: unknown {what} {value!r} (allowed: {', '.join(allowed)})")
    return value


def _check_keys(data: dict, allowed: set[str], required: tuple[str, ...], path: Path, where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise _fail(path, f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in data]
    if missing:
        raise _fail(path, f"{where}: missing key(s) {', '.join(missing)}")


def _by_category(value: Any, path: Path, key: str, what: str, read) -> dict:
    """A mapping category -> ``read(item, where)`` whose every prompt has a {name} placeholder."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{key} must be a mapping of category -> {what}, got {value!r}")
    out = {}
    for cat, item in value.items():
        _choice(cat, CATEGORIES, path, key, "category")
        out[cat] = read(item, path, f"{key}.{cat}")
        for t in (out[cat],) if isinstance(out[cat], str) else out[cat]:
            if "{name}" not in t:
                raise _fail(path, f"{key}.{cat}: {t!r} has no {{name}} placeholder")
    return out


def _parse(data: Any, path: Path) -> Bench:
    if not isinstance(data, dict):
        raise _fail(path, f"a bench spec must be a YAML mapping, got {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, ("name", "detector", "concepts"), path, "bench")
    name = _text(data["name"], path, "name")
    detector = _choice(data["detector"], DETECTORS, path, "detector", "detector")
    n = _positive_int(data.get("images_per_concept", 16), path, "images_per_concept")
    templates = _by_category(data.get("templates"), path, "templates", "list of prompts", _texts)
    sampler = _sampler(data.get("sampler"), path)
    raw = data["concepts"]
    if not isinstance(raw, list) or not raw:
        raise _fail(path, f"concepts must be a non-empty list, got {raw!r}")
    items: list[Concept] = []
    seen: set[str] = set()
    for i, c in enumerate(raw):
        where = f"concepts[{i}]"
        if not isinstance(c, dict):
            raise _fail(path, f"{where} must be a mapping with name and category, got {c!r}")
        _check_keys(c, _CONCEPT_KEYS, ("name", "category"), path, where)
        cname = _text(c["name"], path, f"{where}.name")
        where = f"concept {cname!r}"
        if cname in seen:
            raise _fail(path, f"duplicate concept name {cname!r}")
        seen.add(cname)
        cat = _choice(c["category"], CATEGORIES, path, where, "category")
        if "prompts" in c:
            prompts = _texts(c["prompts"], path, f"{where}: prompts")
        elif cat in templates:
            prompts = tuple(t.replace("{name}", cname) for t in templates[cat])
        else:
            raise _fail(path, f"{where}: no prompts and no templates for category {cat!r}")
        synonyms = _texts(c["synonyms"], path, f"{where}: synonyms") if "synonyms" in c else (cname,)
        own = _choice(c["detector"], DETECTORS, path, where, "detector") if c.get("detector") is not None else None
        implicit = _texts(c["implicit"], path, f"{where}: implicit") if "implicit" in c else ()
        items.append(Concept(cname, cat, prompts, synonyms, own, implicit))
    neutral = data.get("neutral", Bench.neutral)
    if not isinstance(neutral, str):
        raise _fail(path, f"neutral must be a string (may be empty), got {neutral!r}")
    return Bench(name, items, n, detector, sampler=sampler, neutral=neutral,
                 phrasing=_by_category(data.get("phrasing"), path, "phrasing", "one prompt", _text))


def _sampler(value: Any, path: Path) -> Sampler:
    if value is None:
        return Sampler()
    if not isinstance(value, dict):
        raise _fail(path, f"sampler must be a mapping with steps and guidance, got {value!r}")
    _check_keys(value, _SAMPLER_KEYS, (), path, "sampler")
    steps = _positive_int(value.get("steps", Sampler.steps), path, "sampler.steps")
    guidance = value.get("guidance", Sampler.guidance)
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not 0 <= guidance < float("inf"):
        raise _fail(path, f"sampler.guidance must be a finite number >= 0, got {guidance!r}")
    return Sampler(steps, float(guidance))
