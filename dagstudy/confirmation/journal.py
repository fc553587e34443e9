"""The arm journal: every finished arm's result on disk the moment it returns, so a
confirmation that stops (killed, crashed, its node lost) resumes without training those arms
again (``dagstudy confirm --resume``).

One JSON line per trained job (``{"key", "fingerprint", "result"}``), appended with one
``write`` and ``fsync``ed before the next job's result is handled; a line torn by a kill is
skipped when read. ``key`` is ``ArmJob.key`` (the full configuration and the seeds), so an entry
answers exactly the job that trained it, whatever idea or file asks; ``fingerprint``
(``code_fingerprint``) ties it to the code, torch and device request that produced it: a
resumed run reuses only entries whose fingerprint equals its own, so an edit to the trainer, a
torch upgrade or a move to a GPU trains everything again. Results of jobs that crashed before
training returned (``TrialResult.crashed``: a lost worker, an exception) are not written: a
resumed run trains them again. Nothing is deleted: a run without ``--resume`` appends too.
The fingerprint does not cover the contents of data files (a ``data_dir`` or CSV): after
editing those, run without ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dagstudy.confirmation.plan import ArmJob, Runner

PACKAGE = Path(__file__).resolve().parents[1]


def code_fingerprint(device: str) -> str:
    """A 16-hex-digit hash of every ``dagstudy`` source file (path and bytes), the torch
    version and the ``device`` request (``auto``, ``cpu``, ``cuda:N``): equal fingerprints mean
    the same code would train the same arm on the same kind of device."""
    digest = hashlib.sha256(f"{torch.__version__}\0{device}\0".encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def crashed(result: dict[str, Any]) -> bool:
    """Whether ``result`` is a ``TrialResult.crashed`` one (training never returned: it names
    no device)."""
    return not result.get("device")


class ArmJournal:
    """The journal file at ``path`` for code ``fingerprint`` (module docstring)."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.fingerprint = fingerprint

    def finished(self) -> dict[str, dict[str, Any]]:
        """Results by ``ArmJob.key`` of the entries with this fingerprint (the last one wins;
        torn lines skipped with a warning)."""
        if not self.path.exists():
            return {}
        out, torn = {}, 0
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if entry.get("fingerprint") == self.fingerprint:
                out[entry["key"]] = entry["result"]
        if torn:
            warnings.warn(f"{self.path}: skipped {torn} torn line(s) (a run killed while "
                          "writing); those arms train again", stacklevel=2)
        return out

    def append(self, job: ArmJob, result: dict[str, Any]) -> None:
        """Write ``result`` for ``job`` durably (one line, fsync); crashed results are not
        written."""
        if crashed(result):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": job.key, "fingerprint": self.fingerprint,
                           "result": result}) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def journaled(runner: Runner, journal: ArmJournal, resume: bool,
              on_reused: Callable[[int], None] | None = None) -> Runner:
    """``runner`` with every result written to ``journal``; with ``resume``, the jobs the
    journal already answers (``ArmJournal.finished``) are yielded from it first, without
    training (``on_start`` and ``on_epochs`` are not called for them), and ``on_reused(n)``
    is told how many of a call's jobs were."""

    def run(jobs: list[ArmJob], on_start=None, **streams):
        done = journal.finished() if resume else {}
        reused = [job for job in jobs if job.key in done]
        if on_reused is not None and resume:
            on_reused(len(reused))
        for job in reused:
            yield job, done[job.key]
        left = [job for job in jobs if job.key not in done]
        if left:
            for job, result in runner(left, on_start=on_start, **streams):
                journal.append(job, result)
                yield job, result

    return run
