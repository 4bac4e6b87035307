"""DSAE: q(v | x) reads every valid step and nothing beyond, q(z_t | x, v) reads the whole
sequence and v, and a linear-Gaussian DSAE agrees with the dense Gaussian oracle."""

import torch

from dynvae.data.batch import SequenceBatch
from tests.models.family import build, check_dense_oracle, constant_features
from tests.models.test_dkf_contract import make_batch, seeded
from tests.reference.dense_dvae import (
    Affine,
    NoiseBank,
    head_constant_var,
    head_mean,
    swap_grus,
)


def linear_dsae(seed: int = 0):
    m = swap_grus(build("dsae", U=1, mlp_hidden=(), free_emission_variance=True),
                  torch.Generator().manual_seed(seed))
    with torch.no_grad():   # variances that do not depend on a random quantity
        m.prior_head.variance.weight.zero_()
        m.dynamic_head.head.variance.weight.zero_()
    return m


def dsae_dense(model, batch, b):
    """p(x_obs, v, z) and q(v, z | x) of sequence b by replaying DSAE's equations."""
    L, Z, V, D = int(batch.lengths[b]), model.config.latent_dim, model.config.static_dim, \
        model.data_dim
    x, m = batch.x[b, :L], batch.mask[b, :L]
    N = V + L * (Z + D)
    bank, head = NoiseBank(N), model.observation.head
    v = bank.draw(torch.ones(V, dtype=x.dtype))                           # v ~ N(0, I)
    g = Affine.constant(torch.zeros(model.config.hidden_size, dtype=x.dtype), N)
    z = Affine.constant(torch.zeros(Z, dtype=x.dtype), N)
    xs, zs = [], []
    for t in range(L):
        u = Affine.constant(batch.u[b, t], N)
        g = model.prior_rnn.step(Affine.cat([z, u]), g)
        z = bank.gaussian(head_mean(model.prior_head, g), head_constant_var(model.prior_head))
        x_t = bank.gaussian(head_mean(head, Affine.cat([z, v, u])), head_constant_var(head))
        xs.append(x_t.select(m[t]))
        zs.append(z)
    n_q = V + L * Z
    q_bank, features = NoiseBank(n_q), constant_features(batch, b, n_q, fill="steps")
    static = model.static_summary
    ends = Affine.cat([static.forward_rnn.run(features, n_q)[L - 1],
                       static.backward_rnn.run(features, n_q, reverse=True)[0]])
    v_head = model.static_head.head
    v_q = q_bank.gaussian(head_mean(v_head, ends), head_constant_var(v_head, ends.mean))
    with_v = [Affine.cat([f, v_q]) for f in features]
    dynamic, z_head = model.dynamic_summary, model.dynamic_head.head
    forward = dynamic.forward_rnn.run(with_v, n_q)
    backward = dynamic.backward_rnn.run(with_v, n_q, reverse=True)
    z_q = [q_bank.gaussian(head_mean(z_head, Affine.cat([f, r])), head_constant_var(z_head))
           for f, r in zip(forward, backward, strict=True)]
    return Affine.cat(xs + [v] + zs), Affine.cat([v_q] + z_q), x[m]


def test_linear_dsae_agrees_with_the_dense_oracle():
    model = linear_dsae(seed=7)
    batch = make_batch(B=3, T=5, U=1, lengths=(5, 3, 4), seed=8)

    def latents(paths, b):
        L = int(batch.lengths[b])
        return torch.cat([paths.state[1][:, b], paths.z[:, b, :L].flatten(1)], 1)
    check_dense_oracle(model, batch, dsae_dense, latents)


def test_static_posterior_reads_every_valid_step_and_nothing_else():
    m, batch = build("dsae"), make_batch(lengths=(6, 4, 5))
    base = torch.cat(m.static_posterior(batch), -1)
    for s in range(6):
        x = batch.x.clone()
        x[:, s] += 1.0
        mask = batch.mask.clone()
        mask[:, s] = batch.valid[:, s, None]
        x = torch.where(mask, x, 0.0)
        q = torch.cat(m.static_posterior(SequenceBatch(x, mask, batch.t, batch.lengths)), -1)
        changed = ~torch.isclose(q, base, rtol=0, atol=1e-12).all(-1)         # (B,)
        assert changed.tolist() == batch.valid[:, s].tolist(), s


def test_dynamic_posterior_reads_the_whole_sequence_and_v():
    m, batch = build("dsae"), make_batch(lengths=(6, 6, 6))
    for s in (0, 5):
        x = batch.x.clone()
        x[:, s] += torch.where(batch.mask[:, s], 1.0, 0.0)
        other = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
        a, b = seeded(m.path_terms, batch, 2), seeded(m.path_terms, other, 2)
        assert not torch.allclose(a.z[:, :, 2], b.z[:, :, 2]), s
    # the same x with a different v: different q(z_t | x, v)
    a = seeded(lambda: m.path_terms(batch, 2), seed=1)
    b = seeded(lambda: m.path_terms(batch, 2), seed=2)
    assert not torch.allclose(a.state[1], b.state[1])


def test_forecasts_keep_the_static_latent_of_each_path():
    m, batch = build("dsae"), make_batch(lengths=(6, 4, 5))
    paths = seeded(lambda: m.path_terms(batch, 3))
    g, z, v = m.start_after(paths, batch)
    torch.testing.assert_close(v, paths.state[1].reshape(9, -1))
    torch.testing.assert_close(z.reshape(3, 3, -1)[:, 1], paths.z[:, 1, 3])


def test_kl_dims_are_the_dynamic_dimensions_then_the_static_ones():
    """ELBOTerms.kl_dims (B, Z + V): columns Z.. are KL(q(v | x) || N(0, I)) of each static
    dimension, the first Z the KL of each z_t dimension summed over the valid steps
    (averaged over the K paths); the collapse plot names them z[i] and v[j]."""
    from dynvae.gaussian import kl_diag_gaussians
    model, batch = build("dsae", U=1), make_batch(U=1)
    Z, V = model.config.latent_dim, model.config.static_dim
    terms = seeded(lambda: model.elbo(batch, 3))
    assert terms.kl_dims.shape == (batch.batch_size, Z + V)
    v_mean, v_var = model.static_posterior(model.prepare(batch))
    static = kl_diag_gaussians(v_mean, v_var, torch.zeros_like(v_mean), torch.ones_like(v_var))
    torch.testing.assert_close(terms.kl_dims[:, Z:], static, rtol=1e-12, atol=1e-12)
    paths = seeded(lambda: model.path_terms(batch, 3))             # the same draws
    torch.testing.assert_close(terms.kl_dims[:, :Z].sum(-1),
                               paths.kl.mean(0) - static.sum(-1), rtol=1e-12, atol=1e-12)
    assert model.kl_dim_labels(Z + V) == [f"z[{i}]" for i in range(Z)] + \
        [f"v[{j}]" for j in range(V)]


def test_the_latent_plot_says_the_static_latents_are_not_drawn():
    """latents.png draws the paths z_t (_path_latents); its title names the static v."""
    from dynvae.train.latents import latent_trajectories
    m = build("dsae")
    batch = make_batch(seed=0)
    mean, _ = latent_trajectories(m, batch)
    assert mean.shape[-1] == m.config.latent_dim
    assert f"the {m.config.static_dim} static latents v" in m.latent_plot_note
