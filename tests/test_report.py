"""The HTML/Markdown eval report: on synthetic results and images, and once from a real evaluation."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from obliviate.errors import ObliviateError
from obliviate.eval.metrics import wilson_interval
from obliviate.eval.report import DAMAGE_RULE, ReportGrid, damaged, write_report

CONCEPTS = [("circle", "shape"), ("square", "shape"), ("triangle", "shape"),
            ("red", "colour"), ("blue", "colour"), ("zorvik", "creature")]


def make_result(patched: bool = True, names: list[tuple[str, str]] | None = None, base_copy: bool = False) -> dict:
    """A result shaped like ``obliviate eval``'s; without a patch m_base is None or (``base_copy``) equal to m."""
    names = names or CONCEPTS
    rng = np.random.default_rng(0)
    rows = []
    for name, cat in names:
        m = float(rng.uniform(0.5, 1.0))
        rows.append({"name": name, "category": cat, "m_base": m if patched or base_copy else None,
                     "m": m * 0.2 if patched and name == names[0][0] else m, "n_images": 16})
    cats: dict[str, dict] = {}
    for cat in dict.fromkeys(c for _, c in names):
        sel = [r for r in rows if r["category"] == cat]
        cats[cat] = {"m_base": float(np.mean([r["m_base"] for r in sel])) if patched or base_copy else None,
                     "m": float(np.mean([r["m"] for r in sel]))}
    result = {
        "model": {"name": "world", "fingerprint": "abc123"},
        "patch": {"method": "uce", "concepts": [names[0][0]]} if patched else None,
        "seed": 7, "bench": "world", "concepts": rows, "categories": cats,
        "targets": [names[0][0]] if patched else None,
        "efficacy": 0.8 if patched else None, "preservation": 0.95 if patched else None,
        "neighbour_preservation": 0.9 if patched else None, "h": 0.87 if patched else None,
        "drift": {"frechet": 1.25, "mean_feature_distance": 0.12} if patched else None,
        "seconds": 3.5,
    }
    if patched:
        result["inversion"] = {names[0][0]: 0.4}
        rows[0]["prompts"] = [{"prompt": f"a photo of a {names[0][0]}", "m_base": 1.0, "m": 0.0625},
                              {"prompt": names[0][0], "m_base": 1.0, "m": 0.75}]
    return result


def make_grid(title: str = "circle (target)", n: int = 16, edited: bool = True, size: int = 32) -> ReportGrid:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ReportGrid(title=title, base=base, edited=255 - base if edited else None,
                      prompts=[f"a photo of {title}"] * n)


def test_writes_self_contained_html_and_markdown(tmp_path):
    result = make_result()
    html_path, md_path = write_report(result, tmp_path / "report.html", [make_grid(), make_grid("square")])
    assert html_path == tmp_path / "report.html" and md_path == tmp_path / "report.md"
    page, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert page.count('src="data:image/png;base64,') == 2 * 16 * 2  # every image on its own, both models
    assert "<svg" in page and "M-Score" in page
    for name, cat in CONCEPTS:
        assert name in page and name in md
        assert cat in page and cat in md
    for text in ("world", "abc123", "uce", "0.800", "0.950", "0.900", "0.870", "1.250"):
        assert text in page and text in md
    assert "data:image" not in md
    for text in ("Targets by prompt", "a photo of a circle", "0.062", "0.750"):  # where the erasure fails
        assert text in page and text in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]


@pytest.mark.parametrize("base_copy", [False, True])
def test_without_patch(tmp_path, base_copy):
    result = make_result(patched=False, base_copy=base_copy)
    html_path, md_path = write_report(result, tmp_path / "r.html", [make_grid(edited=False)])
    page, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    assert "no patch" in page and "no patch" in md
    assert "M edited" not in page and "M edited" not in md
    assert "Efficacy" not in page and "Efficacy" not in md
    assert "→" not in page  # the chart shows one M per concept
    assert page.count("data:image/png;base64,") == 16  # one row of images: the base model's
    for name, _ in CONCEPTS:
        assert name in page and name in md


def test_no_grids(tmp_path):
    html_path, _ = write_report(make_result(), tmp_path / "r.html")
    assert "data:image" not in html_path.read_text(encoding="utf-8")


def test_missing_folder_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ObliviateError):
        write_report(make_result(), tmp_path / "missing" / "report.html", [make_grid()])
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []


