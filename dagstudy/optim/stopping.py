"""OPT-STOP: decide when to stop, and flag overfitting, from the last layer's cumulative gradient.

Per seed, after pass ``e``: ``G_e`` is the readout weights' gradient accumulated over the pass
(``Problem.readout_grad``: the mean-loss gradient summed over the pass's steps as the weights
move, or the full-batch gradient), and

    ratio_e = ||G_e|| / ||G_1||          (Frobenius norms; ``last_layer_grad_ratio``)

- The stop rule fires at the first pass ``e`` where ``ratio < tau`` has held for ``patience``
  consecutive passes (``rule_epoch``). Whether it ends the seed's training is the trainer's
  choice (``TrainConfig.stop_on_ratio``); the epoch is recorded either way.
- The overfitting flag (``overfit_flag``, 1.0 or 0.0) is up on passes where ``ratio < tau``
  and the relative generalisation gap ``(val_loss - train_loss) / val_loss`` exceeds ``gap``;
  ``overfit_epoch`` is the first such pass.
"""

from __future__ import annotations

import torch


class StopRule:
    """Per-seed state of the rule above for one population of ``n_seeds``."""

    def __init__(self, n_seeds: int, tau: float, patience: int, gap: float):
        self.tau, self.patience, self.gap = tau, patience, gap
        self.first: torch.Tensor | None = None
        self.below = torch.zeros(n_seeds, dtype=torch.long)
        self.rule_epoch: list[int | None] = [None] * n_seeds
        self.overfit_epoch: list[int | None] = [None] * n_seeds

    def after_pass(
        self, epoch: int, grad_norm: torch.Tensor, train_loss: torch.Tensor, val_loss: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Update with pass ``epoch``'s ``||G_e||``, losses (all ``[S]``); return the curves."""
        norm = grad_norm.detach().double().cpu()
        if self.first is None:
            self.first = norm.clamp(min=1e-300)
        ratio = norm / self.first
        small = ratio < self.tau
        self.below = torch.where(small, self.below + 1, 0)
        val, train = val_loss.detach().double().cpu(), train_loss.detach().double().cpu()
        overfit = small & ((val - train) / val > self.gap)
        for i in range(len(self.rule_epoch)):
            if self.rule_epoch[i] is None and self.below[i] >= self.patience:
                self.rule_epoch[i] = epoch
            if self.overfit_epoch[i] is None and bool(overfit[i]):
                self.overfit_epoch[i] = epoch
        return {"last_layer_grad_ratio": ratio, "overfit_flag": overfit.double()}
