"""Dead-neuron detection and the revival policies: contracts on hand-built networks, then the
documented dead-neuron setting trained on digits."""

import math

import pytest
import torch

from dagstudy.config import TrainConfig
from dagstudy.data.splits import SplitData
from dagstudy.losses import cross_entropy
from dagstudy.model.dagnet import DagNet
from dagstudy.model.topology import build_topology
from dagstudy.optim import VARIANTS
from dagstudy.problem import Problem
from dagstudy.revival import DEAD_NEURON_SETTING, POLICIES
from dagstudy.revival.base import dormant
from dagstudy.trainer import load_data, train

CPU = torch.device("cpu")
TOPOLOGIES = [("dag", None, "random"), ("layered", None, "random"),
              ("fanin", 3, "random"), ("fanin", 3, "nearest")]
DEAD_BIAS = -1e3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: intra-op threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_problem(kind="dag", width=3, depth=4, fanin=None, wiring="random", seeds=(0, 1),
                 d_in=5, n=40, batch_size=40, dtype=torch.float64):
    """A population on ``n`` fixed Gaussian rows (every seed trains on all of them), with
    positive random biases so that no node is dead unless a test kills it."""
    topo = build_topology(kind, d_in, width, depth, list(seeds), fanin=fanin, wiring=wiring)
    model = DagNet(topo, 3, list(seeds), dtype=dtype)
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for b in model.biases:
            b.copy_(0.1 + 0.4 * torch.rand(b.shape, generator=gen, dtype=dtype))
    S = len(seeds)
    rows = torch.arange(n).expand(S, n).clone()
    data = SplitData(
        x=torch.randn(n, d_in, generator=gen, dtype=dtype),
        y=torch.randint(0, 3, (n,), generator=gen), train_idx=rows, val_idx=rows[:, :2],
        test_idx=rows[:, :2], mean=torch.zeros(S, 1, d_in, dtype=dtype),
        std=torch.ones(S, 1, d_in, dtype=dtype), n_classes=3,
    )
    return model, Problem(model, data, cross_entropy, batch_size)


def kill(model: DagNet, nodes: list[tuple[int, int]]) -> None:
    """Make hidden nodes ``(s, j)`` dead: a bias no input can overcome."""
    with torch.no_grad():
        for s, j in nodes:
            k, i = divmod(j, model.topo.width)
            model.biases[k][s, i] = DEAD_BIAS


def detect(problem: Problem) -> torch.Tensor:
    """One full-batch pass without a step: the trainer's detection."""
    problem.start_pass()
    problem.full_gradient()
    return problem.activity_max <= 0


def make_policy(name: str, **params):
    cls = POLICIES[name]
    return cls(cls.Params(**params))


def adam(problem: Problem):
    return VARIANTS["adam"](problem.params, 1e-3, VARIANTS["adam"].Params())


def train_inputs(problem: Problem) -> torch.Tensor:
    return problem.data.inputs(problem.data.train_idx)


def spread_kills(width: int, depth: int) -> list[tuple[int, int]]:
    """Dead nodes in the first, a middle and the last block, two adjacent ones sharing one live
    neighbour when the width allows, and different ones per seed."""
    last = (depth - 1) * width
    nodes = [(0, 0), (0, last + width - 1), (1, 2 * width), (1, last)]
    if width >= 3:
        nodes += [(0, width), (0, width + 1)]
    return nodes


# ----------------------------------------------------------------------------- detection


def test_dead_neuron_is_detected_and_one_live_case_keeps_a_neuron_alive():
    model, problem = make_problem("layered", width=3, depth=2, seeds=(0,), d_in=2, n=10,
                                  batch_size=3)
    problem.data.x[:, 0] = torch.arange(10.0)  # row 9 alone has x0 > 8.5
    problem.data.x[:, 1] = 1.0
    with torch.no_grad():
        model.weights[0][0] = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
        model.biases[0][0] = torch.tensor([-8.5, DEAD_BIAS, 0.0])
    assert detect(problem)[0, :3].tolist() == [False, True, False]

    problem.start_pass()  # a minibatch pass sees the same rows, batch by batch
    for idx in problem.batches():
        problem.backward(idx)
    assert (problem.activity_max[0, :3] <= 0).tolist() == [False, True, False]
    # mean outputs 0.05, 0, 1 -> node 0's share of the block mean is 0.05 / 0.35 = 0.14
    assert dormant(problem, 0.2)[0, :3].tolist() == [True, True, False]
    assert dormant(problem, 0.1)[0, :3].tolist() == [False, True, False]
    assert not dormant(problem, 0.0).any()


