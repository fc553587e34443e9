"""The DAG network: equal to a plain MLP, gradients match finite differences, seeds isolated."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dagstudy.model.dagnet import DagNet
from dagstudy.model.topology import build_topology

TOPOLOGIES = [
    ("layered", None, "random"),
    ("residual", None, "random"),
    ("residual-norm", None, "random"),
    ("dag", None, "random"),
    ("fanin", 3, "random"),
    ("fanin", 3, "nearest"),
]


def make_net(kind, width, depth=3, d_in=4, fanin=None, wiring="random", seeds=(0, 1)):
    topo = build_topology(kind, d_in, width, depth, list(seeds), fanin=fanin, wiring=wiring)
    net = DagNet(topo, 3, list(seeds), dtype=torch.float64)
    with torch.no_grad():  # random biases keep every ReLU away from its kink at 0
        for b in net.biases:
            b.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("kind, fanin, wiring", TOPOLOGIES)
@pytest.mark.parametrize("width", [1, 3])
def test_gradients_match_finite_differences(kind, fanin, wiring, width):
    net = make_net(kind, width, fanin=fanin, wiring=wiring)
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)

    def forward(x, *ps):
        return functional_call(net, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *params))


def test_masked_weights_get_zero_gradient():
    net = make_net("fanin", 3, depth=4, fanin=2)
    net(torch.randn(2, 6, 4, dtype=torch.float64)).sum().backward()
    for k in range(4):
        m = net.mask(k)
        if m is not None:
            assert (net.weights[k].grad[m == 0] == 0).all()


def test_layered_equals_torch_sequential():
    """Same math as nn.Sequential; float64 so that 1e-6 tests the math, not float32 rounding."""
    d_in, width, depth, classes = 6, 5, 3, 4
    topo = build_topology("layered", d_in, width, depth, [7])
    net = DagNet(topo, classes, [7], bias_init=0.1, dtype=torch.float64)
    layers = []
    for k in range(depth):
        lin = nn.Linear(d_in if k == 0 else width, width, dtype=torch.float64)
        lin.weight.data.copy_(net.weights[k][0])
        lin.bias.data.copy_(net.biases[k][0])
        layers += [lin, nn.ReLU()]
    out = nn.Linear(width, classes, dtype=torch.float64)
    out.weight.data.copy_(net.out_weight[0])
    net.out_bias.data[0] = out.bias.data
    mlp = nn.Sequential(*layers, out)
    x = torch.randn(32, d_in, dtype=torch.float64)
    torch.testing.assert_close(net(x.unsqueeze(0))[0], mlp(x), atol=1e-6, rtol=0)


def test_residual_adds_identity_skips():
    topo = build_topology("residual", 4, 3, 2, [0])
    net = DagNet(topo, 2, [0])
    x = torch.randn(1, 8, 4)
    buf = net.hidden(x)
    h0 = torch.relu(x @ net.weights[0][0].T + net.biases[0][0])
    h1 = torch.relu(h0 @ net.weights[1][0].T + net.biases[1][0]) + h0
    torch.testing.assert_close(buf[..., 4:7], h0)
    torch.testing.assert_close(buf[..., 7:10], h1)


def test_residual_norm_reads_its_predecessor_through_a_layer_norm():
    topo = build_topology("residual-norm", 4, 3, 2, [0])
    net = DagNet(topo, 2, [0], dtype=torch.float64)
    x = torch.randn(1, 8, 4, dtype=torch.float64)
    buf = net.hidden(x)
    norm = nn.LayerNorm(3, elementwise_affine=False, dtype=torch.float64)
    h0 = torch.relu(x @ net.weights[0][0].T + net.biases[0][0])
    h1 = torch.relu(norm(h0) @ net.weights[1][0].T + net.biases[1][0]) + h0
    torch.testing.assert_close(buf[..., 4:7], h0)
    torch.testing.assert_close(buf[..., 7:10], h1)


def test_seeds_do_not_leak():
    """Changing seed 1's weights and inputs leaves seed 0's outputs and gradients unchanged."""
    net = make_net("dag", 3)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    net(x).pow(2).sum().backward()
    out0 = net(x)[0].detach().clone()
    grads0 = [p.grad[0].clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p[1].normal_()
            p.grad = None
    x[1].normal_()
    y = net(x)
    y.pow(2).sum().backward()
    torch.testing.assert_close(y[0].detach(), out0, rtol=0, atol=0)
    for p, g in zip(net.parameters(), grads0):
        torch.testing.assert_close(p.grad[0], g, rtol=0, atol=0)


def test_init_depends_only_on_own_seed_and_respects_fanin():
    alone = DagNet(build_topology("dag", 10, 8, 3, [5]), 3, [5])
    pop = DagNet(build_topology("dag", 10, 8, 3, [1, 5]), 3, [1, 5])
    for a, b in zip(alone.parameters(), pop.parameters()):
        assert torch.equal(a[0], b[1])
    big = DagNet(build_topology("dag", 200, 200, 4, [0]), 3, [0])
    for k in range(4):  # He: Var[w] = 2 / fan_in
        fan_in = 200 * (k + 1)
        assert abs(big.weights[k].var().item() * fan_in / 2 - 1) < 0.1


def test_param_count_and_flops():
    net = DagNet(build_topology("dag", 64, 32, 4, [0]), 10, [0])
    connections = 32 * (64 + 96 + 128 + 160)
    readout = 10 * 128
    assert net.param_count() == connections + 4 * 32 + readout + 10
    assert net.flops_per_example() == 2 * (connections + readout)
    sparse = DagNet(build_topology("fanin", 64, 32, 4, [0], fanin=8), 10, [0])
    assert sparse.flops_per_example() == 2 * (4 * 32 * 8 + readout)
    assert sum(int(p[0].count_nonzero()) for p in sparse.weights) <= 4 * 32 * 8


@pytest.mark.parametrize("kind, fanin, wiring", TOPOLOGIES)
def test_weight_gradients_do_not_depend_on_input_requiring_grad(kind, fanin, wiring):
    """The backward skips the input columns when x needs no gradient; nothing else may change."""
    net = make_net(kind, 3, fanin=fanin, wiring=wiring)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    grads = []
    for needs in (True, False):
        net.zero_grad()
        net(x.clone().requires_grad_(needs)).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
