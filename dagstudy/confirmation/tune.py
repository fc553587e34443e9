"""Verdicts at tuned parity: every arm tuned by Optuna with the same budget, fresh seeds decide.

``tuning_studies(spec)``: one ``StudySpec`` per distinct tuned arm of the file (the arm's
``TrainConfig`` as the study's base, its ``tune`` space, budget, seeds, objective, sampler and
pruner). Arms whose study would be identical (same config up to the tuned values, same space and
budget), within an idea or across ideas, share one study, named from the confirmation, the first
idea (file order) and arm that have it: ``<confirmation>.tune.<IDEA>.<arm>``. Names use every
idea of the file, so ``--ideas`` never renames a study.

``tune(spec, ...)`` runs each study through the study driver (``run_study``: Ray workers,
pruning, MLflow recording, the configured Optuna storage) or reuses it: a study of that name
whose stored spec matches (space, budget, seeds, objective, base) and that has its trials is
read back without training; one with fewer (an interrupted run) is resumed to the budget; one
that differs is an error. The best COMPLETE trial of each study (by the tuning objective on
validation data, ``best_configs``) is the arm's configuration for the verdict
(``apply_tuning``), trained on the verdict's seeds, which never took part in tuning.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from dagstudy.config import TrainConfig, format_errors
from dagstudy.confirmation.plan import Experiment, plan, qualify
from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.confirmation.tune_spec import search_space, untuned_base
from dagstudy.study.driver import run_study
from dagstudy.study.loop import counted
from dagstudy.study.progress import Status
from dagstudy.study.query import best_configs, load_study, trials
from dagstudy.study.spec import Budget, Objective, StudySpec
from dagstudy.study.storage import storage_for
from dagstudy.urls import redact_url

COMPARED = ("dataset", "objective", "seeds", "first_seed", "budget", "epochs", "search", "base",
            "sampler", "pruner")
"""Stored study fields that must match for a tuning study to be reused."""


class TuneError(ValueError):
    """A tuning study cannot be used (it differs from the file, or no trial completed)."""


@dataclass
class TuningStudy:
    """One study to run, and every ``(idea, arm)`` whose configuration it decides."""

    spec: StudySpec
    owners: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ArmTuning:
    """What tuning gave one arm: the study, its best trial and every trial's objective.

    ``values``: the objective of each trial in trial-number order (None: pruned or failed);
    ``seeds``: the tuning seeds; ``status``: ``ran``, ``resumed`` or ``reused``.
    """

    study: str
    budget: int
    finished: int
    best_trial: int
    best_value: float
    params: dict[str, Any]
    config: dict[str, Any]
    seeds: list[int]
    metric: str
    direction: str
    values: list[float | None]
    status: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Tuning = dict[str, dict[str, ArmTuning]]
"""idea -> arm -> ``ArmTuning``."""


def study_name(confirmation: str, idea: str, arm: str) -> str:
    """``<confirmation>.tune.<idea>.<arm>`` with characters a study name cannot hold as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{confirmation}.tune.{idea}.{arm}")


def _study_spec(name: str, config: TrainConfig, spec: ConfirmSpec, idea: str, arm: str,
                device: str) -> StudySpec:
    tune = spec.tune_for(idea)
    assert tune is not None
    where = f"ideas.{idea}.tune" if spec.ideas[idea].tune else "tune"
    space, origin = tune.arm_space(arm)
    search = search_space(space, origin, config, where, arm)
    try:
        return StudySpec(
            name=name, dataset=config.dataset, epochs=config.epochs,
            objective=Objective(**tune.objective.model_dump()), seeds=tune.seeds,
            first_seed=tune.first_seed, budget=Budget(trials=tune.trials),
            search=search, base=untuned_base(config, search), sampler=tune.sampler,
            pruner=tune.pruner, resources=tune.resources, max_concurrent=tune.max_concurrent,
            device=device)
    except ValidationError as e:
        raise ValueError(f"{format_errors(e, prefix=f'{where} ({arm})')}") from None


def _key(study: StudySpec) -> str:
    return json.dumps(study.model_dump(mode="json", exclude={"name"}), sort_keys=True)


def tuning_studies(spec: ConfirmSpec, device: str = "auto") -> dict[str, TuningStudy]:
    """Every distinct tuning study of the file by name (see the module docstring).
    ``ValueError`` naming ``ideas.<ID>.tune.<field>`` for a space the arm cannot take."""
    by_key: dict[str, TuningStudy] = {}
    for exp in plan(spec):
        if spec.tune_for(exp.idea) is None:
            continue
        for arm, config in exp.arms.items():
            study = _study_spec(study_name(spec.name, exp.idea, arm), config, spec, exp.idea,
                                arm, device)
            by_key.setdefault(_key(study), TuningStudy(study)).owners.append((exp.idea, arm))
    return {s.spec.name: s for s in by_key.values()}


def _stored_differences(study: Any, spec: StudySpec) -> list[str]:
    stored = study.user_attrs.get("spec", {})
    new = spec.model_dump(mode="json", exclude={"storage"})
    return [k for k in COMPARED if stored.get(k) != new[k]]


