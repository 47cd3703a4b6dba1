"""Evaluation reports: one self-contained HTML file plus a Markdown summary beside it.

An eval result is a JSON dict of numbers; people judge an edit by looking at it. The HTML report puts the
headline scores, per-category tables, a base-versus-edited chart and before/after image grids on one page
that can be mailed or archived as a single file: images are inline PNG data URIs, the chart is hand-written
SVG and the CSS is inline, so nothing is fetched and no JavaScript runs. The Markdown file carries the same
numbers (no images) for READMEs, pull requests and terminals. Both files are written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ObliviateError
from ..io import write_atomic

# Small generated images (32 px) are upscaled with nearest-neighbour to about this many pixels per image.
TARGET_IMAGE_PX = 96

HEADLINE_FIELDS = [
    ("efficacy", "Efficacy", "mean over targets of 1 − M edited / M base (1 = fully erased)"),
    ("preservation", "Preservation", "mean over other concepts of min(1, M edited / M base) (1 = untouched)"),
    ("neighbour_preservation", "Neighbour preservation", "preservation of other concepts in the targets' categories"),
    ("h", "H", "harmonic mean of efficacy and preservation"),
]
ELSEWHERE_NOTE = ("How often the detector finds each target in images of the other concepts' prompts, which never "
                  "ask for it. An edit that moved the concept instead of removing it shows up here.")
ATTACKS_NOTE = ("Attack success rate (ASR): share of the attack's images in which the detector finds the target; in "
                "brackets the same attack on the base model (its ceiling). 'no attack': the target's own prompts.")
INVERSION_NOTE = ("M-Score reached by tokens learned on each concept's images with the model under test "
                  "(textual-inversion attack; high = the concept can still be recovered).")


@dataclass
class ReportGrid:
    """Images of one concept from the base model and, when a patch was evaluated, from the edited model."""

    title: str  # e.g. "circle (target)" or "square (neighbour of circle)"
    base: np.ndarray  # uint8 (N, H, W, 3) images from the base model
    edited: np.ndarray | None  # uint8 (N, H, W, 3), same prompts and seeds; None without a patch
    prompts: list[str]  # one per image
    captions: tuple[str, str] = ("base model", "edited model")
    note: str | None = None  # replaces the prompts line (attack grids: the attack's prompts differ)

    def __post_init__(self) -> None:
        _check_images(self.base, "base")
        if self.edited is not None:
            _check_images(self.edited, "edited")
            if self.edited.shape != self.base.shape:
                raise ValueError(f"edited images {self.edited.shape} do not match base images {self.base.shape}")
        if len(self.prompts) != len(self.base):
            raise ValueError(f"{len(self.prompts)} prompts for {len(self.base)} images")


def _check_images(images: np.ndarray, what: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} images must be a uint8 array (N, H, W, 3)")
    if len(images) == 0:
        raise ValueError(f"{what} images are empty")


def check_report_path(html_path: str | Path) -> Path:
    """Refuse, before any work, a report path that is not a writable .html file."""
    from ..io import check_writable

    html_path = Path(html_path)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ObliviateError("the report must be an .html file (the Markdown summary goes beside it)")
    check_writable(html_path)
    return html_path


def write_report(result: dict, html_path: str | Path, grids: list[ReportGrid] | None = None) -> tuple[Path, Path]:
    """Write html_path and html_path.with_suffix('.md'); returns both paths."""
    html_path = Path(html_path)
    md_path = html_path.with_suffix(".md")
    if md_path == html_path:
        raise ObliviateError(f"report path {html_path} must not end in .md (the Markdown summary goes there)")
    # Render everything first, so a rendering error leaves no half-written pair of files behind.
    page = render_html(result, grids or [])
    summary = render_markdown(result)
    write_atomic(html_path, _text_writer(page))
    write_atomic(md_path, _text_writer(summary))
    return html_path, md_path


def _text_writer(text: str) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- shared helpers


def _has_patch(result: dict) -> bool:
    # Without a patch m_base is None or a copy of m; either way there is only one M per concept to show.
    return result.get("patch") is not None


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _change(base: float | None, edited: float | None) -> float | None:
    return None if base is None or edited is None else edited - base


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.3f}"


def _by_category(result: dict) -> dict[str, list[dict]]:
    """Concept rows grouped by category, categories in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in result.get("concepts", []):
        groups.setdefault(str(row.get("category", "")), []).append(row)
    return groups


