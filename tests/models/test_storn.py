"""STORN: the encoder sees x_{1:t} only (x_{1:T} with encoder="bidirectional"), the
generative pass is causal, and a linear-Gaussian STORN agrees with the dense Gaussian
oracle on identical inputs."""

import pytest
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


def storn_dense(model, batch, b):
    """p(x_obs, z) and q(z | x) of sequence b by replaying STORN's equations (module
    docstring) on affine values."""
    L, Z, D = int(batch.lengths[b]), model.config.latent_dim, model.data_dim
    x, m = batch.x[b, :L], batch.mask[b, :L]
    N = L * (Z + D)
    bank, head = NoiseBank(N), model.observation.head
    h = Affine.constant(torch.zeros(model.config.hidden_size, dtype=x.dtype), N)
    previous = Affine.constant(torch.zeros(2 * D, dtype=x.dtype), N)
    carried = Affine.constant(torch.zeros(D, dtype=x.dtype), N)   # last seen x, per entry
    xs, zs = [], []
    for t in range(L):
        z = bank.draw(torch.ones(Z, dtype=x.dtype))                       # z_t ~ N(0, I)
        u = [] if batch.u is None else [Affine.constant(batch.u[b, t], N)]
        h = model.decoder_rnn.step(Affine.cat([previous, z, *u]), h)
        x_t = bank.gaussian(head_mean(head, h), head_constant_var(head))
        carried = x_t.rows(m[t]) + carried.rows(~m[t])
        previous = Affine.cat([carried, Affine.constant(m[t].to(x.dtype), N)])
        xs.append(x_t.select(m[t]))
        zs.append(z)
    q_bank, enc = NoiseBank(L * Z), model.encoder_head.head
    if model.backward_rnn is None:           # filtering: x_{1:t}, unseen entries carried
        g = model.encoder_rnn.run(constant_features(batch, b, L * Z, fill="carry"), L * Z)
    else:                                    # bidirectional: x_{1:T}, linear fill
        features = constant_features(batch, b, L * Z, fill="steps")
        back = model.backward_rnn.run(features[::-1], L * Z)[::-1]
        g = [Affine.cat([f, r]) for f, r in zip(model.encoder_rnn.run(features, L * Z), back,
                                                 strict=True)]
    q = [q_bank.gaussian(head_mean(enc, g_t), head_constant_var(enc, g_t.mean)) for g_t in g]
    return Affine.cat(xs + zs), Affine.cat(q), x[m]


@pytest.mark.parametrize("encoder", ["filtering", "bidirectional"])
def test_linear_storn_agrees_with_the_dense_oracle(encoder):
    model = swap_grus(build("storn", U=1, mlp_hidden=(), free_emission_variance=True,
                            encoder=encoder), torch.Generator().manual_seed(3))
    batch = make_batch(B=3, T=5, U=1, lengths=(5, 3, 4), seed=4)
    check_dense_oracle(model, batch, storn_dense,
                       lambda paths, b: paths.z[:, b, :int(batch.lengths[b])].flatten(1))


@pytest.mark.parametrize("encoder", ["filtering", "bidirectional"])
def test_encoder_sees_the_past_and_present_or_the_whole_sequence(encoder):
    m, batch = build("storn", encoder=encoder), make_batch(lengths=(6, 6, 6))
    t = 3
    base = torch.cat(m.posterior(batch), -1)[:, t]
    for s in range(6):
        x = batch.x.clone()
        x[:, s] += torch.where(batch.mask[:, s], 1.0, 0.0)
        q = torch.cat(m.posterior(SequenceBatch(x, batch.mask, batch.t, batch.lengths)), -1)
        sees = not torch.allclose(q[:, t], base, rtol=0, atol=1e-12)
        assert sees == (s <= t or encoder == "bidirectional"), s


def test_generative_pass_is_causal():
    m, batch = build("storn"), make_batch(lengths=(6, 6, 6))
    x = batch.x.clone()
    x[:, 4:] += 1.0
    later = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
    a, b = seeded(lambda: m.path_terms(batch, 3)), seeded(lambda: m.path_terms(later, 3))
    torch.testing.assert_close(a.z[:, :, :4], b.z[:, :, :4], rtol=0, atol=0)
    torch.testing.assert_close(a.params[0][:, :, :4], b.params[0][:, :, :4], rtol=0, atol=0)
    assert not torch.allclose(a.params[0][:, :, 4], b.params[0][:, :, 4])

