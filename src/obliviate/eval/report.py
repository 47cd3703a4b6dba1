"""Evaluation reports: one self-contained HTML file plus a Markdown summary beside it.

An eval result is a JSON dict of numbers; people judge an edit by looking at it, and cite it by what it rests
on. So the report names what was measured (model, bench, sampler, patch file and hash, method and its full
config, obliviate versions), says for every number how many images it rests on and its 95% interval, shows
per-prompt scores for the targets and for any concept the edit damaged, and shows each image with its prompt
and the detector's verdict. The HTML page is one file that can be mailed or archived: images are inline PNG
data URIs, the chart is hand-written SVG, the CSS is inline, nothing is fetched and no JavaScript runs. The
Markdown file carries the same numbers (no images) for READMEs, pull requests and terminals. Both files are
written atomically.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ObliviateError
from ..io import write_atomic
from .metrics import wilson_interval
from .report_figures import ReportGrid, by_category, grid_html, has_patch, interval, num, svg_chart

__all__ = ["ReportGrid", "Section", "check_report_path", "damaged", "render_html", "render_markdown", "sections",
           "write_report"]

HEADLINE_FIELDS = [
    ("efficacy", "Efficacy", "mean over targets of 1 − M edited / M base (1 = fully erased)"),
    ("preservation", "Preservation", "mean over the other concepts of min(1, M edited / M base) (1 = untouched)"),
    ("neighbour_preservation", "Neighbour preservation",
     "preservation over the other concepts in the targets' categories, the ones an edit most often hurts"),
    ("h", "H", "harmonic mean of efficacy and preservation"),
]
M_SCORE_NOTE = ("share of a concept's images, made from its own prompts, in which the detector finds the concept; "
                "base and edited models get the same prompts and seeds")
IMAGES_NOTE = "how many images a number rests on, per model"
INTERVAL_NOTE = ("95% Wilson score interval of a share over its images: where the true rate lies with 95% "
                 "confidence, the detector's own errors not counted")
CHANGE_NOTE = "M edited − M base"
WORST_NOTE = ("the other concept with the lowest min(1, M edited / M base): what a mean over many concepts hides "
              "(the lowest of many noisy shares, so read it beside its own interval in the table)")
DRIFT_NOTE = ("distance between the detector's features of base and edited images of the other concepts (same "
              "prompts and seeds): Fréchet distance of the two sets, and mean distance of paired images; 0 = same")
ELSEWHERE_NOTE = ("How often the detector finds each target in images of the other concepts' prompts, which never "
                  "ask for it. An edit that moved the concept instead of removing it shows up here.")
ATTACKS_NOTE = ("Attack success rate (ASR): share of the attack's images in which the detector finds the target; "
                "beside it the same attack on the base model (its ceiling) and the target's own prompts on the "
                "edited model (no attack).")
INVERSION_NOTE = ("M-Score reached by tokens learned on each concept's images with the model under test "
                  "(textual-inversion attack; high = the concept can still be recovered).")
ORACLE_NOTE = ("The oracle is the world retrained by its own recipe without the targets (exact unlearning), "
               "evaluated here as if it were their erasure: what a perfect erasure scores and costs. An attack's "
               "ASR on the oracle is what it reaches against exact unlearning: there the attack teaches the "
               "concept rather than recovers it.")
BY_PROMPT_NOTE = ("M-Score of each prompt on its own. An erasure that holds for one phrasing and not for another "
                  "(often the shortest prompt) shows up here, not in the mean.")
VERDICT_NOTE = "under each image: whether the detector finds the image's concept in it (found / not found)"
# One image in eight lost is noise: a concept is damaged only when the drop is both large and beyond chance.
DAMAGE_DROP = 0.1
DAMAGE_RULE = (f"A concept other than the targets counts as damaged when its M-Score fell by at least {DAMAGE_DROP} "
               "and the 95% interval of that drop (Newcombe's, from the base and edited Wilson intervals) "
               "excludes 0.")


def write_report(result: dict, html_path: str | Path, grids: list[ReportGrid] | None = None) -> tuple[Path, Path]:
    """Write html_path and html_path.with_suffix('.md'); returns both paths."""
    html_path = Path(html_path)
    md_path = html_path.with_suffix(".md")
    if md_path == html_path:
        raise ObliviateError(f"report path {html_path} must not end in .md (the Markdown summary goes there)")
    # Render everything first, so a rendering error leaves no half-written pair of files behind.
    page = render_html(result, grids or [])
    summary = render_markdown(result, grids or [])
    write_atomic(html_path, _text_writer(page))
    write_atomic(md_path, _text_writer(summary))
    return html_path, md_path


def check_report_path(html_path: str | Path) -> Path:
    """Refuse, before any work, a report path that is not a writable .html file."""
    from ..io import check_writable

    html_path = Path(html_path)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ObliviateError("the report must be an .html file (the Markdown summary goes beside it)")
    check_writable(html_path)
    return html_path


def _text_writer(text: str) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- what the report says


def damaged(row: dict, targets: set[str]) -> bool:
    """Whether an edit clearly damaged a concept it was not meant to touch (the rule is DAMAGE_RULE)."""
    base, m, iv, base_iv = row.get("m_base"), row.get("m"), row.get("interval"), row.get("base_interval")
    if row.get("name") in targets or base is None or m is None or not iv or not base_iv:
        return False
    # Newcombe's hybrid score interval of base - m: its lower end from the two Wilson intervals' inner halves.
    lower = (base - m) - ((base - base_iv[0]) ** 2 + (iv[1] - m) ** 2) ** 0.5
    return base - m >= DAMAGE_DROP - 1e-9 and lower > 0


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.3f}"


def _change(base: float | None, edited: float | None) -> float | None:
    return None if base is None or edited is None else edited - base


def _targets(result: dict) -> set[str]:
    return {str(t) for t in result.get("targets") or []}


def _images_per_concept(result: dict) -> int | None:
    counts = {r.get("n_images") for r in result.get("concepts") or []} - {None}
    return counts.pop() if len(counts) == 1 else None


def _patch_metas(result: dict) -> list[dict]:
    patch = result.get("patch")
    return [] if patch is None else list(patch.get("patches") or [patch])


def _patch_summary(meta: dict) -> str:
    concepts = meta.get("concepts") or []
    if isinstance(concepts, str):
        concepts = [concepts]
    return f"{meta.get('method', '?')} on {', '.join(map(str, concepts)) or '(no concepts)'}"


SHOWN_META = ("file", "content_sha256", "method", "concepts", "config", "obliviate_version", "seconds",
              "base_model", "format")


def _provenance(result: dict) -> list[tuple[str, str, bool]]:
    """(label, text, is code) lines naming everything a reader needs to reproduce or cite the numbers."""
    model = result.get("model") or {}
    where = ", ".join(str(model[k]) for k in ("device", "dtype") if model.get(k))
    items = [("model", f"{model.get('name', '?')}", False),
             ("model fingerprint", str(model.get("fingerprint", "?")), True)]
    if where:
        items.append(("model device, dtype", where, False))
    n, rows = _images_per_concept(result), result.get("concepts") or []
    bench = f"{result.get('bench', '?')}: {len(rows)} concepts in {len(by_category(result))} categories"
    if n:
        bench += f", {n} images per concept and model"
    items.append(("bench", bench, False))
    sampler = result.get("sampler") or {}
    if sampler:
        items.append(("sampler", f"{sampler.get('steps', '?')} steps, guidance {sampler.get('guidance', '?')} "
                                 "(the pipeline's own scheduler)", False))
    items.append(("seed", str(result.get("seed", "?")), False))
    metas = _patch_metas(result)
    if not metas:
        items.append(("patch", "no patch", False))
    for i, meta in enumerate(metas):
        tag = f"patch {i + 1} " if len(metas) > 1 else "patch "
        items.append((tag + "file", str(meta.get("file") or "none (made in memory, not read from a file)"),
                      bool(meta.get("file"))))
        if meta.get("content_sha256"):
            items.append((tag + "SHA-256", str(meta["content_sha256"]), True))
        items.append((tag + "method", _patch_summary(meta), False))
        items.append((tag + "method config", json.dumps(meta.get("config") or {}), True))
        made = f"obliviate {meta.get('obliviate_version', '?')}"
        if meta.get("seconds") is not None:
            made += f" in {meta['seconds']} s"
        if meta.get("base_model"):
            made += f", for base model {meta['base_model']}"
        items.append((tag + "made with", made, False))
        other = {k: v for k, v in meta.items() if k not in SHOWN_META}
        if other:
            items.append((tag + "other metadata", json.dumps(other), True))
    if result.get("keys"):
        items.append(("keys installed for", ", ".join(map(str, result["keys"])), False))
    targets = result.get("targets") or []
    if targets:
        items.append(("targets", ", ".join(map(str, targets)), False))
    items.append(("measured with", f"obliviate {result.get('obliviate_version', '?')} in "
                                   f"{num(result.get('seconds'), 1)} s", False))
    return items


def _glossary(result: dict, images: bool) -> list[tuple[str, str]]:
    """One line per metric the report shows."""
    patched = has_patch(result)
    items = [("M-Score", M_SCORE_NOTE), ("images", IMAGES_NOTE), ("95% interval", INTERVAL_NOTE)]
    if patched:
        items.append(("change", CHANGE_NOTE))
        items += [(label, note) for key, label, note in HEADLINE_FIELDS if result.get(key) is not None]
        if result.get("drift"):
            items.append(("Drift", DRIFT_NOTE))
        items.append(("damaged", DAMAGE_RULE))
    if _elsewhere_rows(result):
        items.append(("Where did it go?", ELSEWHERE_NOTE))
    if result.get("attacks"):
        items.append(("ASR", ATTACKS_NOTE))
    if result.get("inversion"):
        items.append(("Inversion", INVERSION_NOTE))
    if result.get("oracle"):
        items.append(("Oracle", ORACLE_NOTE))
    if images:
        items.append(("found / not found", VERDICT_NOTE))
    return items


def _headline(result: dict) -> list[tuple[str, str, str, str]]:
    """(label, value, explanation, what it rests on) for every headline number present in ``result``."""
    targets = _targets(result)
    rows = result.get("concepts") or []
    others = [r for r in rows if r.get("name") not in targets]
    cats = {r.get("category") for r in rows if r.get("name") in targets}
    n = _images_per_concept(result)
    each = f", {n} images each per model" if n else ""
    counts = {"efficacy": len(rows) - len(others), "preservation": len(others),
              "neighbour_preservation": sum(r.get("category") in cats for r in others)}
    counts["h"] = len(rows)
    items = []
    for key, label, note in HEADLINE_FIELDS:
        if result.get(key) is None:
            continue
        what = "target" if key == "efficacy" else "concept"
        k = counts[key]
        items.append((label, num(result[key]), note, f"rests on {k} {what}{'s' if k != 1 else ''}{each}"))
    drift = result.get("drift")
    if drift:
        k = len(others) * n if n else None
        on = f"rests on {k} image pairs" if k else ""
        if drift.get("frechet") is not None:
            items.append(("Drift (Fréchet)", num(drift["frechet"]), "Fréchet distance of the detector's features, "
                          "other concepts, base vs edited", on))
        if drift.get("mean_feature_distance") is not None:
            items.append(("Drift (mean feature distance)", num(drift["mean_feature_distance"]),
                          "mean feature distance of paired images (same prompt and seed), other concepts", on))
    worst = result.get("worst_preserved")
    if worst:
        items.append(("Worst preserved", f"{worst['concept']} {num(worst['preservation'])}", WORST_NOTE,
                      f"rests on {n} images per model" if n else ""))
    return items


def _elsewhere_rows(result: dict) -> list[tuple[str, dict]]:
    return [(str(r["name"]), r["elsewhere"]) for r in result.get("concepts") or [] if r.get("elsewhere")]


def _where(e: dict) -> str:
    top = list((e.get("by_concept") or {}).items())[:3]
    return ", ".join(f"{name}'s prompts {b:.2f} → {m:.2f}" for name, (b, m) in top) or "nowhere"


def _prompt_rows(result: dict, which: Callable[[dict], bool]) -> list[tuple[str, dict]]:
    """(concept, prompt row) pairs of an edited result's concepts that ``which`` picks, in bench order."""
    if not has_patch(result):
        return []
    return [(str(r["name"]), p) for r in result.get("concepts") or [] if which(r) for p in r.get("prompts") or []]


