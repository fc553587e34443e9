"""What a Ray worker runs: one trial (``train_trial``) or one plain training job (``train_job``).

Imports only the trainer and Optuna at start (never MLflow or pandas), so a worker starts
quickly; matplotlib is imported on a worker's first trial with per-epoch rows, which renders its
figures here (``tracking.figures``) so that the driver does not. Each worker process keeps
its Optuna storage connection and its last loaded dataset (keyed by the ``TrainConfig`` fields
``load_data`` reads, the seeds and the device) across the tasks it runs, so consecutive trials
on one dataset load it once.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from dagstudy.config import TrainConfig
from dagstudy.memory import GIB, MemoryBudgetError, available_bytes, check
from dagstudy.study.feed import FeedWriter
from dagstudy.study.samplers import make_pruner
from dagstudy.study.spec import Objective, Resources, StudySpec
from dagstudy.study.storage import open_storage
from dagstudy.tracking.figures import figure_title, trial_figures
from dagstudy.trainer import TrialResult, load_data, resolve_device, train

DATA_FIELDS = ("dataset", "data_dir", "synthetic", "val_fraction", "test_fraction", "split")
"""The ``TrainConfig`` fields ``load_data`` reads; equal fields and seeds give equal data."""


@dataclass(frozen=True)
class TrialJob:
    """Everything a Ray task needs to train one trial: the Optuna storage URL, the trial's
    number in the study ``spec.name``, its resolved ``TrainConfig`` (as a dict), the spec and
    the driver's ``feed`` for live per-epoch rows (``feed.EpochFeed``; None: none)."""

    storage: str
    trial_number: int
    config: dict[str, Any]
    spec: StudySpec
    feed: Any = None


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial's task returns to the driver.

    ``state``: ``COMPLETE``, ``PRUNED`` or ``FAIL``; ``value``: the objective (COMPLETE only);
    ``reason``: why it was pruned or failed; ``mean``, ``std``, ``per_seed``: the objective
    metric's final per-seed summary (when training returned); ``rows``: the trainer's per-epoch
    rows so far, ``epoch_ms`` the wall-clock time (ms) each ended; ``result``:
    ``TrialResult.to_dict()`` (when training returned);
    ``report_seconds``: time the worker spent reporting to Optuna and asking the pruner (None
    when the task returned nothing); ``recorded``: the worker wrote ``user_attrs()`` to the
    trial (else the driver does); ``figures``: the trial's PNG figures by file name,
    rendered by the worker (empty without rows, or if rendering failed: the tracker renders
    them at upload then).
    """

    state: str
    value: float | None = None
    reason: str | None = None
    mean: float | None = None
    std: float | None = None
    per_seed: list[float | None] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_ms: list[int] = field(default_factory=list)
    result: dict[str, Any] | None = None
    report_seconds: float | None = None
    recorded: bool = False
    figures: dict[str, bytes] = field(default_factory=dict)

    def user_attrs(self) -> dict[str, Any]:
        """The trial's user attributes from this outcome: ``mean``, ``std``, ``per_seed`` and
        ``failure_reason``, those that are not None."""
        attrs = {"mean": self.mean, "std": self.std, "per_seed": self.per_seed,
                 "failure_reason": self.reason}
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def failed(cls, reason: str) -> TrialOutcome:
        """The outcome of a trial whose task returned nothing (it raised, or its worker died)."""
        return cls(state="FAIL", reason=reason)


_cache: dict[str, tuple[Any, Any]] = {}


def _cached(kind: str, key: Any, make: Callable[[], Any]) -> Any:
    """One value per ``kind`` per worker process, rebuilt when ``key`` changes."""
    if kind not in _cache or _cache[kind][0] != key:
        _cache.pop(kind, None)
        _cache[kind] = (key, make())
    return _cache[kind][1]


def _data(config: TrainConfig, seeds: list[int], device: torch.device):
    key = (config.model_dump_json(include=set(DATA_FIELDS)), tuple(seeds), str(device))
    return _cached("data", key, lambda: load_data(config, seeds, device))


def _report(trial: optuna.Trial, row: dict[str, Any], objective: Objective, per_seed: bool):
    values = row[objective.metric]
    if per_seed:
        for i, value in enumerate(values):
            if value is not None and math.isfinite(value):
                trial.report(value, (row["epoch"] - 1) * len(values) + i)
        return
    score = objective.score(values)
    if score is not None:
        trial.report(score, row["epoch"])


def judge(result: TrialResult, objective: Objective, rows: list[dict[str, Any]],
          report_seconds: float) -> TrialOutcome:
    """The outcome of a trial whose training returned: COMPLETE with the objective, or FAIL
    (a seed failed, or the objective is not finite for every seed)."""
    summary = result.summary(objective.metric)
    value = objective.score(summary["per_seed"])
    state, reason = "COMPLETE", None
    if result.failed:
        state = "FAIL"
        reason = "; ".join(f"seed {s}: {r}" for s, r in zip(result.seeds, result.reasons) if r)
    elif value is None:
        state, reason = "FAIL", f"{objective.metric} is not finite for every seed"
    return TrialOutcome(state=state, value=value, reason=reason, mean=summary["mean"],
                        std=summary["std"], per_seed=summary["per_seed"], rows=rows,
                        result=result.to_dict(), report_seconds=report_seconds)


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study`` (Optuna's public storage API)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def train_trial(job: TrialJob) -> TrialOutcome:
    """Train one trial in this process (a Ray worker), reporting each epoch to Optuna, and
    render its figures (``TrialOutcome.figures``).

    Training errors are returned as a FAIL outcome naming the exception, never raised; only the
    process dying loses a trial.
    """
    outcome = _train_trial(job)
    try:
        title = figure_title(job.spec.name, job.trial_number, outcome.state)
        figures = trial_figures(outcome.rows, job.spec.seed_list, title)
    except Exception:  # a figure never fails a trial; the tracker renders it at upload
        return outcome
    return replace(outcome, figures=figures)


def _train_trial(job: TrialJob) -> TrialOutcome:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, seeds = job.spec, job.spec.seed_list
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    per_seed = spec.pruner.name == "wilcoxon"
    rows: list[dict[str, Any]] = []
    reporting = [0.0]
    trial: optuna.Trial | None = None
    writer = FeedWriter(job.feed, job.trial_number)

    def on_epoch(row: dict[str, Any]) -> None:
        rows.append(row)
        writer.add(row)
        start = time.perf_counter()
        _report(trial, row, spec.objective, per_seed)
        prune = trial.should_prune()
        reporting[0] += time.perf_counter() - start
        if prune:
            raise optuna.TrialPruned(f"pruned by the {spec.pruner.name} pruner at epoch "
                                     f"{row['epoch']}")

    try:
        storage = _cached("storage", job.storage, lambda: open_storage(job.storage))
        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=optuna.samplers.RandomSampler(),
                                  pruner=make_pruner(spec.pruner, spec.epochs))
        trial = optuna.Trial(study, trial_id(storage, study, job.trial_number))
        config = TrainConfig(**job.config)
        device = resolve_device(spec.device)
        data = _data(config, seeds, device)
        budget, budget_name = memory_budget(spec.resources)
        check(config, len(seeds), data.x.shape[0], data.d_in, data.n_classes, budget,
              budget_name)
        result = train(config, seeds, data, device, on_epoch)
        outcome = judge(result, spec.objective, rows, reporting[0])
    except optuna.TrialPruned as e:
        outcome = TrialOutcome(state="PRUNED", reason=str(e), rows=rows,
                               report_seconds=reporting[0])
    except MemoryBudgetError as e:  # refused before training: no traceback position needed
        outcome = TrialOutcome(state="FAIL", reason=str(e), rows=rows,
                               report_seconds=reporting[0])
    except Exception as e:  # the trial fails, the study goes on
        frame = traceback.extract_tb(e.__traceback__)[-1]
        reason = f"{type(e).__name__}: {e} (at {Path(frame.filename).name}:{frame.lineno})"
        outcome = TrialOutcome(state="FAIL", reason=reason, rows=rows,
                               report_seconds=reporting[0])
    return _recorded(trial, replace(outcome, epoch_ms=writer.epoch_ms))


def _recorded(trial: optuna.Trial | None, outcome: TrialOutcome) -> TrialOutcome:
    """Write the outcome's user attributes (``TrialOutcome.user_attrs``) to the trial from
    here, so the driver need not (``recorded``); left to the driver when this fails."""
    if trial is None:
        return outcome
    try:
        for key, value in outcome.user_attrs().items():
            trial.set_user_attr(key, value)
    except Exception:
        return outcome
    return replace(outcome, recorded=True)


def memory_budget(resources: Resources) -> tuple[int, str]:
    """A trial's memory budget in bytes and its name: ``resources.memory_gb`` if the study set
    it, else what this node has available now."""
    if resources.memory_gb is not None:
        return int(resources.memory_gb * GIB), f"resources.memory_gb ({resources.memory_gb:g})"
    return available_bytes(), "the memory available on this node"


def train_job(config: dict[str, Any], seeds: list[int], device: str, threads: int,
              feed: Any = None, key: Any = None) -> dict:
    """``train(...).to_dict()`` of one configuration on ``seeds`` with ``threads`` torch
    threads (``cluster.ray_runner``'s task), plus ``epoch_ms``: the wall-clock time (ms) each
    epoch ended. Each epoch's row goes to ``feed`` (``feed.EpochFeed``) under ``key``."""
    torch.set_num_threads(threads)
    cfg = TrainConfig(**config)
    dev = resolve_device(device)
    writer = FeedWriter(feed, key)
    result = train(cfg, seeds, _data(cfg, seeds, dev), dev, writer.add).to_dict()
    return {**result, "epoch_ms": writer.epoch_ms}


