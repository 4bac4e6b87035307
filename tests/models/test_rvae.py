"""RVAE: the causal encoder never sees the future, the non-causal one sees x_{t:T} (the
true posterior's dependencies), and a linear-Gaussian RVAE with either encoder agrees
with the dense Gaussian oracle on identical inputs."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.common import observation_features
from dynvae.nn.recurrent import run_gru
from tests.models.family import build, check_dense_oracle, constant_features
from tests.models.test_dkf_contract import make_batch, seeded
from tests.reference.dense_dvae import (
    Affine,
    NoiseBank,
    head_constant_var,
    head_mean,
    swap_grus,
)


def linear_rvae(encoder: str, seed: int = 0):
    m = swap_grus(build(f"rvae-{encoder}", U=1, mlp_hidden=(), free_emission_variance=True),
                  torch.Generator().manual_seed(seed))
    with torch.no_grad():       # q's variance may read x (g_t), not the drawn z (s_t)
        m.encoder_head.head.variance.weight[:, m.observation_summary.out_features:] = 0.0
    return m


def rvae_dense(model, batch, b):
    """p(x_obs, z) and q(z | x) of sequence b by replaying RVAE's equations."""
    L, Z, D = int(batch.lengths[b]), model.config.latent_dim, model.data_dim
    x, m = batch.x[b, :L], batch.mask[b, :L]
    N = L * (Z + D)
    bank, head = NoiseBank(N), model.observation.head
    h = Affine.constant(torch.zeros(model.config.hidden_size, dtype=x.dtype), N)
    xs, zs = [], []
    for t in range(L):
        z = bank.draw(torch.ones(Z, dtype=x.dtype))                       # z_t ~ N(0, I)
        h = model.decoder_rnn.step(Affine.cat([z, Affine.constant(batch.u[b, t], N)]), h)
        xs.append(bank.gaussian(head_mean(head, h), head_constant_var(head)).select(m[t]))
        zs.append(z)
    summary = model.observation_summary
    fill = "carry" if model.config.encoder == "causal" else "steps"
    features = constant_features(batch, b, L * Z, fill=fill)
    if model.config.encoder == "causal":
        g = summary.forward_rnn.run(features, L * Z)                       # x_{1:t}
    else:
        g = summary.backward_rnn.run(features, L * Z, reverse=True)        # x_{t:T}
    q_bank, enc = NoiseBank(L * Z), model.encoder_head.head
    s = Affine.constant(torch.zeros(model.config.encoder_hidden, dtype=x.dtype), L * Z)
    q = []
    for t in range(L):
        inputs = Affine.cat([g[t], s])
        q.append(q_bank.gaussian(head_mean(enc, inputs), head_constant_var(enc, inputs.mean)))
        s = model.latent_rnn.step(q[-1], s)                                # z_{1:t}
    return Affine.cat(xs + zs), Affine.cat(q), x[m]


@pytest.mark.parametrize("encoder", ["non-causal", "causal"])
def test_linear_rvae_agrees_with_the_dense_oracle(encoder):
    model = linear_rvae(encoder, seed=5)
    batch = make_batch(B=3, T=5, U=1, lengths=(5, 3, 4), seed=6)
    check_dense_oracle(model, batch, rvae_dense,
                       lambda paths, b: paths.z[:, b, :int(batch.lengths[b])].flatten(1))


# step t of the encoder's summary of x may read these steps (T = 6)
VISIBLE = {"causal": lambda t: set(range(t + 1)), "non-causal": lambda t: set(range(t, 6))}


@pytest.mark.parametrize("encoder", ["non-causal", "causal"])
def test_encoder_sees_exactly_its_part_of_the_sequence(encoder):
    m, batch = build(f"rvae-{encoder}"), make_batch(lengths=(6, 6, 6))
    features = observation_features(batch)
    t = 2
    base = m.observation_summary(features, batch.lengths)[:, t]
    for s in range(6):
        other = features.clone()
        other[:, s, :2] += torch.randn(3, 2, dtype=other.dtype)
        g = m.observation_summary(other, batch.lengths)[:, t]
        assert (not torch.allclose(g, base, rtol=0, atol=1e-12)) == (s in VISIBLE[encoder](t))


def test_causal_encoder_draws_the_same_past_whatever_the_future():
    m, batch = build("rvae-causal"), make_batch(lengths=(6, 6, 6))
    x = batch.x.clone()
    x[:, 4:] += 1.0
    later = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
    a, b = seeded(lambda: m.path_terms(batch, 3)), seeded(lambda: m.path_terms(later, 3))
    torch.testing.assert_close(a.z[:, :, :4], b.z[:, :, :4], rtol=0, atol=0)
    torch.testing.assert_close(a.params[0][:, :, :4], b.params[0][:, :, :4], rtol=0, atol=0)
    assert not torch.allclose(a.z[:, :, 4], b.z[:, :, 4])


def test_non_causal_encoder_reads_the_future():
    m, batch = build("rvae-non-causal"), make_batch(lengths=(6, 6, 6))
    x = batch.x.clone()
    x[:, 5] += torch.where(batch.mask[:, 5], 1.0, 0.0)
    later = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
    a, b = seeded(lambda: m.path_terms(batch, 3)), seeded(lambda: m.path_terms(later, 3))
    assert not torch.allclose(a.z[:, :, 0], b.z[:, :, 0])


def test_decoder_reads_the_latents_up_to_t_only():
    """p(x_t | z_{1:t}): the emission at step t ignores z_{t+1:T}."""
    m = build("rvae-causal")
    z = torch.randn(2, 6, 3, dtype=torch.float64)
    later = z.clone()
    later[:, 3:] += 1.0
    h, h_later = run_gru(m.decoder_rnn, z), run_gru(m.decoder_rnn, later)
    torch.testing.assert_close(h[:, :3], h_later[:, :3], rtol=0, atol=0)
    assert not torch.allclose(h[:, 3], h_later[:, 3])
