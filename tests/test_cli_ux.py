"""What a user meets: errors before any work, one-line errors, progress, help that answers, JSON on stdout."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

from obliviate.cli import build_parser, main
from obliviate.methods import METHODS

# runs the CLI in a fresh interpreter and reports whether torch got imported before it returned
_PROBE = ("import sys; from obliviate.cli import main; rc = main(sys.argv[1:]); "
          "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); sys.exit(rc)")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _errors(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line not in ("TORCH", "NO-TORCH")]


@pytest.fixture
def files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    sealed = tmp_path / "sealed.key.safetensors"
    sealed.write_bytes(b"OBLVKEY1" + os.urandom(64))
    foreign = tmp_path / "foreign.safetensors"
    meta = json.dumps({"obliviate": json.dumps({"format": "obliviate.patch/2", "base_model": "other-model",
                                                "base_fingerprint": {"layout": "0" * 64, "probe": []}})})
    header = json.dumps({"__metadata__": json.loads(meta)}).encode()
    foreign.write_bytes(len(header).to_bytes(8, "little") + header)
    return {"junk": str(junk), "sealed": str(sealed), "foreign": str(foreign), "dir": tmp_path}


# every case: a problem that needs no model, reported in one line before torch is imported
CHECKED_BEFORE_TORCH = [
    (["erase", "--concept", "zorvik", "--out", "/proc/x.safetensors"], "cannot write"),
    (["hide", "--concept", "zorvik", "--out", "/proc/p.safetensors", "--key-out", "{dir}"], "cannot write"),
    (["hide", "--concept", "zorvik", "--out", "{dir}/p.safetensors", "--key-out", "{junk}/keys"], "is not a folder"),
    (["hide", "--concept", "zorvik", "--out", "{dir}/p.safetensors", "--key-out", "{dir}/k", "--tokens", "4"],
     "--tokens is for --design paper"),
    (["erase", "--concept", "zorvik", "--out", "{dir}/z.safetensors", "--method", "uce", "--steps", "4"],
     "--steps is for --method fmn"),
    (["erase", "--concept", "zorvik", "--out", "{dir}/z.safetensors", "--method", "lethe", "--t-min", "0.8"],
     "need t_min < t_max"),
    (["erase", "--concept", "zorvik", "--out", "{dir}/z.safetensors", "--preset", "early-decided"],
     "method fmn has no preset 'early-decided'"),
    (["erase", "--concept", "zorvik", "--out", "{dir}/z.safetensors", "--method", "lethe", "--preset", "autumn"],
     "method lethe has no preset 'autumn' (its presets: early-decided, auto)"),
    (["hide", "--concept", "zorvik", "--out", "{dir}/p.safetensors", "--key-out", "{dir}/k", "--design", "paper",
      "--key-steps", "4"], "--key-steps is for --design lethe"),
    (["attack", "--concept", "zorvik", "--attack", "inversion", "--form", "lora"],
     "--form is for --attack relearn, memory"),
    (["attack", "--concept", "zorvik", "--attack", "completion", "--strengths", "0.5,2"], "strengths must be"),
    (["eval", "--json", "/proc/x.json"], "cannot write"),
    (["eval", "--report", "/proc/r.html"], "cannot write"),
    (["eval", "--patch", "{dir}/missing.safetensors"], "does not exist"),
    (["eval", "--patch", "{junk}"], "not a safetensors patch"),
    (["eval", "--patch", "{foreign}", "--concepts", "circle"], "made for model other-model"),
    (["generate", "--prompt", "a red circle", "--out", "{dir}/g.png", "--patch", "{junk}"],
     "not a safetensors patch"),
    (["attack", "--concept", "zorvik", "--key", "{sealed}"], "is sealed"),
    (["attack", "--concept", "unicorn"], "unknown concept 'unicorn'"),
    (["erase", "--concept", "unicorn", "--out", "{dir}/u.safetensors"], "unknown concept 'unicorn'"),
    (["erase", "--concept", "zorvik", "--preserve", "maelin,nope", "--out", "{dir}/u.safetensors"],
     "unknown concept 'nope'"),
    (["floor", "--concepts", "unicorn"], "unknown concept 'unicorn'"),
    (["eval", "--bench", "{dir}/missing.yaml"], "missing.yaml"),
    (["eval", "--attacks", "nope", "--patch", "{junk}"], "unknown attack 'nope'"),
    (["attack", "--concept", "zorvik", "--attack", "memory", "--key", "{sealed}", "--patch", "{junk}"],
     "attack the public model"),
]


@pytest.mark.parametrize(("args", "message"), CHECKED_BEFORE_TORCH)
def test_input_errors_come_before_torch_is_imported(args, message, files):
    res = _cli(*[a.format(**files) for a in args])
    assert res.returncode == 2, res.stderr
    assert _errors(res) and len(_errors(res)) == 1 and message in _errors(res)[0], res.stderr
    assert "NO-TORCH" in res.stderr  # reported without importing torch, let alone loading the model
    assert sorted(p.name for p in files["dir"].iterdir()) == ["foreign.safetensors", "junk.safetensors",
                                                              "sealed.key.safetensors"]  # nothing written


@pytest.mark.parametrize("args", [
    ["generate", "--prompt", "a red circle", "-n", "0", "--out", "g.png"],
    ["generate", "--prompt", "a red circle", "--guidance", "nan", "--out", "g.png"],
    ["generate", "--prompt", "a red circle", "--guidance", "inf", "--out", "g.png"],
    ["erase", "--concept", "zorvik", "--steps", "0", "--out", "e.safetensors"],
    ["erase", "--concept", "zorvik", "--lr", "-1", "--out", "e.safetensors"],
    ["eval", "--images-per-concept", "0"],
    ["attack", "--concept", "zorvik", "--steps", "0"],
    ["erase", "--concept", "zorvik"],  # a required option missing
    ["erase", "--concept", "zorvik", "--out", "e.safetensors", "--dtype", "float8"],
    ["erase", "--method", "lethe", "--concept", "gore", "--out", "e.safetensors", "--t-max", "2"],
    ["erase", "--method", "lethe", "--concept", "gore", "--out", "e.safetensors", "--adversary-steps", "-1"],
    ["erase", "--method", "lethe", "--concept", "gore", "--out", "e.safetensors", "--keep-neighbours", "1.5"],
    ["erase", "--method", "lethe", "--concept", "gore", "--out", "e.safetensors", "--neutral-rows", "-1"],
    ["hide", "--concept", "zorvik", "--out", "p.safetensors", "--key-out", "k", "--design", "paper",
     "--neutral-rows", "2"],
    ["erase", "--method", "lethe", "--concept", "gore", "--out", "e.safetensors", "--keep-weight", "-1"],
])
def test_argument_errors_are_one_line(args, tmp_path):
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert len(_errors(res)) == 1 and "error:" in _errors(res)[0] and "usage:" not in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def _erase_config(monkeypatch, *args):
    """The config ``obliviate erase ARGS`` hands to the API (which then stops; no model is loaded)."""
    from obliviate import api, cli

    seen = {}
    monkeypatch.setattr(cli, "_load", lambda args, passphrase=None: (None, ([], [])))

    def fake_erase(pipe, concepts, method, config=None, **options):
        seen.update(config=config, options=options)
        raise SystemExit(0)

    monkeypatch.setattr(api, "erase", fake_erase)
    with pytest.raises(SystemExit):
        main(["erase", "--concept", "zorvik", *args, "--no-progress"])
    assert not seen["options"]  # built once, in the pre-flight: the API gets the config
    return seen["config"]


def test_an_option_given_as_zero_reaches_the_method(tmp_path, monkeypatch):
    """0 == False in Python: '--preserve-weight 0' (FMN's paper loss) must not fall back to the default."""
    cfg = _erase_config(monkeypatch, "--preserve-weight", "0", "--inversion-tokens", "0", "--out",
                        str(tmp_path / "e.safetensors"))
    assert cfg.preserve_weight == 0 and cfg.inversion_tokens == 0
    assert cfg.include_eot is False  # a flag not given stays the method's default


def test_a_new_config_field_is_a_flag_with_its_help_and_check(tmp_path, monkeypatch, capsys):
    """An option lives in one place: a field declared on a method's config (help and range check beside it) is
    in ``erase --help`` with its default, reaches the method from ``erase``, and is checked, cli.py untouched."""
    from dataclasses import dataclass

    from obliviate.methods import METHODS, Method
    from obliviate.methods.configs import ESDConfig
    from obliviate.options import at_least, option

    @dataclass
    class Knobbed(ESDConfig):
        wobble: int = option(7, "how much the edit wobbles", at_least(2))

    monkeypatch.setitem(METHODS, "esd-x", Method("esd-x", "esd", Knobbed, "ESD with a knob"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["erase", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--wobble N" in help_text and "esd-x: how much the edit wobbles (default 7)" in help_text
    cfg = _erase_config(monkeypatch, "--method", "esd-x", "--wobble", "3", "--out", str(tmp_path / "e.safetensors"))
    assert isinstance(cfg, Knobbed) and cfg.wobble == 3 and cfg.steps == 100
    assert main(["erase", "--concept", "zorvik", "--method", "esd-x", "--wobble", "1", "--out",
                 str(tmp_path / "e.safetensors")]) == 2
    assert "wobble must be at least 2, got 1" in capsys.readouterr().err
    assert main(["erase", "--concept", "zorvik", "--method", "uce", "--wobble", "3", "--out",
                 str(tmp_path / "e.safetensors")]) == 2
    assert "--wobble is for --method esd-x" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_preset_is_the_measured_setting_and_options_override_it(tmp_path, monkeypatch):
    cfg = _erase_config(monkeypatch, "--method", "lethe", "--preset", "early-decided", "--keep-weight", "5",
                        "--out", str(tmp_path / "e.safetensors"))
    assert cfg.t_max == 0.9 and cfg.adversary.steps == 3 and cfg.keep_neighbours == 0.5 and cfg.keep_weight == 5


def test_unwritable_output_is_refused_before_an_edit_is_trained(tmp_path):
    """os.access says yes to root everywhere: the output must really be creatable."""
    from obliviate.io import check_writable

    with pytest.raises(Exception, match="cannot write"):
        check_writable("/proc/x.safetensors")
    assert check_writable(tmp_path / "ok.safetensors") == tmp_path / "ok.safetensors"
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_hide_makes_a_missing_key_folder_with_its_parents(tmp_path):
    keys = tmp_path / "a" / "b" / "keys"
    assert main(["hide", "--concept", "zorvik", "--steps", "1", "--rounds", "0", "--n-images", "2", "--key-steps", "1",
                 "--out", str(tmp_path / "p.safetensors"), "--key-out", str(keys), "--no-progress"]) == 0
    assert (keys / "zorvik.key.safetensors").is_file()


# --------------------------------------------------------------------------------------------------- progress

@pytest.mark.slow  # a fresh interpreter that loads the world (the eval test below checks the same in the loop)
def test_progress_in_a_log_has_no_carriage_returns(tmp_path):
    out = tmp_path / "g.png"
    res = subprocess.run([sys.executable, "-m", "obliviate", "generate", "--prompt", "a red circle", "-n", "4",
                          "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and out.is_file()
    assert "\r" not in res.stderr
    assert re.search(r"images: 100%.*4/4", res.stderr), res.stderr  # what runs, how far, as plain lines


def test_eval_progress_names_its_stages(tmp_path, capfd):
    """Progress on stderr that is no terminal (a log): whole lines, each naming its stage."""
    patch = tmp_path / "uce.safetensors"
    assert main(["erase", "--concept", "zorvik", "--method", "uce", "--out", str(patch), "--no-progress"]) == 0
    capfd.readouterr()
    assert main(["eval", "--patch", str(patch), "--concepts", "zorvik", "--images-per-concept", "2", "--no-cache"]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err
    for stage in ("base model images", "edited model images"):  # not six unlabelled units
        assert re.search(rf"{stage}: 100%.*/", err), err


def test_progress_on_a_terminal_redraws_in_place():
    from obliviate.progress import bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with bar(total=10, desc="images", unit="img", whole=True, stream=stream) as b:
        for _ in range(20):
            b.update(0.5)
    assert "\r" in stream.getvalue() and "images" in stream.getvalue()


# ------------------------------------------------------------------------------------------------------- help

def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_erase_help_shows_each_methods_own_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["erase", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the method's" not in text
    options = text[text.index("options:"):]
    steps = options[options.index("--steps N"):options.index("--lr X")]
    for m in METHODS.values():
        assert m.name in text  # --method lists every method
        if "steps" in m.option_names() and m.default("steps") is not None:
            assert re.search(rf"\b{re.escape(m.name)}\b[^;]*: {m.default('steps')}\b", steps), (m.name, steps)


def test_every_option_that_takes_a_value_shows_its_default_and_a_short_metavar():
    for name, sub in _subparsers(build_parser()):
        text = sub.format_help()
        assert not re.search(r"[A-Z_]{13,}", text), (name, text)  # no IMAGES_PER_CONCEPT
        for action in sub._actions:
            takes_value = action.nargs != 0 and action.option_strings and action.dest != "help"
            if takes_value and not action.required and not isinstance(action.default, list):
                assert "default" in (action.help or ""), (name, action.option_strings)


# ------------------------------------------------------------------------------------------------------- JSON

def test_eval_json_dash_writes_only_json_to_stdout(capsys):
    assert main(["eval", "--concepts", "circle", "--images-per-concept", "2", "--json", "-", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["concepts"][0]["name"] == "circle"
    assert "circle" in err  # the table went to stderr


@pytest.mark.parametrize("args", [
    ["world", "info", "--json", "-"],
    ["erase", "--concept", "zorvik", "--method", "uce", "--out", "{tmp}/u.safetensors", "--json", "-"],
])
def test_json_dash_is_the_only_stdout(args, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in args]) == 0
    out, _ = capsys.readouterr()
    assert isinstance(json.loads(out), dict)
