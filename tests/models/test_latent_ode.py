"""Latent ODE: a linear model whose posterior is exact (every importance weight equals
log p(x)), the ELBO gap against the closed-form KL, forecasts at any future time,
per-sequence irregular grids equal to each sequence solved alone, and what the ODE-RNN
encoder reads."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError
from dynvae.models.latent_ode import LatentODE, LatentODEConfig

F64 = torch.float64
D = 2
W, BIAS = -0.7, 0.3                         # dz/dt = W z + BIAS
C, OFFSET, NOISE = torch.tensor([1.5, -0.8]), torch.tensor([0.2, -0.1]), torch.tensor([0.3, 0.5])


def irregular_batch(seed: int = 0) -> SequenceBatch:
    """Three sequences of lengths 6, 4, 5 on their own irregular times, ~25% missing."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 4, 5])
    t = torch.rand(3, 1, generator=g, dtype=F64) + torch.cumsum(
        0.1 + torch.rand(3, 6, generator=g, dtype=F64), 1)
    valid = torch.arange(6)[None] < lengths[:, None]
    mask = (torch.rand(3, 6, D, generator=g) < 0.75) & valid[..., None]
    mask[:, 0] = True
    x = torch.where(mask, torch.randn(3, 6, D, generator=g, dtype=F64), 0.0)
    return SequenceBatch(x, mask, t, lengths)


def linear_model(**overrides) -> LatentODE:
    """Z = 1, affine field and decoder, tight adaptive solver, fixed known parameters."""
    config = LatentODEConfig(latent_dim=1, field_hidden=(), emission_hidden=(), encoder_hidden=4,
                             encoder_field_hidden=(3,),
                             **{"segment_steps": None, "rtol": 1e-10, "atol": 1e-10,
                                **overrides})
    model = LatentODE(config, D).to(F64)
    with torch.no_grad():
        model.field.net[0].weight.fill_(W)
        model.field.net[0].bias.fill_(BIAS)
        head = model.observation.head
        head.mean.weight.copy_(C[:, None])
        head.mean.bias.copy_(OFFSET)
        head.variance.raw.copy_(torch.log(torch.expm1(NOISE ** 2 - config.min_var)))
    return model


