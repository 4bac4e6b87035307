"""Analytic gradients of the bounds (through the encoders, the reparametrised samples
and the closed-form KL) against finite differences, in float64."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.models.kvae import KVAE, KVAEConfig
from dynvae.models.latent_ode import LatentODE, LatentODEConfig
from dynvae.models.vrnn import VRNN, VRNNConfig
from tests.models.test_dkf_contract import make_batch

MODELS = {
    "dkf-backward": lambda: DeepKalmanFilter(DKFConfig(
        latent_dim=2, encoder_hidden=3, transition="gated", transition_hidden=(3,),
        emission_hidden=(3,), initial_prior="learned"), 2),
    "dkf-bidirectional": lambda: DeepKalmanFilter(DKFConfig(
        latent_dim=2, encoder="bidirectional", encoder_hidden=3, transition_hidden=(3,),
        emission_hidden=(3,)), 2),
    "vrnn": lambda: VRNN(VRNNConfig(latent_dim=2, hidden_size=3, feature_size=3,
                                    mlp_hidden=(3,)), 2),
    # the Kalman likelihood of the pseudo-observations, through the mixing LSTM
    "kvae": lambda: KVAE(KVAEConfig(state_dim=2, pseudo_dim=2, n_matrices=2,
                                    dynamics_hidden=3, encoder_hidden=(3,),
                                    emission_hidden=(3,)), 2),
    # the ODE-RNN encoder and the RK4 solve of the latent ODE
    "latent-ode": lambda: LatentODE(LatentODEConfig(
        latent_dim=2, encoder_hidden=3, encoder_field_hidden=(3,), field_hidden=(3,),
        emission_hidden=(3,), solver="rk4", dt=0.4, encoder_solver="rk4"), 2),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_elbo_gradient_with_respect_to_the_data(name):
    model = MODELS[name]().double()
    batch = make_batch(B=2, T=4, lengths=(4, 3))

    def bound(x):
        torch.manual_seed(3)      # the same noise in every evaluation
        b = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
        return model.elbo(b, n_samples=2).elbo()

    x = batch.x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(bound, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
