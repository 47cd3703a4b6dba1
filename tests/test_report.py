"""The HTML/Markdown eval report, on synthetic results and images (no model is loaded)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from obliviate.errors import ObliviateError
from obliviate.eval.report import ReportGrid, write_report

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
    assert page.count('src="data:image/png;base64,') == 4
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
    assert page.count("data:image/png;base64,") == 1
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
