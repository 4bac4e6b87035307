"""Every Kalman engine refuses a non-finite value that the mask calls observed with a
DataError naming it (it used to surface as a filter that 'exploded'), and ignores any
value, NaN included, where the mask says missing."""

import pytest
import torch

from dynvae.errors import DataError
from dynvae.ssm import AutoKalman, LinearGaussianSSM, NativeKalman, ParallelKalman
from dynvae.ssm.engines import SequentialKalman


def _model():
    return LinearGaussianSSM(
        transition_matrix=torch.tensor([[0.9]], dtype=torch.float64),
        transition_cov=torch.tensor([[0.1]], dtype=torch.float64),
        emission_matrix=torch.tensor([[1.0]], dtype=torch.float64),
        emission_cov=torch.tensor([[0.2]], dtype=torch.float64),
        initial_mean=torch.zeros(1, dtype=torch.float64),
        initial_cov=torch.eye(1, dtype=torch.float64))


@pytest.mark.parametrize("engine", [AutoKalman(), NativeKalman(), ParallelKalman(),
                                    SequentialKalman()])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_observed_value_is_a_data_error(engine, bad):
    model, x = _model(), torch.randn(2, 6, 1, dtype=torch.float64)
    x[1, 3, 0] = bad
    mask = torch.ones_like(x, dtype=torch.bool)
    with pytest.raises(DataError, match=r"non-finite value .* at index \(1, 3, 0\) where "
                                        r"the mask says observed"):
        engine.log_likelihood(model, x, mask)
    mask[1, 3, 0] = False                              # missing: its value is ignored
    clean = x.clone()
    clean[1, 3, 0] = 0.0
    torch.testing.assert_close(engine.log_likelihood(model, x, mask),
                               engine.log_likelihood(model, clean, mask))
