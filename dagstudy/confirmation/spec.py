"""A confirmation file, validated: per idea ID a control and a treatment arm (``TrainConfig``
overrides of one base), the seeds, the test and the sequential design.

Idea IDs are those of the registry ``dagstudy.ideas``; ``loader.load_spec`` reads a file into
a ``ConfirmSpec``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dagstudy.confirmation.tune_spec import TuneSpec, verdict_seed_range
from dagstudy.ideas import IDEAS


class IdeaSpec(BaseModel):
    """One idea's experiment; arms are ``TrainConfig`` overrides of the file's and idea's base."""

    model_config = ConfigDict(extra="forbid")
    metric: str = "test_accuracy"
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
    tune: TuneSpec | None = Field(None, description="tune every arm (replaces the file's)")
    rank_bases: list[dict[str, Any]] = Field(
        [], description="bases of ranks 1.. of `from_study: {top: K}` (set by from_study)")
    base_trials: list[dict[str, Any]] = Field(
        [], description="the study trials the bases came from (set by from_study)")


class SequentialSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    looks: int = Field(3, ge=2, le=10)
    add_seeds: int = Field(5, ge=1)
    spending: Literal["obrien-fleming", "bonferroni"] = "obrien-fleming"


class ConfirmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: dict[str, Any] = {}
    seeds: int = Field(10, ge=2)
    first_seed: int = Field(0, ge=0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    test: Literal["permutation", "wilcoxon", "t"] = "permutation"
    ci_method: Literal["bca", "percentile"] = "bca"
    n_resamples: int = Field(10_000, ge=100)
    sequential: SequentialSpec = SequentialSpec()
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

    @model_validator(mode="after")
    def _known_ideas(self) -> ConfirmSpec:
        unknown = [k for k in self.ideas if k not in IDEAS]
        if unknown:
            raise ValueError(f"ideas: unknown {unknown} (allowed: {', '.join(IDEAS)})")
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
