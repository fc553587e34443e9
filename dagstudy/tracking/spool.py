"""Tracking records waiting for MLflow, on local disk (``<run dir>/spool/<study>/``).

The driver writes every finished trial's record here before it uploads it to MLflow, and
removes the file once the upload succeeded (write-ahead), so neither an MLflow outage nor a
driver killed mid-upload loses a record. Files:

- ``trial-<number>.json``: ``{"number", "run_id", "timestamp", "record"}``: the trial's MLflow
  run id (None if its run could not be created, or not known to the driver yet), the metric
  timestamp (ms since the epoch, fixed so that uploading twice logs identical, deduplicated
  metrics) and the ``TrialRecord``.
- ``trial-<number>/``: the trial's figures (PNG files the worker rendered), written before the
  record, so a record's figures are complete whenever the record is there.
- ``finish.json``: ``{"status"}``: the study ended while MLflow was unreachable; its parent run
  still needs the best trial and the summary plots.

Writes are atomic (a temporary file renamed over the target).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class SpooledTrial:
    """One trial record waiting for upload; ``path`` is its file."""

    path: Path
    number: int
    run_id: str | None
    timestamp: int
    record: dict[str, Any]

    @property
    def figures_dir(self) -> Path:
        """Where the trial's figures are, if it has any (``trial-<number>/``)."""
        return self.path.with_suffix("")


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    _write_bytes(path, json.dumps(payload).encode())


class Spool:
    """The spool directory of one study (created on the first write)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def put_trial(self, number: int, run_id: str | None, timestamp: int, record: Any,
                  figures: dict[str, bytes] | None = None) -> Path:
        """Write (or overwrite) trial ``number``'s record, a ``TrialRecord`` dataclass, and
        its ``figures`` (file name -> PNG bytes) first."""
        path = self.directory / f"trial-{number:06d}.json"
        for name, data in (figures or {}).items():
            _write_bytes(path.with_suffix("") / name, data)
        _write_json(path, {"number": number, "run_id": run_id, "timestamp": timestamp,
                           "record": asdict(record)})
        return path

    def trials(self) -> list[SpooledTrial]:
        """The waiting trial records, by trial number."""
        out = []
        for path in sorted(self.directory.glob("trial-*.json")):
            payload = json.loads(path.read_text())
            out.append(SpooledTrial(path, payload["number"], payload["run_id"],
                                    payload["timestamp"], payload["record"]))
        return out

    def remove(self, item: SpooledTrial) -> None:
        """Drop an uploaded trial record and its figures."""
        item.path.unlink(missing_ok=True)
        if item.figures_dir.is_dir():
            for figure in item.figures_dir.iterdir():
                figure.unlink()
            item.figures_dir.rmdir()

    def put_finish(self, status: str) -> None:
        """Remember that the study ended (MLflow run status ``status``) while offline."""
        _write_json(self.directory / "finish.json", {"status": status})

    def finish_status(self) -> str | None:
        """The status ``put_finish`` stored, or None."""
        path = self.directory / "finish.json"
        return json.loads(path.read_text())["status"] if path.exists() else None

    def clear_finish(self) -> None:
        (self.directory / "finish.json").unlink(missing_ok=True)

    def __len__(self) -> int:
        """Records waiting (trials plus a pending finish)."""
        if not self.directory.is_dir():
            return 0
        return len(list(self.directory.glob("trial-*.json"))) + int(
            (self.directory / "finish.json").exists())
