"""A confirmation file, validated: per idea ID a control and a treatment arm (``TrainConfig``
overrides of one base), optionally several settings of that base (``SettingsSpec``), the seeds,
the test and the sequential design.

Idea IDs are those of the registry ``dagstudy.ideas``, whose ``defaults`` (metric, margin,
diagnostics, ...) fill every field the file leaves out, or any other ID (``IDEA_ID``), which is
then *user-defined*: the file says everything about it (arms, metric, margin) and the report and
MLflow mark it so; ``loader.load_spec`` reads a file into a ``ConfirmSpec``.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from dagstudy.config import StrictModel, check_name
from dagstudy.confirmation.tune_spec import TuneSpec, verdict_seed_range
from dagstudy.ideas import IDEAS
from dagstudy.stats.signflip import PERMUTATIONS


class SettingsSpec(StrictModel):
    """Several settings of one idea: ``TrainConfig`` overrides applied on top of the base (and
    under the arms' own overrides), each a full paired experiment on the same seeds.

    Written either as a list of override mappings, or as ``{grid: {field: [values, ...]}}`` (every
    combination, in the order the fields are given). ``data_dirs`` maps a dataset to the
    ``data_dir`` its settings use (e.g. ``mnist: ../shared/data/mnist-t10k``). ``scale`` is what
    the pooled test averages: ``diff`` (the mean differences, in the metric's units), ``d_z``
    (standardised, for metrics whose scale differs between settings, e.g. losses on two
    datasets) or ``auto`` (``diff`` for an accuracy or when the datasets are all the same,
    ``d_z`` otherwise).
    """

    each: list[dict[str, Any]] = []
    grid: dict[str, list[Any]] = {}
    data_dirs: dict[str, str] = {}
    scale: Literal["auto", "diff", "d_z"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"each": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_form(self) -> SettingsSpec:
        if bool(self.each) == bool(self.grid):
            raise ValueError("settings: give a non-empty list or a non-empty grid (not both)")
        empty = [k for k, values in self.grid.items() if not values]
        if empty:
            raise ValueError(f"settings.grid: {empty} have no values")
        labels = [label for label, _ in self.expand()]
        if len(set(labels)) != len(labels):
            raise ValueError("settings: two settings are identical")
        return self

    def expand(self) -> list[tuple[str, dict[str, Any]]]:
        """``[(label, overrides)]``: label ``field=value,...`` in the given order, ``data_dir``
        filled in from ``data_dirs`` where a setting names the dataset but no directory."""
        if self.grid:
            keys = list(self.grid)
            combos = [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]
        else:
            combos = [dict(c) for c in self.each]
        out = []
        for overrides in combos:
            label = ",".join(f"{k}={_label_value(v)}" for k, v in overrides.items()) or "base"
            dataset = overrides.get("dataset")
            if isinstance(dataset, str) and dataset in self.data_dirs and "data_dir" not in (
                    overrides):
                overrides["data_dir"] = self.data_dirs[dataset]
            out.append((label, overrides))
        return out


def _label_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class CoPrimary(StrictModel):
    """A second outcome that must hold too (e.g. OPT-STOP: epochs saved beside accuracy)."""

    metric: str
    higher_is_better: bool = True
    margin: float = Field(1.0, gt=0.0, description="smallest difference that matters (units)")


class IdeaSpec(StrictModel):
    """One idea's experiment; arms are ``TrainConfig`` overrides of the file's and idea's base.

    ``metric``: a ``TrialResult`` metric, ``epochs``, or ``log10_<metric>`` (e.g.
    ``log10_train_loss``: losses compared as ratios; margin log10(1.25) = 0.097 is a factor
    1.25). ``co_primary``: a second outcome the verdict also needs (both must be significant in
    the treatment's favour). ``secondary_metrics``: compared in secondary rows (test accuracy is
    always shown beside a verdict on another metric). ``val_stopping``: secondary rows against
    validation early stopping with this patience (``val_stopping.py``)."""

    metric: str = "test_accuracy"
    co_primary: CoPrimary | None = None
    secondary_metrics: list[str] = []
    val_stopping: int | None = Field(
        None, ge=1, description="patience: compare the treatment with validation early "
        "stopping replayed on the control's run (needs a full-length control)")
    higher_is_better: bool = True
    margin: float = Field(0.01, gt=0.0, description="smallest difference that matters (units)")
    base: dict[str, Any] = {}
    control: dict[str, Any] = {}
    treatment: dict[str, Any]
    extra_controls: dict[str, dict[str, Any]] = {}
    noninferiority: bool = False
    match_params: bool = False
    depths: list[int] | None = Field(None, min_length=2)
    fanin_sweep: list[int] | None = Field(None, min_length=1)
    diagnostics: list[str] = []
    settings: SettingsSpec | None = None
    tune: TuneSpec | None = Field(None, description="tune every arm (replaces the file's)")
    rank_bases: list[dict[str, Any]] = Field(
        [], description="bases of ranks 1.. of `from_study: {top: K}` (set by from_study)")
    base_trials: list[dict[str, Any]] = Field(
        [], description="the study trials the bases came from (set by from_study)")


IDEA_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""An idea ID: built-in (``dagstudy.ideas.IDEAS``) or user-defined; it names MLflow metrics
(``<ID>.diff``) and report files (``pairs-<ID>.png``), hence the restricted alphabet."""


def is_user_defined(idea: str) -> bool:
    """Whether ``idea`` is not in the built-in registry (the report and MLflow mark it)."""
    return idea not in IDEAS


class SequentialSpec(StrictModel):
    enabled: bool = False
    looks: int = Field(3, ge=2, le=10)
    add_seeds: int = Field(5, ge=1)
    spending: Literal["obrien-fleming", "bonferroni"] = "obrien-fleming"


class ConfirmSpec(StrictModel):
    name: Annotated[str, AfterValidator(check_name)]
    base: dict[str, Any] = {}
    seeds: int = Field(10, ge=2)
    first_seed: int = Field(0, ge=0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    test: Literal["permutation", "wilcoxon", "t"] = "permutation"
    ci_method: Literal["bca", "percentile"] = "bca"
    n_resamples: int = Field(10_000, ge=100, description="bootstrap resamples of each CI")
    permutations: int = Field(
        PERMUTATIONS, ge=100, description="most random sign patterns of a Monte-Carlo "
        "permutation p (above 40 pairs, or 16 pooled); its floor is 1 / (1 + permutations)")
    sequential: SequentialSpec = SequentialSpec()
    settings: SettingsSpec | None = Field(
        None, description="settings for every idea that gives none of its own")
    tune: TuneSpec | None = Field(None, description="tune every arm of every idea")
    ideas: dict[str, IdeaSpec] = Field(min_length=1)

    def tune_for(self, idea: str) -> TuneSpec | None:
        """The idea's ``tune`` block, else the file's; None: fixed hyperparameters."""
        return self.ideas[idea].tune or self.tune

    def verdict_seeds(self) -> range:
        """Every seed a verdict may train (all looks of a sequential design)."""
        seq = self.sequential
        extra = (seq.looks - 1) * seq.add_seeds if seq.enabled else 0
        return verdict_seed_range(self.first_seed, self.seeds, extra)

    @model_validator(mode="before")
    @classmethod
    def _builtin_defaults(cls, raw: Any) -> Any:
        """A built-in idea's ``defaults`` under every field its entry does not state."""
        if not isinstance(raw, dict) or not isinstance(raw.get("ideas"), dict):
            return raw
        ideas = {k: {**IDEAS[k].defaults, **v} if k in IDEAS and isinstance(v, dict) else v
                 for k, v in raw["ideas"].items()}
        return {**raw, "ideas": ideas}

    @model_validator(mode="after")
    def _known_ideas(self) -> ConfirmSpec:
        bad = [k for k in self.ideas if not IDEA_ID.fullmatch(k)]
        if bad:
            raise ValueError(f"ideas: {bad} are not idea IDs (1 to 64 of A-Z a-z 0-9 _ -; "
                             f"built-in: {', '.join(IDEAS)}; any other ID is user-defined)")
        pooled_co = [k for k, i in self.ideas.items() if i.co_primary and (i.settings or
                                                                           self.settings)]
        if pooled_co:
            raise ValueError(f"ideas.{pooled_co[0]}.co_primary: not available with settings "
                             "(the pooled test has one outcome)")
        verdict = self.verdict_seeds()
        for idea in self.ideas:
            tune = self.tune_for(idea)
            if tune and set(tune.seed_list) & set(verdict):
                field = f"ideas.{idea}.tune" if self.ideas[idea].tune else "tune"
                raise ValueError(
                    f"{field}.first_seed: tuning seeds {tune.first_seed}..{tune.seed_list[-1]} "
                    f"overlap the verdict seeds {verdict.start}..{verdict.stop - 1}; they must "
                    f"be disjoint")
        return self
