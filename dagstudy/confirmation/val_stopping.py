"""Validation early stopping, replayed on a full-length run: the real competitor of OPT-STOP.

Stopping never changes the passes before it, so a run trained for every epoch shows what
validation early stopping would have done: stop after ``patience`` passes without a new best
validation accuracy and keep the weights of the best pass. ``val_stopping`` returns, per seed,
the test accuracy at that best pass and the passes it trained; ``rows`` compares a treatment's
per-seed accuracy and epochs with them (paired, unadjusted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dagstudy.confirmation.verdict import test_idea


def val_stopping(result: dict[str, Any], patience: int) -> tuple[np.ndarray, np.ndarray]:
    """``(test accuracy at the best validation pass, passes trained)`` per seed, from
    ``curves["val_accuracy"]`` and ``curves["test_accuracy"]`` ([epoch][seed])."""
    val = np.asarray(result["curves"]["val_accuracy"], dtype=float)
    test = np.asarray(result["curves"]["test_accuracy"], dtype=float)
    accuracy, passes = [], []
    for s in range(val.shape[1]):
        best, best_epoch, stop = -np.inf, 0, val.shape[0]
        for e, v in enumerate(val[:, s]):
            if v > best:
                best, best_epoch = v, e
            elif e - best_epoch >= patience:
                stop = e + 1
                break
        accuracy.append(test[best_epoch, s])
        passes.append(stop)
    return np.asarray(accuracy), np.asarray(passes, dtype=float)


def rows(control: dict[str, Any], treatment_accuracy: np.ndarray, treatment_epochs: np.ndarray,
         patience: int, test: str, n_resamples: int, permutations: int
         ) -> list[dict[str, Any]]:
    """Secondary rows: the treatment against validation early stopping replayed on the
    control's run, on test accuracy and on passes trained."""
    accuracy, passes = val_stopping(control, patience)
    out = []
    for metric, theirs, ours in (("test_accuracy", accuracy, treatment_accuracy),
                                 ("epochs", passes, treatment_epochs)):
        ok = np.isfinite(theirs) & np.isfinite(ours)
        row: dict[str, Any] = {"arm": "treatment", "vs": f"val-stopping (patience {patience})",
                               "metric": metric}
        if ok.sum() >= 2:
            r = test_idea(theirs[ok], ours[ok], margin=1.0, test=test, n_resamples=n_resamples,
                          permutations=permutations)
            row.update(control_mean=r.control_mean, treatment_mean=r.treatment_mean,
                       diff=r.diff, ci=[r.ci_low, r.ci_high], p=r.p)
        out.append(row)
    return out
