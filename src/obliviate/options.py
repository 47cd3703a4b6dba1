"""Options declared once: a config field carries its help and its range check (peft's style), and everything else
is derived from it: the command line's flags and the defaults ``--help`` shows (:mod:`.flags`), and the checks
that refuse a bad value when the config is made, before any model loads.

    @dataclass
    class ESDConfig(Options):
        steps: int = option(100, "training steps", at_least(1))

A nested config is a field of its own (:func:`nested`); its fields reach the command line with a prefix
(``key_steps`` for ``keys.steps``), and an optional one (default None) is switched on by giving any of them.
Torch-free, so that the command line can check every option before torch is imported.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any

from .errors import ObliviateError

__all__ = ["Check", "Options", "Seeded", "at_least", "build", "default_of", "each", "flat_fields", "fraction", "nested",
           "non_negative", "one_of", "option", "positive", "share", "to_dict"]
FOLLOW = ("seed", "progress")  # a nested config's seed and progress follow its parent's


@dataclass(frozen=True)
class Check:
    """A range rule: ``test(value)`` is true for a good value; ``rule`` completes "must be ..."."""

    test: typing.Callable[[Any], bool]
    rule: str
    choices: tuple[str, ...] | None = None  # for a choice among names: what --help and the parser offer


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def at_least(n: int) -> Check:
    return Check(lambda x: _number(x) and x >= n, f"at least {n}")


positive = Check(lambda x: _number(x) and x > 0, "a finite number > 0")
non_negative = Check(lambda x: _number(x) and x >= 0, "a finite number >= 0")
fraction = Check(lambda x: _number(x) and 0 < x <= 1, "a fraction in (0, 1]")
share = Check(lambda x: _number(x) and 0 <= x <= 1, "a share in [0, 1]")


def one_of(*choices: str) -> Check:
    return Check(lambda x: x in choices, "one of " + ", ".join(map(repr, choices)), tuple(choices))


def each(check: Check) -> Check:
    """Every item of a tuple passes ``check`` (and there is at least one)."""
    return Check(lambda xs: len(xs) > 0 and all(check.test(x) for x in xs), f"a non-empty list, each {check.rule}")


def option(default: Any = MISSING, help: str = "", check: Check | None = None, *, default_factory: Any = MISSING,
           metavar: str | None = None, flag: bool = True) -> Any:
    """A config field with its ``help`` and ``check`` (None passes unchecked: "not set"). ``flag=False`` keeps a
    field off the command line (it is still checked and settable from Python)."""
    meta = {"help": help, "check": check, "metavar": metavar, "flag": flag}
    return field(default=default, default_factory=default_factory, metadata=meta)


def nested(config: type, help: str = "", *, prefix: str = "", optional: bool = False,
           default_factory: Any = MISSING, notes: dict[str, str] | None = None) -> Any:
    """A nested config: present by default (built with ``default_factory`` or its own defaults), or with
    ``optional`` absent (None) until one of its options is given. ``prefix`` names its options on the command
    line and in :func:`build`'s flat keywords; ``notes`` add what an inner option means here to its help."""
    meta = {"help": help, "nested": config, "prefix": prefix, "optional": optional, "notes": notes or {}}
    if optional:
        return field(default=None, metadata=meta)
    return field(default_factory=config if default_factory is MISSING else default_factory, metadata=meta)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def value_type(cls: type, name: str) -> tuple[type, type | None]:
    """(base type, item type for tuples) of a field, None stripped: int, float, str, bool or tuple."""
    hint = _hints(cls)[name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = [a for a in typing.get_args(hint) if a is not type(None)][0] if union else hint
    if typing.get_origin(base) is tuple:
        return tuple, typing.get_args(base)[0]
    return base, None


def _typed(cls: type, f: Field, value: Any) -> Any:
    """``value`` in the field's type (a list becomes a tuple, an int a float); raises on a wrong type."""
    base, item = value_type(cls, f.name)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is tuple and isinstance(value, list | tuple):
        value = tuple(float(v) if item is float and isinstance(v, int) and not isinstance(v, bool) else v
                      for v in value)
        if all(isinstance(v, item) for v in value):
            return value
    elif isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ObliviateError(f"{f.name} must be {_type_name(base, item)}, got {value!r}")


def _type_name(base: type, item: type | None) -> str:
    names = {int: "a whole number", float: "a number", str: "a text", bool: "true or false"}
    return f"a list of {names[item].split(' ', 1)[1]}s" if base is tuple else names[base]


class Options:
    """Base of every config dataclass: each field is type- and range-checked when the config is made, then
    :meth:`check` runs the checks that involve several fields."""

    def __post_init__(self) -> None:
        cls = type(self)
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None or "nested" in f.metadata:
                continue
            value = _typed(cls, f, value)
            object.__setattr__(self, f.name, value)
            check: Check | None = f.metadata.get("check")
            if check is not None and not check.test(value):
                raise ObliviateError(f"{f.name} must be {check.rule}, got {value!r}")
        for f in fields(self):  # type: ignore[arg-type]
            inner = getattr(self, f.name)
            if "nested" in f.metadata and inner is not None:
                follow = {k: getattr(self, k) for k in FOLLOW if hasattr(self, k) and hasattr(inner, k)}
                if any(getattr(inner, k) != v for k, v in follow.items()):
                    object.__setattr__(self, f.name, replace(inner, **follow))
        self.check()

    def check(self) -> None:
        """Checks across fields (a subclass overrides it); raise :class:`ObliviateError`."""


@dataclass
class Seeded(Options):
    """Options of a run: its seed and whether it shows progress (set by every command's --seed and
    --no-progress, so they are no flags of their own)."""

    seed: int = option(0, "random seed", flag=False)
    progress: bool = option(True, "show progress bars", flag=False)


@dataclass(frozen=True)
class Flat:
    """One option as the command line sees it: its flat name, the config class that declares it, its field,
    the path of nested fields leading there, and whether it belongs to an optional nested config."""

    name: str
    owner: type
    field: Field
    path: tuple[str, ...]
    optional: str | None  # the optional nested field it switches on (its top-level name), or None
    note: str = ""  # what the option means where it is nested (``nested(notes=...)``)

    @property
    def help(self) -> str:
        text = self.field.metadata.get("help", "")
        return f"{text} ({self.note})" if self.note else text


def flat_fields(cls: type, prefix: str = "", path: tuple[str, ...] = (), optional: str | None = None,
                notes: dict[str, str] | None = None) -> list[Flat]:
    """Every option of ``cls`` with nested configs flattened (their prefix added), in declaration order."""
    out: list[Flat] = []
    for f in fields(cls):
        if "nested" in f.metadata:
            sub_optional = optional or (f.name if f.metadata["optional"] else None)
            out += flat_fields(f.metadata["nested"], prefix + f.metadata["prefix"], (*path, f.name), sub_optional,
                               f.metadata["notes"])
        elif not (path and f.name in FOLLOW):
            out.append(Flat(prefix + f.name, cls, f, (*path, f.name), optional, (notes or {}).get(f.name, "")))
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{cls.__name__}: two options are named {next(n for n in names if names.count(n) > 1)!r}")
    return out


def default_of(cls: type, flat: Flat) -> Any:
    """The value ``flat`` takes in ``cls()`` (an optional nested config's own default where it is off)."""
    value: Any = cls()
    for name in flat.path:
        f = next(f for f in fields(value) if f.name == name)
        inner = getattr(value, name)
        value = f.metadata["nested"]() if inner is None and "nested" in f.metadata else inner
    return value


def build(cls: type, overrides: dict[str, Any], base: Any = None) -> Any:
    """``cls`` (or a copy of ``base``, one of its configs) with ``overrides`` set: flat names (``key_steps``),
    nested configs (``keys=KeyConfig(...)``) or dicts for them (``keys={"steps": 10}``). An unknown name is
    refused in one line, and every value is checked."""
    tops = {f.name: f for f in fields(cls)}
    flats = {f.name for f in flat_fields(cls)}
    unknown = sorted(set(overrides) - flats - set(tops))
    if unknown:
        raise ObliviateError(f"unknown option {unknown[0]!r} (options: {', '.join(sorted(flats))})")
    direct = {}
    for name, value in overrides.items():
        f = tops.get(name)
        if f is not None:
            direct[name] = build(f.metadata["nested"], value) if "nested" in f.metadata and isinstance(
                value, dict) else value
    made = replace(base, **direct) if base is not None else cls(**direct)
    for f in tops.values():
        if "nested" not in f.metadata:
            continue
        prefix, inner = f.metadata["prefix"], f.metadata["nested"]
        names = {x.name for x in flat_fields(inner)}
        sub = {k[len(prefix):]: v for k, v in overrides.items()
               if k not in tops and k.startswith(prefix) and k[len(prefix):] in names}
        if sub:
            try:
                made = replace(made, **{f.name: build(inner, sub, getattr(made, f.name))})
            except ObliviateError as exc:  # name the option as it was given
                raise ObliviateError(f"{prefix}{exc}") from None
    return made


def to_dict(cfg: Any) -> dict:
    """A config as JSON-ready data: nested configs as dicts, ``progress`` left out (it is display only)."""

    def drop(data: Any) -> Any:
        return {k: drop(v) for k, v in data.items() if k != "progress"} if isinstance(data, dict) else data

    return drop(asdict(cfg))
