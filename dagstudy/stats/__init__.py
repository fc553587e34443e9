"""Pure paired statistics: no training, no I/O, randomness only from explicit seeds.

- ``paired``: descriptive (:func:`paired_diffs`, :func:`paired_summary`, :func:`bootstrap_ci`,
  :func:`cohens_dz`, :func:`cohens_dz_ci`), tests of "no difference" (:func:`permutation_p`,
  :func:`wilcoxon_p`, :func:`paired_t_p`, dispatched by :func:`paired_p`), equivalence
  (:func:`tost`);
- ``sequential``: multiplicity (:func:`holm`) and sequential looks
  (:func:`obrien_fleming_alphas`, :func:`bonferroni_looks`);
- ``pooled``: one effect over several settings (:func:`random_effects`,
  :func:`setting_effect`, :func:`stratified_permutation_p`, :func:`pooled_statistic`);
- ``signflip``: the sign-flip null distributions behind both permutation tests (exact by
  enumeration or meet in the middle, else sequential Monte Carlo);
- ``power``: planning (:func:`power_paired_t`, :func:`seeds_needed`, :func:`power_tost`,
  :func:`seeds_for_margin`, :func:`seeds_noninferior`) and the exact tests' floor
  (:func:`smallest_p`, :func:`min_pairs`).

The verdict rule built on them lives in ``dagstudy.confirmation.verdict``.
"""

from dagstudy.stats.paired import (
    ALTERNATIVES,
    MAX_SEEDS,
    TESTS,
    Alternative,
    TestName,
    TostResult,
    bootstrap_ci,
    check_alpha,
    cohens_dz,
    cohens_dz_ci,
    effect_sign,
    paired_diffs,
    paired_p,
    paired_summary,
    paired_t_p,
    permutation_p,
    tost,
    wilcoxon_p,
)
from dagstudy.stats.pooled import (
    STRATIFIED_TEST,
    pooled_statistic,
    random_effects,
    setting_effect,
    stratified_permutation_p,
)
from dagstudy.stats.power import (
    min_pairs,
    min_permutations,
    power_paired_t,
    power_tost,
    seeds_for_margin,
    seeds_needed,
    seeds_noninferior,
    smallest_p,
)
from dagstudy.stats.sequential import bonferroni_looks, holm, obrien_fleming_alphas
from dagstudy.stats.signflip import ENUMERATE_MAX_N, EXACT_MAX_N, PERMUTATIONS

__all__ = [
    "ALTERNATIVES", "ENUMERATE_MAX_N", "EXACT_MAX_N", "MAX_SEEDS", "PERMUTATIONS",
    "STRATIFIED_TEST", "TESTS", "Alternative", "TestName", "TostResult",
    "bonferroni_looks", "bootstrap_ci", "cohens_dz", "cohens_dz_ci", "holm",
    "obrien_fleming_alphas", "paired_diffs", "paired_p", "paired_summary", "paired_t_p",
    "permutation_p", "power_paired_t", "power_tost", "seeds_for_margin", "seeds_needed", "tost",
    "wilcoxon_p", "check_alpha", "effect_sign", "pooled_statistic", "random_effects",
    "setting_effect", "stratified_permutation_p", "min_pairs", "min_permutations",
    "seeds_noninferior", "smallest_p",
]
