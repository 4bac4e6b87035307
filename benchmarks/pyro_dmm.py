"""A Deep Markov Model written in Pyro, the peer baseline of the DKF benchmarks.

Architecture of Krishnan et al. (2017), "Structured inference networks for nonlinear
state space models" (the one Pyro's DMM tutorial follows): gated transition, MLP
Bernoulli emitter, and a combiner q(z_t | z_{t-1}, h_t) fed by an RNN run backwards
over x_{t:T}; trained with Pyro's SVI on the ELBO, KL warm-up by poutine.scale.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): a gate mixes a linear and a nonlinear proposal of the mean."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim),
                                  nn.Sigmoid())
        self.proposal = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(),
                                      nn.Linear(hidden, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.scale = nn.Linear(z_dim, z_dim)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        g = self.gate(z)
        proposed = self.proposal(z)
        loc = (1 - g) * self.linear(z) + g * proposed
        return loc, nn.functional.softplus(self.scale(torch.relu(proposed)))


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t) with h_combined = (tanh(W z_{t-1}) + h_t) / 2."""

    def __init__(self, z_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.z_to_h = nn.Linear(z_dim, rnn_dim)
        self.loc = nn.Linear(rnn_dim, z_dim)
        self.scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        combined = 0.5 * (torch.tanh(self.z_to_h(z)) + h)
        return self.loc(combined), nn.functional.softplus(self.scale(combined))


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, F) -> each sequence's first ``lengths[b]`` steps in reverse order."""
    T = x.shape[1]
    steps = torch.arange(T, device=x.device)[None, :]                     # (1, T)
    idx = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return x.gather(1, idx[..., None].expand_as(x))


class PyroDMM(nn.Module):
    """model/guide pair over binary x (B, T, D) with a (B, T) bool mask of valid steps."""

    def __init__(self, data_dim: int = 88, z_dim: int = 32, emission_dim: int = 64,
                 transition_dim: int = 64, rnn_dim: int = 128) -> None:
        super().__init__()
        self.emitter = nn.Sequential(nn.Linear(z_dim, emission_dim), nn.ReLU(),
                                     nn.Linear(emission_dim, emission_dim), nn.ReLU(),
                                     nn.Linear(emission_dim, data_dim))
        self.transition = GatedTransition(z_dim, transition_dim)
        self.combiner = Combiner(z_dim, rnn_dim)
        self.rnn = nn.GRU(data_dim, rnn_dim, batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, x: Tensor, valid: Tensor, kl_scale: float = 1.0) -> None:
        pyro.module("dmm", self)
        B, T, _ = x.shape
        z_prev = self.z_0.expand(B, -1)
        with pyro.plate("sequences", B):
            for t in pyro.markov(range(T)):
                loc, scale = self.transition(z_prev)
                with poutine.scale(scale=kl_scale):
                    z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1)
                                         .mask(valid[:, t]))
                pyro.sample(f"x_{t}", dist.Bernoulli(logits=self.emitter(z_prev)).to_event(1)
                            .mask(valid[:, t]), obs=x[:, t])

    def guide(self, x: Tensor, valid: Tensor, kl_scale: float = 1.0) -> None:
        pyro.module("dmm", self)
        B, T, _ = x.shape
        lengths = valid.sum(1)
        h0 = self.h_0.expand(1, B, -1).contiguous()
        h_rev, _ = self.rnn(reverse_within_length(x, lengths), h0)
        h = reverse_within_length(h_rev, lengths)                            # h_t sees x_{t:T}
        z_prev = self.z_q_0.expand(B, -1)
        with pyro.plate("sequences", B):
            for t in pyro.markov(range(T)):
                loc, scale = self.combiner(z_prev, h[:, t])
                with poutine.scale(scale=kl_scale):
                    z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1)
                                         .mask(valid[:, t]))


def log_weights(dmm: PyroDMM, x: Tensor, valid: Tensor) -> Tensor:
    """(B,) log p(x, z) - log q(z | x) for one draw z ~ q (an importance weight)."""
    guide_trace = poutine.trace(dmm.guide).get_trace(x, valid)
    model_trace = poutine.trace(poutine.replay(dmm.model, trace=guide_trace)).get_trace(x, valid)

    def total(trace) -> Tensor:
        out = torch.zeros(x.shape[0], dtype=x.dtype)
        for site in trace.nodes.values():
            if site["type"] == "sample" and site["name"] != "sequences":
                out = out + site["fn"].log_prob(site["value"])
        return out

    return total(model_trace) - total(guide_trace)


@torch.no_grad()
def bounds(dmm: PyroDMM, x: Tensor, valid: Tensor, k: int, chunk: int = 10
           ) -> tuple[Tensor, Tensor]:
    """(B,) ELBO estimate (mean of k log weights) and IWAE bound (log-mean-exp of k)."""
    B = x.shape[0]
    logs = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        lw = log_weights(dmm, x.repeat(n, 1, 1), valid.repeat(n, 1))       # (n B,)
        logs.append(lw.reshape(n, B))
    lw = torch.cat(logs, 0)                                                 # (k, B)
    return lw.mean(0), torch.logsumexp(lw, 0) - math.log(k)


def svi(dmm: PyroDMM, lr: float = 3e-4, clip_norm: float = 10.0) -> pyro.infer.SVI:
    """SVI with ClippedAdam and the Trace_ELBO, as in the published training recipe."""
    optim = pyro.optim.ClippedAdam({"lr": lr, "betas": (0.96, 0.999), "clip_norm": clip_norm})
    return pyro.infer.SVI(dmm.model, dmm.guide, optim, loss=pyro.infer.Trace_ELBO())


def dense(dataset, indices) -> tuple[Tensor, Tensor]:
    """Dense (B, T, D) float32 rolls and (B, T) valid mask of a dynvae SequenceDataset."""
    batch = dataset.to_batch(indices, dtype=torch.float32)
    return batch.x, batch.valid
