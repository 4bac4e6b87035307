"""Latent SDE on the stochastic Lorenz system: dynvae trained for a fixed time budget,
and its training-step rate next to the same model solved by torchsde.sdeint.

Data: ``dynvae.data.synthetic.stochastic_lorenz`` (100 points on [0, 2], observation
noise std 0.01), standardised on the training sequences. dynvae's ``LatentSDE`` is
trained with Adam (KL annealed over the first 30% of the budget) and scored on
held-out sequences: ELBO and IWAE(16) per observed entry and the mean squared error of
the posterior predictive mean on every entry (standardised scale). The torchsde model
uses the very same networks (the dynvae model's encoder, drifts, diffusion and decoder)
and solves the posterior SDE with ``torchsde.sdeint(..., logqp=True)``; both take
Euler-Maruyama steps of dt = half the observation spacing on the same batches. One
column checks the equivalence: the largest difference of the per-sequence KL and
log-likelihood of both implementations in float64 on one shared Brownian path.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from dynvae.data import SequenceBatch, Standardizer  # noqa: E402
from dynvae.data.synthetic import stochastic_lorenz  # noqa: E402
from dynvae.gaussian import kl_diag_gaussians  # noqa: E402
from dynvae.models.common import observation_features  # noqa: E402
from dynvae.models.latent_sde import (  # noqa: E402
    LatentSDE,
    LatentSDEConfig,
    interval_context,
    time_features,
)
from dynvae.sde import BrownianPath  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402


class TorchsdePosterior(nn.Module):
    """The dynvae model's posterior/prior pair as a torchsde SDE with prior drift h.

    torchsde accumulates its step times (t + dt) instead of landing on the observation
    times, so a step meant to start at t_k may start at t_k - 1e-17; the context
    interval is looked up a quarter step later, where rounding cannot cross t_k."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, model: LatentSDE, ts, ctx, dt: float):
        super().__init__()
        self.model, self.lookup, self.shift = model, interval_context(ts, ctx), 0.25 * dt

    def f(self, t, y):
        return self.model.posterior_drift(torch.cat([y, self.lookup(t + self.shift)], -1))

    def h(self, t, y):
        return self.model.prior_drift(y)

    def g(self, t, y):
        return self.model.diffusion(y)


def torchsde_terms(torchsde, model: LatentSDE, batch, dt: float, bm=None):
    """(log_lik (B,), kl (B,)) of one posterior path per sequence, solved by torchsde."""
    features = torch.cat([observation_features(batch), time_features(batch)], -1)
    ctx = model.encoder(features, batch.lengths)
    q_mean, q_var = model.initial_posterior(ctx[:, 0])
    p_mean, p_var = model.initial_prior(q_mean.shape[:1], q_mean)
    z0 = q_mean + q_var.sqrt() * torch.randn_like(q_mean)
    ts = batch.t[0]
    if bm is None:
        size = (z0.shape[0], z0.shape[1] + 1)               # logqp appends one state
        bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=size,
                                       dtype=z0.dtype, device=z0.device, dt=dt,
                                       levy_area_approximation="none")
    zs, log_ratio = torchsde.sdeint(TorchsdePosterior(model, ts, ctx, dt), z0, ts, bm=bm,
                                    dt=dt, method="euler", logqp=True)
    log_lik = model.emission_log_prob(batch, zs.transpose(0, 1)[None])[0]
    kl = kl_diag_gaussians(q_mean, q_var, p_mean, p_var).sum(-1) + log_ratio.sum(0)
    return log_lik, kl


class ExtraZeroNoise:
    """A dynvae BrownianPath seen with one more, always-zero, noise coordinate: the
    shape torchsde's logqp augmentation asks of its Brownian motion."""

    def __init__(self, path: BrownianPath):
        self.path, self.dtype, self.device = path, path.dtype, path.device
        self.shape = (*path.shape[:-1], path.shape[-1] + 1)

    def __call__(self, ta, tb):
        w = self.path(ta, tb)
        return torch.cat([w, torch.zeros_like(w[..., :1])], -1)