def _patch_summary(result: dict) -> str:
    patch = result.get("patch")
    if patch is None:
        return "no patch"
    concepts = patch.get("concepts") or []
    if isinstance(concepts, str):
        concepts = [concepts]
    return f"{patch.get('method', '?')} on {', '.join(map(str, concepts)) or '(no concepts)'}"


def _headline(result: dict) -> list[tuple[str, str, str]]:
    """(label, value, explanation) for every headline number present in ``result``."""
    items = [(label, _num(result[key]), note) for key, label, note in HEADLINE_FIELDS if result.get(key) is not None]
    drift = result.get("drift")
    if drift:
        if drift.get("frechet") is not None:
            items.append(("Drift (Fréchet)", _num(drift["frechet"]),
                          "Fréchet distance of image features, other concepts, base vs edited"))
        if drift.get("mean_feature_distance") is not None:
            items.append(("Drift (mean feature distance)", _num(drift["mean_feature_distance"]),
                          "mean feature distance of paired images (same prompt and seed), other concepts"))
    return items


def _elsewhere_rows(result: dict) -> list[tuple[str, dict]]:
    return [(str(r["name"]), r["elsewhere"]) for r in result.get("concepts") or [] if r.get("elsewhere")]


def _where(e: dict) -> str:
    top = list((e.get("by_concept") or {}).items())[:3]
    return ", ".join(f"{name}'s prompts {b:.2f} -> {m:.2f}" for name, (b, m) in top) or "nowhere"


def _attack_names(attacks: dict) -> list[str]:
    return list(dict.fromkeys(r["attack"] for rs in attacks.values() for r in rs))


def _attack_cell(r: dict | None) -> str:
    if r is None:
        return "—"
    return _num(r["asr"]) + ("" if r.get("asr_base") is None else f" ({_num(r['asr_base'])})")


def _method(result: dict) -> str:
    patch = result.get("patch")
    method = str(patch.get("method", "?")) if patch else "keys"
    return method + (" + keys" if patch and result.get("keys") else "")


# --------------------------------------------------------------------------- Markdown