def _attack_rows(result: dict) -> list[tuple[str, dict]]:
    return [(str(target), r) for target, rs in (result.get("attacks") or {}).items() for r in rs]


def _method(result: dict) -> str:
    patch = result.get("patch")
    method = str(patch.get("method", "?")) if patch else "keys"
    return method + (" + keys" if patch and result.get("keys") else "")


def _concept_cells(r: dict, patched: bool, oracle: dict | None = None) -> list[str]:
    """images, then (M base, its interval,) M edited, its interval (, change) (, the oracle's M), as text."""
    cells = [str(r.get("n_images", ""))]
    if patched:
        cells += [num(r.get("m_base")), interval(r.get("base_interval"))]
    cells += [num(r.get("m")), interval(r.get("interval"))]
    if patched:
        cells.append(_signed(_change(r.get("m_base"), r.get("m"))))
    if oracle is not None:
        cells += [num(oracle.get("m")), interval(oracle.get("interval"))]
    return cells


def _concept_head(patched: bool, oracle: bool = False) -> list[str]:
    head = ["images", "M base", "base 95% interval", "M edited", "edited 95% interval", "change"] if patched else \
        ["images", "M", "95% interval"]
    return head + (["M oracle", "oracle 95% interval"] if oracle else [])


PROMPT_HEAD = ["concept", "prompt", "images", "M base", "base 95% interval", "M edited", "edited 95% interval",
               "change"]