def latent_mean_map(t: torch.Tensor, t0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z(t) = g z0 + h for the linear field: g = e^{W (t - t0)}, h = (BIAS / W)(g - 1)."""
    g = torch.exp(W * (t - t0))
    return g, BIAS / W * (g - 1)


def exact_posterior(batch: SequenceBatch, b: int):
    """log p(x_obs), posterior mean and variance of z0 for sequence b (dense Gaussian)."""
    n = int(batch.lengths[b])
    g, h = latent_mean_map(batch.t[b, :n], batch.t[b, 0])
    m = batch.mask[b, :n]
    gains = (g[:, None] * C.to(F64))[m]                                  # observed entries
    means = (h[:, None] * C.to(F64) + OFFSET.to(F64))[m]
    noise = NOISE.to(F64).pow(2).expand(n, D)[m]
    x = batch.x[b, :n][m]
    log_px = MultivariateNormal(means, gains[:, None] * gains[None] + torch.diag(noise)
                                ).log_prob(x)
    var = 1 / (1 + (gains ** 2 / noise).sum())
    return log_px, var * (gains * (x - means) / noise).sum(), var


class ExactPosteriorODE(LatentODE):
    """The linear model with q(z_0 | x) replaced by the exact posterior."""

    def initial_posterior_of(self, batch):
        moments = [exact_posterior(batch, b)[1:] for b in range(batch.batch_size)]
        return (torch.stack([m for m, _ in moments])[:, None],
                torch.stack([v for _, v in moments])[:, None])


def exact_model() -> ExactPosteriorODE:
    model = linear_model(refine_steps=0)          # predictions from the exact q as it is
    exact = ExactPosteriorODE(model.config, D).to(F64)
    exact.load_state_dict(model.state_dict())
    return exact


def test_with_the_exact_posterior_every_importance_weight_is_log_p_x():
    """log w = log p(x | z) + log p(z_0) - log q(z_0 | x) is log p(x) for every draw, so the
    bound is exact for any k; the ELBO (closed-form KL) is log p(x) in expectation."""
    model, batch = exact_model(), irregular_batch()
    log_px = torch.stack([exact_posterior(batch, b)[0] for b in range(3)])
    for k in (1, 5):
        torch.testing.assert_close(model.log_likelihood_bound(batch, k), log_px, rtol=1e-7,
                                   atol=1e-7)
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([model.elbo(batch, 200).elbo() for _ in range(10)])
    se = draws.std(0) / math.sqrt(10)
    assert bool(((draws.mean(0) - log_px).abs() < 5 * se + 1e-9).all())


def test_the_elbo_gap_is_the_kl_to_the_exact_posterior():
    """E_q[ELBO] = log p(x) - KL(q || p(z_0 | x)) for the network's own q (1-d Gaussians)."""
    model, batch = linear_model(), irregular_batch(1)
    torch.manual_seed(0)
    with torch.no_grad():
        q_mean, q_var = model.initial_posterior_of(model._prepare(batch))
        elbo = model.elbo(batch, n_samples=4000)
        se = torch.stack([model.elbo(batch, 500).elbo() for _ in range(8)]).std(0) / math.sqrt(8)
    for b in range(3):
        log_px, mean, var = exact_posterior(batch, b)
        kl = 0.5 * (torch.log(var / q_var[b, 0]) + (q_var[b, 0] + (q_mean[b, 0] - mean) ** 2)
                    / var - 1)
        assert abs(float(elbo.elbo()[b] - (log_px - kl))) < 5 * float(se[b]) + 1e-6


def test_forecasts_at_any_future_time_match_the_linear_solution():
    model, batch = exact_model(), irregular_batch(2)
    model.config.n_predict_samples = 4000
    t_last = batch.t[torch.arange(3), batch.lengths - 1][:, None]
    t_future = t_last + torch.tensor([[0.37, 1.1, 4.05]], dtype=F64)
    torch.manual_seed(1)
    fc = model.forecast(batch, t_future)
    for b in range(3):
        _, mean, var = exact_posterior(batch, b)
        g, h = latent_mean_map(t_future[b], batch.t[b, 0])
        want_mean = (g * mean + h)[:, None] * C.to(F64) + OFFSET.to(F64)
        want_std = ((g ** 2 * var)[:, None] * C.to(F64) ** 2 + NOISE.to(F64) ** 2).sqrt()
        se = want_std / math.sqrt(4000)
        assert bool(((fc.mean[b] - want_mean).abs() < 5 * se).all())
        torch.testing.assert_close(fc.std[b], want_std, rtol=0.05, atol=0)


@pytest.mark.parametrize("solver,segment_steps", [("dopri5", None), ("rk4", None),
                                                   ("bosh3", None), ("dopri5", 2)])
def test_each_sequence_of_a_batch_gets_what_it_gets_alone(solver, segment_steps):
    """Per-sequence irregular grids: the batch's log-likelihood terms under fixed noise
    (of z_0, or of each segment's state) equal those of each sequence solved in a batch
    of its own."""
    torch.manual_seed(0)
    extra = {"dt": 0.3} if solver == "rk4" else {}
    model = LatentODE(LatentODEConfig(latent_dim=3, solver=solver, segment_steps=segment_steps,
                                      random_phase=False, **extra), D).to(F64)
    batch = irregular_batch(3)
    noise = torch.randn(2, 3, *((3,) if segment_steps else ()), 3, dtype=F64)
    with torch.no_grad():
        together = model.elbo(batch, 2, z0_noise=noise)
        for b in range(3):
            n = int(batch.lengths[b])
            alone = batch.index([b])
            alone = SequenceBatch(alone.x[:, :n], alone.mask[:, :n], alone.t[:, :n],
                                  alone.lengths)
            mine = noise[:, b:b + 1, :-(-n // segment_steps)] if segment_steps \
                else noise[:, b:b + 1]
            terms = model.elbo(alone, 2, z0_noise=mine)
            torch.testing.assert_close(terms.log_lik, together.log_lik[b:b + 1], rtol=1e-10,
                                       atol=1e-10)
            torch.testing.assert_close(terms.kl, together.kl[b:b + 1], rtol=1e-10, atol=1e-10)


def test_the_encoder_reads_every_observation_and_only_time_differences():
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(latent_dim=3), D).to(F64)
    batch = irregular_batch(4)
    with torch.no_grad():
        q = model.initial_posterior_of(batch)[0]
        shifted = SequenceBatch(batch.x, batch.mask, batch.t + 100.0, batch.lengths)
        torch.testing.assert_close(model.initial_posterior_of(shifted)[0], q, rtol=1e-9,
                                   atol=1e-9)
        for b, k in ((0, 5), (1, 3), (2, 0)):           # last valid steps and a first one
            d = int(batch.mask[b, k].nonzero()[0, 0])
            x = batch.x.clone()
            x[b, k, d] += 1.0
            moved = model.initial_posterior_of(SequenceBatch(x, batch.mask, batch.t,
                                                             batch.lengths))[0]
            assert not torch.allclose(moved[b], q[b]), (b, k)
            torch.testing.assert_close(moved[[i for i in range(3) if i != b]],
                                       q[[i for i in range(3) if i != b]])
        t = batch.t.clone()
        t[0, 2] += 0.05                                   # one gap longer, the next shorter
        moved = model.initial_posterior_of(SequenceBatch(batch.x, batch.mask, t,
                                                         batch.lengths))[0]
        assert not torch.allclose(moved[0], q[0])


def test_config_errors_are_one_line():
    for bad in ({"solver": "dopri5", "dt": 0.1}, {"solver": "rk45"}, {"encoder_solver": "dopri5"},
                {"rtol": -1.0}, {"latent_dim": 0}, {"checkpoint_every": 0},
                {"observation": "bernoulli", "free_emission_variance": True}):
        with pytest.raises(ConfigError) as info:
            LatentODEConfig(**bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no control inputs"):
        LatentODE(LatentODEConfig(), D, input_dim=1)


@pytest.mark.parametrize("segment_steps", [None, 2])
def test_checkpointed_training_gradients_equal_plain_ones(segment_steps):
    batch = irregular_batch(5)
    grads = []
    for every in (None, 2):
        torch.manual_seed(0)
        model = LatentODE(LatentODEConfig(latent_dim=3, checkpoint_every=every,
                                          segment_steps=segment_steps, random_phase=False),
                          D).to(F64)
        noise = torch.randn(1, 3, *((3,) if segment_steps else ()), 3, dtype=F64)
        model.elbo(batch, z0_noise=noise).loss().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ multiple shooting
def segmented_model(M: int = 2, jump_std: float | None = 0.4, **overrides) -> LatentODE:
    """The linear model with segments of M observation times and a fixed jump std (and
    its own segments while training too)."""
    return linear_model(segment_steps=M, jump_std=jump_std,
                        **{"random_phase": False, **overrides})


def dense_log_weight(model: LatentODE, batch: SequenceBatch, b: int, s: torch.Tensor,
                     q_mean: torch.Tensor, q_var: torch.Tensor) -> torch.Tensor:
    """log p(x_b, s) - log q(s | x_b) for the linear model, segment by segment, written
    out: z(t) = g(t - tau_k) s_k + h(t - tau_k) on segment k, s_0 ~ N(0, 1),
    s_k ~ N(z_{k-1}(tau_k), jump_std^2)."""
    M, n = model.config.segment_steps, int(batch.lengths[b])
    jv, total = model.config.jump_std ** 2, torch.zeros((), dtype=F64)
    normal = lambda x, m, v: -0.5 * (torch.log(2 * math.pi * torch.as_tensor(v, dtype=F64))
                                     + (x - m) ** 2 / v)
    for k in range(-(-n // M)):
        tau = batch.t[b, k * M]
        if k == 0:
            total = total + normal(s[0], 0.0, 1.0)
        else:
            g, h = latent_mean_map(tau, batch.t[b, (k - 1) * M])
            total = total + normal(s[k], g * s[k - 1] + h, jv)
        total = total - normal(s[k], q_mean[k], q_var[k])
        for i in range(k * M, min(n, k * M + M)):
            g, h = latent_mean_map(batch.t[b, i], tau)
            z = g * s[k] + h
            m = batch.mask[b, i]
            total = total + normal(batch.x[b, i], z * C.to(F64) + OFFSET.to(F64),
                                   NOISE.to(F64) ** 2)[m].sum()
    return total


def test_segments_longer_than_every_sequence_are_the_one_path_model():
    """segment_steps >= the longest length: one segment, the same terms as without."""
    batch = irregular_batch(6)
    noise = torch.randn(3, 3, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    model = linear_model()
    one = model.elbo(batch, 3, z0_noise=noise)
    for M in (6, 50):
        segmented = segmented_model(M)
        segmented.load_state_dict(model.state_dict())
        seg = segmented.elbo(batch, 3, z0_noise=noise[:, :, None])
        torch.testing.assert_close(seg.log_lik, one.log_lik, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(seg.kl, one.kl, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("M", [1, 2, 4])
def test_segment_terms_match_the_written_out_linear_model(M):
    """The ELBO's likelihood and the IWAE's log weights of given draws equal the linear
    model written out segment by segment; the ELBO's KL is the closed form averaged over
    the arrival of the drawn previous segment."""
    model, batch = segmented_model(M), irregular_batch(7)
    S = -(-int(batch.lengths.max()) // M)
    noise = torch.randn(1, 3, S, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        prepared = model._prepare(batch)
        s, z, arrive, q_mean, q_var = model.segment_paths(prepared, 1, noise)
        valid = model.segment_starts(prepared)[1]
        log_w = model.emission_log_prob(prepared, z) + model.segment_log_ratio(
            s, arrive, q_mean, q_var, valid)
        terms = model.elbo(batch, 1, z0_noise=noise)
    for b in range(3):
        want = dense_log_weight(model, batch, b, s[0, b, :, 0], q_mean[b, :, 0], q_var[b, :, 0])
        torch.testing.assert_close(log_w[0, b], want, rtol=1e-7, atol=1e-7)
    # the ELBO with the KL in closed form: log w = log_lik - kl + (a zero-mean term in s)
    n_seg = valid.sum(1)
    assert int(n_seg[1]) == -(-4 // M)
    kl0 = 0.5 * (q_var[:, 0, 0] + q_mean[:, 0, 0] ** 2 - 1 - q_var[:, 0, 0].log())
    jv = model.config.jump_std ** 2
    kl_jumps = 0.5 * (math.log(jv) - q_var[:, 1:, 0].log()
                      + (q_var[:, 1:, 0] + (q_mean[:, 1:, 0] - arrive[0, :, :, 0]) ** 2) / jv - 1)
    want_kl = kl0 + torch.where(valid[:, 1:], kl_jumps, 0.0).sum(1)
    torch.testing.assert_close(terms.kl, want_kl, rtol=1e-9, atol=1e-9)


def dense_segments(batch: SequenceBatch, b: int, M: int, jump_std: float):
    """The linear model with segments is linear-Gaussian in (s, x): log p(x_b) and the
    marginal posterior mean and variance of each s_k, from dense covariances."""
    n = int(batch.lengths[b])
    S = -(-n // M)
    # s = mean_s + A e with e ~ N(0, I): s_0 = e_0, s_k = g_k s_{k-1} + h_k + jump_std e_k
    mean_s, A = torch.zeros(S, dtype=F64), torch.zeros(S, S, dtype=F64)
    A[0, 0] = 1.0
    for k in range(1, S):
        g, h = latent_mean_map(batch.t[b, k * M], batch.t[b, (k - 1) * M])
        mean_s[k], A[k] = g * mean_s[k - 1] + h, g * A[k - 1]
        A[k, k] = jump_std
    rows, means, noise = [], [], []
    for i in range(n):
        k = i // M
        g, h = latent_mean_map(batch.t[b, i], batch.t[b, k * M])
        for d in range(D):
            if batch.mask[b, i, d]:
                rows.append(C[d].to(F64) * g * A[k])
                means.append(C[d].to(F64) * (g * mean_s[k] + h) + OFFSET[d].to(F64))
                noise.append(NOISE[d].to(F64) ** 2)
    G, means, noise = torch.stack(rows), torch.stack(means), torch.stack(noise)
    x = batch.x[b, :n][batch.mask[b, :n]]
    cov_x = G @ G.T + torch.diag(noise)
    cov_sx = A @ A.T @ torch.linalg.solve(A, torch.eye(S, dtype=F64)).T @ G.T  # Cov(s, x)
    post_mean = mean_s + cov_sx @ torch.linalg.solve(cov_x, x - means)
    post_cov = A @ A.T - cov_sx @ torch.linalg.solve(cov_x, cov_sx.T)
    return MultivariateNormal(means, cov_x).log_prob(x), post_mean, post_cov.diagonal()


class MarginalPosteriorODE(LatentODE):
    """The linear model with segments, q(s_k | x) the exact marginal posteriors."""

    def segment_posterior_of(self, batch, phase=0):
        assert phase == 0
        M, S = self.config.segment_steps, len(self.segment_starts(batch)[0])
        means = torch.zeros(batch.batch_size, S, 1, dtype=F64)
        variances = torch.ones(batch.batch_size, S, 1, dtype=F64)
        for b in range(batch.batch_size):
            _, mean, var = dense_segments(batch, b, M, self.config.jump_std)
            means[b, :len(mean), 0], variances[b, :len(var), 0] = mean, var
        return means, variances


def test_segment_iwae_converges_to_the_exact_log_likelihood():
    """log p(x) in closed form (dense covariance of the observed entries); with q the
    exact marginal posteriors of the segments' states (mean-field, so not exact), the
    IWAE bound with k = 4000 is within 0.01 of it (0.0044 at most over four seeds)."""
    model, batch = segmented_model(2, jump_std=0.5), irregular_batch(8)
    exact = MarginalPosteriorODE(model.config, D).to(F64)
    exact.load_state_dict(model.state_dict())
    log_px = torch.stack([dense_segments(batch, b, 2, 0.5)[0] for b in range(3)])
    torch.manual_seed(0)
    torch.testing.assert_close(exact.log_likelihood_bound(batch, 4000), log_px, rtol=0,
                               atol=0.01)


def test_forecasts_and_samples_jump_every_m_median_steps_in_time():
    """With a zero field the path is constant but for the jumps: a forecast's variance
    grows by C^2 jump_std^2 at each time tau_last + k M dt (tau_last the last segment's
    first time, dt the sequence's median step, k >= 1, after the last time), whichever
    other times are asked for; a prior sample's latent variance is 1 + (number of jump
    times t_0 + k M dt up to t) jump_std^2 (on a regular grid: a segment's first time)."""
    model = segmented_model(3, jump_std=0.7, refine_steps=0)     # the encoder's q
    with torch.no_grad():
        model.field.net[0].weight.zero_()
        model.field.net[0].bias.zero_()
    batch = irregular_batch(9)
    model.config.n_predict_samples = 8000
    t_last = batch.t[torch.arange(3), batch.lengths - 1][:, None]
    ahead = torch.tensor([[0.2, 0.5, 0.9, 1.3, 1.6, 2.7]], dtype=F64)
    t_future = t_last + ahead
    torch.manual_seed(2)
    with torch.no_grad():
        fc = model.forecast(batch, t_future)
        far = model.forecast(batch, t_future[:, [1, 5]])        # fewer times asked for
        q_mean, q_var = model.segment_posterior_of(model._prepare(batch))
    for b in range(3):
        n = int(batch.lengths[b])
        k_last = (n - 1) // 3
        tau, dt = batch.t[b, 3 * k_last], batch.t[b, :n].diff().quantile(0.5)
        jump_times = [tau + k * 3 * dt for k in range(1, 50) if tau + k * 3 * dt > t_last[b, 0]]
        jumps = torch.tensor([sum(1 for s in jump_times if s <= t) for t in t_future[b]],
                             dtype=F64)
        assert 0 < int(jumps[-1]) and int(jumps[0]) < int(jumps[-1])   # the test sees jumps
        want = ((float(q_var[b, k_last, 0]) + 0.49 * jumps)[:, None] * C.to(F64) ** 2
                + NOISE.to(F64) ** 2).sqrt()
        torch.testing.assert_close(fc.std[b], want, rtol=0.03, atol=0)
        torch.testing.assert_close(far.std[b], want[[1, 5]], rtol=0.03, atol=0)
        want_mean = float(q_mean[b, k_last, 0]) * C.to(F64) + OFFSET.to(F64)
        assert bool(((fc.mean[b] - want_mean).abs() < 0.05).all())
    torch.manual_seed(3)
    with torch.no_grad():
        z = model.sample_latents(20000, torch.linspace(0, 2, 8, dtype=F64))[..., 0]
    want = 1 + 0.49 * torch.tensor([i // 3 for i in range(8)], dtype=F64)
    torch.testing.assert_close(z.var(0), want, rtol=0.04, atol=0)


def test_training_draws_the_segments_phase_and_evaluation_keeps_the_models():
    """random_phase: while training, segments start at 0, p, p + M, ... for a phase p drawn
    in [0, M); the path at each observation follows the segment that holds it (with a
    zero field, the segment's own state), and each segment arrives where the next starts."""
    model = segmented_model(3, random_phase=True)
    with torch.no_grad():
        model.field.net[0].weight.zero_()
        model.field.net[0].bias.zero_()
    batch = model._prepare(irregular_batch(10))                   # lengths 6, 4, 5
    torch.manual_seed(0)
    phases = {model.draw_phase() for _ in range(60)}
    assert phases == {0, 1, 2}
    model.eval()
    assert {model.draw_phase() for _ in range(20)} == {0}
    model.train()
    for phase, starts in ((0, [0, 3]), (1, [0, 1, 4]), (2, [0, 2, 5])):
        got, valid = model.segment_starts(batch, phase)
        assert got.tolist() == starts
        assert valid.tolist() == [[True] * len(starts),
                                  [s < 4 for s in starts], [s < 5 for s in starts]]
        with torch.no_grad():
            s, path, arrive, _, _ = model.segment_paths(batch, 2, phase=phase)
        for b in range(3):
            for i in range(int(batch.lengths[b])):
                k = max(j for j, start in enumerate(starts) if start <= i)
                torch.testing.assert_close(path[:, b, i], s[:, b, k])
        torch.testing.assert_close(arrive, s[:, :, :-1])            # constant paths


def test_segment_config_and_training_windows():
    with pytest.raises(ConfigError, match="needs segment_steps"):
        LatentODEConfig(segment_steps=None, jump_std=0.5)
    for bad in ({"segment_steps": 0}, {"segment_steps": 4, "jump_std": 0.0},
                {"hide_from_encoder": 1.0}):
        with pytest.raises(ConfigError) as info:
            LatentODEConfig(**bad)
        assert "\n" not in str(info.value)
    # one path from one initial state grows its windows; segments restart the path
    assert LatentODEConfig(segment_steps=None).horizon_warmup
    assert not LatentODEConfig().horizon_warmup and LatentODEConfig().segment_steps == 5
    learned = LatentODE(LatentODEConfig(segment_steps=4), D)
    assert learned.jump_variance is not None
    assert LatentODE(LatentODEConfig(segment_steps=4, jump_std=0.3), D).jump_variance is None


def test_a_config_saved_before_segments_loads_the_one_path_model():
    """A run's saved model config without segment_steps predates the segments: it loads
    as the one-path model it trained, not as the segmented default."""
    from dynvae.train.schema import dataclass_from
    old = dataclass_from(LatentODEConfig, {"latent_dim": 3, "solver": "rk4", "dt": 0.1}, "x")
    assert old.segment_steps is None and old.horizon_warmup
    assert old.refine_steps == 0                 # and predicts with the encoder's q alone
    new = dataclass_from(LatentODEConfig, {"latent_dim": 3, "segment_steps": 5,
                                           "refine_steps": 50}, "x")
    assert new.segment_steps == 5 and new.refine_steps == 50
    assert dataclass_from(LatentODEConfig, {"segment_steps": None}, "x").segment_steps is None
    assert LatentODEConfig().segment_steps == 5                  # the class default stays


def test_refinement_at_prediction_time_reaches_the_exact_posterior():
    """The one-path linear model: the Gaussian q that maximises a sequence's ELBO is its
    exact posterior, so refining the (untrained) encoder's q by Adam on each sequence's
    ELBO lands there, and forecasts follow from it."""
    torch.manual_seed(0)                          # the encoder's weights, then the draws
    model = linear_model(refine_steps=300, refine_lr=0.05, rtol=1e-7, atol=1e-9)
    batch = irregular_batch(3)
    prepared = model._prepare(batch)
    with torch.no_grad():
        start_mean, start_var = model.initial_posterior_of(prepared)
    mean, var = model.refined(prepared, model.initial_posterior_of(prepared))
    for b in range(3):
        _, want_mean, want_var = exact_posterior(batch, b)
        assert float(start_var[b, 0] / want_var) > 5      # the encoder starts far off
        assert abs(float(mean[b, 0] - want_mean)) < 0.25 * float(want_var.sqrt())
        assert 0.7 < float(var[b, 0] / want_var) < 1.4
    # no refinement: the encoder's q itself
    model.config.refine_steps = 0
    got = model.refined(prepared, model.initial_posterior_of(prepared))
    torch.testing.assert_close(got, (start_mean, start_var), rtol=0, atol=0)


@pytest.mark.parametrize("segment_steps", [2, None])
def test_refinement_raises_each_sequences_elbo_and_leaves_the_networks(segment_steps):
    """With segments too: the refined q has a higher ELBO for every sequence than the
    encoder's (K = 4000 draws each); the networks' parameters and gradients are untouched."""
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(latent_dim=2, encoder_hidden=8, field_hidden=(8,),
                                      emission_hidden=(8,), segment_steps=segment_steps,
                                      refine_steps=30), D).to(F64).eval()
    batch = model._prepare(irregular_batch(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = (model.segment_posterior_of(batch) if segment_steps
         else model.initial_posterior_of(batch))
    refined = model.refined(batch, q)
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    with torch.no_grad():
        scores = []
        for posterior in (q, refined):
            torch.manual_seed(1)
            log_lik, kl = model.elbo_parts(batch, 4000, posterior=posterior)
            scores.append(log_lik - kl.sum(-1))
    assert bool((scores[1] > scores[0]).all()), scores     # the same draws for both
    assert float((scores[1] - scores[0]).mean()) > 0.05


@pytest.mark.parametrize("bad", [{"refine_steps": -1}, {"refine_steps": True},
                                 {"refine_steps": 2.5}, {"refine_lr": 0.0}])
def test_refinement_config_errors(bad):
    with pytest.raises(ConfigError, match="refine_"):
        LatentODEConfig(**bad)


@pytest.mark.parametrize("M", [2, 5])
def test_a_forecast_refines_the_last_segment_on_the_last_two_alone(M):
    """The batch of each sequence's last two segments gives the last segment the same
    path to the last time and the same ELBO gradient as the whole sequence: checked
    with every q's variance at 1e-24, so that each draw is q's mean (lengths 6, 4, 5:
    with M = 5 two sequences have one segment only)."""
    model = segmented_model(M, jump_std=0.6, refine_steps=0)
    batch = model._prepare(irregular_batch(5))
    rows, last = torch.arange(3), batch.lengths - 1
    with torch.no_grad():
        q_mean, q_var = model.segment_posterior_of(batch)
    q_mean = q_mean + 0.3 * torch.randn_like(q_mean)
    point = (q_mean, torch.full_like(q_var, 1e-24))
    model.segment_posterior_of = lambda b, phase=0: point
    with torch.no_grad():
        torch.testing.assert_close(model.forecast_start(batch, 2),
                                   model.paths(batch, 2)[:, rows, last], rtol=1e-9, atol=1e-9)
    sub, at, segments = model.last_segments(batch)
    assert sub.n_steps <= 2 * M and segments[:, 1].tolist() == ((last) // M).tolist()
    mean = q_mean.clone().requires_grad_(True)
    log_lik, kl = model.elbo_parts(batch, 1, posterior=(mean, point[1]))
    (full,) = torch.autograd.grad((kl.sum(-1) - log_lik).sum(), mean)
    sub_mean = q_mean[rows[:, None], segments].clone().requires_grad_(True)
    log_lik, kl = model.elbo_parts(sub, 1, posterior=(sub_mean, point[1][:, :2]))
    (part,) = torch.autograd.grad((kl.sum(-1) - log_lik).sum(), sub_mean)
    torch.testing.assert_close(part[rows, at], full[rows, segments[rows, 1]], rtol=1e-7,
                               atol=1e-9)
