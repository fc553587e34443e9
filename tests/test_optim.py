"""The Lipschitz optimizer variants on the real network and trainer (digits, CPU)."""

import dataclasses
import json

import pytest
import torch

from dagstudy.cli import main
from dagstudy.config import TrainConfig
from dagstudy.losses import cross_entropy
from dagstudy.model.dagnet import DagNet
from dagstudy.model.topology import build_topology
from dagstudy.optim import VARIANTS
from dagstudy.problem import Problem
from dagstudy.trainer import build_model, load_data, train

CPU = torch.device("cpu")
LIPSCHITZ_VARIANTS = ["fullbatch-ista", "fista", "lipschitz-minibatch"]
DIGITS = dict(dataset="digits", topology="dag", depth=4, width=32)
SMALL = dict(dataset="digits", topology="dag", depth=3, width=16)


def run(config: TrainConfig, seeds: list[int], on_epoch=None):
    return train(config, seeds, load_data(config, seeds, CPU), CPU, on_epoch)


def test_chunked_full_gradient_equals_one_big_batch_in_float64():
    config = TrainConfig(dataset="digits", topology="dag", depth=3, width=8)
    data = load_data(config, [0, 1], CPU)
    data = dataclasses.replace(data, x=data.x.double(), mean=data.mean.double(),
                               std=data.std.double())
    topo = build_topology("dag", data.d_in, 8, 3, [0, 1])
    model = DagNet(topo, data.n_classes, [0, 1], dtype=torch.float64)
    chunked = Problem(model, data, cross_entropy, 64, chunk_size=97)  # 97 does not divide n
    chunked.full_gradient()
    grads = [p.grad.clone() for p in model.parameters()]
    Problem(model, data, cross_entropy, 64).backward(data.train_idx)  # one batch of everything
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=1e-6)
        assert g.abs().max() > 1e-4


def test_lipschitz_minibatch_rate_is_c_b_over_n_L_and_momentum_carries_across_passes():
    config = TrainConfig(dataset="digits", topology="dag", depth=2, width=8)
    data = load_data(config, [0, 1], CPU)
    states = {}
    for reset in (False, True):
        model = build_model(config, data.d_in, data.n_classes, [0, 1])
        problem = Problem(model, data, cross_entropy, 50)
        hp = VARIANTS["lipschitz-minibatch"].Params(c=0.5, reset_momentum=reset)
        variant = VARIANTS["lipschitz-minibatch"](problem.params, 1.0, hp)
        stats = variant.run_pass(problem)
        L = stats["lipschitz"]
        torch.testing.assert_close(stats["rate"], 0.5 * 50 / (problem.n_train * L))
        after_one = [p.detach().clone() for p in problem.params]
        variant.run_pass(problem)
        states[reset] = after_one, [p.detach().clone() for p in problem.params]
    for a, b in zip(states[False][0], states[True][0]):
        assert torch.equal(a, b)  # pass 1 starts from zero momentum either way
    assert any(not torch.equal(a, b) for a, b in zip(states[False][1], states[True][1]))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", LIPSCHITZ_VARIANTS)
def test_each_variant_reaches_90_percent_on_digits_within_60_passes(optimizer):
    class Reached(Exception):
        pass

    def check(row):
        acc = row["test_accuracy"]
        if sum(acc) / len(acc) >= 0.90:
            raise Reached(row["epoch"])

    with pytest.raises(Reached) as reached:
        run(TrainConfig(**DIGITS, optimizer=optimizer, epochs=60), [0, 1], check)
    assert reached.value.args[0] <= 60


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", LIPSCHITZ_VARIANTS)
def test_each_variant_trains_with_squared_error(optimizer):
    result = run(TrainConfig(**DIGITS, optimizer=optimizer, loss="mse", epochs=4), [0])
    losses = [e[0] for e in result.curves["train_loss"]]
    acc = [e[0] for e in result.curves["test_accuracy"]]
    assert result.status == ["ok"] and losses[-1] < 0.6 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:])) and acc[-1] > acc[0] + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", LIPSCHITZ_VARIANTS)
def test_seed_in_population_equals_seed_alone(optimizer):
    config = TrainConfig(**SMALL, optimizer=optimizer, epochs=3, jitter_spread=0.2,
                         grad_floor=1e-3, grad_floor_hysteresis=True,
                         optimizer_params={"restart": "gradient-neuron"}
                         if optimizer == "fista" else {})
    pop, alone = run(config, [0, 1]), run(config, [1])
    for name in ("train_loss", "lipschitz", "backtracks", "last_layer_grad_ratio"):
        got = [epoch[1] for epoch in pop.curves[name]]
        want = [epoch[0] for epoch in alone.curves[name]]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), name