def test_residual_detection_sees_the_relu_output_not_the_skip():
    model, problem = make_problem("residual", width=2, depth=2, seeds=(0,))
    kill(model, [(0, 3)])  # its buffer column still carries block 0's node 1 (alive)
    dead = detect(problem)
    assert dead[0].tolist() == [False, False, False, True]


# ----------------------------------------------------------------------- function preservation


@pytest.mark.parametrize("kind, fanin, wiring", TOPOLOGIES)
@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("name", ["split", "flip"])
def test_split_and_flip_preserve_the_function(kind, fanin, wiring, width, name):
    model, problem = make_problem(kind, width, fanin=fanin, wiring=wiring)
    nodes = spread_kills(width, model.topo.depth)
    kill(model, nodes)
    dead = detect(problem)
    assert all(dead[s, j] for s, j in nodes)
    x = train_inputs(problem)
    before = model(x).detach()
    stats = make_policy(name).after_pass(model, dead, adam(problem), problem, epoch=1)
    assert (model(x).detach() - before).abs().max() <= 1e-6
    revivable = dead.sum(1) if name == "flip" or width > 1 else torch.zeros(2, dtype=torch.long)
    assert stats["revived"].tolist() == revivable.tolist()
    assert stats["revived"].sum() + stats["revival_skipped"].sum() == dead.sum()
    jumps = stats["revival_loss_jump"]
    assert all(math.isnan(v) or abs(v) <= 1e-9 for v in jumps.tolist())


@pytest.mark.parametrize("kind, fanin, wiring", TOPOLOGIES)
def test_split_copy_outputs_its_neighbour(kind, fanin, wiring):
    model, problem = make_problem(kind, 3, fanin=fanin, wiring=wiring)
    kill(model, [(0, 3), (0, 4)])  # block 1: nodes 0 and 1 both take node 2 as neighbour
    make_policy("split", ratio=0.3).after_pass(model, detect(problem), adam(problem), problem, 1)
    buf = model.hidden(train_inputs(problem)).detach()
    col = model.topo.d_in
    assert torch.equal(buf[0, :, col + 3], buf[0, :, col + 5])
    assert torch.equal(buf[0, :, col + 4], buf[0, :, col + 5])
    assert (buf[0, :, col + 5] > 0).any()


@pytest.mark.parametrize("kind, fanin, wiring", TOPOLOGIES)
def test_flip_fires_on_every_case_that_was_negative(kind, fanin, wiring):
    model, problem = make_problem(kind, 3, fanin=fanin, wiring=wiring)
    with torch.no_grad():  # dead, but by its weights: the pre-activation varies over cases
        model.biases[1][0, 0] = -2.0
        model.weights[1][0, 0] = -model.weights[1][0, 0].abs()
    x = train_inputs(problem)
    buf = model.hidden(x).detach()
    blk = model.topo.blocks[1]
    z = buf[0, :, blk.lo : blk.hi] @ model.effective_weight(1)[0, 0] + model.biases[1][0, 0]
    dead = detect(problem)
    if not dead[0, model.topo.width]:
        pytest.skip("this wiring left the node alive")
    make_policy("flip").after_pass(model, dead, adam(problem), problem, epoch=1)
    out = model.hidden(x).detach()[0, :, model.topo.d_in + model.topo.width]
    assert torch.equal(out > 0, z.detach() < 0) and bool((z < 0).any())


# ------------------------------------------------------------------------------- touch only


def allowed_entries(model: DagNet, revived, neighbours, outgoing: bool) -> dict[int, torch.Tensor]:
    """Per parameter, the entries the policy may write: the revived nodes' incoming weights and
    bias, their outgoing weights if ``outgoing``, and the ``neighbours``' outgoing weights."""
    allowed = {id(p): torch.zeros_like(p, dtype=torch.bool) for p in model.parameters()}
    w, d_in = model.topo.width, model.topo.d_in
    for s, j in revived:
        k, i = divmod(j, w)
        allowed[id(model.weights[k])][s, i] = True
        allowed[id(model.biases[k])][s, i] = True
    for s, j in (revived if outgoing else []) + neighbours:
        for p, _, c in model.consumers(d_in + j):
            allowed[id(p)][s, :, c] = True
    return allowed


