"""Strong convergence orders fitted as the slope of log E|error| against log dt, with
the numerical and reference solutions driven by the same Brownian path."""

import numpy as np
import pytest
import torch

from dynvae.sde import (
    SRK,
    BrownianPath,
    EulerHeun,
    EulerMaruyama,
    Heun,
    Milstein,
    StratonovichMilstein,
    sdeint,
    to_stratonovich,
)
from dynvae.sde.processes import GeometricBrownianMotion
from tests.reference.sde_oracles import (
    RationalAdditive,
    SineDrift,
    fitted_slope,
    gbm_exact,
    rational_additive_exact,
)

F64 = torch.float64
B = 1000
T_END = 1.0
DTS = [2.0 ** -k for k in range(3, 9)]


def _strong_errors(sde, solver, exact_fn, dts, seed):
    bm = BrownianPath(0.0, T_END, (B, 1), seed=seed)
    t = torch.tensor([0.0, T_END], dtype=F64)
    z0 = torch.full((B, 1), 1.0, dtype=F64)
    errors = []
    with torch.no_grad():
        for dt in dts:
            z = sdeint(sde, z0, t, solver=solver, dt=dt, bm=bm).z[:, -1, 0].numpy()
            errors.append(float(np.mean(np.abs(z - exact_fn(bm)))))
    return errors


def _gbm_exact(gbm):
    def exact(bm):
        w = bm.value(torch.tensor([0.0, T_END], dtype=F64))[:, -1, 0].numpy()
        return gbm_exact(1.0, gbm.mu, gbm.sigma, T_END, w)
    return exact


GBM = GeometricBrownianMotion(mu=0.5, sigma=1.0)


@pytest.mark.parametrize("solver, sde, theory", [
    (EulerMaruyama(), GBM, 0.5),
    (Milstein(), GBM, 1.0),
    (Milstein(derivative_free=True), GBM, 1.0),
    (Heun(), to_stratonovich(GBM), 1.0),
    (EulerHeun(), to_stratonovich(GBM), 1.0),
    (StratonovichMilstein(), to_stratonovich(GBM), 1.0),
], ids=["euler_maruyama", "milstein", "milstein_derivative_free", "heun", "euler_heun",
        "stratonovich_milstein"])
def test_strong_order_on_gbm(solver, sde, theory):
    errors = _strong_errors(sde, solver, _gbm_exact(GBM), DTS, seed=11)
    slope = fitted_slope(DTS, errors)
    assert abs(slope - theory) < 0.15, (slope, errors)
    assert solver.strong_order_for(sde.noise) == theory


def test_srk_order_1_5_on_nonlinear_additive_noise():
    # No closed form: the reference is SRK itself at dt = 2^-12 on the same path (its
    # error, ~(2^-12)^1.5, is far below the coarse errors).
    sde = SineDrift(sigma=2.0)
    dts = [2.0 ** -k for k in range(3, 9)]
    bm = BrownianPath(0.0, T_END, (500, 1), seed=3)
    t = torch.tensor([0.0, T_END], dtype=F64)
    z0 = torch.full((500, 1), 0.5, dtype=F64)
    with torch.no_grad():
        ref = sdeint(sde, z0, t, solver=SRK(), dt=2.0 ** -12, bm=bm).z[:, -1]
        errors = [float((sdeint(sde, z0, t, solver=SRK(), dt=dt, bm=bm).z[:, -1] - ref)
                        .abs().mean()) for dt in dts]
    slope = fitted_slope(dts, errors)
    assert abs(slope - 1.5) < 0.15, (slope, errors)


def test_srk_and_euler_on_linear_additive_noise_with_exact_solution():
    # Linear drift removes the order-2 term sigma^2 f'' I_(1,1,0), so SRK reaches order
    # 2 here; Euler-Maruyama has order 1 with additive noise.
    sde = RationalAdditive(b=1.0)

    def exact(bm):
        w = bm.value(torch.tensor([0.0, T_END], dtype=F64))[:, -1, 0].numpy()
        return rational_additive_exact(1.0, sde.b, T_END, w)

    dts = [2.0 ** -k for k in range(2, 7)]
    srk = fitted_slope(dts, _strong_errors(sde, SRK(), exact, dts, seed=5))
    em = fitted_slope(dts, _strong_errors(sde, EulerMaruyama(), exact, dts, seed=5))
    assert srk > 1.5 - 0.15, srk
    assert abs(em - 1.0) < 0.15, em