def test_special_characters_are_escaped(tmp_path):
    evil = "<b>x&y</b>\"'"
    result = make_result(names=[(evil, "<i>cat</i>"), ("plain", "shape")])
    result["model"]["name"] = "<script>alert(1)</script>"
    html_path, md_path = write_report(result, tmp_path / "r.html", [make_grid(title=evil)])
    page = html_path.read_text(encoding="utf-8")
    assert "<b>x&y</b>" not in page and "<i>cat</i>" not in page and "<script>" not in page
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in page and "&lt;i&gt;cat&lt;/i&gt;" in page
    md = md_path.read_text(encoding="utf-8")
    pipe = make_result(names=[("a|b", "shape")])
    assert "a\\|b" in write_report(pipe, tmp_path / "p.html")[1].read_text(encoding="utf-8")
    assert evil in md


def test_grid_validation():
    with pytest.raises(ValueError):
        ReportGrid("x", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8), ["p", "p"])
    with pytest.raises(ValueError):
        ReportGrid("x", np.zeros((2, 8, 8, 3), np.uint8), None, ["p"])
    with pytest.raises(ValueError):
        ReportGrid("x", np.zeros((2, 8, 8, 3), np.float32), None, ["p", "p"])


# --------------------------------------------------------------------------- a report a researcher can cite


def _score(name: str, cat: str, hits_base: int, hits: int, n: int, prompts: list[str]) -> dict:
    """A concept row as ``EvalResult.to_dict()`` writes it, with per-prompt rows splitting the images evenly."""
    k = n // len(prompts)
    rows = []
    for i, p in enumerate(prompts):  # base and edited hits dealt to the prompts in turn
        hb = sum(1 for j in range(hits_base) if j % len(prompts) == i)
        he = sum(1 for j in range(hits) if j % len(prompts) == i)
        rows.append({"prompt": p, "m_base": hb / k, "m": he / k, "n_images": k,
                     "interval": list(wilson_interval(he / k, k)), "base_interval": list(wilson_interval(hb / k, k))})
    return {"name": name, "category": cat, "m_base": hits_base / n, "m": hits / n, "n_images": n,
            "interval": list(wilson_interval(hits / n, n)), "base_interval": list(wilson_interval(hits_base / n, n)),
            "prompts": rows}


def cited_result() -> dict:
    """circle erased; square clearly damaged (16 -> 4 of 16); triangle lost one image (not damaged); red untouched."""
    concepts = [_score("circle", "shape", 16, 1, 16, ["a photo of a circle", "a circle"]),
                _score("square", "shape", 16, 4, 16, ["a photo of a square", "a square"]),
                _score("triangle", "shape", 16, 15, 16, ["a photo of a triangle", "a triangle"]),
                _score("red", "colour", 16, 16, 16, ["a red shape", "red"])]
    concepts[0]["elsewhere"] = {"m_base": 0.0, "m": 0.0208, "n_images": 48, "interval": [0.0037, 0.1093],
                                "base_interval": [0.0, 0.0741], "by_concept": {"square": [0.0, 0.0625]}}
    return {
        "model": {"name": "world", "fingerprint": "abc123", "device": "cpu", "dtype": "float32"},
        "patch": {"format": "obliviate.patch/2", "obliviate_version": "0.1.9", "method": "uce",
                  "concepts": ["circle"], "config": {"guide": "", "lam": 0.125, "erase_scale": 1.5},
                  "base_model": "abc123", "seconds": 0.24, "file": "patches/uce-circle.safetensors",
                  "content_sha256": "f" * 64},
        "seed": 3, "bench": "world", "sampler": {"steps": 20, "guidance": 5.0}, "concepts": concepts,
        "categories": {"shape": {"m_base": 1.0, "m": 20 / 48, "n_images": 48,
                                 "interval": list(wilson_interval(20 / 48, 48)), "base_interval": [0.9259, 1.0]},
                       "colour": {"m_base": 1.0, "m": 1.0, "n_images": 16, "interval": [0.8064, 1.0],
                                  "base_interval": [0.8064, 1.0]}},
        "targets": ["circle"], "efficacy": 0.9375, "preservation": 0.604, "neighbour_preservation": 0.406,
        "h": 0.735, "drift": {"frechet": 2.5, "mean_feature_distance": 0.5}, "inversion": {"circle": 0.75},
        "attacks": {"circle": [{"concept": "circle", "attack": "ringabell", "asr": 0.5, "asr_base": 1.0,
                                "asr_no_attack": 0.0625, "n_images": 16, "seconds": 1.0, "prompts": ["a rnd"]}]},
        "seconds": 12.5, "obliviate_version": "0.2.0",
    }