@pytest.mark.parametrize("kind, fanin", [("dag", None), ("fanin", 3)])
@pytest.mark.parametrize("name, params", [
    ("reinit", {}), ("add-neighbor", {}), ("split", {"ratio": 0.25}), ("flip", {}),
    ("wait", {"base": 0, "growth": 0, "inner": "split"}),
])
def test_a_revival_touches_only_what_its_policy_names(kind, fanin, name, params):
    model, problem = make_problem(kind, 4, fanin=fanin)
    revived = [(0, 1), (0, 9), (1, 12)]  # neighbours (offset +1): (0, 2), (0, 10), (1, 13)
    kill(model, revived)
    variant = adam(problem)
    problem.start_pass()
    variant.run_pass(problem)  # one Adam step: every weight has optimizer state
    dead = problem.activity_max <= 0
    assert dead.sum() == 3
    before = {id(p): p.detach().clone() for p in model.parameters()}
    state = {id(p): [t.clone() for t in variant.state_tensors(p)] for p in model.parameters()}
    make_policy(name, **params).after_pass(model, dead, variant, problem, epoch=1)
    split = "split" in (name, params.get("inner"))
    neighbours = [(0, 2), (0, 10), (1, 13)] if split else []
    allowed = allowed_entries(model, revived, neighbours, outgoing=split or name == "flip")
    for p in model.parameters():
        may = allowed[id(p)]
        assert torch.equal(p.detach()[~may], before[id(p)][~may])
        for old, new in zip(state[id(p)], variant.state_tensors(p)):
            assert torch.equal(new[~may], old[~may]) and not new[may].any()
    assert any(not torch.equal(p.detach(), before[id(p)]) for p in model.parameters())


# ------------------------------------------------------------------ determinism and patience


def test_add_neighbor_adds_the_neighbour_and_is_deterministic():
    def run(global_seed: int):
        torch.manual_seed(global_seed)
        model, problem = make_problem("fanin", 4, fanin=3, dtype=torch.float32)
        kill(model, [(0, 1), (0, 2), (1, 12)])
        w_before = [w.detach().clone() for w in model.weights]
        b_before = [b.detach().clone() for b in model.biases]
        policy, variant = make_policy("add-neighbor"), adam(problem)
        policy.after_pass(model, detect(problem), variant, problem, epoch=1)
        m = model.mask(0)  # node 1's neighbour is node 3 (node 2 is dead too)
        assert torch.equal(model.weights[0][0, 1], w_before[0][0, 1] + w_before[0][0, 3] * m[0, 1])
        assert model.biases[0][0, 1] == b_before[0][0, 1] + b_before[0][0, 3]
        assert torch.equal(model.weights[3][1, 0], w_before[3][1, 0] + w_before[3][1, 1]
                           * (1 if model.mask(3) is None else model.mask(3)[1, 0]))
        for epoch in range(2, 5):
            problem.start_pass()
            variant.run_pass(problem)
            policy.after_pass(model, problem.activity_max <= 0, variant, problem, epoch)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(0), run(99)):
        assert torch.equal(a, b)


def test_wait_revives_block_0_at_once_and_block_k_after_exactly_k_k_passes():
    model, problem = make_problem("dag", 2, depth=4, seeds=(0,))
    nodes = {0: 1, 1: 2, 3: 7}  # block -> one dead node in it
    kill(model, [(0, j) for j in nodes.values()])
    policy = make_policy("wait", base=1, growth=1, inner="flip")  # K = 0, 2, 3, 4
    variant = adam(problem)
    revived_at = {}
    for epoch in range(1, 8):
        stats = policy.after_pass(model, detect(problem), variant, problem, epoch)
        for k, j in nodes.items():
            if model.biases[k][0, j % 2] > 0 and k not in revived_at:
                revived_at[k] = epoch
        assert stats["revived"].item() == sum(e == epoch for e in revived_at.values())
    assert revived_at == {0: 1, 1: 1 + 2, 3: 1 + 4}


def test_wait_validates_its_inner_policy():
    with pytest.raises(ValueError, match="inner"):
        TrainConfig(revival="wait", revival_params={"inner": "wait"})
    with pytest.raises(ValueError, match="ratio"):
        TrainConfig(revival="wait", revival_params={"inner": "split", "inner_params": {"ratio": 2}})
    with pytest.raises(ValueError, match="offset"):
        TrainConfig(revival="split", revival_params={"offset": 0})


def test_registry_names_the_ideas():
    assert {name: cls.idea for name, cls in POLICIES.items()} == {
        "none": None, "reinit": None, "wait": "REV-WAIT", "add-neighbor": "REV-ADD",
        "split": "REV-SPLIT", "flip": "REV-FLIP",
    }
    assert all(cls.id == name for name, cls in POLICIES.items())


# ---------------------------------------------------------------------------------- history


