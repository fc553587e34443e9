"""The Lipschitz variants' step logic on convex problems with known answers (float64).

``LeastSquares`` stands in for ``Problem``: S independent seeds, each minimising the mean
squared error ``f(W, b) = (1/(2n)) ||X W^T + b - Y||^2`` (``r`` outputs = ``r`` neuron rows of W,
so per-row logic can be checked), whose gradient's Lipschitz constant is the top eigenvalue of
``[X 1]^T [X 1] / n`` (``X^T X / n`` without the intercept).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from dagstudy.optim.fista import FISTA, next_t, opposing_rows
from dagstudy.optim.fullbatch_ista import FullBatchISTA

DT = torch.float64


class LeastSquares:
    """Problem-like: params, alive, fail, full_gradient, full_loss, update, model.topo.depth."""

    def __init__(self, X, Y, W0, *, intercept=False, depth=1):
        self.X, self.Y = X, Y  # [S, n, d], [S, n, r]
        self.weight = torch.nn.Parameter(W0.clone())  # [S, r, d]
        self.params = [self.weight]
        if intercept:
            self.params.append(torch.nn.Parameter(torch.zeros(X.shape[0], Y.shape[2], dtype=DT)))
        self.alive = torch.ones(X.shape[0], dtype=torch.bool)
        self.failures = {}
        self.model = SimpleNamespace(topo=SimpleNamespace(depth=depth))

    def fail(self, i, reason):
        self.failures.setdefault(i, reason)

    def _loss(self):
        pred = self.X @ self.weight.transpose(1, 2)
        if len(self.params) > 1:
            pred = pred + self.params[1].unsqueeze(1)
        return 0.5 * (pred - self.Y).pow(2).sum(-1).mean(1)

    def full_loss(self):
        with torch.no_grad():
            return self._loss()

    def full_gradient(self):
        for p in self.params:
            p.grad = None
        f = self._loss()
        f.sum().backward()
        return f.detach()

    def update(self, step):
        return step()


def make_data(S=3, n=80, d=6, r=1, scales=(1.0,), seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(S, n, d, generator=gen, dtype=DT)
    X = X * torch.tensor(list(scales) + [1.0] * (d - len(scales)), dtype=DT)
    W = torch.randn(S, r, d, generator=gen, dtype=DT)
    Y = X @ W.transpose(1, 2) + 0.1 * torch.randn(S, n, r, generator=gen, dtype=DT)
    return X, Y


def hessian(X, intercept=False):
    if intercept:
        X = torch.cat([X, torch.ones(*X.shape[:2], 1, dtype=DT)], dim=-1)
    return X.transpose(1, 2) @ X / X.shape[1]


def lstsq(X, Y):
    """Minimiser ``W* [S, r, d]`` and minimum ``f* [S]``."""
    W = torch.linalg.solve(X.transpose(1, 2) @ X, X.transpose(1, 2) @ Y).transpose(1, 2)
    f = 0.5 * (X @ W.transpose(1, 2) - Y).pow(2).sum(-1).mean(1)
    return W, f


def run(variant_cls, problem, passes, **hp):
    variant = variant_cls(problem.params, 1.0, variant_cls.Params(**hp))
    stats = [variant.run_pass(problem) for _ in range(passes)]
    return variant, stats


def test_backtracking_estimate_lies_within_eta_of_the_true_lipschitz_constant():
    X, Y = make_data(S=3, scales=(3.0, 2.0))
    H = hessian(X)
    evals, evecs = torch.linalg.eigh(H)
    L_true = evals[:, -1]
    W_star, _ = lstsq(X, Y)
    # Start where the gradient is the top eigenvector: the curvature along it is L_true.
    start = W_star + evecs[:, :, -1].unsqueeze(1)
    eta = 1.5
    problem = LeastSquares(X, Y, start)
    _, stats = run(FullBatchISTA, problem, 1, lipschitz_init=1e-3, eta=eta)
    L = stats[0]["lipschitz"]
    assert torch.all(L >= L_true) and torch.all(L <= eta * L_true), (L, L_true)
    assert torch.all(stats[0]["backtracks"] >= 2)
    # From anywhere, every accepted L stays below eta * L_true (it starts below).
    problem = LeastSquares(X, Y, torch.zeros_like(start))
    _, stats = run(FullBatchISTA, problem, 30, lipschitz_init=1e-3, eta=eta)
    assert all(torch.all(s["lipschitz"] <= eta * L_true) for s in stats)


@pytest.mark.parametrize("l1", [0.0, 0.05])
def test_ista_decreases_the_objective_monotonically(l1):
    X, Y = make_data(S=2, scales=(5.0, 0.2))
    problem = LeastSquares(X, Y, torch.zeros(2, 1, 6, dtype=DT), intercept=True)
    variant = FullBatchISTA(problem.params, 1.0, FullBatchISTA.Params(l1=l1))
    objective = []
    for _ in range(60):
        variant.run_pass(problem)
        w = problem.weight.detach()
        objective.append(problem.full_loss() + l1 * w.abs().flatten(1).sum(1))
    F = torch.stack(objective)
    assert torch.all(F[1:] <= F[:-1] + 1e-12), (F[1:] - F[:-1]).max()
    assert torch.all(F[-1] < F[0])


def test_fista_beats_ista_and_meets_its_rate_bound():
    X, Y = make_data(S=1, n=100, d=10, scales=(10.0, 4.0, 0.3, 0.1))
    L_true = float(torch.linalg.eigvalsh(hessian(X))[0, -1])
    W_star, f_star = lstsq(X, Y)
    W0 = torch.zeros(1, 1, 10, dtype=DT)
    R2 = float((W0 - W_star).pow(2).sum())
    fixed = {"lipschitz_init": L_true, "shrink": 1.0}  # constant step 1/L_true
    K = 60
    ista_problem = LeastSquares(X, Y, W0)
    run(FullBatchISTA, ista_problem, K, **fixed)
    _, fista = run(FISTA, LeastSquares(X, Y, W0), K, restart="none", **fixed)
    for k in range(1, K + 1):
        assert float(fista[k - 1]["lipschitz"]) == L_true
        gap_fista = float(fista[k - 1]["objective"] - f_star)
        assert gap_fista <= 2 * L_true * R2 / (k + 1) ** 2 + 1e-12, k
    gap_ista = float(ista_problem.full_loss() - f_star)
    assert float(fista[-1]["objective"] - f_star) < gap_ista <= L_true * R2 / (2 * K)


def test_l1_prox_gives_exact_zeros_and_matches_sklearn_lasso():
    gen = np.random.default_rng(0)
    n, d, alpha = 100, 8, 0.1
    X = gen.normal(size=(n, d))
    w_true = np.array([2.0, -1.5, 0.0, 0.0, 0.05, 0.0, 1.0, -0.02])
    y = X @ w_true + 3.0 + 0.1 * gen.normal(size=n)
    # sklearn's Lasso minimises (1/(2n)) ||y - Xw - b||^2 + alpha ||w||_1: our mean squared
    # error with lambda = alpha, the intercept b unpenalised (a bias).
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    Xt = torch.tensor(X, dtype=DT).unsqueeze(0)
    Yt = torch.tensor(y, dtype=DT).view(1, n, 1)
    L_true = float(torch.linalg.eigvalsh(hessian(Xt, intercept=True))[0, -1])
    problem = LeastSquares(Xt, Yt, torch.zeros(1, 1, d, dtype=DT), intercept=True)
    run(FullBatchISTA, problem, 1500, l1=alpha, lipschitz_init=L_true, shrink=1.0)
    w = problem.weight.detach().view(d).numpy()
    assert np.any(ref.coef_ == 0) and np.array_equal(w == 0, ref.coef_ == 0)
    np.testing.assert_allclose(w, ref.coef_, atol=1e-4)
    assert float(problem.params[1].detach()) == pytest.approx(ref.intercept_, abs=1e-4)


def test_function_restart_resets_t_exactly_when_the_objective_rises():
    X, Y = make_data(S=2, n=60, d=4, scales=(20.0, 0.05), seed=3)
    L_true = torch.linalg.eigvalsh(hessian(X))[:, -1].max().item()
    problem = LeastSquares(X, Y, torch.zeros(2, 1, 4, dtype=DT))
    variant = FISTA(problem.params, 1.0, FISTA.Params(
        restart="function", lipschitz_init=L_true, shrink=1.0))
    previous = torch.full((2,), float("inf"), dtype=DT)
    restarts = 0
    for _ in range(150):
        s = variant.run_pass(problem)
        rose = s["objective"] > previous
        assert torch.equal(s["restarts"] == 1.0, rose) and torch.all(s["restarts"][~rose] == 0)
        assert torch.all(s["momentum"][rose] == 0)  # t reset to 1: no extrapolation
        golden = torch.tensor(next_t(torch.tensor(1.0, dtype=DT)).item(), dtype=DT)
        assert torch.all(variant.t[0][rose] == golden)
        restarts += int(rose.sum())
        previous = s["objective"]
    assert restarts >= 2  # the ill-conditioned problem does oscillate without restarts


def test_gradient_neuron_restart_resets_only_rows_whose_gradient_opposes_momentum():
    grad = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]])
    momentum = torch.tensor([[[1.0, 5.0], [-1.0, -1.0], [1.0, 1.0]]])
    assert opposing_rows(grad, momentum).tolist() == [[True, False, True]]

    X, _ = make_data(S=2, n=60, d=4, scales=(20.0, 0.05), seed=4)
    gen = torch.Generator().manual_seed(1)
    Y = torch.randn(2, 60, 5, generator=gen, dtype=DT) * torch.tensor([1, 3, 0.1, 10, 1.0])
    L_true = torch.linalg.eigvalsh(hessian(X))[:, -1].max().item()
    problem = LeastSquares(X, Y, torch.zeros(2, 5, 4, dtype=DT))
    variant = FISTA(problem.params, 1.0, FISTA.Params(
        restart="gradient-neuron", lipschitz_init=L_true, shrink=1.0))
    x_prev = problem.weight.detach().clone()
    mixed = False
    for _ in range(80):
        t_before = variant.t[0].clone()
        variant.run_pass(problem)
        x = problem.weight.detach() - variant.extrapolation[0]  # x_k (params hold y_{k+1})
        opposing = opposing_rows(problem.weight.grad, x - x_prev)
        expected = torch.where(opposing, next_t(torch.ones_like(t_before)), next_t(t_before))
        torch.testing.assert_close(variant.t[0], expected, rtol=0, atol=1e-12)
        mixed |= bool((opposing.any(1) & ~opposing.all(1)).any())
        x_prev = x
    assert mixed  # some passes reset part of a seed's rows and not the rest


def test_depth_scale_divides_the_step_by_the_number_of_blocks():
    X, Y = make_data(S=2)
    L_true = torch.linalg.eigvalsh(hessian(X))[:, -1].max().item()
    moves = {}
    for scale in (False, True):
        problem = LeastSquares(X, Y, torch.zeros(2, 1, 6, dtype=DT), depth=4)
        run(FullBatchISTA, problem, 1, lipschitz_init=L_true, shrink=1.0, depth_scale=scale)
        moves[scale] = problem.weight.detach()
    torch.testing.assert_close(moves[True] * 4, moves[False], rtol=1e-12, atol=0)


def test_non_finite_gradient_or_exploding_lipschitz_ends_only_that_seed():
    X, Y = make_data(S=3)
    W0 = torch.zeros(3, 1, 6, dtype=DT)
    X[1] *= 1e3  # curvature ~1e6: over the cap below
    X[2, 0, 0] = float("nan")
    problem = LeastSquares(X, Y, W0)
    f0 = problem.full_loss()[0]
    run(FullBatchISTA, problem, 2, lipschitz_cap=1e4)
    assert set(problem.failures) == {1, 2}
    assert "Lipschitz estimate exploded" in problem.failures[1]
    assert "non-finite" in problem.failures[2]
    assert torch.all(problem.weight.detach()[1:] == 0)  # ended seeds are left where they were
    assert problem.full_loss()[0] < f0  # the healthy seed trains on
