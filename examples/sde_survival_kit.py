"""Stochastic calculus survival kit: simulate OU and GBM, check Ito's lemma, measure
solver orders, draw stochastic Lorenz paths. Figures go to --out (PNG).

    python examples/sde_survival_kit.py --out docs/img
    python examples/sde_survival_kit.py --smoke --out /tmp/kit   # seconds, for CI
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dynvae.sde import (  # noqa: E402
    SRK,
    BrownianPath,
    EulerMaruyama,
    Milstein,
    ito_lemma,
    sdeint,
)
from dynvae.sde.processes import (  # noqa: E402
    GeometricBrownianMotion,
    OrnsteinUhlenbeck,
    stochastic_lorenz_dataset,
)
from dynvae.utils import atomic_write_bytes  # noqa: E402

F64 = torch.float64


def save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def simulate_ou_and_gbm(out: Path, n_paths: int) -> dict:
    """Paths of OU and GBM with their exact mean and +-2 sd bands."""
    t = torch.linspace(0, 3, 151, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    ou = OrnsteinUhlenbeck(theta=1.0, mu=1.0, sigma=0.5)
    z_ou = sdeint(ou, torch.full((n_paths, 1), -1.0, dtype=F64), t, solver=SRK(), dt=0.01,
                  generator=gen).z[..., 0]  # (n, T)
    gbm = GeometricBrownianMotion(mu=0.3, sigma=0.4)
    z0 = torch.ones(n_paths, 1, dtype=F64)
    z_gbm = sdeint(gbm, z0, t, solver=Milstein(), dt=0.01, generator=gen).z[..., 0]
    m_ou, sd_ou = ou.mean(z0[:1] * -1, t)[0, :, 0], ou.variance(t).sqrt()
    m_gbm, sd_gbm = gbm.mean(z0[:1], t)[0, :, 0], gbm.variance(z0[:1], t)[0, :, 0].sqrt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, z, m, sd, name in ((axes[0], z_ou, m_ou, sd_ou, "Ornstein-Uhlenbeck"),
                               (axes[1], z_gbm, m_gbm, sd_gbm, "geometric Brownian motion")):
        ax.plot(t, z[:20].T, lw=0.7, alpha=0.6)
        ax.plot(t, m, "k", lw=2, label="exact mean")
        ax.fill_between(t, m - 2 * sd, m + 2 * sd, color="k", alpha=0.12, label="exact +-2 sd")
        ax.plot(t, z.mean(0), "r--", lw=1.5, label=f"Monte Carlo mean ({n_paths} paths)")
        ax.set_title(name)
        ax.set_xlabel("t")
        ax.legend(loc="upper left", fontsize=8)
    save(fig, out / "sde_paths.png")
    return {"ou_mean_err_T": float((z_ou[:, -1].mean() - m_ou[-1]).abs()),
            "gbm_mean_err_T": float((z_gbm[:, -1].mean() - m_gbm[-1]).abs())}


def check_ito_lemma(n_paths: int) -> dict:
    """y = log z for a GBM: Ito's lemma says dy = (mu - sigma^2/2) dt + sigma dW.
    Solve z with Milstein and y with its Ito-lemma SDE on the same Brownian path."""
    gbm = GeometricBrownianMotion(mu=0.3, sigma=0.4)
    z0 = torch.ones(n_paths, 1, dtype=F64)
    drift, diffusion = ito_lemma(lambda t, z: torch.log(z[:, 0]), gbm,
                                 torch.zeros((), dtype=F64), z0)
    bm = BrownianPath(0.0, 1.0, (n_paths, 1), seed=1)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    z1 = sdeint(gbm, z0, t, solver=Milstein(), dt=2 ** -10, bm=bm).z[:, -1, 0]
    w1 = bm.value(t)[:, -1, 0]
    y1 = drift * 1.0 + diffusion[:, 0] * w1  # constant coefficients: exact
    return {"lemma_drift": float(drift[0]), "lemma_diffusion": float(diffusion[0, 0]),
            "max_abs_log_z_minus_y": float((torch.log(z1) - y1).abs().max())}


def measure_orders(out: Path, n_paths: int, levels: range) -> dict:
    """Strong error against the exact GBM solution on one Brownian path per sample."""
    gbm = GeometricBrownianMotion(mu=0.5, sigma=1.0)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    z0 = torch.ones(n_paths, 1, dtype=F64)
    dts = [2.0 ** -k for k in levels]
    bm = BrownianPath(0.0, 1.0, (n_paths, 1), seed=2)
    exact = gbm.solution(z0, t, bm.value(t))[:, -1, 0]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    slopes = {}
    for solver in (EulerMaruyama(), Milstein()):
        errors = [float((sdeint(gbm, z0, t, solver=solver, dt=dt, bm=bm).z[:, -1, 0] - exact)
                        .abs().mean()) for dt in dts]
        slope = float(np.polyfit(np.log(dts), np.log(errors), 1)[0])
        slopes[type(solver).__name__] = slope
        ax.loglog(dts, errors, "o-", label=f"{type(solver).__name__}: slope {slope:.2f} "
                                           f"(theory {solver.strong_order})")
    ax.set_xlabel("dt")
    ax.set_ylabel("E |z_N - z(1)|")
    ax.set_title("strong error on GBM")
    ax.legend(fontsize=8)
    save(fig, out / "sde_orders.png")
    return slopes


def lorenz_figure(out: Path, n: int) -> dict:
    t, x = stochastic_lorenz_dataset(n, seed=0)
    fig = plt.figure(figsize=(9, 3.6))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    for i in range(min(n, 8)):
        ax.plot(*x[i].T.numpy(), lw=0.8)
    ax.set_title("stochastic Lorenz: 8 paths")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(t, x[:8, :, 0].T, lw=0.8)
    ax2.set_xlabel("t")
    ax2.set_ylabel("x1")
    save(fig, out / "sde_lorenz.png")
    return {"lorenz_shape": list(x.shape)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    args = p.parse_args(argv)
    n = 50 if args.smoke else 2000
    with torch.no_grad():  # plain simulation: no autograd graph
        results = simulate_ou_and_gbm(args.out, n)
        results.update(check_ito_lemma(n))
        results.update(measure_orders(args.out, 100 if args.smoke else 2000,
                                      range(3, 6) if args.smoke else range(3, 10)))
        results.update(lorenz_figure(args.out, 8 if args.smoke else 64))
    for key, value in results.items():
        print(f"{key}: {value}")
    return results


if __name__ == "__main__":
    main()
