"""Progress on stderr: a live bar on a terminal; in a log file, a plain line now and then (no carriage returns).

Every long loop of obliviate goes through :func:`bar`, so a user always sees what runs, how far it is and its
ETA, and a CI log stays readable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # how often a line is written when stderr is not a terminal


class _Lines:
    """A file-like sink for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str, unit: str = "it",
        enabled: bool = True, leave: bool = False, whole: bool = False, stream=None) -> tqdm:
    """A tqdm bar labelled ``desc`` counting ``unit``; off when ``enabled`` is False.

    On a terminal it redraws in place; elsewhere it writes a line at most every :data:`LOG_INTERVAL_S` seconds
    and one when it ends, so long runs leave a trace in logs without filling them. ``whole``: the count moves
    in fractions (e.g. images advanced per sampler step) but is shown as whole units.
    """
    stream = sys.stderr if stream is None else stream
    extra = {"bar_format": "{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"} if whole else {}
    if is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, file=stream,
                    dynamic_ncols=True, **extra)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=True, file=_Lines(stream),
                mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ncols=80, ascii=True, **extra)
