"""A background thread that runs the tracker's MLflow work, so the driver never waits for MLflow.

``BackgroundLogger.submit(job)`` queues a callable and returns at once; a full queue (bounded,
``maxsize`` jobs) refuses the job instead of blocking, which the tracker can afford because every
finished trial's record is in the spool before its job is queued (a later flush uploads it).
Jobs run one at a time, urgent ones first (creating a trial's run while the trial trains
before uploading finished ones), otherwise in submission order; a job that raises is reported as a
``TrackingWarning`` and the thread goes on. ``drain`` waits until every queued job has run;
``close`` drains and stops the thread.
"""

from __future__ import annotations

import itertools
import queue
import threading
import warnings
from collections.abc import Callable

from dagstudy.tracking.client import TrackingWarning

_STOP = 2  # priority of the stop marker: after every job


class BackgroundLogger:
    """One daemon thread running queued jobs (module docstring)."""

    def __init__(self, maxsize: int = 256, name: str = "dagstudy-tracker"):
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=maxsize)
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            priority, _, job = self._queue.get()
            try:
                if priority == _STOP:
                    return
                job()
            except Exception as e:  # tracking never stops the study, nor this thread
                warnings.warn(f"background tracking job failed ({type(e).__name__}: {e})",
                              TrackingWarning, stacklevel=1)
            finally:
                self._queue.task_done()

    def submit(self, job: Callable[[], None], urgent: bool = False) -> bool:
        """Queue ``job`` (``urgent``: before the others); False (and nothing queued) when the
        queue is full. Never blocks."""
        if not self._thread.is_alive():
            return False
        try:
            self._queue.put_nowait((0 if urgent else 1, next(self._order), job))
        except queue.Full:
            return False
        return True

    def drain(self) -> None:
        """Wait until every job queued so far has run."""
        if self._thread.is_alive():
            self._queue.join()

    def close(self) -> None:
        """Drain, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put((_STOP, next(self._order), None))
            self._thread.join()
