"""A confirmation file, validated: per idea ID a control and a treatment arm (``TrainConfig``
overrides of one base), the seeds, the test and the sequential design.

Idea IDs are those of the registry ``dagstudy.ideas``; ``loader.load_spec`` reads a file into
a ``ConfirmSpec``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from dagstudy.config import StrictModel, check_name
from dagstudy.ideas import IDEAS


class IdeaSpec(StrictModel):
    """One idea's experiment; arms are ``TrainConfig`` overrides of the file's and idea's base."""

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
    n_resamples: int = Field(10_000, ge=100)
    sequential: SequentialSpec = SequentialSpec()
    ideas: dict[str, IdeaSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_ideas(self) -> ConfirmSpec:
        unknown = [k for k in self.ideas if k not in IDEAS]
        if unknown:
            raise ValueError(f"ideas: unknown {unknown} (allowed: {', '.join(IDEAS)})")
        return self
