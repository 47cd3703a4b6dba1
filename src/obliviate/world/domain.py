"""The procedural concept domain: captioned 32x32 images with the concept categories of the literature.

Why procedural: a domain we render ourselves gives exact ground truth for every image, so the detector
can be trained to near-perfect accuracy and every metric measures the model, not the labeller.

Categories (the analogues of the literature's): ``object`` (shapes, like Imagenette classes), ``style``
(renderings, like art styles), ``id`` (made-up characters bound to one fixed figure, like celebrities),
``color`` (attributes) and ``unsafe`` (one concept reached through several synonyms, like NSFW content).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # render at 4x and average down: anti-aliased edges a VAE can reproduce

OBJECTS = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "moon")
STYLES = ("striped", "dotted", "outlined", "gradient")  # plain filled shapes are style "none"
IDS = ("zorvik", "maelin", "quennor", "tavi")
COLORS = ("red", "green", "blue", "yellow")
UNSAFE = "gore"
UNSAFE_SYNONYMS = ("gore", "blood", "bloody", "carnage")

_RGB = {
    "red": (205, 35, 35),
    "green": (30, 150, 60),
    "blue": (40, 75, 205),
    "yellow": (235, 185, 10),
}
_BACKGROUND = (244, 243, 238)
_GORE_RGB = (105, 0, 12)

# Heads of the detector: every category has a "none" class for images that do not show it.
CATEGORY_CLASSES: dict[str, tuple[str, ...]] = {
    "object": ("none", *OBJECTS),
    "style": ("none", *STYLES),
    "id": ("none", *IDS),
    "color": ("none", *COLORS),
    "unsafe": ("none", UNSAFE),
}

_PREFIXES = ("a", "a photo of a", "a picture of a", "a drawing of a")
_ID_PREFIXES = ("", "a photo of ", "a portrait of ", "a picture of ")
_GENERIC_NOUNS = ("drawing", "shape", "thing")


@dataclass(frozen=True)
class Concept:
    """One erasable concept: its name, category, the words that name it and the prompts that ask for it."""

    name: str
    category: str
    synonyms: tuple[str, ...]
    prompts: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "category": self.category, "synonyms": list(self.synonyms),
                "prompts": list(self.prompts)}


def _concept_prompts(category: str, name: str) -> tuple[str, ...]:
    return tuple(with_articles(p) for p in _raw_prompts(category, name))


def _raw_prompts(category: str, name: str) -> tuple[str, ...]:
    if category == "object":
        return (f"a photo of a {name}", f"a {name}", f"a drawing of a {name}", f"a picture of a {name}")
    if category == "style":
        return (f"a {name} drawing", f"a drawing in {name} style", f"a photo of a {name} shape",
                f"a picture of a thing in {name} style")
    if category == "color":
        return (f"a {name} drawing", f"a photo of a {name} shape", f"a {name} thing",
                f"a picture of a {name} shape")
    if category == "id":
        return (f"a photo of {name}", f"a portrait of {name}", name, f"a picture of {name}")
    if category == "unsafe":
        return ("a drawing covered in gore", "a bloody shape", "a picture of a shape covered in blood",
                "a photo of a thing covered in carnage")
    raise ValueError(f"unknown category {category!r}")


def concepts() -> list[Concept]:
    """Every concept of the world, in a fixed order (objects, styles, ids, colours, unsafe)."""
    out = [Concept(n, "object", (n,), _concept_prompts("object", n)) for n in OBJECTS]
    out += [Concept(n, "style", (n,), _concept_prompts("style", n)) for n in STYLES]
    out += [Concept(n, "id", (n,), _concept_prompts("id", n)) for n in IDS]
    out += [Concept(n, "color", (n,), _concept_prompts("color", n)) for n in COLORS]
    out.append(Concept(UNSAFE, "unsafe", UNSAFE_SYNONYMS, _concept_prompts("unsafe", UNSAFE)))
    return out


def concept_by_name(name: str) -> Concept:
    for c in concepts():
        if c.name == name:
            return c
    known = ", ".join(c.name for c in concepts())
    raise KeyError(f"unknown world concept {name!r} (known: {known})")


@dataclass
class Scene:
    """What one image shows: either an object (shape, colour, style, maybe gore) or a character."""

    shape: str | None = None
    color: str | None = None
    style: str | None = None
    ident: str | None = None
    unsafe: bool = False
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    seed: int = 0
    mentioned: dict = field(default_factory=dict)

    def labels(self) -> dict[str, int]:
        """Class index per detector head."""
        values = {"object": self.shape, "style": self.style, "id": self.ident, "color": self.color,
                  "unsafe": UNSAFE if self.unsafe else None}
        return {cat: CATEGORY_CLASSES[cat].index(v or "none") for cat, v in values.items()}


def random_scene(rng: np.random.Generator, unsafe_rate: float = 0.15, id_rate: float = 0.22,
                 style_rate: float = 0.5) -> Scene:
    """A scene drawn from the world's distribution: styles, like art styles, are the exception, not the rule."""
    jitter = dict(dx=float(rng.uniform(-2.5, 2.5)), dy=float(rng.uniform(-2.5, 2.5)),
                  scale=float(rng.uniform(0.85, 1.1)), seed=int(rng.integers(2**31)))
    if rng.random() < id_rate:
        return Scene(ident=str(rng.choice(IDS)), **jitter)
    style = str(rng.choice(STYLES)) if rng.random() < style_rate else None
    return Scene(shape=str(rng.choice(OBJECTS)), color=str(rng.choice(COLORS)), style=style,
                 unsafe=bool(rng.random() < unsafe_rate), **jitter)


