"""Ideas that work with every optimizer: OPT-JITTER, GRAD-FLOOR, OPT-STOP (digits, CPU)."""

import pytest
import torch

from dagstudy import diagnostics
from dagstudy.config import TrainConfig
from dagstudy.losses import cross_entropy
from dagstudy.model.dagnet import DagNet
from dagstudy.model.grad_floor import GradFloor
from dagstudy.model.topology import build_topology
from dagstudy.optim import VARIANTS
from dagstudy.optim.stopping import StopRule
from dagstudy.problem import Problem
from dagstudy.trainer import build_model, load_data, train

CPU = torch.device("cpu")
SMALL = TrainConfig(dataset="digits", topology="dag", depth=2, width=8)
LR = {"sgd": 0.05, "adam": 1e-3}


@pytest.fixture(scope="module")
def data():
    return load_data(SMALL, [0, 1], CPU)


def make(data, optimizer, jitter_spread=0.0, grad_floor=None):
    model = build_model(SMALL, data.d_in, data.n_classes, [0, 1])
    model.grad_floor = grad_floor
    problem = Problem(model, data, cross_entropy, 64, jitter_spread=jitter_spread)
    cls = VARIANTS[optimizer]
    return model, problem, cls(problem.params, LR.get(optimizer, 1.0), cls.Params())


# --------------------------------------------------------------------------- OPT-JITTER


@pytest.mark.parametrize("optimizer", sorted(VARIANTS))
def test_jitter_spread_zero_is_bit_identical_to_no_jitter(data, optimizer):
    runs = []
    for kwargs in ({}, {"jitter_spread": 0.0}, {"jitter_spread": 0.3}):
        _, problem, variant = make(data, optimizer, **kwargs)
        for _ in range(2):
            variant.run_pass(problem)
        runs.append([p.detach().clone() for p in problem.params])
    plain, zero, jittered = runs
    assert all(torch.equal(a, b) for a, b in zip(plain, zero))
    assert not all(torch.equal(a, b) for a, b in zip(plain, jittered))


def test_jitter_scales_each_neurons_step_by_its_multiplier(data):
    steps = []
    for spread in (0.0, 0.4):
        model, problem, variant = make(data, "fullbatch-ista", jitter_spread=spread)
        before = [p.detach().clone() for p in problem.params]
        variant.run_pass(problem)
        steps.append([p.detach() - b for p, b in zip(problem.params, before)])
    for p, plain, jittered in zip(problem.params, *steps):
        m = problem.jitter.multipliers[id(p)]  # [S, neurons], one value per row along dim 1
        assert m.min() >= 0.6 - 1e-6 and m.max() <= 1.4 + 1e-6
        assert len(m[0].unique()) == m.shape[1]  # evenly spaced: all different
        m = m.view(*m.shape, *[1] * (p.dim() - 2))
        torch.testing.assert_close(jittered, m * plain, rtol=1e-4, atol=1e-7)


def _cosine(model: DagNet, block: int, a: int, b: int) -> torch.Tensor:
    rows = torch.cat([model.weights[block], model.biases[block].unsqueeze(-1)], -1).detach()
    return torch.nn.functional.cosine_similarity(rows[:, a], rows[:, b], dim=-1)


def test_jitter_pushes_identical_neurons_apart(data):
    cos = {}
    for spread in (0.0, 0.5):
        model, problem, variant = make(data, "sgd", jitter_spread=spread)
        model.plant_duplicates(1 / 8)  # node 7 of each block: a copy of node 0
        assert torch.all(_cosine(model, 0, 0, 7) > 1 - 1e-6)  # float32 rounding
        for _ in range(4):
            variant.run_pass(problem)
        cos[spread] = _cosine(model, 0, 0, 7)
    assert torch.all(cos[0.0] > 1 - 1e-6), cos[0.0]  # without jitter they stay identical
    assert torch.all(cos[0.5] < 1 - 1e-3), cos[0.5]


def test_planted_duplicates_stay_duplicates_under_training_unless_jitter_separates_them():
    pairs = {}
    for spread in (0.0, 0.5):
        config = SMALL.model_copy(update={"epochs": 3, "init_duplicates": 0.25, "lr": 0.01,
                                          "jitter_spread": spread})
        pairs[spread] = train(config, [0, 1], load_data(config, [0, 1], CPU), CPU).curves[
            "duplicate_pairs"]
    assert pairs[0.0] == [[4.0, 4.0]] * 3  # 2 pairs in each of 2 blocks, all 3 epochs
    assert all(n < 4 for n in pairs[0.5][-1]), pairs[0.5]