def _md(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(result: dict) -> str:
    """The report's numbers as Markdown: header, headline scores, one table per category."""
    model = result.get("model") or {}
    targets = set(result.get("targets") or [])
    patched = _has_patch(result)
    lines = [
        "# obliviate evaluation report",
        "",
        f"- model: {_md(model.get('name', '?'))} (fingerprint `{_md(model.get('fingerprint', '?'))}`)",
        f"- patch: {_md(_patch_summary(result))}",
        *([f"- bench: {_md(result['bench'])}"] if result.get("bench") else []),
        f"- seed: {result.get('seed', '?')}",
        f"- time: {_num(result.get('seconds'), 1)} s",
    ]
    if targets:
        lines.append(f"- targets: {_md(', '.join(sorted(map(str, targets))))}")
    headline = _headline(result)
    if headline:
        lines += ["", "## Headline", ""]
        lines += [f"- **{label}**: {value}" for label, value, _ in headline]
    categories = result.get("categories") or {}
    for cat, rows in _by_category(result).items():
        lines += ["", f"## {_md(cat)}", ""]
        if patched:
            lines += ["| concept | images | M base | M edited | change |", "|---|---:|---:|---:|---:|"]
        else:
            lines += ["| concept | images | M |", "|---|---:|---:|"]
        for r in rows:
            name = _md(r.get("name", "?"))
            if r.get("name") in targets:
                name = f"**{name}** (target)"
            if patched:
                lines.append(f"| {name} | {r.get('n_images', '')} | {_num(r.get('m_base'))} | {_num(r.get('m'))} "
                             f"| {_signed(_change(r.get('m_base'), r.get('m')))} |")
            else:
                lines.append(f"| {name} | {r.get('n_images', '')} | {_num(r.get('m'))} |")
        mean = categories.get(cat)
        if mean:
            if patched:
                lines.append(f"| *mean* | | {_num(mean.get('m_base'))} | {_num(mean.get('m'))} "
                             f"| {_signed(_change(mean.get('m_base'), mean.get('m')))} |")
            else:
                lines.append(f"| *mean* | | {_num(mean.get('m'))} |")
    by_prompt = _target_prompts(result, targets)
    if by_prompt:
        lines += ["", "## Targets by prompt", "", BY_PROMPT_NOTE, "",
                  "| target | prompt | M base | M edited |", "|---|---|---:|---:|"]
        lines += [f"| {_md(name)} | {_md(p['prompt'])} | {_num(p.get('m_base'))} | {_num(p.get('m'))} |"
                  for name, p in by_prompt]
    elsewhere = _elsewhere_rows(result)
    if elsewhere:
        lines += ["", "## Where did it go?", "", ELSEWHERE_NOTE, "",
                  "| target | base | edited | 95% interval | images | most often in |", "|---|---:|---:|---|---:|---|"]
        lines += [f"| {_md(name)} | {_num(e['m_base'])} | {_num(e['m'])} | "
                  f"{e['interval'][0]:.2f}-{e['interval'][1]:.2f} | {e['n_images']} | {_md(_where(e))} |"
                  for name, e in elsewhere]
    attacks = result.get("attacks")
    if attacks:
        names = _attack_names(attacks)
        lines += ["", "## Attacks", "", ATTACKS_NOTE, "",
                  "| method | target | no attack | " + " | ".join(map(_md, names)) + " |",
                  "|---|---|---:|" + "---:|" * len(names)]
        for target, rs in attacks.items():
            by = {r["attack"]: r for r in rs}
            cells = [_attack_cell(by.get(n)) for n in names]
            lines.append(f"| {_md(_method(result))} | {_md(target)} | {_num(rs[0]['asr_no_attack'])} | "
                         + " | ".join(cells) + " |")
    inversion = result.get("inversion")
    if inversion:
        lines += ["", "## Inversion attack", "", INVERSION_NOTE, "",
                  "| concept | M |", "|---|---:|"]
        lines += [f"| {_md(name)} | {_num(m)} |" for name, m in inversion.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML

_e = html.escape

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;margin:.2rem 0}.meta code{background:#f3f3f3;padding:0 .3rem;border-radius:3px}
.headline{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0;padding:1rem;border:1px solid #cfd8e3;
border-radius:8px;background:#f5f8fb}
.metric{min-width:150px}.metric .v{font-size:1.8rem;font-weight:600}.metric .l{font-weight:600}
.metric .n{font-size:.8rem;color:#666}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.25rem .7rem;border-bottom:1px solid #e5e5e5}
th{text-align:left;background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.target td:first-child{font-weight:600;color:#b2182b}tr.mean td{font-style:italic;background:#fafafa}
.tag{font-size:.75rem;background:#b2182b;color:#fff;border-radius:3px;padding:0 .3rem;margin-left:.4rem}
.good{color:#1a7f37}.bad{color:#c0392b}
.grid{margin:1.5rem 0}.pair{display:flex;flex-wrap:wrap;gap:1.5rem}
figure{margin:0}figcaption{font-weight:600;margin-bottom:.3rem}
img.tiles{image-rendering:pixelated;border:1px solid #ddd}
.prompts{color:#555;font-size:.85rem;margin-top:.3rem}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
"""


def render_html(result: dict, grids: list[ReportGrid] | None = None) -> str:
    """The whole report as one self-contained HTML page."""
    model = result.get("model") or {}
    targets = [str(t) for t in (result.get("targets") or [])]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>obliviate report: {_e(str(model.get('name', '?')))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>obliviate evaluation report</h1>",
        f"<p class=\"meta\">model <b>{_e(str(model.get('name', '?')))}</b> "
        f"(fingerprint <code>{_e(str(model.get('fingerprint', '?')))}</code>)</p>",
        f'<p class="meta">patch: <b>{_e(_patch_summary(result))}</b></p>',
        *([f"<p class=\"meta\">bench {_e(str(result['bench']))}</p>"] if result.get("bench") else []),
        f"<p class=\"meta\">seed {_e(str(result.get('seed', '?')))} · "
        f"{_e(_num(result.get('seconds'), 1))} s</p>",
    ]
    if targets:
        parts.append(f'<p class="meta">targets: {_e(", ".join(targets))}</p>')
    headline = _headline(result)
    if headline:
        parts.append('<div class="headline">')
        parts += [f'<div class="metric" title="{_e(note)}"><div class="l">{_e(label)}</div>'
                  f'<div class="v">{_e(value)}</div><div class="n">{_e(note)}</div></div>'
                  for label, value, note in headline]
        parts.append("</div>")
    parts.append(_html_tables(result, set(targets)))
    by_prompt = _target_prompts(result, set(targets))
    if by_prompt:
        parts.append(f"<h2>Targets by prompt</h2><p>{_e(BY_PROMPT_NOTE)}</p>")
        parts.append("<table><tr><th>target</th><th>prompt</th><th>M base</th><th>M edited</th><th>change</th></tr>")
        parts += [f"<tr><td>{_e(name)}</td><td>{_e(p['prompt'])}</td>"
                  + "".join(_m_cells(p.get("m_base"), p.get("m"), True, True)) + "</tr>" for name, p in by_prompt]
        parts.append("</table>")
    elsewhere = _elsewhere_rows(result)
    if elsewhere:
        parts.append(f"<h2>Where did it go?</h2><p>{_e(ELSEWHERE_NOTE)}</p>")
        parts.append("<table><tr><th>target</th><th>base</th><th>edited</th><th>95% interval</th><th>images</th>"
                     "<th>most often in</th></tr>")
        parts += [f'<tr><td>{_e(name)}</td><td class="num">{_num(e["m_base"])}</td><td class="num">{_num(e["m"])}'
                  f'</td><td>{e["interval"][0]:.2f}-{e["interval"][1]:.2f}</td><td class="num">{e["n_images"]}</td>'
                  f"<td>{_e(_where(e))}</td></tr>" for name, e in elsewhere]
        parts.append("</table>")
    attacks = result.get("attacks")
    if attacks:
        names = _attack_names(attacks)
        parts.append(f"<h2>Attacks</h2><p>{_e(ATTACKS_NOTE)}</p>")
        parts.append("<table><tr><th>method</th><th>target</th><th>no attack</th>"
                     + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
        for target, rs in attacks.items():
            by = {r["attack"]: r for r in rs}
            parts.append(f"<tr><td>{_e(_method(result))}</td><td>{_e(target)}</td>"
                         f'<td class="num">{_num(rs[0]["asr_no_attack"])}</td>'
                         + "".join(f'<td class="num">{_e(_attack_cell(by.get(n)))}</td>' for n in names) + "</tr>")
        parts.append("</table>")
    inversion = result.get("inversion")
    if inversion:
        parts.append(f"<h2>Inversion attack</h2><p>{_e(INVERSION_NOTE)}</p>")
        parts.append("<table><tr><th>concept</th><th>M</th></tr>")
        parts += [f'<tr><td>{_e(str(n))}</td><td class="num">{_num(m)}</td></tr>' for n, m in inversion.items()]
        parts.append("</table>")
    if result.get("concepts"):
        parts.append("<h2>M-Score per concept</h2>")
        parts.append(_svg_chart(result, set(targets)))
    if grids:
        parts.append("<h2>Images</h2>")
        parts += [_html_grid(g) for g in grids]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


BY_PROMPT_NOTE = ("M-Score of each prompt on its own. An erasure that holds for one phrasing and not for another "
                  "(often the shortest prompt) shows up here, not in the mean.")


def _target_prompts(result: dict, targets: set[str]) -> list[tuple[str, dict]]:
    """(target, prompt row) pairs of an edited result's targets, in bench order."""
    if not _has_patch(result):
        return []
    return [(str(r["name"]), p) for r in result.get("concepts") or [] if r.get("name") in targets
            for p in r.get("prompts") or []]


def _html_tables(result: dict, targets: set[str]) -> str:
    patched = _has_patch(result)
    categories = result.get("categories") or {}
    out = []
    for cat, rows in _by_category(result).items():
        out.append(f"<h2>{_e(cat)}</h2><table>")
        head = ["concept", "images"] + (["M base", "M edited", "change"] if patched else ["M"])
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
        for r in rows:
            name = str(r.get("name", "?"))
            is_target = name in targets
            cls = ' class="target"' if is_target else ""
            tag = '<span class="tag">target</span>' if is_target else ""
            cells = [f"<td>{_e(name)}{tag}</td>", f"<td class=\"num\">{_e(str(r.get('n_images', '')))}</td>"]
            cells += _m_cells(r.get("m_base"), r.get("m"), patched, is_target)
            out.append(f"<tr{cls}>{''.join(cells)}</tr>")
        mean = categories.get(cat)
        if mean:
            cells = ["<td>mean</td>", "<td></td>"] + _m_cells(mean.get("m_base"), mean.get("m"), patched, None)
            out.append(f'<tr class="mean">{"".join(cells)}</tr>')
        out.append("</table>")
    return "\n".join(out)


def _m_cells(base: float | None, edited: float | None, patched: bool, is_target: bool | None) -> list[str]:
    if not patched:
        return [f'<td class="num">{_num(edited)}</td>']
    delta = _change(base, edited)
    cls = "num"
    if delta is not None and is_target is not None and abs(delta) >= 0.0005:
        # A drop is the goal for a target and damage for anything else.
        cls += " good" if (delta < 0) == is_target else " bad"
    return [f'<td class="num">{_num(base)}</td>', f'<td class="num">{_num(edited)}</td>',
            f'<td class="{cls}">{_signed(delta)}</td>']


def _png_data_uri(image: np.ndarray, scale: int) -> str:
    pil = Image.fromarray(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tiles(images: np.ndarray) -> tuple[str, int, int]:
    """Tiled, upscaled images as (data URI, width, height)."""
    from ..generation import grid  # imported here: obliviate.generate pulls in torch and diffusers

    n, h, w, _ = images.shape
    scale = max(1, round(TARGET_IMAGE_PX / max(h, w)))
    tiled = grid(images, cols=min(n, 8) if n > 16 else None)
    return _png_data_uri(tiled, scale), tiled.shape[1] * scale, tiled.shape[0] * scale


def _html_grid(g: ReportGrid) -> str:
    figures = [(g.captions[0], g.base)] + ([(g.captions[1], g.edited)] if g.edited is not None else [])
    out = [f'<section class="grid"><h3>{_e(g.title)}</h3><div class="pair">']
    for caption, images in figures:
        uri, width, height = _tiles(images)
        out.append(f'<figure><figcaption>{_e(caption)}</figcaption><img class="tiles" src="{uri}" '
                   f'width="{width}" height="{height}" alt="{_e(caption)}: {_e(g.title)}"></figure>')
    out.append("</div>")
    if g.note is not None:
        out.append(f'<p class="prompts">{_e(g.note)}</p></section>')
        return "\n".join(out)
    if g.edited is None:
        out.append('<p class="prompts">no edited model (no patch evaluated)</p>')
    prompts = list(dict.fromkeys(g.prompts))
    label = "prompt" if len(prompts) == 1 else "prompts"
    seeds = ", same prompts and seeds for both models" if g.edited is not None else ""
    out.append(f'<p class="prompts">{len(g.prompts)} images{seeds}; {label}: '
               f"{'; '.join(_e(p) for p in prompts)}</p></section>")
    return "\n".join(out)


# --------------------------------------------------------------------------- SVG chart

BASE_COLOUR = "#9aa5b1"
EDITED_COLOUR = "#2c7fb8"
TARGET_COLOUR = "#d7301f"


def _svg_chart(result: dict, targets: set[str]) -> str:
    """Horizontal grouped bars per concept (base grey, edited blue, targets red); just M without a patch."""
    patched = _has_patch(result)
    groups = _by_category(result)
    values = [v for r in result.get("concepts", []) for v in (r.get("m_base"), r.get("m")) if v is not None]
    x_max = max(1.0, max(values, default=1.0))
    x_max = math.ceil(x_max * 4) / 4
    longest = max((len(str(r.get("name", ""))) for r in result.get("concepts", [])), default=4)
    max_chars = 34  # longer names are shortened in the chart; the tables and tooltips keep them whole
    label_w = 36 + round(7.5 * min(longest, max_chars))  # room for the bold target marker
    plot_w, value_w = 440, 120
    row_h = 24 if patched else 18
    top, axis_h = 34, 44
    n_rows = sum(len(rows) + 1 for rows in groups.values())
    height = top + n_rows * row_h + axis_h
    width = label_w + plot_w + value_w
    x0 = label_w

    def x(v: float) -> float:
        return x0 + plot_w * v / x_max

    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="M-Score per concept{", base versus edited" if patched else ""}" font-size="12">']
    # Legend.
    legend = [("base model", BASE_COLOUR), ("edited model", EDITED_COLOUR), ("edited, target", TARGET_COLOUR)]
    if not patched:
        legend = [("M-Score", EDITED_COLOUR)]
    lx = x0
    for text, colour in legend:
        out.append(f'<rect x="{lx}" y="10" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{lx + 16}" y="20">{_e(text)}</text>')
        lx += 24 + 7 * len(text)
    # Grid lines and ticks.
    plot_bottom = top + n_rows * row_h
    n_ticks = round(x_max / 0.25)
    for i in range(n_ticks + 1):
        v = i * 0.25
        out.append(f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{plot_bottom}" stroke="#e3e3e3"/>'
                   f'<text x="{x(v):.1f}" y="{plot_bottom + 16}" text-anchor="middle">{v:g}</text>')
    out.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{plot_bottom}" stroke="#555"/>'
               f'<line x1="{x0}" y1="{plot_bottom}" x2="{x0 + plot_w}" y2="{plot_bottom}" stroke="#555"/>')
    axis_label = "M-Score (detector hit rate)"
    out.append(f'<text x="{x0 + plot_w / 2}" y="{plot_bottom + 36}" text-anchor="middle" font-weight="600">'
               f"{axis_label}</text>")
    # Bars.
    y = top
    for cat, rows in groups.items():
        out.append(f'<text x="4" y="{y + row_h * 0.7:.1f}" font-weight="600" fill="#444">{_e(cat)}</text>')
        y += row_h
        for r in rows:
            name = str(r.get("name", "?"))
            is_target = name in targets
            base, edited = r.get("m_base"), r.get("m")
            mid = y + row_h / 2
            weight = ' font-weight="700"' if is_target else ""
            fill = f' fill="{TARGET_COLOUR}"' if is_target else ""
            marker = "◆ " if is_target else ""
            short = name if len(name) <= max_chars else name[:max_chars - 1] + "…"
            tip = f"{name}: " + (f"base {_num(base)}, edited {_num(edited)}" if patched else f"M {_num(edited)}")
            out.append(f"<g><title>{_e(tip)}</title>"
                       f'<text x="{x0 - 6}" y="{mid + 4:.1f}" text-anchor="end"{weight}{fill}>'
                       f"{_e(marker + short)}</text>")
            colour = TARGET_COLOUR if is_target else EDITED_COLOUR
            if patched:
                bar_h = (row_h - 6) / 2
                if base is not None:
                    out.append(f'<rect x="{x0}" y="{y + 3:.1f}" width="{x(base) - x0:.1f}" height="{bar_h:.1f}" '
                               f'fill="{BASE_COLOUR}"/>')
                if edited is not None:
                    out.append(f'<rect x="{x0}" y="{y + 3 + bar_h:.1f}" width="{x(edited) - x0:.1f}" '
                               f'height="{bar_h:.1f}" fill="{colour}"/>')
                value = f"{_num(base)} → {_num(edited)}"
            else:
                if edited is not None:
                    out.append(f'<rect x="{x0}" y="{y + 3:.1f}" width="{x(edited) - x0:.1f}" '
                               f'height="{row_h - 6}" fill="{colour}"/>')
                value = _num(edited)
            out.append(f'<text x="{x0 + plot_w + 8}" y="{mid + 4:.1f}"{fill}>{_e(value)}</text></g>')
            y += row_h
    out.append("</svg>")
    return "\n".join(out)
