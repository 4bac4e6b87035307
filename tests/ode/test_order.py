"""Orders of the Runge-Kutta solvers, fitted as the slope of log error against log step
on problems with known solutions (non-autonomous, so that the stage times matter)."""

import numpy as np
import pytest
import torch

from dynvae.ode import RK4, BogackiShampine, DormandPrince, Euler, FixedStep, Midpoint, odeint
from dynvae.ode.tableau import (
    BOGACKI_SHAMPINE,
    DORMAND_PRINCE,
    EULER,
    MIDPOINT,
    RK4_CLASSIC,
    dense_output,
    rk_step,
)
from tests.reference.sde_oracles import fitted_slope

F64 = torch.float64


def growth(t, z):
    """dz/dt = cos(t) z, solved by z(t) = z(0) exp(sin t)."""
    return torch.cos(t) * z


def growth_exact(z0, t):
    return z0 * torch.exp(torch.sin(torch.as_tensor(t, dtype=F64)))


def oscillator(t, z):
    """z = (x, v), x'' = -x: x(t) = cos t for x(0) = 1, v(0) = 0."""
    return torch.stack([z[..., 1], -z[..., 0]], -1)


Z0 = torch.tensor([[0.7], [-1.3]], dtype=F64)


@pytest.mark.parametrize("solver, order", [(Euler(), 1), (Midpoint(), 2), (RK4(), 4)])
def test_fixed_step_global_order(solver, order):
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    dts = [0.1, 0.05, 0.025, 0.0125]
    errors = [float((odeint(growth, Z0, t, solver, dt) - growth_exact(Z0[:, None], t[:, None])
                     ).abs().max()) for dt in dts]
    assert abs(fitted_slope(dts, errors) - order) < 0.25, errors
    oscillations = [float((odeint(oscillator, torch.tensor([[1.0, 0.0]], dtype=F64),
                                  torch.tensor([0.0, 3.0], dtype=F64), solver, dt)[0, -1, 0]
                           - np.cos(3.0)).abs()) for dt in dts]
    assert abs(fitted_slope(dts, oscillations) - order) < 0.3, oscillations


def rooted_trees(order: int) -> list[tuple]:
    """All rooted trees with ``order`` nodes, each a sorted tuple of its children's trees."""
    if order == 1:
        return [()]
    trees = set()

    def children(remaining: int, smallest: tuple | None) -> list[tuple]:
        """Sorted multisets of subtrees with ``remaining`` nodes in all."""
        if remaining == 0:
            return [()]
        out = []
        for size in range(1, remaining + 1):
            for sub in rooted_trees(size):
                if smallest is not None and (size, sub) < smallest:
                    continue
                out += [(sub,) + rest for rest in children(remaining - size, (size, sub))]
        return out
    for kids in children(order - 1, None):
        trees.add(tuple(sorted(kids, key=lambda k: (tree_size(k), k))))
    return sorted(trees, key=str)


def tree_size(tree: tuple) -> int:
    return 1 + sum(tree_size(k) for k in tree)


def density(tree: tuple) -> int:
    """gamma(tree) = |tree| prod gamma(children)."""
    return tree_size(tree) * int(np.prod([density(k) for k in tree]))


def stage_weights(a: np.ndarray, tree: tuple) -> np.ndarray:
    """Phi_i(tree) = prod over children of sum_j a_ij Phi_j(child) (1 for a leaf)."""
    phi = np.ones(a.shape[0])
    for child in tree:
        phi = phi * (a @ stage_weights(a, child))
    return phi


def satisfied_order(a: np.ndarray, b: np.ndarray, up_to: int = 6) -> int:
    """The largest p such that sum_i b_i Phi_i(tree) = 1 / gamma(tree) for every rooted tree
    with at most p nodes (Butcher's order conditions, Hairer et al. sec. II.2)."""
    for p in range(1, up_to + 1):
        for tree in rooted_trees(p):
            if abs(b @ stage_weights(a, tree) - 1 / density(tree)) > 1e-13:
                return p - 1
    return up_to


def as_arrays(tableau):
    s = len(tableau.c)
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a):
        a[i, :i] = row
    return a, np.array(tableau.b)


def test_the_tree_count_is_right():
    assert [len(rooted_trees(p)) for p in range(1, 7)] == [1, 1, 2, 4, 9, 20]


@pytest.mark.parametrize("tableau", [EULER, MIDPOINT, RK4_CLASSIC, BOGACKI_SHAMPINE,
                                     DORMAND_PRINCE])