def test_plant_duplicates_copies_incoming_and_outgoing_weights_so_outputs_match():
    model = build_model(SMALL, 64, 10, [0, 1])
    model.plant_duplicates(0.5)
    buf = model.hidden(torch.randn(2, 16, 64))
    for k in range(SMALL.depth):
        start = model.topo.block_start(k)
        torch.testing.assert_close(buf[..., start : start + 4], buf[..., start + 4 : start + 8])
        for param, _, col in model.consumers(start):
            torch.testing.assert_close(param[..., col], param[..., col + 4])
    with pytest.raises(ValueError, match="init_duplicates: needs a dense topology"):
        TrainConfig(topology="fanin", fanin=4, init_duplicates=0.25)


def test_init_scale_multiplies_every_initial_weight():
    plain = build_model(SMALL, 64, 10, [3])
    small = build_model(SMALL.model_copy(update={"init_scale": 0.01}), 64, 10, [3])
    for a, b in zip(plain.parameters(), small.parameters()):
        if a.dim() == 3:  # weights; biases keep bias_init
            torch.testing.assert_close(b, 0.01 * a)


# --------------------------------------------------------------------------- GRAD-FLOOR


def _tiny(floor: GradFloor | None):
    """3 inputs (input 2 always 0), two blocks of 2 nodes; node 1 of block 0 is dead (-50 bias);
    the weights input 2 -> node (0, 0) and dead node -> node (1, 0) are 0: both pairs stuck."""
    topo = build_topology("dag", 3, 2, 2, [0])
    model = DagNet(topo, 2, [0], grad_floor=floor)
    with torch.no_grad():
        model.biases[0][0] = torch.tensor([0.5, -50.0])
        model.biases[1][0] = torch.tensor([0.5, 0.5])
        model.weights[0][0, 0, 2] = 0.0
        model.weights[1][0, 0, 4] = 0.0  # block 1 reads 3 inputs, then block 0's 2 nodes
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 3, generator=gen)
    x[..., 2] = 0.0
    y = torch.randint(0, 2, (1, 32), generator=gen)
    return model, x, y


def _stuck_grads(model, x, y):
    for p in model.parameters():
        p.grad = None
    cross_entropy(model(x), y).sum().backward()
    return model.weights[0].grad[0, 0, 2].item(), model.weights[1].grad[0, 0, 4].item()


def test_grad_floor_unsticks_a_zero_weight_on_a_zero_input():
    for floor in (None, GradFloor(0.1)):
        model, x, y = _tiny(floor)
        for _ in range(5):  # plain gradient descent
            _stuck_grads(model, x, y)
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
        w_in, w_dead = model.weights[0][0, 0, 2].item(), model.weights[1][0, 0, 4].item()
        if floor is None:
            assert w_in == 0.0 and w_dead == 0.0  # stuck for good
        else:
            assert abs(w_in) > 1e-3 and abs(w_dead) > 1e-3


def test_grad_floor_hysteresis_blocks_a_floored_step_that_reverses_the_last_one():
    floor = GradFloor(0.1, hysteresis=True)
    model, x, y = _tiny(floor)
    g_in, g_dead = _stuck_grads(model, x, y)  # no last update yet: floored
    assert g_in != 0.0 and g_dead != 0.0
    for key, g in ((0, g_in), (1, g_dead)):
        last = torch.zeros_like(model.weights[key])
        idx = (0, 0, 2) if key == 0 else (0, 0, 4)
        last[idx] = 1.0 if g > 0 else -1.0  # the last step went the way -g now reverses
        floor.last_sign[key] = last
    assert _stuck_grads(model, x, y) == (0.0, 0.0)  # plain gradient: blocked
    for key in (0, 1):
        floor.last_sign[key] = -floor.last_sign[key]  # same direction as before: allowed
    assert _stuck_grads(model, x, y) == (g_in, g_dead)


def test_problem_update_records_each_weights_last_direction_for_hysteresis(data):
    floor = GradFloor(1e-3, hysteresis=True)
    model, problem, variant = make(data, "sgd", grad_floor=floor)
    idx = next(problem.batches())
    problem.backward(idx)
    before = [w.detach().clone() for w in [*model.weights, model.out_weight]]
    problem.update(variant.step)
    for key, (w, b) in enumerate(zip([*model.weights, model.out_weight], before)):
        assert torch.equal(floor.last_sign[key], (w.detach() - b).sign())


