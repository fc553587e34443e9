"""One driver per study: a lease kept in the Optuna storage, as the study user attribute
``dagstudy.driver``.

``acquire`` takes the lease for this process (``run`` and ``resume`` do, before any trial): a
study whose lease another driver renewed within ``stale_seconds`` is refused with its owner
(host and process id) and since when; a lease not renewed for that long belongs to a driver
that died and is taken over (at once when the owner ran on this host and its process is
gone). ``renew`` (every ``heartbeat_seconds()`` from the driver loop)
raises ``LeaseLost`` if another driver took the lease meanwhile (this one stalled for longer
than ``stale_seconds``), and ``release`` gives it back at the end.

The storage offers no compare-and-set, so ``acquire`` writes its token and reads it back after
``SETTLE_SECONDS``: of two drivers that both found the lease free, the one whose write landed
last keeps it and the other is refused. Units: seconds (wall clock, ``time.time``).
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass

import optuna

LEASE_ATTR = "dagstudy.driver"
STALE_ENV = "DAGSTUDY_LEASE_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 60.0
HEARTBEAT_SECONDS = 10.0
SETTLE_SECONDS = 0.5


class LeaseHeld(RuntimeError):
    """Another driver runs the study; the message names it and since when."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over by another driver."""


@dataclass(frozen=True)
class Lease:
    """Who runs a study: ``owner`` (host:pid), ``token`` (unique per acquisition), ``since``
    (ISO time of acquisition) and ``heartbeat`` (time of the last renewal)."""

    owner: str
    token: str
    since: str
    heartbeat: float


def stale_seconds_from_env() -> float:
    """``DAGSTUDY_LEASE_STALE_SECONDS`` (default 60): how long a lease lives without renewal."""
    text = os.environ.get(STALE_ENV)
    if text is None:
        return DEFAULT_STALE_SECONDS
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{STALE_ENV}: {text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{STALE_ENV}: must be > 0 seconds (got {text})")
    return value


def heartbeat_seconds() -> float:
    """How often a driver renews its lease: ``HEARTBEAT_SECONDS``, or a third of the stale
    time when that is shorter, so a live driver's lease never goes stale."""
    return min(HEARTBEAT_SECONDS, stale_seconds_from_env() / 3)


def _current(study: optuna.Study) -> Lease | None:
    value = study.user_attrs.get(LEASE_ATTR)
    return Lease(**value) if isinstance(value, dict) else None


def acquire(study: optuna.Study, stale_seconds: float | None = None) -> Lease:
    """Take the study's lease for this process, or raise ``LeaseHeld`` (module docstring)."""
    stale = stale_seconds_from_env() if stale_seconds is None else stale_seconds
    held = _current(study)
    if held is not None and time.time() - held.heartbeat < stale and _owner_alive(held):
        raise LeaseHeld(_held_message(study.study_name, held, stale))
    mine = Lease(owner=f"{socket.gethostname()}:{os.getpid()}", token=uuid.uuid4().hex,
                 since=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 heartbeat=time.time())
    study.set_user_attr(LEASE_ATTR, asdict(mine))
    time.sleep(SETTLE_SECONDS)
    winner = _current(study)
    if winner is None or winner.token != mine.token:
        raise LeaseHeld(_held_message(study.study_name, winner or mine, stale))
    return mine


def renew(study: optuna.Study, lease: Lease) -> Lease:
    """Record a heartbeat; ``LeaseLost`` if another driver holds the lease now."""
    held = _current(study)
    if held is None or held.token != lease.token:
        owner = held.owner if held else "nobody"
        raise LeaseLost(f"study {study.study_name!r}: another driver ({owner}) took over this "
                        "driver's lease; this driver stops launching trials")
    renewed = Lease(lease.owner, lease.token, lease.since, time.time())
    study.set_user_attr(LEASE_ATTR, asdict(renewed))
    return renewed


def release(study: optuna.Study, lease: Lease) -> None:
    """Give the lease back if this driver still holds it."""
    held = _current(study)
    if held is not None and held.token == lease.token:
        study.set_user_attr(LEASE_ATTR, None)


def _owner_alive(lease: Lease) -> bool:
    """False when the lease's owner ran on this host and its process is gone (a driver killed
    with SIGKILL: its lease is stale at once); True otherwise (another host: only the heartbeat
    can tell)."""
    host, _, pid = lease.owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _held_message(name: str, held: Lease, stale: float) -> str:
    age = time.time() - held.heartbeat
    return (f"study {name!r} is being run by another driver ({held.owner}, since {held.since}, "
            f"last heartbeat {age:.0f} s ago); wait for it to finish, or resume once it has "
            f"been silent for {stale:g} s ({STALE_ENV})")