ELSEWHERE_HEAD = ["target", "images", "base", "base 95% interval", "edited", "edited 95% interval",
                  "most often in (whose prompts: base → edited)"]
TEXT_COLUMNS = {ELSEWHERE_HEAD[-1]}
ATTACK_HEAD = ["method", "target", "attack", "images", "ASR", "95% interval", "ASR on base model (ceiling)",
               "no attack"]
ORACLE_ATTACK_HEAD = "ASR on the oracle"


def _prompt_cells(name: str, p: dict) -> list[str]:
    return [name, str(p.get("prompt", "")), str(p.get("n_images", "")), num(p.get("m_base")),
            interval(p.get("base_interval")), num(p.get("m")), interval(p.get("interval")),
            _signed(_change(p.get("m_base"), p.get("m")))]


def _elsewhere_cells(name: str, e: dict) -> list[str]:
    return [name, str(e.get("n_images", "")), num(e.get("m_base")), interval(e.get("base_interval")),
            num(e.get("m")), interval(e.get("interval")), _where(e)]


def _attack_cells(result: dict, target: str, r: dict) -> list[str]:
    n = r.get("n_images")
    iv = wilson_interval(r["asr"], n) if n else None
    cells = [_method(result), target, str(r.get("attack", "?")), str(n or ""), num(r.get("asr")), interval(iv),
             num(r.get("asr_base")), num(r.get("asr_no_attack"))]
    return cells + ([num(r.get("asr_oracle"))] if result.get("oracle") else [])