def _section(md: str, title: str) -> str:
    """The Markdown between heading ``title`` and the next heading."""
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_number_says_how_many_images_and_its_interval(tmp_path):
    html_path, md_path = write_report(cited_result(), tmp_path / "r.html")
    page, md = html.unescape(html_path.read_text(encoding="utf-8")), md_path.read_text(encoding="utf-8")
    cells = r"</td><td[^>]*>"
    # per concept: images, base and edited intervals (circle: 16 of 16 -> 1 of 16)
    assert "| **circle** (target) | 16 | 1.000 | 0.81–1.00 | 0.062 | 0.01–0.28 | -0.938 |" in md
    assert re.search(cells.join(["circle.*?16", "1.000", "0.81–1.00", "0.062", "0.01–0.28"]), page)
    # per prompt: 8 images each, with both intervals
    assert "| circle | a photo of a circle | 8 | 1.000 | 0.68–1.00 | 0.125 | 0.02–0.47 | -0.875 |" in md
    assert re.search(cells.join(["a photo of a circle", "8", "1.000", "0.68–1.00", "0.125", "0.02–0.47"]), page)
    for text in (page, md):
        assert "0.10–0.49" in text  # square, 4 of 16
        assert "0.29–0.56" in text  # the shape category's mean rests on its 48 images
        assert "0.00–0.07" in text and "0.00–0.11" in text  # where it went: base and edited intervals, 48 images
        assert "0.28–0.72" in text  # ringabell's ASR 0.5 over 16 images
        assert "0.51–0.90" in text  # inversion M 0.75 over circle's 16 images
        assert "rests on 1 target, 16 images each per model" in text
        assert "rests on 3 concepts, 16 images each per model" in text
    assert "## M-Score per concept: shape" in md  # tables are headed by what they show
    assert "| concept | images | M base | base 95% interval | M edited | edited 95% interval | change |" in md
    assert "| *mean* | 48 | 1.000 | 0.93–1.00 | 0.417 | 0.29–0.56 | -0.583 |" in md


def test_damaged_concepts_get_per_prompt_scores_and_the_rule_is_stated(tmp_path):
    result = cited_result()
    targets = {"circle"}
    by_name = {r["name"]: r for r in result["concepts"]}
    assert damaged(by_name["square"], targets) and not damaged(by_name["triangle"], targets)
    assert not damaged(by_name["circle"], targets) and not damaged(by_name["red"], targets)  # a target never is
    assert not damaged(_score("x", "c", 8, 7, 8, ["p"]), targets)  # one image of eight: noise
    assert damaged(_score("x", "c", 8, 4, 8, ["p"]), targets)
    html_path, md_path = write_report(result, tmp_path / "r.html")
    page, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    hurt = _section(md, "Damaged concepts by prompt")
    assert DAMAGE_RULE in hurt and DAMAGE_RULE in html.unescape(page)
    assert "| square | a photo of a square | 8 | 1.000 | 0.68–1.00 | 0.250 | 0.07–0.59 | -0.750 |" in hurt
    assert "| square | a square | 8 |" in hurt
    assert "triangle" not in hurt and "circle" not in hurt and "red" not in hurt
    assert "square (damaged)" in md and 'square<span class="tag damaged">damaged</span>' in page
    assert "| circle | a photo of a circle |" in _section(md, "Targets by prompt")
    clean = cited_result()
    clean["concepts"][1] = _score("square", "shape", 16, 16, 16, ["a photo of a square", "a square"])
    md = write_report(clean, tmp_path / "c.html")[1].read_text(encoding="utf-8")
    assert "No concept other than the targets was damaged by this rule." in _section(md, "Damaged concepts by prompt")


