"""What a confirmation was run with, for its report's header: the file and command, the date,
the versions of dagstudy and of the libraries that shaped the numbers, and the git commit of
the ``dagstudy`` source when it lives in a git work tree."""

from __future__ import annotations

import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dagstudy import __version__

LIBRARIES = ("torch", "numpy", "scipy", "ray", "optuna", "mlflow")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def git_commit(where: Path | None = None) -> str | None:
    """The commit checked out where the ``dagstudy`` package lives (``-dirty`` when it has
    uncommitted changes), or None outside a git work tree."""
    where = where or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance(file: str | None = None, command: list[str] | None = None) -> dict[str, Any]:
    """A JSON-ready dict: ``file``, ``command``, ``date`` (local time, ISO 8601 with offset),
    ``dagstudy`` (version), ``commit`` (or None), ``python`` and ``versions`` (per library)."""
    return {
        "file": file, "command": " ".join(command) if command else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dagstudy": __version__,
        "commit": git_commit(), "python": platform.python_version(),
        "versions": {lib: _version(lib) for lib in LIBRARIES},
    }