def _oracle_rows(result: dict) -> list[list[str]]:
    """Each headline figure of the model under test beside the oracle's (and how far it is from it)."""
    oracle = result.get("oracle")
    if not oracle:
        return []
    drift = lambda r: (r.get("drift") or {}).get("frechet")  # noqa: E731
    figures = [(label, result.get(key), oracle.get(key)) for key, label, _ in HEADLINE_FIELDS]
    figures.append(("Drift (Fréchet)", drift(result), drift(oracle)))
    return [[label, num(mine), num(theirs), _signed(_change(theirs, mine))] for label, mine, theirs in figures
            if theirs is not None]


def _inversion_rows(result: dict) -> list[list[str]]:
    n = {r.get("name"): r.get("n_images") for r in result.get("concepts") or []}
    rows = []
    for name, m in (result.get("inversion") or {}).items():
        k = n.get(name)
        rows.append([str(name), str(k or ""), num(m), interval(wilson_interval(m, k) if k else None)])
    return rows


# --------------------------------------------------------------------------- one list of sections


@dataclass
class Cell:
    """A table cell: its text, and how it is marked (a ``tag``, "target" or "damaged"; a ``tone``, "good" or
    "bad", for a change that is the goal or the damage)."""

    text: str
    tag: str | None = None
    tone: str | None = None