def _corrupt_seed_0(monkeypatch, how: str) -> None:
    """Make the network of seed 0 (wherever it sits in the population) broken."""
    import dagstudy.trainer

    def build(config, d_in, n_classes, seeds, members=None):
        model = build_model(config, d_in, n_classes, seeds, members)
        if 0 in seeds:
            with torch.no_grad():
                i = seeds.index(0)
                if how == "nan":
                    model.weights[0][i, 0, 0] = float("nan")
                else:  # huge readout weights: curvature far above the cap
                    model.out_weight[i] *= 100.0
        return model

    monkeypatch.setattr(dagstudy.trainer, "build_model", build)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer, how, reason",
    [("fullbatch-ista", "scale", "Lipschitz estimate exploded (L > cap 50) at epoch 1"),
     ("fista", "nan", "non-finite loss or gradient"),
     ("lipschitz-minibatch", "scale", "Lipschitz estimate exploded")],
)
def test_nan_or_exploding_lipschitz_ends_the_seed_and_others_continue(
    monkeypatch, optimizer, how, reason
):
    _corrupt_seed_0(monkeypatch, how)
    config = TrainConfig(**SMALL, optimizer=optimizer, epochs=3,
                         optimizer_params={"lipschitz_cap": 50.0})
    result = run(config, [0, 1])  # seed 1 alone trains the same (population test above)
    assert result.status == ["diverged", "ok"] and reason in result.reasons[0]
    assert result.epochs == 3 and result.reasons[1] is None
    losses = [e[1] for e in result.curves["train_loss"]]
    assert losses[-1] < 0.8 * losses[0] and result.final["test_accuracy"][1] > 0.4


def test_cli_takes_the_new_flags(capsys):
    code = main(["train", "--optimizer", "fista", "--optimizer-params",
                 '{"restart": "gradient-neuron", "depth_scale": true, "l1": 1e-5}',
                 "--jitter-spread", "0.1", "--grad-floor", "1e-3", "--grad-floor-hysteresis",
                 "--stop-ratio", "0.5", "--stop-patience", "1", "--stop-on-ratio",
                 "--depth", "2", "--width", "8", "--epochs", "3", "--seeds", "1",
                 "--json", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["jitter_spread"] == 0.1 and out["config"]["grad_floor_hysteresis"]
    for curve in ("lipschitz", "momentum", "restarts", "stuck_fraction",
                  "last_layer_grad_ratio", "overfit_flag"):
        assert len(out["curves"][curve]) == out["epochs"]
    assert out["stop_epoch"] == [out["stop_rule_epoch"][0] or out["epochs"]]
    assert "overfit_epoch" in out


@pytest.mark.parametrize(
    "argv, flag",
    [(["--optimizer", "fista", "--optimizer-params", '{"restart": "sometimes"}'],
      "--optimizer-params"),
     (["--optimizer", "fullbatch-ista", "--optimizer-params", '{"momentum": 0.9}'],
      "--optimizer-params"),
     (["--jitter-spread", "1.0"], "--jitter-spread"),
     (["--grad-floor", "-1"], "--grad-floor")],
)
def test_bad_optimizer_input_is_one_line_naming_the_option(argv, flag, capsys):
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


@pytest.mark.parametrize(("optimizer", "members"), [
    ("sgd", [(0.1, {"momentum": 0.9, "weight_decay": 1e-3}), (0.03, {}),
             (0.05, {"momentum": 0.5})]),
    ("sgd", [(0.1, {"momentum": 0.9, "nesterov": True}), (0.02, {"momentum": 0.3,
                                                                 "nesterov": True})]),
    ("adam", [(1e-3, {}), (3e-3, {"beta1": 0.8, "beta2": 0.99, "weight_decay": 1e-3}),
              (1e-2, {"eps": 1e-6})]),
])
def test_per_seed_minibatch_variants_follow_torch_optim_for_each_seed(optimizer, members):
    """Each seed of one population with its own hyperparameters steps exactly as the torch
    optimizer with that seed's scalars (float64: the rules are equal, only rounding differs)."""
    torch.manual_seed(0)
    cls = VARIANTS[optimizer]
    weights = torch.randn(len(members), 5, 4, dtype=torch.float64)
    ours = torch.nn.Parameter(weights.clone())
    shared = cls.Params(**members[0][1])  # what members may not vary (nesterov) is shared
    variant = cls([ours], 0.0, shared, [(lr, cls.Params(**hp)) for lr, hp in members])
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    names = {"beta1": None, "beta2": None}
    opts = []
    for p, (lr, hp) in zip(theirs, members):
        kwargs = {k: v for k, v in hp.items() if k not in names}
        if optimizer == "adam":
            kwargs["betas"] = (hp.get("beta1", 0.9), hp.get("beta2", 0.999))
            opts.append(torch.optim.Adam([p], lr=lr, foreach=False, **kwargs))
        else:
            opts.append(torch.optim.SGD([p], lr=lr, foreach=False, **kwargs))
    for _ in range(6):
        grads = torch.randn_like(weights)
        ours.grad = grads.clone()
        variant.step()
        for p, g, opt in zip(theirs, grads, opts):
            p.grad = g.clone()
            opt.step()
    torch.testing.assert_close(ours.detach(), torch.stack([p.detach() for p in theirs]),
                               rtol=1e-12, atol=1e-12)
