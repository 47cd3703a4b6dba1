"""The house rules that keep methods readable as families arrive: a method never imports another method, methods
and attacks reach the model only through the family seam, and every option is declared once."""

import ast
from dataclasses import fields
from pathlib import Path

import pytest

import obliviate
from obliviate.attacks import ATTACKS
from obliviate.hiding import DESIGNS
from obliviate.methods import METHODS
from obliviate.options import flat_fields

SRC = Path(obliviate.__file__).parent
METHOD_MODULES = sorted({m.module for m in METHODS.values()})
SHARED = {"loop", "configs", "closed_form", "adversaries", "__init__"}  # what methods may share


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (``obliviate.methods.esd``)."""
    package = ["obliviate", *path.relative_to(SRC).parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] if node.level else [])
            base = ".".join(p for p in (base, node.module or "") if p)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # "from . import esd" imports a module
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _methods_in(imports: set[str], allowed: str | None = None) -> set[str]:
    return {i for i in imports for m in METHOD_MODULES if m != allowed and
            (i == f"obliviate.methods.{m}" or i.startswith(f"obliviate.methods.{m}."))}


@pytest.mark.parametrize("module", METHOD_MODULES)
def test_a_method_never_imports_another_method(module):
    bad = _methods_in(_imports(SRC / "methods" / f"{module}.py"), module)
    assert not bad, f"methods/{module}.py imports another method: {sorted(bad)}"


def test_the_shared_modules_import_no_method():
    for path in [*(SRC / "methods" / f"{m}.py" for m in SHARED - {"__init__"}), SRC / "terms.py"]:
        assert not _methods_in(_imports(path)), path.name


@pytest.mark.parametrize("path", sorted([*(SRC / "methods").glob("*.py"), *(SRC / "attacks").glob("*.py"),
                                         *(SRC / "hiding").glob("*.py")]), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_methods_and_attacks_reach_the_model_through_the_seam(path):
    """No ``pipe.unet``, no ``pipe.text_encoder`` and no ``encoder_hidden_states=``: the family decides what the
    denoiser and the text encoders are and how they are called (:mod:`obliviate.families`)."""
    text = path.read_text()
    assert "pipe.unet" not in text and "encoder_hidden_states" not in text and "pipe.text_encoder" not in text


def test_every_option_has_help_and_flat_names_are_unique():
    configs = [m.config for m in METHODS.values()] + [a.config for a in ATTACKS.values()] + list(DESIGNS.values())
    for cls in configs:
        names = [f.name for f in flat_fields(cls)]  # raises on a repeated flat name
        assert len(set(names)) == len(names)
        for flat in flat_fields(cls):
            assert flat.field.metadata.get("help"), f"{cls.__name__}.{flat.name} has no help"
        for f in fields(cls):
            assert "help" in f.metadata, f"{cls.__name__}.{f.name} is not declared with option() or nested()"


def test_the_cli_is_thin():
    assert len((SRC / "cli.py").read_text().splitlines()) <= 450