def test_each_tableau_meets_exactly_its_order_conditions(tableau):
    """Every coefficient checked: the solution weights b satisfy the order conditions of
    the declared order and no more, the embedded weights b - e those of the declared
    embedded order; and c_i = sum_j a_ij (the stage times are consistent)."""
    a, b = as_arrays(tableau)
    np.testing.assert_allclose(a.sum(1), tableau.c, atol=1e-15)
    assert satisfied_order(a, b) == tableau.order
    if tableau.error is not None:
        assert satisfied_order(a, b - np.array(tableau.error)) == tableau.error_order


def test_a_coefficient_off_by_one_part_in_ten_thousand_is_caught():
    """Each nonzero a_ij perturbed: the solution or (for the last stage of a pair, which
    only the error estimate uses) the embedded solution loses its order."""
    for tableau in (RK4_CLASSIC, BOGACKI_SHAMPINE, DORMAND_PRINCE):
        a, b = as_arrays(tableau)
        b_hat = None if tableau.error is None else b - np.array(tableau.error)
        for i, j in zip(*np.nonzero(a), strict=True):
            wrong = a.copy()
            wrong[i, j] *= 1.0001
            caught = satisfied_order(wrong, b) < tableau.order or (
                b_hat is not None and satisfied_order(wrong, b_hat) < tableau.error_order)
            assert caught, (tableau.name, i, j)


@pytest.mark.parametrize("tableau", [BOGACKI_SHAMPINE, DORMAND_PRINCE])
def test_embedded_pairs_have_their_global_order_as_fixed_step_methods(tableau):
    """The adaptive pairs' solution formulas, run with fixed steps: error slope = order."""
    solver = type("FixedPair", (FixedStep,), {"tableau": tableau})()
    z0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    dts = [0.2, 0.1, 0.05, 0.025]
    errors = [float((odeint(oscillator, z0, torch.tensor([0.0, 6.0], dtype=F64), solver,
                            dt)[0, -1, 0] - np.cos(6.0)).abs()) for dt in dts]
    assert abs(fitted_slope(dts, errors) - tableau.order) < 0.3, errors


def test_first_same_as_last_is_declared_only_where_it_holds():
    assert DORMAND_PRINCE.fsal and BOGACKI_SHAMPINE.fsal
    assert not (RK4_CLASSIC.fsal or MIDPOINT.fsal or EULER.fsal)


@pytest.mark.parametrize("solver_cls", [DormandPrince, BogackiShampine])
def test_adaptive_error_follows_the_tolerance(solver_cls):
    """The global error shrinks in proportion to the tolerance (slope near 1 in log-log)
    and stays within a small multiple of it."""
    t = torch.linspace(0, 6, 13, dtype=F64)
    z0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    tols = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    errors = [float((odeint(oscillator, z0, t, solver_cls(rtol=tol, atol=tol))[0, :, 0]
                     - torch.cos(t)).abs().max()) for tol in tols]
    assert all(e < 50 * tol for e, tol in zip(errors, tols, strict=True)), errors
    assert 0.6 < fitted_slope(tols, errors) < 1.3, errors


@pytest.mark.parametrize("tableau, order", [(DORMAND_PRINCE, 4), (BOGACKI_SHAMPINE, 3)])
def test_dense_output_order_inside_a_step(tableau, order):
    """One step from the exact state, read at fractions 0.2, 0.5, 0.85 of it: the local
    interpolation error of an order-p interpolant is O(h^(p+1)); at the step's end it is
    the step's own solution."""
    hs = [0.4, 0.2, 0.1, 0.05]
    t0 = torch.tensor(0.3, dtype=F64)
    z0 = growth_exact(Z0, t0)
    theta = torch.tensor([[0.2, 0.5, 0.85, 1.0]], dtype=F64).expand(2, -1)
    errors = []
    for h in hs:
        z1, ks = rk_step(tableau, growth, t0, h, z0)
        inside = dense_output(tableau, torch.full((2, 1), h, dtype=F64), z0, z1, ks, theta)
        torch.testing.assert_close(inside[:, -1], z1, rtol=1e-13, atol=1e-13)
        exact = growth_exact(Z0[:, None], t0 + theta[..., None] * h)
        errors.append(float((inside[:, :3] - exact[:, :3]).abs().max()))
    assert abs(fitted_slope(hs, errors) - (order + 1)) < 0.35, errors
