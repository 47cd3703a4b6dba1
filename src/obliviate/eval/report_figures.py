"""The report's figures: image tables (each image with its prompt and the detector's verdict) and the M-Score chart.

A tiled grid of images with one line of prompts below it hides what a reader needs to judge an edit: which prompt
made which image, and whether the detector counted it. So every image sits in a column headed by its prompt,
one row per model, with the verdict under it. The chart is hand-written SVG with labelled axes, a legend and
95% interval whiskers, so the page needs no plotting library and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Small generated images (32 px) are shown at about this many pixels, upscaled by the browser (pixelated).
TARGET_IMAGE_PX = 96
MAX_IMAGE_PX = 160  # large images (SD's 512 px) are shrunk to this, to keep the page small
TABLE_PX = 1000  # at most this wide: longer rows of images wrap into another table

_e = html.escape


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def interval(iv: list | tuple | None) -> str:
    """A 95% interval as 'lo–hi', or '—' where there is none."""
    return "—" if not iv else f"{iv[0]:.2f}–{iv[1]:.2f}"


def has_patch(result: dict) -> bool:
    # Without a patch m_base is None or a copy of m; either way there is only one M per concept to show.
    return result.get("patch") is not None


def by_category(result: dict) -> dict[str, list[dict]]:
    """Concept rows grouped by category, categories in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in result.get("concepts", []):
        groups.setdefault(str(row.get("category", "")), []).append(row)
    return groups


# --------------------------------------------------------------------------- image tables


@dataclass
class ReportGrid:
    """Images of one concept from the base model and, when a patch was evaluated, from the edited model."""

    title: str  # e.g. "circle (target)" or "square (neighbour of circle)"
    base: np.ndarray  # uint8 (N, H, W, 3) images from the base model
    edited: np.ndarray | None  # uint8 (N, H, W, 3), same prompts and seeds; None without a patch
    prompts: list[str]  # one per image
    captions: tuple[str, str] = ("base model", "edited model")  # the two rows' labels
    note: str | None = None  # what the grid shows, in place of the default sentence (attack grids)
    base_found: list[bool] | None = None  # the detector's verdict on each base image
    edited_found: list[bool] | None = None  # ... on each edited image
    edited_prompts: list[str] | None = None  # the second row's prompts where they differ (an attack's)
    concept: str | None = None  # what the detector looks for
    total: int | None = None  # images per model the concept's score rests on (these are the first of them)
    collapsed: bool = False  # shown folded (a <details> element) below the ones a reader needs first

    def __post_init__(self) -> None:
        _check_images(self.base, "base")
        if self.edited is not None:
            _check_images(self.edited, "edited")
            if self.edited.shape != self.base.shape:
                raise ValueError(f"edited images {self.edited.shape} do not match base images {self.base.shape}")
        if len(self.prompts) != len(self.base):
            raise ValueError(f"{len(self.prompts)} prompts for {len(self.base)} images")
        for what, values in (("base verdicts", self.base_found), ("edited verdicts", self.edited_found),
                             ("edited prompts", self.edited_prompts)):
            if values is not None and len(values) != len(self.base):
                raise ValueError(f"{len(values)} {what} for {len(self.base)} images")


def _check_images(images: np.ndarray, what: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} images must be a uint8 array (N, H, W, 3)")
    if len(images) == 0:
        raise ValueError(f"{what} images are empty")


def _display_px(image: np.ndarray) -> int:
    return min(MAX_IMAGE_PX, max(TARGET_IMAGE_PX, max(image.shape[:2])))