@dataclass
class Table:
    head: list[str]
    rows: list[list[Cell]]
    left: int = 1  # text columns (besides TEXT_COLUMNS); the rest are numbers
    kinds: list[str] | None = None  # per row: "target", "mean" or ""


@dataclass
class Section:
    """One heading of the report and what stands under it, in order: text, facts (label, text, is code),
    definitions (term, meaning), a headline (label, value, meaning, what it rests on), tables, and figures
    (HTML only: Markdown carries the numbers, not the pictures)."""

    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Facts:
    items: list[tuple[str, str, bool]]


@dataclass
class Definitions:
    items: list[tuple[str, str]]


@dataclass
class Headline:
    items: list[tuple[str, str, str, str]]


@dataclass
class Figure:
    markup: str  # HTML


def _cells(texts: list[str]) -> list[Cell]:
    return [Cell(t) for t in texts]


def _tone(base: float | None, edited: float | None, is_target: bool) -> str | None:
    delta = _change(base, edited)
    if delta is None or abs(delta) < 0.0005:
        return None
    return "good" if (delta < 0) == is_target else "bad"  # a drop is the goal for a target, damage elsewhere


def _prompt_table(rows: list[tuple[str, dict]], target: bool) -> Table:
    body = []
    for name, p in rows:
        cells = _cells(_prompt_cells(name, p))
        cells[-1].tone = _tone(p.get("m_base"), p.get("m"), target)
        body.append(cells)
    return Table(PROMPT_HEAD, body, left=2)


def _concept_table(result: dict, cat: str, rows: list[dict], targets: set[str]) -> Table:
    patched, oracle = has_patch(result), result.get("oracle")
    by_oracle = {r["name"]: r for r in oracle["concepts"]} if oracle else {}
    body, kinds = [], []
    for r in rows:
        name = str(r.get("name", "?"))
        is_target = name in targets
        cells = [Cell(name, "target" if is_target else "damaged" if damaged(r, targets) else None),
                 *_cells(_concept_cells(r, patched, by_oracle.get(name) if oracle else None))]
        if patched:
            cells[6].tone = _tone(r.get("m_base"), r.get("m"), is_target)
        body.append(cells)
        kinds.append("target" if is_target else "")
    mean = (result.get("categories") or {}).get(cat)
    if mean:
        body.append([Cell("mean"), *_cells(_concept_cells(mean, patched, oracle["categories"].get(cat) if oracle
                                                          else None))])
        kinds.append("mean")
    return Table(["concept", *_concept_head(patched, bool(oracle))], body, kinds=kinds)


