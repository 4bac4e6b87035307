"""SequenceBatch.from_tensor refuses what it cannot represent, naming it: an inf value
(NaN is the missing-value marker; inf used to become the largest float, observed) and
times of the wrong shape."""

import pytest
import torch

from dynvae import SequenceBatch
from dynvae.errors import DataError


def test_an_inf_value_is_a_data_error_naming_where():
    x = torch.tensor([[[1.0], [2.0]], [[1.0], [float("-inf")]]])
    with pytest.raises(DataError, match=r"inf value at sequence 1, step 1, feature 0"):
        SequenceBatch.from_tensor(x)
    batch = SequenceBatch.from_tensor(torch.tensor([[[1.0], [float("nan")], [2.0]]]))
    assert batch.mask[0, :, 0].tolist() == [True, False, True]          # NaN: missing


@pytest.mark.parametrize("t", [torch.arange(7.0), torch.zeros(3, 5), torch.zeros(2, 5, 1)])
def test_times_of_the_wrong_shape_are_a_data_error(t):
    with pytest.raises(DataError, match=r"t must have shape \(5,\) or \(2, 5\)"):
        SequenceBatch.from_tensor(torch.randn(2, 5, 1), t=t)
    assert SequenceBatch.from_tensor(torch.randn(2, 5, 1), t=torch.arange(5.0)).t.shape == (2, 5)


def test_api_entry_points_name_a_wrong_argument_type():
    """Standardizer.fit and Trainer.fit given raw tensors or lists, and the LGSSM fits given
    a non-positive iteration count: one clear error each (they used to fail with an
    AttributeError, or to run and return a history at step -3)."""
    from dynvae.data import Standardizer
    from dynvae.errors import ConfigError
    from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
    from dynvae.models.lgssm_fit import LBFGS, fit_em, fit_gradient
    from dynvae.train.trainer import TrainConfig, Trainer
    with pytest.raises(DataError, match="Standardizer.fit needs a SequenceDataset, got list"):
        Standardizer().fit([])
    trainer = Trainer(DeepKalmanFilter(DKFConfig(latent_dim=2), 3),
                      TrainConfig(max_steps=1, progress=False))
    with pytest.raises(DataError, match="Trainer.fit needs train as a SequenceDataset"):
        trainer.fit(torch.randn(8, 6, 3))
    with pytest.raises(ConfigError, match="n_iter must be a positive integer, got -3"):
        fit_em(None, None, n_iter=-3)
    with pytest.raises(ConfigError, match="steps must be a positive integer, got 0"):
        fit_gradient(None, None, LBFGS(), steps=0)
