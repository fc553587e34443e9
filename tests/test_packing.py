"""Packed trials: members of one population train exactly as their configurations alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dagstudy.config import TrainConfig
from dagstudy.packing import check_pack, pack_key
from dagstudy.study.loop import pack_size
from dagstudy.trainer import load_data, train, train_packed

CPU = torch.device("cpu")
SEEDS = [3, 4]
BASE = dict(dataset="digits", topology="dag", depth=2, width=16, epochs=4, batch_size=64)
PACKS = {
    "sgd": [dict(lr=0.1, optimizer_params={"momentum": 0.9}),
            dict(lr=0.03, optimizer_params={"momentum": 0.5, "weight_decay": 1e-3}),
            dict(lr=0.05, bias_init=0.1)],
    "adam": [dict(lr=1e-3), dict(lr=3e-3, optimizer_params={"beta1": 0.8}),
             dict(lr=1e-2, init_scale=0.5, optimizer_params={"weight_decay": 1e-4})],
}


def configs(optimizer: str) -> list[TrainConfig]:
    return [TrainConfig(**BASE, optimizer=optimizer, **m) for m in PACKS[optimizer]]


def assert_same(packed, alone):
    assert packed.epochs == alone.epochs
    for metric in ("train_loss", "val_loss", "test_accuracy"):
        assert packed.final[metric] == pytest.approx(alone.final[metric], abs=1e-5), metric
        np.testing.assert_allclose(packed.curves[metric], alone.curves[metric], rtol=0,
                                   atol=1e-5, err_msg=metric)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_packed_member_trains_exactly_as_its_configuration_alone(optimizer):
    cs = configs(optimizer)
    data = load_data(cs[0], SEEDS, CPU)
    packed = train_packed(cs, SEEDS, data, CPU)
    for member, config in zip(packed, cs):
        assert member.config == config.model_dump()
        assert_same(member, train(config, SEEDS, data, CPU))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_pruned_member_stops_and_the_others_train_on_unchanged(optimizer):
    cs = configs(optimizer)
    data = load_data(cs[0], SEEDS, CPU)
    seen: list[list[int]] = []

    def prune_member_1_at_epoch_2(rows):
        seen.append(sorted(rows))
        return [1] if rows.get(1, {}).get("epoch") == 2 else []

    packed = train_packed(cs, SEEDS, data, CPU, prune_member_1_at_epoch_2)
    assert seen == [[0, 1, 2], [0, 1, 2], [0, 2], [0, 2]]
    assert packed[1].epochs == 2 and len(packed[1].curves["train_loss"]) == 2
    pruned_alone = train(cs[1].model_copy(update={"epochs": 2}), SEEDS, data, CPU)
    assert_same(packed[1], pruned_alone)
    for k in (0, 2):
        assert_same(packed[k], train(cs[k], SEEDS, data, CPU))


def test_configurations_that_differ_in_shape_do_not_pack_and_the_error_names_the_field():
    a = TrainConfig(**BASE, lr=0.01)
    assert pack_key(a) == pack_key(a.model_copy(update={"lr": 0.1, "bias_init": 0.2}))
    assert pack_key(a) != pack_key(a.model_copy(update={"width": 8}))
    with pytest.raises(ValueError, match="width: configuration 1 of the pack has 8"):
        check_pack([a, a.model_copy(update={"width": 8})])
    lipschitz = TrainConfig(**BASE, optimizer="fista")
    with pytest.raises(ValueError, match="optimizer_params"):  # fista packs nothing of its own
        check_pack([lipschitz, TrainConfig(**BASE, optimizer="fista",
                                           optimizer_params={"l1": 1e-4})])


@pytest.mark.parametrize(("left", "most", "slots", "sizes"), [
    (24, 8, 2, [8, 8, 4, 2, 1, 1]),  # not a third 8 alone, with a slot idle
    (40, 8, 2, [8, 8, 8, 8, 4, 2, 1, 1]),
    (5, 8, 2, [3, 1, 1]),
    (4, 1, 3, [1, 1, 1, 1]),  # unpacked: one trial per task
    (9, 8, 1, [8, 1]),
    (0, 8, 2, []),
])
def test_packs_shrink_near_the_end_so_the_slots_finish_together(left, most, slots, sizes):
    launched = []
    while size := pack_size(left, most, slots):
        launched.append(size)
        left -= size
    assert launched == sizes
