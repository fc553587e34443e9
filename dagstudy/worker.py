"""What a Ray worker runs: one trial (``train_trial``) or one plain training job (``train_job``).

Imports only the trainer and Optuna (never MLflow, matplotlib or pandas), so a worker starts
quickly. Each worker process keeps its Optuna storage connection and its last loaded dataset
(keyed by the ``TrainConfig`` fields ``load_data`` reads, the seeds and the device) across the
tasks it runs, so consecutive trials on one dataset load it once.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from dagstudy.config import TrainConfig
from dagstudy.spec import Objective, StudySpec, open_storage
from dagstudy.train import TrialResult, load_data, resolve_device, train

DATA_FIELDS = ("dataset", "data_dir", "synthetic", "val_fraction", "test_fraction", "split")
"""The ``TrainConfig`` fields ``load_data`` reads; equal fields and seeds give equal data."""


@dataclass(frozen=True)
class TrialJob:
    """Everything a Ray task needs to train one trial."""

    storage: str
    trial_id: int
    config: dict[str, Any]
    spec: StudySpec


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


def judge(result: TrialResult, objective: Objective) -> dict[str, Any]:
    """State, objective value, reason and the objective metric's per-seed summary."""
    summary = result.summary(objective.metric)
    out = {"state": "COMPLETE", "value": objective.score(summary["per_seed"]), "reason": None,
           "mean": summary["mean"], "std": summary["std"], "per_seed": summary["per_seed"]}
    if result.failed:
        out["state"] = "FAIL"
        out["reason"] = "; ".join(f"seed {s}: {r}" for s, r in zip(result.seeds, result.reasons)
                                  if r)
    elif out["value"] is None:
        out["state"], out["reason"] = "FAIL", f"{objective.metric} is not finite for every seed"
    return out


def train_trial(job: TrialJob) -> dict[str, Any]:
    """Train one trial in this process (a Ray worker), reporting each epoch to Optuna.

    Returns ``{"state": COMPLETE|PRUNED|FAIL, "value", "reason", "mean", "std", "per_seed",
    "rows": per-epoch rows, "result": TrialResult.to_dict() or None, "report_seconds": time
    spent reporting to Optuna and asking the pruner}``. Training errors are returned as FAIL
    with the exception, never raised; only the process dying loses a trial.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, seeds = job.spec, job.spec.seed_list
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    per_seed = spec.pruner.name == "wilcoxon"
    rows: list[dict[str, Any]] = []
    reporting = [0.0]

    def on_epoch(row: dict[str, Any]) -> None:
        rows.append(row)
        start = time.perf_counter()
        _report(trial, row, spec.objective, per_seed)
        prune = trial.should_prune()
        reporting[0] += time.perf_counter() - start
        if prune:
            raise optuna.TrialPruned(f"pruned by the {spec.pruner.name} pruner at epoch "
                                     f"{row['epoch']}")

    empty = {"value": None, "mean": None, "std": None, "per_seed": None, "result": None}
    try:
        storage = _cached("storage", job.storage, lambda: open_storage(job.storage))
        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=optuna.samplers.RandomSampler(),
                                  pruner=make_pruner(spec))
        trial = optuna.Trial(study, job.trial_id)
        config = TrainConfig(**job.config)
        device = resolve_device(spec.device)
        result = train(config, seeds, _data(config, seeds, device), device, on_epoch)
    except optuna.TrialPruned as e:
        return {**empty, "state": "PRUNED", "reason": str(e), "rows": rows,
                "report_seconds": reporting[0]}
    except Exception as e:  # the trial fails, the study goes on
        frame = traceback.extract_tb(e.__traceback__)[-1]
        reason = f"{type(e).__name__}: {e} (at {Path(frame.filename).name}:{frame.lineno})"
        return {**empty, "state": "FAIL", "reason": reason, "rows": rows,
                "report_seconds": reporting[0]}
    return {**judge(result, spec.objective), "rows": rows, "result": result.to_dict(),
            "report_seconds": reporting[0]}


def train_job(config: dict[str, Any], seeds: list[int], device: str, threads: int) -> dict:
    """``train(...).to_dict()`` of one configuration on ``seeds`` with ``threads`` torch
    threads (``execute.ray_runner``'s task)."""
    torch.set_num_threads(threads)
    cfg = TrainConfig(**config)
    dev = resolve_device(device)
    return train(cfg, seeds, _data(cfg, seeds, dev), dev).to_dict()


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; Hyperband's ``max_resource`` is the study's epochs."""
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                           n_warmup_steps=p.n_warmup_steps)
    if p.name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource,
                                                      reduction_factor=p.reduction_factor)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource,
                                              max_resource=spec.epochs,
                                              reduction_factor=p.reduction_factor)
    if p.name == "wilcoxon":
        with warnings.catch_warnings():  # experimental since Optuna 3.6; chosen knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=p.p_threshold,
                                                 n_startup_steps=p.n_startup_steps)
    return optuna.pruners.NopPruner()