def test_history_tells_natural_resurrections_from_revivals_and_times_lifetimes():
    model, problem = make_problem("dag", 2, depth=2, seeds=(0,))
    variant = adam(problem)
    kill(model, [(0, 0), (0, 2)])  # node 0 of block 0 and node 0 of block 1
    none = make_policy("none")
    none.after_pass(model, detect(problem), variant, problem, 1)
    with torch.no_grad():  # what a change below would do: block 1's node fires again
        model.biases[1][0, 0] = 0.3
    stats = none.after_pass(model, detect(problem), variant, problem, 2)
    assert stats["resurrected_by_block"].tolist() == [[0.0, 1.0]]
    assert stats["resurrection_rate_by_block"].tolist() == [[0.0, 1.0]]  # of 1 dead-node-pass each

    model, problem = make_problem("dag", 2, depth=2, seeds=(0,))
    kill(model, [(0, 0)])
    flip = make_policy("flip")
    assert flip.after_pass(model, detect(problem), variant, problem, 1)["revived"].item() == 1
    stats = flip.after_pass(model, detect(problem), variant, problem, 2)
    assert stats["revived_alive"].item() == 1 and stats["resurrected_by_block"].sum() == 0
    kill(model, [(0, 0)])
    stats = flip.after_pass(model, detect(problem), variant, problem, 3)
    assert stats["revived_redied"].item() == 1 and stats["revived_lifetime"].item() == 2
    assert stats["revived"].item() == 1 and stats["revived_alive"].item() == 0


def test_split_pairs_are_tracked_and_start_identical():
    model, problem = make_problem("fanin", 3, fanin=3, seeds=(0,))
    kill(model, [(0, 4)])
    split, variant = make_policy("split"), adam(problem)
    stats = split.after_pass(model, detect(problem), variant, problem, 1)
    assert math.isnan(stats["pair_similarity"].item()) and stats["revived"].item() == 1
    stats = split.after_pass(model, detect(problem), variant, problem, 2)
    assert stats["pair_similarity"].item() == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ the dead-neuron setting


def run_setting(revival: str, seeds: list[int], **overrides):
    config = TrainConfig(**{**DEAD_NEURON_SETTING, **overrides, "revival": revival})
    return train(config, seeds, load_data(config, seeds, CPU), CPU)


def mean(values) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_dead_neuron_setting_kills_neurons_and_every_policy_revives_them():
    seeds = [0, 1, 2]
    control = run_setting("none", seeds)
    dead_none = mean(control.curves["dead_fraction"][-1])
    assert dead_none > 0.10
    for name in ("reinit", "wait", "add-neighbor", "split", "flip"):
        result = run_setting(name, seeds)
        assert mean(result.curves["dead_fraction"][-1]) < dead_none, name
        assert sum(sum(epoch) for epoch in result.curves["revived"]) > 0, name
        for curve in ("revival_loss_jump", "resurrection_rate_by_block", "revived_lifetime",
                      "revived_alive", "pair_similarity"):
            assert len(result.curves[curve]) == result.epochs, (name, curve)
        if name in ("split", "flip"):  # function-preserving: float32 rounding only
            jumps = [v for epoch in result.curves["revival_loss_jump"] for v in epoch
                     if v is not None]
            assert jumps and max(abs(v) for v in jumps) < 1e-4, name


def test_reinit_draws_per_seed_so_a_seed_alone_equals_it_in_a_population():
    pop = run_setting("reinit", [0, 1], epochs=4)
    alone = run_setting("reinit", [1], epochs=4)
    assert [e[1] for e in pop.curves["revived"]] == [e[0] for e in alone.curves["revived"]]
    assert [e[1] for e in pop.curves["train_loss"]] == pytest.approx(
        [e[0] for e in alone.curves["train_loss"]], abs=1e-4)


def test_add_neighbor_rescaled_keeps_the_sum_direction_at_the_init_norm():
    model, problem = make_problem("dag", 4, dtype=torch.float64)
    with torch.no_grad():
        model.weights[0][0, 1] = model.weights[0][0, 2] * 3.0  # node 1 dies: its bias is huge
    kill(model, [(0, 1)])
    w_before = model.weights[0][0].detach().clone()
    b_before = model.biases[0][0].detach().clone()
    policy, variant = make_policy("add-neighbor", rescale=True), adam(problem)
    stats = policy.after_pass(model, detect(problem), variant, problem, epoch=1)
    assert stats["revived"].sum() == 1
    row, bias = model.weights[0][0, 1], model.biases[0][0, 1]
    summed = w_before[1] + w_before[2]
    assert row.norm().item() == pytest.approx(1.0)  # a full row: sqrt(cols / cols)
    factor = row.norm() / summed.norm()
    assert torch.allclose(row, summed * factor)
    assert bias.item() == pytest.approx(((b_before[1] + b_before[2]) * factor).item())