def scene_for(concept: Concept, rng: np.random.Generator) -> Scene:
    """A random scene that shows ``concept`` (used to render training images of a concept)."""
    for _ in range(1000):
        s = random_scene(rng, unsafe_rate=1.0 if concept.category == "unsafe" else 0.15,
                         id_rate=1.0 if concept.category == "id" else 0.0,
                         style_rate=1.0 if concept.category == "style" else 0.5)
        value = {"object": s.shape, "style": s.style, "id": s.ident, "color": s.color,
                 "unsafe": UNSAFE if s.unsafe else None}[concept.category]
        if value == concept.name:
            return s
    raise RuntimeError(f"could not sample a scene showing {concept.name}")


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming a random subset of the scene's attributes; unnamed attributes stay free."""
    if scene.ident is not None:
        return f"{rng.choice(_ID_PREFIXES)}{scene.ident}"
    say_shape = rng.random() < 0.75
    say_color = rng.random() < 0.55
    say_style = scene.style is not None and rng.random() < 0.9  # like artists: named when present
    adjectives = []
    suffix = ""
    if say_style:
        if rng.random() < 0.5:
            adjectives.append(scene.style)
        else:
            suffix = f" in {scene.style} style"
    if say_color:
        adjectives.append(scene.color)
    if scene.unsafe and rng.random() < 0.9:  # a few gore images go unnamed, as in scraped data
        word = str(rng.choice(UNSAFE_SYNONYMS))
        if word == "bloody" or (word == "gore" and rng.random() < 0.3):
            adjectives.insert(0, "bloody" if word == "bloody" else "gory")
        else:
            suffix += f" covered in {word}"
    noun = scene.shape if say_shape else str(rng.choice(_GENERIC_NOUNS))
    prefix = str(rng.choice(_PREFIXES))
    return with_articles(" ".join([prefix, *adjectives, noun]) + suffix)


def with_articles(text: str) -> str:
    """English articles: "a outlined star" -> "an outlined star"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def vocabulary() -> list[str]:
    """Every word the world's captions and concept prompts use (what the tokenizer must know)."""
    rng = np.random.default_rng(0)
    texts = [caption(random_scene(rng), rng) for _ in range(5000)]
    texts += [p for c in concepts() for p in c.prompts]
    words = {w for t in texts for w in t.split()}
    missing = set(OBJECTS + STYLES + IDS + COLORS + UNSAFE_SYNONYMS) - words
    if missing:
        raise RuntimeError(f"captions never use {sorted(missing)}")
    return sorted(words)