def sections(result: dict, grids: list[ReportGrid] | None = None) -> list[Section]:
    """Everything the report says, in order; both renderers walk this one list."""
    targets, patched = _targets(result), has_patch(result)
    out = [Section("What was measured", [Facts(_provenance(result))])]
    headline = _headline(result)
    if headline:
        out.append(Section("Headline", [Headline(headline)]))
    oracle = _oracle_rows(result)
    if oracle:
        head = ["figure", "this model", "oracle", "this model − oracle"]
        out.append(Section("Beside the oracle", [ORACLE_NOTE, Table(head, [_cells(r) for r in oracle])]))
    out.append(Section("What the numbers mean", [Definitions(_glossary(result, images=bool(grids)))]))
    for cat, rows in by_category(result).items():
        out.append(Section(f"M-Score per concept: {cat}", [_concept_table(result, cat, rows, targets)]))
    by_prompt = _prompt_rows(result, lambda r: r.get("name") in targets)
    if by_prompt:
        out.append(Section("Targets by prompt", [BY_PROMPT_NOTE, _prompt_table(by_prompt, True)]))
    if patched:
        hurt = _prompt_rows(result, lambda r: damaged(r, targets))
        table = _prompt_table(hurt, False) if hurt else "No concept other than the targets was damaged by this rule."
        out.append(Section("Damaged concepts by prompt", [DAMAGE_RULE, table]))
    elsewhere = _elsewhere_rows(result)
    if elsewhere:
        out.append(Section("Where did it go?", [ELSEWHERE_NOTE, Table(
            ELSEWHERE_HEAD, [_cells(_elsewhere_cells(n, e)) for n, e in elsewhere])]))
    attacks = _attack_rows(result)
    if attacks:
        head = ATTACK_HEAD + ([ORACLE_ATTACK_HEAD] if result.get("oracle") else [])
        out.append(Section("Attacks", [ATTACKS_NOTE, Table(head, [_cells(_attack_cells(result, t, r))
                                                                  for t, r in attacks], left=3)]))
    inversion = _inversion_rows(result)
    if inversion:
        out.append(Section("Inversion attack", [INVERSION_NOTE, Table(["concept", "images", "M", "95% interval"],
                                                                      [_cells(r) for r in inversion])]))
    if result.get("concepts"):
        n = _images_per_concept(result)
        what = ("Bars: each concept's M-Score" + (f" over its {n} images" if n else "")
                + (", base model (grey) above edited model (blue; targets red)" if patched else "")
                + "; whiskers: 95% interval; x axis: M-Score from 0 to 1; concepts grouped by category.")
        out.append(Section("Figure: M-Score per concept", [Figure(f'<p class="what">{_e(what)}</p>'),
                                                           Figure(svg_chart(result, targets))]))
    if grids:
        what = ("Each table: one concept; columns are images (headed by the prompt that made them), rows are models; "
                "under each image the detector's verdict for that concept. Folded sections below hold the other "
                "concepts' images.")
        out.append(Section("Figure: images and the detector's verdicts",
                           [Figure(f'<p class="what">{_e(what)}</p>'), *(Figure(grid_html(g)) for g in grids)]))
    return out


# --------------------------------------------------------------------------- Markdown


