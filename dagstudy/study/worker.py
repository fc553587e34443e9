"""What a Ray worker runs: trials (``train_pack``: one, or a pack that shares a network shape)
or one plain training job (``train_job``).

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
from dagstudy.trainer import TrialResult, load_data, resolve_device, train, train_packed

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


def train_pack(jobs: list[TrialJob]) -> list[TrialOutcome]:
    """Train trials of one study in this process (a Ray worker) as one population
    (``trainer.train_packed``: one trial alone, or a pack of trials that share a network
    shape), reporting each epoch of each to Optuna and pruning each on its own; render each
    trial's figures (``TrialOutcome.figures``).

    Training errors are returned as FAIL outcomes naming the exception, never raised; only the
    process dying loses trials.
    """
    outcomes = []
    for job, outcome in zip(jobs, _train_pack(jobs)):
        try:
            title = figure_title(job.spec.name, job.trial_number, outcome.state)
            outcome = replace(outcome, figures=trial_figures(outcome.rows, job.spec.seed_list,
                                                             title))
        except Exception:  # a figure never fails a trial; the tracker renders it at upload
            pass
        outcomes.append(outcome)
    return outcomes


def _train_pack(jobs: list[TrialJob]) -> list[TrialOutcome]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, seeds = jobs[0].spec, jobs[0].spec.seed_list
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    per_seed = spec.pruner.name == "wilcoxon"
    rows: list[list[dict[str, Any]]] = [[] for _ in jobs]
    reporting = [0.0] * len(jobs)
    pruned: dict[int, str] = {}
    trials: list[optuna.Trial] = []
    writers = [FeedWriter(job.feed, job.trial_number) for job in jobs]

    def on_epoch(rows_by_member: dict[int, dict[str, Any]]) -> list[int]:
        for k, row in rows_by_member.items():
            rows[k].append(row)
            writers[k].add(row)
            start = time.perf_counter()
            _report(trials[k], row, spec.objective, per_seed)
            if trials[k].should_prune():
                pruned[k] = f"pruned by the {spec.pruner.name} pruner at epoch {row['epoch']}"
            reporting[k] += time.perf_counter() - start
        return [k for k in rows_by_member if k in pruned]

    def failed(reason: str) -> list[TrialOutcome]:
        return [TrialOutcome(state="FAIL", reason=reason, rows=r, report_seconds=t)
                for r, t in zip(rows, reporting)]

    try:
        storage = _cached("storage", jobs[0].storage, lambda: open_storage(jobs[0].storage))
        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=optuna.samplers.RandomSampler(),
                                  pruner=make_pruner(spec.pruner, spec.epochs))
        trials += [optuna.Trial(study, trial_id(storage, study, job.trial_number))
                   for job in jobs]
        configs = [TrainConfig(**job.config) for job in jobs]
        device = resolve_device(spec.device)
        data = _data(configs[0], seeds, device)
        budget, budget_name = memory_budget(spec.resources, len(jobs))
        check(configs[0], len(seeds) * len(jobs), data.x.shape[0], data.d_in, data.n_classes,
              budget, budget_name)
        results = train_packed(configs, seeds, data, device, on_epoch)
        outcomes = [TrialOutcome(state="PRUNED", reason=pruned[k], rows=rows[k],
                                 report_seconds=reporting[k]) if k in pruned
                    else judge(result, spec.objective, rows[k], reporting[k])
                    for k, result in enumerate(results)]
    except MemoryBudgetError as e:  # refused before training: no traceback position needed
        outcomes = failed(str(e))
    except Exception as e:  # the trials fail, the study goes on
        frame = traceback.extract_tb(e.__traceback__)[-1]
        outcomes = failed(f"{type(e).__name__}: {e} (at {Path(frame.filename).name}:"
                          f"{frame.lineno})")
    return [_recorded(trials[k] if k < len(trials) else None,
                      replace(out, epoch_ms=writers[k].epoch_ms))
            for k, out in enumerate(outcomes)]


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


def memory_budget(resources: Resources, trials: int = 1) -> tuple[int, str]:
    """The memory budget in bytes of a task of ``trials`` trials, and its name:
    ``resources.memory_gb`` per trial if the study set it, else what this node has available
    now."""
    if resources.memory_gb is not None:
        gb = resources.memory_gb * trials
        per = f" x {trials} packed trials" if trials > 1 else ""
        return int(gb * GIB), f"resources.memory_gb ({resources.memory_gb:g}{per})"
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


