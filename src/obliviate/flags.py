"""The command line's machinery: flags derived from config dataclasses, the parser, and where output goes.

One flag per option (nested configs flattened with their prefix), its help from the field, its default in
``--help`` per owner (each method's own where they differ), its type from the annotation. The values are checked
where the config is made (:mod:`.options`), so a flag is never checked twice nor described twice. Logs go to
stderr; ``--json -`` puts the JSON alone on stdout. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ObliviateError
from .options import Check, Flat, at_least, default_of, flat_fields, non_negative, value_type

Default = Callable[[str, Flat], Any]  # (owner, option) -> the value the option takes for that owner


@dataclass
class Owners:
    """The configs whose options one command offers (methods, attacks or hiding designs), and what each one
    defaults to (a method registry may override a shared config's defaults)."""

    configs: dict[str, type]
    default: Default | None = None
    noun: str = "method"  # how an owner is called in messages: "method fmn does not take --rank"

    def flats(self) -> dict[str, list[tuple[str, Flat]]]:
        """flag name -> [(owner, option)] over every owner that takes it, in owner order."""
        out: dict[str, list[tuple[str, Flat]]] = {}
        for owner, cls in self.configs.items():
            for flat in flat_fields(cls):
                if flat.field.metadata.get("flag", True):
                    out.setdefault(flat.name, []).append((owner, flat))
        return out

    def value(self, owner: str, flat: Flat) -> Any:
        return self.default(owner, flat) if self.default else default_of(self.configs[owner], flat)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "''" if value == "" else "none" if value is None else str(value)


def _join(groups: dict[str, list[str]]) -> str:
    return "; ".join(f"{', '.join(owners)}: {text}" for text, owners in groups.items())


def _grouped(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for owner, text in items:
        out.setdefault(text, []).append(owner)
    return out


def _help(owners: Owners, takers: list[tuple[str, Flat]], all_owners: int) -> str:
    helps = _grouped([(o, f.help) for o, f in takers])
    text = next(iter(helps)) if len(helps) == 1 else _join(helps)
    if len(takers) < all_owners and len(helps) == 1:
        text = f"{', '.join(o for o, _ in takers)}: {text}"
    if "(default" not in text:  # the help states its default itself where it is not a value
        defaults = _grouped([(o, _default_text(owners, o, f)) for o, f in takers])
        text += f" (default {next(iter(defaults))})" if len(defaults) == 1 else f" (default: {_join(defaults)})"
    return text.replace("%", "%%")


def _default_text(owners: Owners, owner: str, flat: Flat) -> str:
    """The default as --help says it: an option of an optional nested config that is off says so."""
    value = _text(owners.value(owner, flat))
    if flat.optional is not None and not _is_on(owners.configs[owner](), flat):
        return f"off; {value} once on"
    return value


def _is_on(config: Any, flat: Flat) -> bool:
    """Whether the optional nested config holding ``flat`` is on in ``config``."""
    value = config
    for name in flat.path[:-1]:
        value = getattr(value, name)
        if value is None:
            return False
    return True


def _parser_for(base: type, item: type | None) -> Callable[[str], Any]:
    def number(kind: type) -> Callable[[str], Any]:
        def parse(text: str) -> Any:
            try:
                return kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        return parse

    if base is tuple:
        one = number(item) if item in (int, float) else str

        def items(text: str) -> tuple:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts:
                raise argparse.ArgumentTypeError("the list is empty")
            return tuple(one(p) for p in parts)
        return items
    return number(base) if base in (int, float) else str


def _metavar(flats: list[Flat], base: type, item: type | None) -> str | None:
    given = flats[0].field.metadata.get("metavar")
    if given:
        return given
    checks = [f.field.metadata.get("check") for f in flats]
    choices = [c for check in checks if check is not None and check.choices for c in check.choices]
    if choices:
        return "|".join(dict.fromkeys(choices))
    if base is tuple:
        return "X,Y" if item in (int, float) else "NAMES"
    return {int: "N", float: "X"}.get(base)


def add_flags(parser: argparse.ArgumentParser, owners: Owners, title: str) -> dict[str, list[str]]:
    """One flag per option of ``owners``' configs; options of one owner only are grouped under it. Returns
    flag name -> owners that take it."""
    flats = owners.flats()
    shared = parser.add_argument_group(f"{title} (of several {owners.noun}s)") if any(
        len(t) > 1 for t in flats.values()) else None
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, takers in flats.items():
        kinds = {value_type(f.owner, f.field.name) for _, f in takers}
        if len(kinds) > 1:
            raise ValueError(f"option {name!r} has different types in {', '.join(o for o, _ in takers)}")
        base, item = kinds.pop()
        if len(takers) > 1:
            group = shared
        else:
            owner = takers[0][0]
            group = groups.get(owner) or groups.setdefault(
                owner, parser.add_argument_group(f"{title} of {owners.noun} {owner}"))
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name, "default": None,
                                  "help": _help(owners, takers, len(owners.configs))}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parser_for(base, item)
            kwargs["metavar"] = _metavar([f for _, f in takers], base, item)
        group.add_argument(flag, **kwargs)
    return {name: [o for o, _ in takers] for name, takers in flats.items()}


def given(args: argparse.Namespace, names: dict[str, list[str]]) -> dict[str, Any]:
    """The options the user gave (a 0 or a False given is a value; absent is None)."""
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


def check_taken(options: dict[str, Any], names: dict[str, list[str]], owner: str,
                takers: Callable[[list[str]], str]) -> None:
    """Refuse an option that ``owner`` does not take: "--tokens is for --design paper" (``takers`` says who)."""
    for name in options:
        if owner not in names[name]:
            raise ObliviateError(f"--{name.replace('_', '-')} is for {takers(names[name])}")


# ------------------------------------------------------------------------------------ the parser itself

def _value(kind: type, check: Check) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` parsed from text, then ``check``ed (the rules the configs use)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if not check.test(value):
            raise argparse.ArgumentTypeError(f"must be {check.rule}, got {text}")
        return value
    parse.__name__ = "N" if kind is int else "X"
    return parse


count, scale = _value(int, at_least(1)), _value(float, non_negative)  # for options of no config


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and short metavars (N for counts, X for numbers, else the last word)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", lambda prog: Formatter(prog, max_help_position=32))
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class Formatter(argparse.HelpFormatter):
    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        if action.type in (int, float) or getattr(action.type, "__name__", "") in ("N", "X"):
            return "N" if action.type in (int, count) else "X"
        return action.dest.rsplit("_", 1)[-1].upper()


# ------------------------------------------------------------------------------------------------ output

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(target: str | None, payload: dict, human: Callable[[TextIO], None] | None = None) -> None:
    """``--json FILE``: write it atomically; ``--json -``: the JSON alone on stdout (the human-readable output,
    if any, then goes to stderr); no ``--json``: only the human-readable output, on stdout."""
    from .io import write_atomic

    text = json.dumps(payload, indent=2)
    if human is not None:
        human(sys.stderr if target == "-" else sys.stdout)
    if target == "-":
        print(text, flush=True)
    elif target:
        write_atomic(target, lambda tmp: tmp.write_text(text + "\n"))
        log(f"wrote {target}")