def test_a_negligible_floor_gives_the_plain_gradient_and_masks_stay_respected(data):
    config = TrainConfig(dataset="digits", topology="fanin", fanin=10, depth=3, width=8)
    grads = []
    for floor in (None, GradFloor(1e-30)):
        model = build_model(config, data.d_in, data.n_classes, [0, 1])
        model.grad_floor = floor
        Problem(model, data, cross_entropy, 64).backward(data.train_idx[:, :200])
        grads.append([p.grad for p in model.parameters()])
    for plain, floored in zip(*grads):
        torch.testing.assert_close(floored, plain, rtol=1e-5, atol=1e-7)
    mask = model.mask(1)
    lifted = GradFloor(0.5).input_weight(torch.zeros_like(mask), mask)
    assert torch.equal(lifted, 0.5 * mask)  # absent connections stay absent


def test_stuck_fraction_counts_small_weights_that_exist():
    topo = build_topology("fanin", 10, 4, 2, [0, 1], fanin=3)
    model = DagNet(topo, 3, [0, 1])
    assert torch.all(diagnostics.stuck_fraction(model, 1e-12) == 0)  # masked zeros excluded
    assert torch.all(diagnostics.stuck_fraction(model, 1e6) == 1)
    with torch.no_grad():
        model.out_weight[0] = 0.0
    n_hidden = 2 * 4 * 3
    expected = model.out_weight[0].numel() / (n_hidden + model.out_weight[0].numel())
    assert diagnostics.stuck_fraction(model, 1e-12).tolist() == pytest.approx([expected, 0.0])


# --------------------------------------------------------------------------- OPT-STOP


def test_stop_rule_fires_after_patience_passes_below_tau_and_flags_overfitting():
    rule = StopRule(2, tau=0.1, patience=2, gap=0.5)
    norms = [[10, 10], [0.5, 5], [2, 0.5], [0.5, 0.5], [0.5, 0.5]]
    train_loss, val_loss = torch.tensor([0.1, 0.1]), torch.tensor([1.0, 0.15])
    flags = []
    for epoch, norm in enumerate(norms, start=1):
        out = rule.after_pass(epoch, torch.tensor(norm, dtype=torch.float64), train_loss, val_loss)
        flags.append(out["overfit_flag"].tolist())
    assert out["last_layer_grad_ratio"].tolist() == [0.05, 0.1 / 2]
    assert rule.rule_epoch == [5, 4]  # seed 0: below at 2, not 3, then 4 and 5; seed 1: 3, 4
    assert rule.overfit_epoch == [2, None]  # seed 1's gap (0.15 - 0.1) / 0.15 is below 0.5
    assert flags[1] == [1.0, 0.0] and flags[2] == [0.0, 0.0]


@pytest.mark.slow
def test_stop_on_ratio_ends_each_seed_at_the_first_pass_the_rule_holds():
    config = TrainConfig(dataset="digits", topology="dag", depth=4, width=32,
                         optimizer="fista", epochs=40, stop_on_ratio=True, stop_patience=2)
    seeds = [0, 1]
    result = train(config, seeds, load_data(config, seeds, CPU), CPU)
    ratio = result.curves["last_layer_grad_ratio"]
    for i in range(2):
        below = [r[i] < 0.05 for r in ratio]
        first = next(e for e in range(2, len(below) + 1) if below[e - 2] and below[e - 1])
        assert result.stop_rule_epoch[i] == result.stop_epoch[i] == first
        for m in ("train_loss", "test_accuracy"):
            assert result.final[m][i] == result.curves[m][first - 1][i]
        losses = [e[i] for e in result.curves["train_loss"]]
        assert losses[first - 1] < 0.05 * losses[0]  # near convergence
    assert result.epochs == max(result.stop_epoch) < 40  # ended when every seed had stopped
    assert min(result.stop_epoch) < result.epochs  # seeds stop on their own epochs
    assert ratio[-1][0] < 0.05 and ratio[-1][1] < 0.05
    assert len(result.curves["overfit_flag"]) == result.epochs
    assert all(e is None or 1 <= e <= result.epochs for e in result.overfit_epoch)
    assert len(result.best_val_epoch) == 2