def _run_or_reuse(spec: StudySpec, run_dir: str | os.PathLike | None, address: str | None,
                  num_cpus: int | None, progress: Callable[[Status], None] | None,
                  home: dict[str, Any] | None) -> str:
    url = storage_for(spec, run_dir).optuna
    try:
        study = load_study(spec.name, url)
    except KeyError:
        run_study(spec, run_dir=run_dir, address=address, num_cpus=num_cpus, progress=progress,
                  mlflow_home=home)
        return "ran"
    differ = _stored_differences(study, spec)
    if differ:
        raise TuneError(f"tuning study {spec.name!r} in {redact_url(url)} was made with other "
                        f"{', '.join(differ)}; delete it or rename the confirmation")
    if counted(study) >= (spec.budget.trials or 0):
        return "reused"
    run_study(spec, run_dir=run_dir, address=address, num_cpus=num_cpus, resume=True,
              progress=progress)
    return "resumed"


def _arm_tuning(spec: StudySpec, url: str, status: str) -> ArmTuning:
    table = trials(spec.name, url)
    best = best_configs(spec.name, k=1, storage=url)
    if best.empty:
        reasons = sorted({str(r) for r in table.failure_reason if isinstance(r, str)})[:3]
        raise TuneError(f"tuning study {spec.name!r} in {redact_url(url)}: no trial completed "
                        f"({'; '.join(reasons) or 'none finished'})")
    row = best.iloc[0]
    params = {k.removeprefix("params_"): _plain(v) for k, v in row.items()
              if k.startswith("params_") and not _missing(v)}
    values = [_plain(v) if s == "COMPLETE" else None for s, v in zip(table.state, table.objective)]
    finished = int(table.state.isin(["COMPLETE", "PRUNED", "FAIL"]).sum())
    return ArmTuning(study=spec.name, budget=spec.budget.trials or 0, finished=finished,
                     best_trial=int(row.number), best_value=float(row.objective), params=params,
                     config=dict(row.config), seeds=spec.seed_list,
                     metric=spec.objective.metric, direction=spec.objective.direction,
                     values=values, status=status)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A numpy / pandas scalar as its Python value (JSON-ready)."""
    return value.item() if hasattr(value, "item") else value


@dataclass
class TuningRun:
    """``tune``'s result: per idea and arm what tuning gave, the studies and the wall time."""

    arms: Tuning
    studies: dict[str, list[tuple[str, str]]]
    seconds: float


def tune(spec: ConfirmSpec, ideas: list[str] | None = None, *,
         run_dir: str | os.PathLike | None = None, address: str | None = None,
         num_cpus: int | None = None, device: str = "auto",
         progress: Callable[[Status], None] | None = None,
         on_study: Callable[[str, str], None] | None = None,
         mlflow_parent: tuple[str, str] | None = None) -> TuningRun:
    """Run (or reuse) the tuning study of every tuned arm of the selected ideas, one after
    another through ``run_study`` (Ray: connected by the caller, else started per study), and
    read each one's best trial. ``on_study(name, status)`` after each study.
    ``mlflow_parent``: ``(experiment, run id)`` of the confirmation's MLflow run; a study run
    here for the first time puts its runs in that experiment, its own run a child of that run
    tagged with the ``IDEA/arm`` pairs it tunes (``dagstudy.tuned_for``)."""
    start = time.monotonic()
    arms: Tuning = {}
    used: dict[str, list[tuple[str, str]]] = {}
    for name, study in tuning_studies(spec, device).items():
        owners = [(i, a) for i, a in study.owners if ideas is None or i in ideas]
        if not owners:
            continue
        tuned_for = [f"{i}/{a}" for i, a in study.owners]
        home = None
        if mlflow_parent is not None:
            home = {"experiment": mlflow_parent[0],
                    "tags": {"mlflow.parentRunId": mlflow_parent[1],
                             "dagstudy.tuned_for": ",".join(tuned_for)}}
        status = _run_or_reuse(study.spec, run_dir, address, num_cpus, progress, home)
        url = storage_for(study.spec, run_dir).optuna
        result = _arm_tuning(study.spec, url, status)
        load_study(name, url).set_user_attr("tuned_for", tuned_for)
        for idea, arm in owners:
            arms.setdefault(idea, {})[arm] = result
        used[name] = owners
        if on_study:
            on_study(name, status)
    return TuningRun(arms, used, time.monotonic() - start)


def apply_tuning(experiments: list[Experiment], tuning: Tuning | None) -> list[Experiment]:
    """The experiments with each tuned arm's configuration replaced by its best trial's."""
    if not tuning:
        return experiments
    out = []
    for exp in experiments:
        tuned = tuning.get(exp.idea, {})
        settings = {label: {arm: TrainConfig(**tuned[qualify(label, arm)].config)
                            if qualify(label, arm) in tuned else cfg
                            for arm, cfg in arms.items()}
                    for label, arms in exp.settings.items()}
        out.append(Experiment(exp.idea, exp.spec, settings))
    return out


def tuning_from_dicts(saved: dict[str, dict[str, dict]]) -> Tuning:
    """``Tuning`` from its JSON form (``confirmation.json``)."""
    return {idea: {arm: ArmTuning(**d) for arm, d in arms.items()}
            for idea, arms in saved.items()}


def protocol(arms: dict[str, ArmTuning] | None) -> str:
    """What the verdict row says: ``tuned (N trials/arm)`` or ``fixed``."""
    if not arms:
        return "fixed"
    return f"tuned ({max(a.budget for a in arms.values())} trials/arm)"
