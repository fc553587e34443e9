"""Topology masks: exact fan-in counts, and no node ever reads itself or a later node."""

import pytest
import torch

from dagstudy.model.topology import build_topology

D_IN, WIDTH, DEPTH = 5, 3, 4
SEEDS = [0, 1, 2]


def reads(topo, k: int) -> torch.Tensor:
    """Boolean ``[S, width, n_columns]``: which buffer columns each node of block k reads."""
    blk = topo.blocks[k]
    out = torch.zeros(len(SEEDS), topo.width, topo.n_columns, dtype=torch.bool)
    local = torch.ones(len(SEEDS), topo.width, blk.hi - blk.lo) if blk.mask is None else blk.mask
    out[..., blk.lo : blk.hi] = local.bool()
    return out


@pytest.mark.parametrize("kind", ["layered", "residual", "residual-norm", "dag", "fanin"])
@pytest.mark.parametrize("width", [1, WIDTH])
def test_no_node_reads_itself_or_later(kind, width):
    topo = build_topology(kind, D_IN, width, DEPTH, SEEDS, fanin=2)
    for k in range(DEPTH):
        assert not reads(topo, k)[..., topo.block_start(k) :].any()


@pytest.mark.parametrize("n", [1, 3, 7, 100])
@pytest.mark.parametrize("width", [1, WIDTH])
def test_fanin_random_has_exactly_min_n_available(n, width):
    topo = build_topology("fanin", D_IN, width, DEPTH, SEEDS, fanin=n, wiring="random")
    for k in range(DEPTH):
        available = topo.block_start(k)
        counts = reads(topo, k).sum(-1)
        assert (counts == min(n, available)).all(), (k, counts)


def test_fanin_random_differs_by_seed_and_is_reproducible():
    a = build_topology("fanin", 20, 4, 3, [0, 1], fanin=5)
    b = build_topology("fanin", 20, 4, 3, [0, 1], fanin=5)
    assert torch.equal(a.blocks[2].mask, b.blocks[2].mask)
    assert not torch.equal(a.blocks[2].mask[0], a.blocks[2].mask[1])


@pytest.mark.parametrize("width", [1, WIDTH])
def test_fanin_nearest_reads_the_n_closest_prior_columns(width):
    n = 4
    topo = build_topology("fanin", D_IN, width, DEPTH, SEEDS, fanin=n, wiring="nearest")
    for k in range(DEPTH):
        hi = topo.block_start(k)
        expected = torch.zeros(topo.n_columns, dtype=torch.bool)
        expected[max(0, hi - n) : hi] = True
        assert (reads(topo, k) == expected).all()


@pytest.mark.parametrize("width", [1, WIDTH])
def test_dag_reads_every_prior_node(width):
    topo = build_topology("dag", D_IN, width, DEPTH, SEEDS)
    for k in range(DEPTH):
        r = reads(topo, k)
        assert r[..., : topo.block_start(k)].all()


@pytest.mark.parametrize("kind", ["layered", "residual", "residual-norm"])
def test_layered_reads_only_previous_block(kind):
    topo = build_topology(kind, D_IN, WIDTH, DEPTH, SEEDS)
    assert reads(topo, 0)[..., :D_IN].all() and reads(topo, 0).sum(-1).eq(D_IN).all()
    for k in range(1, DEPTH):
        prev = torch.zeros(topo.n_columns, dtype=torch.bool)
        prev[topo.block_start(k - 1) : topo.block_start(k)] = True
        assert (reads(topo, k) == prev).all()


def test_readout_auto():
    assert build_topology("dag", D_IN, WIDTH, DEPTH, SEEDS).readout_lo == D_IN
    layered = build_topology("layered", D_IN, WIDTH, DEPTH, SEEDS)
    assert layered.readout_lo == layered.block_start(DEPTH - 1)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="ring"), "topology"),
        (dict(kind="fanin", fanin=0), "fanin"),
        (dict(kind="fanin", fanin=None), "fanin"),
        (dict(kind="dag", wiring="sideways"), "fanin_wiring"),
    ],
)
def test_bad_topology_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        build_topology(kwargs.pop("kind"), D_IN, WIDTH, DEPTH, SEEDS, **kwargs)