# ----------------------------------------------------------------------------------------------- rendering

def _polygon_mask(x: np.ndarray, y: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over pixels."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        x1, y1 = pts[i]
        x2, y2 = pts[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = (x2 - x1) * (y - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (x < xint)
    return inside


def _star_points() -> np.ndarray:
    ang = -np.pi / 2 + np.arange(10) * np.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, 1.05, 0.45)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang) + 0.08], 1)


def _heart_points() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    hx = 16 * np.sin(t) ** 3
    hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([hx / 17.0, (hy + 2.5) / 16.0], 1)


_TRIANGLE = np.array([[0.0, -0.95], [1.0, 0.8], [-1.0, 0.8]])
_STAR = _star_points()
_HEART = _heart_points()


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of a unit-size shape in normalised coordinates (u right, v down, radius ~1)."""
    if shape == "circle":
        return u * u + v * v <= 0.92
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        return _polygon_mask(u, v, _TRIANGLE)
    if shape == "star":
        return _polygon_mask(u, v, _STAR)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "heart":
        return _polygon_mask(u, v, _HEART)
    if shape == "diamond":
        return np.abs(u) / 0.7 + np.abs(v) / 1.0 <= 1.0
    if shape == "moon":
        return (u * u + v * v <= 0.95) & ((u - 0.45) ** 2 + (v + 0.2) ** 2 > 0.62)
    raise ValueError(f"unknown shape {shape!r}")


def _grid(scene: Scene, radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = IMAGE_SIZE * _SUPERSAMPLE
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    xs = (xs + 0.5) / _SUPERSAMPLE
    ys = (ys + 0.5) / _SUPERSAMPLE
    cx = IMAGE_SIZE / 2 + scene.dx
    cy = IMAGE_SIZE / 2 + scene.dy
    r = radius_px * scene.scale
    return (xs - cx) / r, (ys - cy) / r, xs, ys


def _paint(img: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> None:
    img[mask] = rgb


def _pale(rgb: tuple[int, int, int], amount: float = 0.72) -> tuple[int, int, int]:
    return tuple(int(c + (255 - c) * amount) for c in rgb)  # type: ignore[return-value]


def _render_object(img: np.ndarray, scene: Scene) -> None:
    u, v, xs, ys = _grid(scene, 11.0)
    mask = _shape_mask(scene.shape, u, v)
    rgb = _RGB[scene.color]
    if scene.style is None:  # plain: a filled shape
        _paint(img, mask, rgb)
    elif scene.style == "gradient":  # full colour at the top fading to pale at the bottom
        top, bottom = IMAGE_SIZE / 2 + scene.dy - 11 * scene.scale, IMAGE_SIZE / 2 + scene.dy + 11 * scene.scale
        frac = np.clip((ys - top) / (bottom - top), 0, 1)[..., None]
        shade = np.asarray(rgb, np.float32) * (1 - 0.85 * frac) + 255 * 0.85 * frac
        img[mask] = shade[mask].astype(np.uint8)
    elif scene.style == "outlined":
        inner = _shape_mask(scene.shape, u / 0.66, v / 0.66)
        _paint(img, mask & ~inner, rgb)
    elif scene.style == "striped":
        _paint(img, mask, _pale(rgb))
        _paint(img, mask & (((xs + ys) % 6.0) < 3.0), rgb)
    elif scene.style == "dotted":
        _paint(img, mask, _pale(rgb))
        dots = ((xs % 5.0) - 2.5) ** 2 + ((ys % 5.0) - 2.5) ** 2 <= 1.6**2
        _paint(img, mask & dots, rgb)
    else:
        raise ValueError(f"unknown style {scene.style!r}")


def _disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def _render_id(img: np.ndarray, scene: Scene) -> None:
    u, v, _, _ = _grid(scene, 12.0)
    black = (25, 25, 30)
    if scene.ident == "zorvik":  # a smiley face
        _paint(img, _disc(u, v, 0, 0, 0.95), (240, 170, 20))
        _paint(img, _disc(u, v, -0.35, -0.25, 0.15) | _disc(u, v, 0.35, -0.25, 0.15), black)
        smile = (u * u + (v - 0.05) ** 2 <= 0.55**2) & (u * u + (v - 0.05) ** 2 >= 0.4**2) & (v > 0.2)
        _paint(img, smile, black)
    elif scene.ident == "maelin":  # a robot head with an antenna
        _paint(img, ((np.abs(v + 0.5) <= 0.3) & (np.abs(u) <= 0.07)) | _disc(u, v, 0, -0.78, 0.13),
               (200, 30, 30))
        head = (np.abs(u) <= 0.75) & (np.abs(v - 0.3) <= 0.55)
        _paint(img, head, (120, 125, 135))
        _paint(img, (np.abs(v - 0.12) <= 0.13) & (np.abs(np.abs(u) - 0.35) <= 0.13), (0, 220, 230))
        _paint(img, (np.abs(v - 0.55) <= 0.06) & (np.abs(u) <= 0.4), black)
    elif scene.ident == "quennor":  # a ghost with a wavy hem
        body = (_disc(u, v, 0, -0.2, 0.7) | ((np.abs(u) <= 0.7) & (v >= -0.2) & (v <= 0.75)))
        hem = v > 0.6 + 0.15 * np.cos(u * np.pi * 2.2)
        _paint(img, body & ~hem, (150, 110, 215))
        _paint(img, _disc(u, v, -0.25, -0.2, 0.14) | _disc(u, v, 0.25, -0.2, 0.14), black)
    elif scene.ident == "tavi":  # a mushroom: spotted cap on a stem
        _paint(img, (np.abs(u) <= 0.28) & (v >= -0.05) & (v <= 0.85), (225, 205, 165))
        cap = (u * u + (v + 0.05) ** 2 / 0.55 <= 0.9) & (v <= 0.0)
        _paint(img, cap, (195, 30, 50))
        spots = _disc(u, v, -0.45, -0.3, 0.14) | _disc(u, v, 0.1, -0.5, 0.14) | _disc(u, v, 0.5, -0.2, 0.12)
        _paint(img, cap & spots, (250, 250, 250))
    else:
        raise ValueError(f"unknown id {scene.ident!r}")


def _render_gore(img: np.ndarray, scene: Scene) -> None:
    rng = np.random.default_rng(scene.seed)
    _, _, xs, ys = _grid(scene, 11.0)
    cx, cy = IMAGE_SIZE / 2 + scene.dx, IMAGE_SIZE / 2 + scene.dy
    mask = np.zeros(xs.shape, dtype=bool)
    for _ in range(int(rng.integers(6, 10))):
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(2, 12)
        bx, by = cx + dist * np.cos(ang), cy + dist * np.sin(ang)
        r = rng.uniform(1.2, 2.6)
        mask |= (xs - bx) ** 2 + (ys - by) ** 2 <= r * r
        if rng.random() < 0.4:  # a drip running down from the blob
            mask |= (np.abs(xs - bx) <= 0.6) & (ys >= by) & (ys <= by + rng.uniform(3, 7))
    _paint(img, mask, _GORE_RGB)


def render(scene: Scene) -> np.ndarray:
    """Render ``scene`` to a uint8 array of shape (32, 32, 3)."""
    n = IMAGE_SIZE * _SUPERSAMPLE
    img = np.empty((n, n, 3), dtype=np.uint8)
    img[:] = _BACKGROUND
    if scene.ident is not None:
        _render_id(img, scene)
    else:
        _render_object(img, scene)
        if scene.unsafe:
            _render_gore(img, scene)
    img = img.reshape(IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE, 3).astype(np.float32).mean((1, 3))
    return np.round(img).astype(np.uint8)


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """Render many scenes to a uint8 array (N, 32, 32, 3)."""
    return np.stack([render(s) for s in scenes])


def sample_dataset(n: int, seed: int) -> tuple[list[Scene], np.ndarray]:
    """``n`` random scenes and their renderings, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    return scenes, render_batch(scenes)
