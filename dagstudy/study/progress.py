"""Live progress of a running study: counts, running trials, best so far, ETA."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Status:
    """Progress of a running study, as the driver sees it: ``failed`` counts toward the budget;
    ``requeued`` failed too, but their parameters run again as new trials, which count."""

    study: str
    complete: int
    pruned: int
    failed: int
    running: int
    target: int | None
    best: float | None
    best_number: int | None
    elapsed: float
    eta: float | None
    requeued: int = 0


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_status(s: Status) -> str:
    done = s.complete + s.pruned + s.failed
    best = "-" if s.best is None else f"{s.best:.4g} (#{s.best_number})"
    again = f" (+{s.requeued} re-queued)" if s.requeued else ""
    return (f"[{s.study}] {done}/{s.target or '?'} done: {s.complete} complete, {s.pruned} "
            f"pruned, {s.failed} failed{again}; {s.running} running; best {best}; "
            f"elapsed {_clock(s.elapsed)}, ETA {_clock(s.eta)}")


def first_trial_line(s: Status) -> str:
    """The line shown once, as soon as the first trials run (before any has finished)."""
    return (f"[{s.study}] first trial running ({s.running} in flight); progress follows as "
            "trials finish")


def progress_printer(stream=None) -> Callable[[Status | str], None]:
    """Live progress on ``stream`` (default: ``sys.stderr`` as it is when called): a stage
    message (a ``str``, e.g. "starting Ray...") on its own line; once, ``first_trial_line`` as
    soon as a trial runs; then one line rewritten in place on a terminal, else a new line
    whenever the counts change."""
    stream = stream or sys.stderr
    last: list[str] = [""]
    announced = [False]
    tty = stream.isatty()

    def show(status: Status | str) -> None:
        if isinstance(status, str):
            stream.write(status + "\n")
            stream.flush()
            return
        if not announced[0] and status.running:
            announced[0] = True
            stream.write(first_trial_line(status) + "\n")
        line = format_status(status)
        key = line.split("; elapsed")[0]
        if tty:
            stream.write("\r\033[K" + line)
        elif key != last[0]:
            stream.write(line + "\n")
        last[0] = key
        stream.flush()

    return show
