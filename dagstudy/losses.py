"""Per-seed losses: ``(logits [S, B, C], y [S, B]) -> [S]`` (each seed's mean over its batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)


def squared_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0.5 * ||logits - onehot(y)||^2 per example (the text's squared error), averaged."""
    target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    return 0.5 * (logits - target).pow(2).sum(-1).mean(1)


LOSSES = {"ce": cross_entropy, "mse": squared_error}
