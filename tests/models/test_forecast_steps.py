"""Discrete-time forecasts map times to steps on each sequence's own grid: the same map
for every discrete-time model and for ``dynvae forecast``; rows may ask for different
steps; with inputs the steps must be the next H."""

import numpy as np
import pytest
import torch

from dynvae.commands.forecast import future_times
from dynvae.data import Sequence, SequenceDataset
from dynvae.data.batch import SequenceBatch
from dynvae.errors import DataError
from dynvae.models.common import steps_ahead
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.models.vrnn import VRNN, VRNNConfig

F64 = torch.float64


def test_the_cli_grid_and_the_models_grid_agree_on_irregular_sequences():
    # steps 1, 1, 2, 2: the median step is 1.5 (numpy's median of an even count)
    t = np.array([0.0, 1.0, 2.0, 4.0, 6.0])
    data = SequenceDataset([Sequence(t, np.ones((5, 1)), None, "a"),
                            Sequence(np.arange(4.0), np.ones((4, 1)), None, "b")], ["x"])
    t_future = torch.as_tensor(future_times(data, 3))
    assert torch.equal(steps_ahead(data.to_batch(dtype=F64), t_future),
                       torch.tensor([[1, 2, 3], [1, 2, 3]]))


@pytest.mark.parametrize("build", [
    lambda: DeepKalmanFilter(DKFConfig(latent_dim=2, encoder_hidden=4, transition_hidden=(4,),
                                       emission_hidden=(4,), n_predict_samples=3), 1),
    lambda: VRNN(VRNNConfig(latent_dim=2, hidden_size=4, feature_size=3, mlp_hidden=(4,),
                            n_predict_samples=3), 1)], ids=["dkf", "vrnn"])
def test_each_row_gets_its_own_steps(build):
    torch.manual_seed(0)
    model = build().double()
    mask = torch.ones(2, 5, 1, dtype=torch.bool)
    mask[1, 4] = False                                                   # padding of row 1
    x = torch.where(mask, torch.randn(2, 5, 1, dtype=F64), 0.0)
    t = torch.stack([torch.arange(5.0), 10 + 2 * torch.arange(5.0)]).to(F64)   # dt 1 and 2
    batch = SequenceBatch(x, mask, t, torch.tensor([5, 4]))
    # row 0 ends at 4 (dt 1), row 1 at 16 (dt 2): steps (2, 5) and (1, 3)
    asked = torch.tensor([[6.0, 9.0], [18.0, 22.0]], dtype=F64)
    assert torch.equal(steps_ahead(batch, asked), torch.tensor([[2, 5], [1, 3]]))
    torch.manual_seed(1)
    pred = model.forecast(batch, asked)
    torch.manual_seed(1)
    grid = model.forecast(batch, torch.tensor([[5.0, 6, 7, 8, 9], [18, 20, 22, 24, 26]],
                                               dtype=F64))
    torch.testing.assert_close(pred.mean[0], grid.mean[0, [1, 4]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.mean[1], grid.mean[1, [0, 2]], rtol=1e-12, atol=1e-12)
    assert torch.equal(pred.t, asked)


def test_with_inputs_the_steps_must_be_the_next_ones():
    torch.manual_seed(0)
    model = DeepKalmanFilter(DKFConfig(latent_dim=2, encoder_hidden=4, n_predict_samples=3),
                             1, 1).double()
    x = torch.randn(1, 4, 1, dtype=F64)
    batch = SequenceBatch(x, torch.ones_like(x, dtype=torch.bool),
                          torch.arange(4.0, dtype=F64)[None], torch.tensor([4]),
                          torch.randn(1, 4, 1, dtype=F64))
    u = torch.zeros(1, 2, 1, dtype=F64)
    assert model.forecast(batch, torch.tensor([[4.0, 5.0]], dtype=F64), u).mean.shape == (1, 2, 1)
    with pytest.raises(DataError, match="next H consecutive steps"):
        model.forecast(batch, torch.tensor([[4.0, 6.0]], dtype=F64), u)
