"""Live per-epoch rows from Ray workers to the driver, so MLflow curves grow while a trial runs.

A driver makes one ``EpochFeed`` (a Ray actor holding a list) per study or confirmation and gives
its handle to every task. A worker wraps it in a ``FeedWriter`` keyed by what it trains (a trial
number, an arm job's index): ``add(row)`` stamps the row with the wall-clock time its epoch ended
(ms since the Unix epoch, the time MLflow records) and sends the rows gathered so far at most
every ``interval`` seconds, without waiting for the actor. The driver polls a ``FeedReader``
on its own schedule, which never waits for the actor either, and logs what arrived.

The feed is best effort: rows it drops (the actor's ``limit``, a dead actor) are still in the
task's result, which carries every row with the same timestamps, so the final upload logs the
same metric points (MLflow keeps one point per key, step, timestamp and value).
"""

from __future__ import annotations

import math
import time
from typing import Any

import ray

Row = dict[str, Any]

STREAM_SECONDS = 2.0
"""Seconds between two asks of a feed by a driver: how live the curves are."""


class _Feed:
    """The actor's state: ``(key, row, ms)`` items, at most ``limit`` waiting."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: list[tuple[Any, Row, int]] = []

    def put(self, items: list[tuple[Any, Row, int]]) -> None:
        room = self.limit - len(self.items)
        self.items.extend(items[:max(room, 0)])

    def take(self) -> list[tuple[Any, Row, int]]:
        items, self.items = self.items, []
        return items


EpochFeed = ray.remote(num_cpus=0)(_Feed)


def open_feed(limit: int = 100_000) -> ray.actor.ActorHandle:
    """A new feed actor (Ray connected), holding at most ``limit`` rows between two takes."""
    return EpochFeed.remote(limit)


class FeedReader:
    """A driver's side of a feed. ``poll()`` never waits for the actor (a worker process that
    may be starved of CPU): it returns the answer to its previous ask once that has arrived
    (else nothing yet) and asks again at most every ``interval`` seconds (None:
    ``STREAM_SECONDS``)."""

    def __init__(self, feed: ray.actor.ActorHandle, interval: float | None = None):
        self.feed = feed
        self.interval = STREAM_SECONDS if interval is None else interval
        self._asked: ray.ObjectRef | None = None
        self._asked_at = -math.inf  # time.monotonic() of the last ask

    def poll(self) -> dict[Any, tuple[list[Row], list[int]]]:
        """The rows that arrived since the last answer, by key: ``(rows, epoch_ms)``, each
        row's epoch end time in ms beside it; empty while an ask is unanswered, or when the
        actor failed (the rows are not lost: every task returns them too). An ask that
        cannot be sent stops the reading, never the caller."""
        out: dict[Any, tuple[list[Row], list[int]]] = {}
        if self._asked is not None:
            if not ray.wait([self._asked], timeout=0)[0]:
                return out
            try:
                items = ray.get(self._asked)
            except ray.exceptions.RayError:
                items = []
            self._asked = None
            for key, row, ms in items:
                rows, epoch_ms = out.setdefault(key, ([], []))
                rows.append(row)
                epoch_ms.append(ms)
        if self.feed is not None and time.monotonic() - self._asked_at >= self.interval:
            try:
                self._asked, self._asked_at = self.feed.take.remote(), time.monotonic()
            except Exception:  # live curves are best effort; every task returns its rows
                self.feed = None
        return out


class FeedWriter:
    """A worker's side of a feed (``feed`` None: only stamps rows). ``interval``: seconds
    between two sends (0: every row at once)."""

    def __init__(self, feed: ray.actor.ActorHandle | None, key: Any, interval: float = 1.0):
        self.feed, self.key, self.interval = feed, key, interval
        self.epoch_ms: list[int] = []
        self._waiting: list[tuple[Any, Row, int]] = []
        self._sent = time.monotonic()

    def add(self, row: Row) -> None:
        """Stamp ``row`` (``epoch_ms`` gets its time) and send what waits if ``interval`` has
        passed since the last send. Never raises: a feed that fails is dropped."""
        ms = int(time.time() * 1000)
        self.epoch_ms.append(ms)
        if self.feed is None:
            return
        self._waiting.append((self.key, row, ms))
        if time.monotonic() - self._sent < self.interval:
            return
        try:
            self.feed.put.remote(self._waiting)
        except Exception:  # live curves are best effort; the result carries every row
            self.feed = None
        self._waiting, self._sent = [], time.monotonic()
