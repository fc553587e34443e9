"""The activation-rank diagnostic sees a block collapse that the dead fraction hides."""

from __future__ import annotations

import torch

from dagstudy import diagnostics
from dagstudy.config import TrainConfig
from dagstudy.trainer import build_model


def _net(width: int = 16, depth: int = 2):
    config = TrainConfig(topology="layered", depth=depth, width=width)
    return build_model(config, d_in=8, n_classes=3, seeds=[0, 1])


def test_block_of_copies_of_two_neurons_has_rank_two_of_sixteen():
    model = _net()
    x = torch.randn(2, 256, 8, generator=torch.Generator().manual_seed(0))
    full = diagnostics.activation_rank(model, model.hidden(x))
    assert full.shape == (2, 2)
    assert torch.all(full[:, 0] == 16)  # random init: full rank
    with torch.no_grad():
        w, b = model.weights[0], model.biases[0]
        w[:, :8] = w[:, :1].clone()     # nodes 0..7 copy node 0
        w[:, 8:] = w[:, 8:9].clone()    # nodes 8..15 copy node 8
        b[:, :8] = 0.1
        b[:, 8:] = 0.2
    collapsed = diagnostics.activation_rank(model, model.hidden(x))
    assert torch.all(collapsed[:, 0] == 2), collapsed
    dead = diagnostics.dead_by_block(model.hidden(x).amax(dim=1)[:, 8:], 2)
    assert torch.all(dead[:, 0] == 0)  # nobody is dead: the dead fraction hides the collapse


def test_trainer_records_activation_rank_per_epoch():
    from dagstudy.trainer import load_data, train

    config = TrainConfig(depth=2, width=8, epochs=2, topology="layered")
    data = load_data(config, [0], torch.device("cpu"))
    result = train(config, [0], data, "cpu")
    ranks = result.curves["activation_rank_by_block"]
    assert len(ranks) == 2 and len(ranks[0][0]) == 2
    assert all(0 <= r <= 8 for r in ranks[-1][0])