def _png_data_uri(image: np.ndarray) -> str:
    pil = Image.fromarray(image)
    side = max(pil.size)
    if side > 2 * MAX_IMAGE_PX:  # sharp on a high-density screen, yet small
        k = 2 * MAX_IMAGE_PX / side
        pil = pil.resize((round(pil.width * k), round(pil.height * k)), Image.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _verdict(found: bool | None) -> str:
    if found is None:
        return ""
    return '<div class="verdict found">found</div>' if found else '<div class="verdict missed">not found</div>'


def _image_cell(image: np.ndarray, alt: str, found: bool | None, prompt: str | None) -> str:
    px = _display_px(image)
    h = round(px * image.shape[0] / image.shape[1])
    below = f'<div class="p">{_e(prompt)}</div>' if prompt else ""
    return (f'<td><div class="cell" style="width:{px}px"><img class="tiles" src="{_png_data_uri(image)}" '
            f'width="{px}" height="{h}" alt="{_e(alt)}">{_verdict(found)}{below}</div></td>')


def grid_html(g: ReportGrid) -> str:
    """One concept's images as labelled tables: a column per (prompt, seed), a row per model, verdicts below."""
    rows = [(g.captions[0], g.base, g.base_found, g.prompts)]
    if g.edited is not None:
        rows.append((g.captions[1], g.edited, g.edited_found, g.edited_prompts or g.prompts))
    shared = g.edited_prompts is None  # one prompt per column: it heads the column
    n = len(g.base)
    looks_for = _e(g.concept) if g.concept else "the concept"
    if g.note is not None:
        what = _e(g.note)
    else:
        of = f"The first {n} of the {g.total}" if g.total and g.total > n else f"All {n}"
        what = (f"{of} images per model that the M-Score rests on; each column is one prompt and seed"
                + (", the same for both models" if g.edited is not None else "") + ".")
    if any(f is not None for _, _, f, _ in rows):
        what += f" Under each image, the detector's verdict: found (it sees {looks_for}) or not found."
    out = [f'<h3>{_e(g.title)}</h3><p class="what">{what}</p>']
    if g.edited is None:
        out.append('<p class="what">No edited model: no patch was evaluated.</p>')
    per_row = max(1, min(8, TABLE_PX // (_display_px(g.base[0]) + 16)))
    for start in range(0, n, per_row):
        cols = range(start, min(n, start + per_row))
        head = "".join(f'<th class="p">{_e(g.prompts[i])}</th>' if shared else f"<th>image {i + 1}</th>"
                       for i in cols)
        out.append(f'<table class="images"><tr><th>{"prompt" if shared else ""}</th>{head}</tr>')
        for caption, images, found, prompts in rows:
            cells = "".join(_image_cell(images[i], f"{caption}: {prompts[i]}", None if found is None else found[i],
                                        None if shared else prompts[i]) for i in cols)
            out.append(f'<tr><th scope="row">{_e(caption)}</th>{cells}</tr>')
        out.append("</table>")
    body = "\n".join(out)
    if g.collapsed:
        return f'<details class="grid"><summary>{_e(g.title)}</summary>\n{body}\n</details>'
    return f'<section class="grid">\n{body}\n</section>'


# --------------------------------------------------------------------------- SVG chart

BASE_COLOUR = "#9aa5b1"
EDITED_COLOUR = "#2c7fb8"
TARGET_COLOUR = "#d7301f"


def _whisker(iv: list | tuple | None, y: float, x) -> str:
    if not iv:
        return ""
    lo, hi = x(iv[0]), x(iv[1])
    return (f'<path d="M{lo:.1f} {y - 3:.1f}v6M{lo:.1f} {y:.1f}H{hi:.1f}M{hi:.1f} {y - 3:.1f}v6" '
            'stroke="#222" stroke-width="1" fill="none"/>')


def svg_chart(result: dict, targets: set[str]) -> str:
    """Horizontal grouped bars per concept (base grey, edited blue, targets red) with 95% interval whiskers."""
    patched = has_patch(result)
    groups = by_category(result)
    values = [v for r in result.get("concepts", []) for v in (r.get("m_base"), r.get("m")) if v is not None]
    x_max = max(1.0, max(values, default=1.0))
    x_max = math.ceil(x_max * 4) / 4
    longest = max((len(str(r.get("name", ""))) for r in result.get("concepts", [])), default=4)
    max_chars = 34  # longer names are shortened in the chart; the tables and tooltips keep them whole
    label_w = 36 + round(7.5 * min(longest, max_chars))  # room for the bold target marker
    plot_w, value_w = 440, 150
    row_h = 26 if patched else 18
    top, axis_h = 52, 44
    n_rows = sum(len(rows) + 1 for rows in groups.values())
    height = top + n_rows * row_h + axis_h
    width = label_w + plot_w + value_w
    x0 = label_w

    def x(v: float) -> float:
        return x0 + plot_w * v / x_max

    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="M-Score per concept{", base versus edited" if patched else ""}" font-size="12">']
    legend = [("base model", BASE_COLOUR), ("edited model", EDITED_COLOUR), ("edited, target", TARGET_COLOUR)]
    if not patched:
        legend = [("M-Score", EDITED_COLOUR)]
    lx = x0
    for text, colour in legend:
        out.append(f'<rect x="{lx}" y="10" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{lx + 16}" y="20">{_e(text)}</text>')
        lx += 24 + 7 * len(text)
    out.append(f'<path d="M{lx} 13v6M{lx} 16h16M{lx + 16} 13v6" stroke="#222" fill="none"/>'
               f'<text x="{lx + 22}" y="20">95% interval</text>')
    # Column headers: what the labels on the left and the numbers on the right are.
    out.append(f'<text x="4" y="{top - 8}" font-weight="600">concept</text>'
               f'<text x="{x0 + plot_w + 8}" y="{top - 8}" font-weight="600">'
               f'{"base → edited" if patched else "M-Score"}</text>')
    plot_bottom = top + n_rows * row_h
    n_ticks = round(x_max / 0.25)
    for i in range(n_ticks + 1):
        v = i * 0.25
        out.append(f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{plot_bottom}" stroke="#e3e3e3"/>'
                   f'<text x="{x(v):.1f}" y="{plot_bottom + 16}" text-anchor="middle">{v:g}</text>')
    out.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{plot_bottom}" stroke="#555"/>'
               f'<line x1="{x0}" y1="{plot_bottom}" x2="{x0 + plot_w}" y2="{plot_bottom}" stroke="#555"/>')
    out.append(f'<text x="{x0 + plot_w / 2}" y="{plot_bottom + 36}" text-anchor="middle" font-weight="600">'
               "M-Score: share of the concept's images in which the detector finds it</text>")
    y = top
    for cat, rows in groups.items():
        out.append(f'<text x="4" y="{y + row_h * 0.7:.1f}" font-weight="600" fill="#444">{_e(cat)}</text>')
        y += row_h
        for r in rows:
            out.append(_bar_row(r, r.get("name") in targets, patched, y, row_h, x, x0, plot_w, max_chars))
            y += row_h
    out.append("</svg>")
    return "\n".join(out)


def _bar_row(r: dict, is_target: bool, patched: bool, y: float, row_h: int, x, x0: float, plot_w: int,
             max_chars: int) -> str:
    name = str(r.get("name", "?"))
    base, edited = r.get("m_base"), r.get("m")
    mid = y + row_h / 2
    weight = ' font-weight="700"' if is_target else ""
    fill = f' fill="{TARGET_COLOUR}"' if is_target else ""
    short = name if len(name) <= max_chars else name[:max_chars - 1] + "…"
    n = r.get("n_images")
    tip = f"{name}: " + (f"base {num(base)} ({interval(r.get('base_interval'))}), edited {num(edited)} "
                         f"({interval(r.get('interval'))})" if patched else
                         f"M {num(edited)} ({interval(r.get('interval'))})") + (f", {n} images each" if n else "")
    out = [f"<g><title>{_e(tip)}</title>"
           f'<text x="{x0 - 6}" y="{mid + 4:.1f}" text-anchor="end"{weight}{fill}>'
           f"{_e(('◆ ' if is_target else '') + short)}</text>"]
    colour = TARGET_COLOUR if is_target else EDITED_COLOUR
    if patched:
        bar_h = (row_h - 6) / 2
        if base is not None:
            out.append(f'<rect x="{x0}" y="{y + 3:.1f}" width="{x(base) - x0:.1f}" height="{bar_h:.1f}" '
                       f'fill="{BASE_COLOUR}"/>' + _whisker(r.get("base_interval"), y + 3 + bar_h / 2, x))
        if edited is not None:
            out.append(f'<rect x="{x0}" y="{y + 3 + bar_h:.1f}" width="{x(edited) - x0:.1f}" '
                       f'height="{bar_h:.1f}" fill="{colour}"/>' + _whisker(r.get("interval"), y + 3 + 1.5 * bar_h, x))
        value = f"{num(base)} → {num(edited)}"
    else:
        if edited is not None:
            out.append(f'<rect x="{x0}" y="{y + 3:.1f}" width="{x(edited) - x0:.1f}" height="{row_h - 6}" '
                       f'fill="{colour}"/>' + _whisker(r.get("interval"), mid, x))
        value = num(edited)
    out.append(f'<text x="{x0 + plot_w + 8}" y="{mid + 4:.1f}"{fill}>{_e(value)}</text></g>')
    return "".join(out)