def _md(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_cell(cell: Cell, kind: str) -> str:
    text = _md(cell.text)
    if cell.tag == "target":
        return f"**{text}** (target)"
    if cell.tag == "damaged":
        return f"{text} (damaged)"
    return f"*{text}*" if kind == "mean" and cell.text == "mean" else text


def _md_table(table: Table) -> list[str]:
    align = ["---" if i < table.left or h in TEXT_COLUMNS else "---:" for i, h in enumerate(table.head)]
    kinds = table.kinds or [""] * len(table.rows)
    return (["| " + " | ".join(map(_md, table.head)) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(_md_cell(c, k) for c in row) + " |" for row, k in zip(table.rows, kinds,
                                                                                      strict=True)])


def render_markdown(result: dict, grids: list[ReportGrid] | None = None) -> str:
    """The report's numbers as Markdown (its figures are the HTML page's)."""
    lines = ["# obliviate evaluation report"]
    for section in sections(result, grids):
        blocks = [b for b in section.blocks if not isinstance(b, Figure)]
        if not blocks:
            continue
        lines += ["", f"## {section.title}", ""]
        for i, block in enumerate(blocks):
            if i:
                lines.append("")
            if isinstance(block, str):
                lines.append(block)
            elif isinstance(block, Facts):
                lines += [f"- {label}: " + (f"`{_md(t)}`" if code else _md(t)) for label, t, code in block.items]
            elif isinstance(block, Definitions):
                lines += [f"- **{_md(term)}**: {_md(note)}" for term, note in block.items if term not in HTML_ONLY]
            elif isinstance(block, Headline):
                lines += [f"- **{label}**: {value} ({rests})" if rests else f"- **{label}**: {value}"
                          for label, value, _, rests in block.items]
            elif isinstance(block, Table):
                lines += _md_table(block)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML

_e = html.escape
HTML_ONLY = {"found / not found"}  # glossary terms of what only the page shows

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{margin:1.2rem 0 .3rem}
code{background:#f3f3f3;padding:0 .3rem;border-radius:3px;font-size:.85rem;word-break:break-all}
table.meta th{background:none;font-weight:600;color:#555;white-space:nowrap;vertical-align:top}
dl.glossary{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;font-size:.9rem}
dl.glossary dt{font-weight:600}dl.glossary dd{margin:0;color:#444}
.headline{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0;padding:1rem;border:1px solid #cfd8e3;
border-radius:8px;background:#f5f8fb}
.metric{min-width:150px;max-width:320px}.metric .v{font-size:1.8rem;font-weight:600}.metric .l{font-weight:600}
.metric .n{font-size:.8rem;color:#666}.metric .r{font-size:.8rem;color:#222;margin-top:.2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.25rem .7rem;border-bottom:1px solid #e5e5e5}
th{text-align:left;background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.target td:first-child{font-weight:600;color:#b2182b}tr.mean td{font-style:italic;background:#fafafa}
.tag{font-size:.75rem;background:#b2182b;color:#fff;border-radius:3px;padding:0 .3rem;margin-left:.4rem}
.tag.damaged{background:#8a5a00}
.good{color:#1a7f37}.bad{color:#c0392b}
p.what{color:#444;font-size:.9rem;margin:.2rem 0 .4rem}
.grid{margin:1rem 0}details.grid summary{cursor:pointer;font-weight:600}
table.images th,table.images td{padding:.2rem;vertical-align:top;border:none;background:none}
table.images th.p,table.images .cell .p{font-weight:400;font-size:.75rem;color:#444;max-width:110px;
text-align:center}
table.images th[scope=row]{font-size:.85rem;white-space:nowrap;vertical-align:middle}
img.tiles{image-rendering:pixelated;border:1px solid #ddd;display:block;box-sizing:border-box}
.verdict{font-size:.75rem;text-align:center;border-radius:3px;margin-top:2px}
.verdict.found{background:#2c7fb8;color:#fff}.verdict.missed{background:#eee;color:#555}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
"""


def _html_cell(cell: Cell) -> str:
    text = _e(cell.text)
    if cell.tone:
        text = f'<span class="{cell.tone}">{text}</span>'
    if cell.tag:
        text += f'<span class="tag{" damaged" if cell.tag == "damaged" else ""}">{cell.tag}</span>'
    return text


def _html_table(table: Table) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in table.head) + "</tr>"]
    kinds = table.kinds or [""] * len(table.rows)
    for row, kind in zip(table.rows, kinds, strict=True):
        cls = f' class="{kind}"' if kind else ""
        cells = "".join(f"<td>{_html_cell(c)}</td>" if j < table.left or table.head[j] in TEXT_COLUMNS
                        else f'<td class="num">{_html_cell(c)}</td>' for j, c in enumerate(row))
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _html_block(block) -> str:
    if isinstance(block, str):
        return f"<p>{_e(block)}</p>"
    if isinstance(block, Facts):
        return '<table class="meta">' + "".join(
            f"<tr><th>{_e(label)}</th><td>" + (f"<code>{_e(text)}</code>" if code else _e(text)) + "</td></tr>"
            for label, text, code in block.items) + "</table>"
    if isinstance(block, Definitions):
        return '<dl class="glossary">' + "".join(f"<dt>{_e(t)}</dt><dd>{_e(n)}</dd>" for t, n in block.items) + "</dl>"
    if isinstance(block, Headline):
        return '<div class="headline">' + "".join(
            f'<div class="metric" title="{_e(note)}"><div class="l">{_e(label)}</div><div class="v">{_e(value)}'
            f'</div><div class="n">{_e(note)}</div><div class="r">{_e(rests)}</div></div>'
            for label, value, note, rests in block.items) + "</div>"
    if isinstance(block, Table):
        return _html_table(block)
    return block.markup


def render_html(result: dict, grids: list[ReportGrid] | None = None) -> str:
    """The whole report as one self-contained HTML page."""
    model = result.get("model") or {}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<title>obliviate report: {_e(str(model.get('name', '?')))}</title>",
             f"<style>{CSS}</style></head><body>", "<h1>obliviate evaluation report</h1>"]
    for section in sections(result, grids):
        parts.append(f"<h2>{_e(section.title, quote=False)}</h2>")
        parts += [_html_block(b) for b in section.blocks]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
