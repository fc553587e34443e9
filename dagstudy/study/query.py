"""Read studies back: every trial, the best configurations, parameter importances.

Reads only the Optuna storage, so it works from any process while the study runs, and from
another machine given the storage URL. ``storage=None`` resolves as a study without a
``storage`` section would (``DAGSTUDY_OPTUNA_STORAGE``, else ``optuna.db`` in the run
directory: ``$DAGSTUDY_HOME`` or ``./dagstudy-runs``).

Per trial, the driver stores user attributes that these tables expose: ``mean``, ``std`` and
``per_seed`` (the objective metric's final values), ``config`` (the resolved ``TrainConfig``),
``mlflow_run_id`` and, for failed or pruned trials, ``failure_reason``; the seeds are the
study's (``StudySpec(**study.user_attrs["spec"]).seed_list``). A trial
launched while MLflow was unreachable gets its run later; its id is then in the study's
``mlflow_run_ids`` user attribute (``trial_run_id`` reads both).
"""

from __future__ import annotations

import warnings

import optuna
import pandas as pd

from dagstudy.study.storage import open_study_storage, storage_for
from dagstudy.tracking.records import trial_run_id
from dagstudy.urls import redact_url

TrialState = optuna.trial.TrialState


def load_study(study: str, storage: str | None = None) -> optuna.Study:
    """Open an existing study; ``KeyError`` naming the storage if there is none of that name,
    ``StorageError`` if the storage cannot be opened."""
    url = storage or storage_for(create=False).optuna
    rdb, names = open_study_storage(url)
    if study not in names:
        raise KeyError(f"no study {study!r} in {redact_url(url)} "
                       f"(has: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study, storage=rdb)


def _metric(study: optuna.Study) -> str:
    return study.user_attrs.get("spec", {}).get("objective", {}).get("metric", "objective")


def _columns(metric: str) -> list[str]:
    return ["number", "state", "objective", f"{metric}_mean", f"{metric}_std",
            f"{metric}_per_seed", "failure_reason", "mlflow_run_id", "config", "datetime_start",
            "duration_s"]


def _frame(study: optuna.Study, rows: list[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    """One row per trial: the fixed columns, then one ``params_<name>`` column per param."""
    metric = _metric(study)
    records = []
    for t in rows:
        attrs = t.user_attrs
        duration = t.duration.total_seconds() if t.duration is not None else None
        values = [t.number, t.state.name, t.value, attrs.get("mean"), attrs.get("std"),
                  attrs.get("per_seed"), attrs.get("failure_reason"),
                  trial_run_id(study, t), attrs.get("config"), t.datetime_start, duration]
        record = dict(zip(_columns(metric), values))
        record.update({f"params_{k}": v for k, v in t.params.items()})
        records.append(record)
    if not records:
        return pd.DataFrame(columns=_columns(metric))
    return pd.DataFrame(records)


def trials(study: str, storage: str | None = None) -> pd.DataFrame:
    """Every trial of ``study``, one row each in trial-number order, with its state
    (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``), objective, the objective
    metric's per-seed mean, std and values, sampled params (``params_<name>``), failure reason,
    MLflow run id, resolved config, start time and duration."""
    s = load_study(study, storage)
    return _frame(s, s.get_trials(deepcopy=False))


def best_configs(study: str, k: int = 5, storage: str | None = None) -> pd.DataFrame:
    """The ``k`` best COMPLETE trials, best first (ties: Optuna's best trial first, then by
    number); columns as ``trials``; no rows before any trial completes.
    ``TrainConfig(**df.config[0])`` rebuilds the best configuration."""
    s = load_study(study, storage)
    done = s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return _frame(s, [])
    sign = -1.0 if s.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    best = s.best_trial.number
    ranked = sorted(done, key=lambda t: (sign * t.value, t.number != best, t.number))
    return _frame(s, ranked[:k])


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator, PED-ANOVA in Optuna 5), most
    important first. ``ValueError`` with the reason when they cannot be computed yet."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 2:
        raise ValueError(f"need at least 2 complete trials (have {n})")
    # Only Optuna's own warnings (e.g. PED-ANOVA's "quantiles select the same set of trials"):
    # the filters are process-wide, and an "ignore everything" here would also swallow a
    # warning another thread (the tracker's background logger) raises meanwhile.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"optuna(\.|$)")
        try:
            return dict(optuna.importance.get_param_importances(study))
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None