def load(n_train: int, n_test: int, seed: int, drop: float = 0.0, missing: float = 0.0):
    """Standardised (train, test, complete test or None, standardizer). The complete test
    sequences hold the hidden entries too (same seed: same paths, noise and times)."""
    data = stochastic_lorenz(n=n_train + n_test, seed=seed, drop=drop, missing=missing)
    train, test = data[list(range(n_train))], data[list(range(n_train, n_train + n_test))]
    std = Standardizer().fit(train)
    complete = None
    if missing > 0:
        full = stochastic_lorenz(n=n_train + n_test, seed=seed, drop=drop)
        complete = std.transform(full[list(range(n_train, n_train + n_test))])
    return std.transform(train), std.transform(test), complete, std


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model, data, args, budget: float) -> tuple[int, float]:
    """Adam on the annealed ELBO until ``budget`` seconds; returns (steps, seconds)."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        idx = torch.randperm(data.batch_size, generator=gen)[:args.batch]
        beta = min(1.0, (time.perf_counter() - start) / (0.3 * budget))
        opt.zero_grad(set_to_none=True)
        model.elbo(data.index(idx)).loss(beta).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        steps += 1
    return steps, time.perf_counter() - start


@torch.no_grad()
def score(model: LatentSDE, test, complete=None) -> dict:
    """ELBO, IWAE(16) per observed entry, reconstruction MSE of the observed entries and,
    given the complete sequences, imputation MSE of the hidden ones."""
    model.eval()
    n_obs = float(test.n_observed().sum())
    elbo = float(model.elbo(test, 8).elbo().sum()) / n_obs
    iwae = float(model.log_likelihood_bound(test, 16).sum()) / n_obs
    pred = model.reconstruct(test)
    out = {"test_elbo_per_obs": elbo, "test_iwae_per_obs": iwae,
           "test_recon_mse": float((pred.mean - test.x)[test.mask].pow(2).mean())}
    if complete is not None:
        hidden = complete.mask & ~test.mask
        out["test_imputation_mse"] = float((pred.mean - complete.x)[hidden].pow(2).mean())
    model.train()
    return out


def step_rates(torchsde, model: LatentSDE, data, args) -> dict:
    """Median seconds of one training step (forward, backward, Adam) of each solver."""
    ours = copy.deepcopy(model)
    theirs = copy.deepcopy(model)
    opts = {"dynvae": torch.optim.Adam(ours.parameters(), lr=args.lr)}
    batch = data.index(torch.arange(args.batch))

    def step_ours():
        opts["dynvae"].zero_grad(set_to_none=True)
        ours.elbo(batch).loss().backward()
        opts["dynvae"].step()
    fns = {"dynvae": step_ours}
    if args.compile:  # the same model with the compiled Euler-Maruyama solver
        compiled = LatentSDE(dataclasses.replace(model.config, solver="euler-compiled"),
                             model.data_dim).to(batch.x.device)
        compiled.load_state_dict(model.state_dict())
        opts["dynvae-compiled"] = torch.optim.Adam(compiled.parameters(), lr=args.lr)

        def step_compiled():
            opts["dynvae-compiled"].zero_grad(set_to_none=True)
            compiled.elbo(batch).loss().backward()
            opts["dynvae-compiled"].step()
        fns["dynvae-compiled"] = step_compiled
    if torchsde is not None:
        opts["torchsde"] = torch.optim.Adam(theirs.parameters(), lr=args.lr)

        def step_theirs():
            opts["torchsde"].zero_grad(set_to_none=True)
            log_lik, kl = torchsde_terms(torchsde, theirs, batch, args.dt)
            (-(log_lik - kl).sum() / batch.n_observed().sum()).backward()
            opts["torchsde"].step()
        fns["torchsde"] = step_theirs
    for fn in fns.values():
        fn()                                                    # warm-up
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            sync(batch.x.device)
            start = time.perf_counter()
            fn()
            sync(batch.x.device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def equivalence(torchsde, model: LatentSDE, data, dt: float) -> float:
    """Largest |difference| of per-sequence KL and log-likelihood, float64, one path
    (``data`` a SequenceDataset: its float64 times split into exactly equal halves)."""
    from tests.reference.sde_oracles import torchsde_brownian

    model = copy.deepcopy(model).cpu().double()
    batch = data.to_batch(list(range(8)), dtype=torch.float64)
    ts = batch.t[0]
    bm = BrownianPath(float(ts[0]), float(ts[-1]), (8, model.config.latent_dim), seed=0)
    with torch.no_grad():
        torch.manual_seed(1)
        ours = model.elbo(batch, bm=bm)
        torch.manual_seed(1)
        log_lik, kl = torchsde_terms(torchsde, model, batch, dt,
                                      torchsde_brownian(ExtraZeroNoise(bm)))
    return max(float((ours.kl - kl).abs().max()), float((ours.log_lik - log_lik).abs().max()))


def plot_paths(model: LatentSDE, test, std: Standardizer, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = int(test.lengths[0])                            # the first sequence, unpadded
    one = SequenceBatch(test.x[:1, :L], test.mask[:1, :L], test.t[:1, :L],
                        test.lengths[:1])
    with torch.no_grad():
        post = model.posterior_paths(model._prepare(one), 16).z[:, 0]        # (K, T, Z)
        prior = model.sample_latents(16, one.t[0])                           # (K, T, Z)
        decode = lambda z: std.inverse_mean(model.emission(z)[0].double()).numpy()  # noqa
        post_x, prior_x = decode(post), decode(prior)
        x = std.inverse_mean(one.x[0].double()).numpy()
    x[~one.mask[0].numpy()] = float("nan")               # draw observed entries only
    t = one.t[0].numpy()
    fig, axes = plt.subplots(2, 3, figsize=(12, 5.5), sharex=True)
    for d, name in enumerate(("x", "y", "z")):
        for row, (draws, label) in enumerate(((post_x, "posterior"), (prior_x, "prior"))):
            ax = axes[row, d]
            ax.plot(t, draws[..., d].T, color="C0" if row == 0 else "C1", alpha=0.35, lw=1)
            if row == 0:
                ax.plot(t, x[:, d], "k.", ms=3, label="data")
            ax.set_title(f"{label} sample paths, {name}")
    axes[0, 0].legend(loc="upper right")
    for ax in axes[1]:
        ax.set_xlabel("t")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short budget (< 1 min)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the compiled-solver row (always skipped with --quick: "
                        "compilation takes about a minute)")
    p.add_argument("--json", type=Path, default=None, help="write result rows to this file")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of sample paths")
    p.add_argument("--budget", type=float, default=None, help="training seconds (300; 15 quick)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--repeats", type=int, default=None, help="timed steps (10; 3 quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--drop", type=float, default=0.0, help="share of time points removed "
                   "per sequence (irregular grids; no torchsde rows)")
    p.add_argument("--missing", type=float, default=0.0, help="share of entries hidden")
    p.add_argument("--n-train", type=int, default=None, help="training sequences (512; 128 "
                   "quick)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.compile = args.compile and not args.quick
    budget = args.budget or (15.0 if args.quick else 300.0)
    args.repeats = args.repeats or (3 if args.quick else 10)
    n_train, n_test = (128, 32) if args.quick else (512, 128)
    n_train = args.n_train or n_train
    train_set, test_set, complete, std = load(n_train, n_test, args.seed, args.drop,
                                              args.missing)
    train_data = train_set.to_batch(device=args.device)
    test_data = test_set.to_batch(device=args.device)
    complete = None if complete is None else complete.to_batch(device=args.device)
    args.dt = 2.0 / 99 / 2                      # half the spacing of 100 points on [0, 2]
    torch.manual_seed(args.seed)
    config = LatentSDEConfig(latent_dim=4, context_dim=16, encoder_hidden=32,
                             drift_hidden=(64, 64), diffusion_hidden=16,
                             emission_hidden=(32,), dt=args.dt, n_predict_samples=16)
    model = LatentSDE(config, 3).to(args.device)
    try:
        import torchsde
    except ImportError:
        torchsde = None
        print("torchsde is not installed: timing dynvae only")
    if torchsde is not None and args.drop > 0:
        torchsde = None
        print("--drop gives every sequence its own times; torchsde.sdeint takes one time "
              "grid per batch: timing dynvae only")
    print(f"stochastic Lorenz, {n_train} train / {n_test} test sequences of 100 points "
          f"(drop {args.drop}, missing {args.missing}), "
          f"batch {args.batch}, dt {args.dt:.5f}, threads {args.threads}, float32, "
          f"{args.device}")
    seconds = step_rates(torchsde, model, train_data, args)
    rows = [{"case": "train_step", "impl": name, "seconds": s, "steps_per_s": 1.0 / s}
            for name, s in seconds.items()]
    if torchsde is not None:
        for row in rows:
            if row["impl"].startswith("dynvae"):
                row["speedup_vs_torchsde"] = seconds["torchsde"] / row["seconds"]
        rows[0]["max_abs_diff_float64"] = equivalence(torchsde, model, train_set, args.dt)
    steps, spent = train(model, train_data, args, budget)
    case = f"train_{budget:g}s" + ("_irregular" if args.drop or args.missing else "")
    rows.append({"case": case, "impl": "dynvae", "seconds": spent, "steps": steps,
                 **score(model, test_data, complete)})
    for r in rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in r.items()), flush=True)
    if args.plot is not None:
        plot_paths(model.cpu(), test_set.to_batch(), std, args.plot)
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