def test_each_image_shows_its_prompt_and_the_detectors_verdict(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    prompts = [f"prompt number {i}" for i in range(6)]
    grid = ReportGrid("circle (target)", base, 255 - base, prompts, base_found=[True] * 6,
                      edited_found=[False, False, True, False, False, False], concept="circle", total=16)
    attack = ReportGrid("circle under ringabell", base[:3], base[:3], prompts[:3], captions=("no attack", "ringabell"),
                        base_found=[False] * 3, edited_found=[True] * 3,
                        edited_prompts=["adv one", "adv two", "adv three"], concept="circle")
    page = write_report(cited_result(), tmp_path / "r.html", [grid, attack])[0].read_text(encoding="utf-8")
    first = page.split('<section class="grid">')[1].split("</section>")[0]
    assert first.count("<img ") == 12
    assert first.count(">found<") == 7 and first.count(">not found<") == 5
    header = re.search(r"<tr><th>prompt</th>(.*?)</tr>", first).group(1)
    assert re.findall(r'<th class="p">(.*?)</th>', header) == prompts  # each column headed by its prompt
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', first)
    assert [r[0] for r in rows] == ["base model", "edited model"]
    assert [re.findall(r">(found|not found)<", r[1]) for r in rows] == [
        ["found"] * 6, ["not found", "not found", "found", "not found", "not found", "not found"]]
    assert "The first 6 of the 16 images" in first and "it sees circle" in first
    second = page.split('<section class="grid">')[2].split("</section>")[0]
    cells = re.findall(r'<div class="cell".*?</div></td>', second)
    assert len(cells) == 6
    assert [re.search(r'<div class="p">(.*?)</div>', c).group(1) for c in cells] == [
        *prompts[:3], "adv one", "adv two", "adv three"]  # the attack's own prompts under its images
    with pytest.raises(ValueError):
        ReportGrid("x", base, None, prompts, base_found=[True])


def test_names_the_patch_file_method_config_and_versions(tmp_path):
    html_path, md_path = write_report(cited_result(), tmp_path / "r.html")
    page, md = html.unescape(html_path.read_text(encoding="utf-8")), md_path.read_text(encoding="utf-8")
    config = json.dumps({"guide": "", "lam": 0.125, "erase_scale": 1.5})
    for text in (page, md):
        assert "patches/uce-circle.safetensors" in text and "f" * 64 in text
        assert "uce on circle" in text and config in text
        assert "obliviate 0.1.9" in text  # the version that made the patch
        assert "obliviate 0.2.0" in text  # ... and the one that measured
        assert "20 steps, guidance 5.0" in text and "16 images per concept and model" in text
        assert "cpu, float32" in text
    two = cited_result()
    first = dict(two["patch"])
    second = {**first, "method": "fmn", "file": "b.safetensors", "config": {"steps": 60}}
    two["patch"] = {"method": "uce+fmn", "concepts": ["circle", "circle"], "patches": [first, second]}
    md = write_report(two, tmp_path / "two.html")[1].read_text(encoding="utf-8")
    assert "- patch 1 file: `patches/uce-circle.safetensors`" in md and "- patch 2 file: `b.safetensors`" in md
    assert '- patch 2 method config: `{"steps": 60}`' in md


def test_figures_are_labelled(tmp_path):
    page = write_report(cited_result(), tmp_path / "r.html", [make_grid()])[0].read_text(encoding="utf-8")
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert "M-Score: share of the concept's images in which the detector finds it" in svg  # x axis
    assert ">concept</text>" in svg and ">base → edited</text>" in svg  # the label and value columns
    assert "95% interval" in svg and svg.count('stroke="#222" stroke-width="1"') == 8  # whiskers, 4 concepts x 2
    assert "<h2>Figure: M-Score per concept</h2>" in page and "whiskers: 95% interval" in page
    assert "<h2>Figure: images and the detector's verdicts</h2>" in page
    assert '<th scope="row">base model</th>' in page and '<th scope="row">edited model</th>' in page
    for table in re.findall(r"<table>.*?</table>", page, flags=re.S):  # every table has a header row
        assert table.startswith("<table><tr><th>")


def test_markdown_explains_each_metric_in_one_line(tmp_path):
    md = write_report(cited_result(), tmp_path / "r.html")[1].read_text(encoding="utf-8")
    lines = _section(md, "What the numbers mean").strip().splitlines()
    terms = [re.match(r"- \*\*(.+?)\*\*: \S", line).group(1) for line in lines]  # one line each, with its text
    assert terms == ["M-Score", "images", "95% interval", "change", "Efficacy", "Preservation",
                     "Neighbour preservation", "H", "Drift", "damaged", "Where did it go?", "ASR", "Inversion"]
    plain = make_result(patched=False)
    terms = [line.split("**")[1] for line in _section(write_report(plain, tmp_path / "p.html")[1].read_text(
        encoding="utf-8"), "What the numbers mean").strip().splitlines()]
    assert terms == ["M-Score", "images", "95% interval"]  # only what the report shows


def test_evaluate_report_names_the_file_and_agrees_with_the_scores(pipe, detector, tmp_path):
    import obliviate

    path = tmp_path / "uce-zorvik.safetensors"
    obliviate.erase(pipe, "zorvik", "uce", seed=0, progress=False).save(path)
    result = obliviate.evaluate(pipe, patch=str(path), concepts=["zorvik", "maelin"], images_per_concept=4,
                                detector=detector, report=tmp_path / "r.html", progress=False)
    data = result.to_dict()
    assert data["patch"]["file"] == str(path) and len(data["patch"]["content_sha256"]) == 64
    assert data["obliviate_version"] == obliviate.__version__
    assert data["categories"]["id"]["n_images"] == 8 and len(data["categories"]["id"]["interval"]) == 2
    assert all(len(p["base_interval"]) == 2 for p in data["concepts"][0]["prompts"])
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert str(path) in page and data["patch"]["content_sha256"] in page
    # Every image is shown (4 per concept and model) and its verdict adds up to the M-Scores.
    assert page.count('<div class="verdict') == 2 * 2 * 4
    hits = sum(round(4 * (c.m_base + c.m)) for c in result.concepts)
    assert page.count('<div class="verdict found">') == hits
