"""odeint on shared and per-row grids: rows solved together equal rows solved alone,
checkpointed gradients equal plain ones, and torchdiffeq agrees on identical problems."""

import pytest
import torch

from dynvae.errors import ConfigError, DataError, NumericalError
from dynvae.ode import (
    RK4,
    BogackiShampine,
    DormandPrince,
    Euler,
    Midpoint,
    advance,
    odeint,
)

F64 = torch.float64
Z = 3


class Field(torch.nn.Module):
    """A small smooth nonlinear, non-autonomous vector field with parameters."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(Z, 8, generator=g, dtype=F64) / 2)
        self.w2 = torch.nn.Parameter(torch.randn(8, Z, generator=g, dtype=F64) / 3)

    def forward(self, t, z):
        return torch.tanh(z @ self.w1 + torch.sin(t)) @ self.w2 - 0.1 * z


def irregular_grids(R: int = 4, T: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    gaps = 0.05 + torch.rand(R, T - 1, generator=g, dtype=F64) * torch.tensor(
        [0.2, 1.0, 0.5, 2.0], dtype=F64)[:R, None]
    start = torch.rand(R, 1, generator=g, dtype=F64)
    return torch.cat([start, start + gaps.cumsum(-1)], -1)


SOLVERS = [(Euler(), 0.1), (Midpoint(), None), (RK4(), 0.3), (DormandPrince(), None),
           (BogackiShampine(rtol=1e-5, atol=1e-7), None)]


@pytest.mark.parametrize("solver, dt", SOLVERS)
def test_each_row_of_a_batch_is_solved_as_if_alone(solver, dt):
    f, t = Field(), irregular_grids()
    z0 = torch.randn(4, Z, dtype=F64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = odeint(f, z0, t, solver, dt)
        alone = torch.stack([odeint(f, z0[r:r + 1], t[r], solver, dt)[0] for r in range(4)])
    assert together.shape == (4, t.shape[1], Z)
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(together[:, 0], z0, rtol=0, atol=0)


@pytest.mark.parametrize("solver, dt", SOLVERS)
def test_a_shared_grid_equals_the_same_grid_per_row(solver, dt):
    f, t = Field(), irregular_grids()[1]
    z0 = torch.randn(2, 5, Z, dtype=F64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        shared = odeint(f, z0, t, solver, dt)
        per_row = odeint(f, z0, t.expand(2, 5, -1), solver, dt)
    assert shared.shape == (2, 5, t.shape[0], Z)
    torch.testing.assert_close(shared, per_row, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver, dt", [(RK4(), 0.2), (DormandPrince(), None)])
def test_checkpointed_gradients_equal_plain_backpropagation(solver, dt):
    f, t = Field(), irregular_grids()
    z0 = torch.randn(4, Z, dtype=F64, generator=torch.Generator().manual_seed(4),
                     requires_grad=True)
    target = torch.randn(4, t.shape[1], Z, dtype=F64, generator=torch.Generator().manual_seed(5))
    grads = []
    for every in (None, 3):
        loss = (odeint(f, z0, t, solver, dt, checkpoint_every=every) - target).pow(2).sum()
        grads.append(torch.autograd.grad(loss, [z0, *f.parameters()]))
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-12, atol=1e-12)


def test_fixed_step_gradients_pass_gradcheck():
    f, t = Field(), irregular_grids(R=2, T=4)
    z0 = torch.randn(2, Z, dtype=F64, generator=torch.Generator().manual_seed(6),
                     requires_grad=True)
    fn = lambda z, w1, w2: odeint(lambda s, y: torch.tanh(y @ w1 + torch.sin(s)) @ w2, z, t,
                                  RK4(), 0.4)
    assert torch.autograd.gradcheck(fn, (z0, f.w1, f.w2))


def test_advance_carries_each_row_over_its_own_span_and_zero_spans_stay():
    f = Field()
    z = torch.randn(3, Z, dtype=F64, generator=torch.Generator().manual_seed(7))
    t0 = torch.tensor([[0.0], [1.0], [2.0]], dtype=F64)
    span = torch.tensor([[0.7], [0.0], [1.9]], dtype=F64)
    with torch.no_grad():
        out = advance(f, z, t0, span, RK4(), dt=0.25)
        for r in (0, 2):
            grid = torch.cat([t0[r], t0[r] + span[r]])
            torch.testing.assert_close(out[r], odeint(f, z[r:r + 1], grid, RK4(), 0.25)[0, -1],
                                       rtol=1e-13, atol=1e-13)
    assert torch.equal(out[1], z[1])
    with pytest.raises(ConfigError, match="fixed-step"):
        advance(f, z, t0, span, DormandPrince())


# ------------------------------------------------------------------------ bad input
def test_bad_calls_raise_one_clear_line():
    f, t = Field(), torch.linspace(0, 1, 4, dtype=F64)
    z0 = torch.zeros(2, Z, dtype=F64)
    calls = [
        (lambda: odeint(f, z0, t, "rk4"), ConfigError, "ODESolver"),
        (lambda: odeint(f, z0, t, DormandPrince(), dt=0.1), ConfigError, "own steps"),
        (lambda: odeint(f, z0, t, RK4(), dt=-1.0), ConfigError, "dt"),
        (lambda: odeint(f, z0, t, RK4(), checkpoint_every=0), ConfigError, "checkpoint"),
        (lambda: odeint(f, z0, t.flip(0)), DataError, "increasing"),
        (lambda: odeint(f, z0, torch.zeros(3, 4, dtype=F64)), DataError, "batch"),
        (lambda: odeint(f, torch.full((2, Z), float("nan"), dtype=F64), t), DataError, "NaN"),
        (lambda: odeint(lambda s, z: z[:, :1], z0, t), DataError, "vector field"),
        (lambda: DormandPrince(rtol=-1.0), ConfigError, "rtol"),
        (lambda: DormandPrince(max_steps=0), ConfigError, "max_steps"),
    ]
    for call, error, words in calls:
        with pytest.raises(error, match=words) as info:
            call()
        assert "\n" not in str(info.value)


def test_a_blowing_up_solution_is_a_numerical_error_naming_the_solver():
    blow_up = lambda s, z: z * z                       # z(t) = 1 / (1 - t) from z(0) = 1
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    with pytest.raises(NumericalError, match="DormandPrince") as info:
        odeint(blow_up, torch.ones(1, 1, dtype=F64), t)
    assert "\n" not in str(info.value)
    with pytest.raises(NumericalError, match="100 steps"):
        odeint(lambda s, z: -50.0 * z, torch.ones(1, 1, dtype=F64),
               torch.tensor([0.0, 100.0], dtype=F64), DormandPrince(max_steps=100))


@pytest.mark.parametrize("solver, dt", SOLVERS)
def test_padding_after_each_rows_length_takes_no_part(solver, dt):
    """Rows of a padded per-row grid (garbage after ``lengths``) equal each row cut to its
    length and solved alone; padded outputs repeat the last valid value."""
    f, t = Field(), irregular_grids()
    lengths = torch.tensor([7, 3, 5, 1])
    garbage = torch.where(torch.arange(7)[None] < lengths[:, None], t,
                          1e3 * torch.randn(t.shape, dtype=F64))
    z0 = torch.randn(4, Z, dtype=F64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        together = odeint(f, z0, garbage, solver, dt, lengths=lengths)
        for r, n in enumerate(lengths.tolist()):
            alone = odeint(f, z0[r:r + 1], t[r, :n], solver, dt)[0]
            torch.testing.assert_close(together[r, :n], alone, rtol=1e-12, atol=1e-12)
            assert torch.equal(together[r, n:], together[r, n - 1].expand(7 - n, Z))
    with pytest.raises(DataError, match="lengths"):
        odeint(f, z0, t, solver, dt, lengths=torch.tensor([7, 3, 0, 1]))
