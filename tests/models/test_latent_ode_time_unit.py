"""The latent ODE's unit of time (LatentODEConfig.time_unit): data whose times are u
times larger, read by a model with time_unit = u, give exactly the bound, imputations,
forecasts and samples of the original data read by time_unit = 1 (same weights, same
noise), with and without segments; predictions come back in the data's times; and
``dynvae train``'s rule keeps the data's unit unless a training example spans fewer
than 1 or more than 100 of it."""

import pytest
import torch

from dynvae.models.latent_ode import LatentODEConfig
from dynvae.train.defaults import model_defaults
from tests.models.test_latent_ode import irregular_batch, linear_model
from tests.models.unit_checks import UNIT, assert_predictions_do_not_depend_on_the_unit, scaled


@pytest.mark.parametrize("overrides", [{}, {"segment_steps": 2, "jump_std": 0.4,
                                            "random_phase": False},
                                       {"solver": "rk4", "dt": 0.05, "encoder_dt": 0.05}])
def test_results_do_not_depend_on_the_unit_of_the_data(overrides):
    base = linear_model(**overrides)
    fixed = {k: v * UNIT for k, v in overrides.items() if k in ("dt", "encoder_dt")}
    other = linear_model(**{**overrides, **fixed, "time_unit": UNIT})
    other.load_state_dict(base.state_dict())
    batch = irregular_batch()
    assert_predictions_do_not_depend_on_the_unit(base, other, batch, rtol=1e-9, atol=1e-9)
    torch.manual_seed(4)
    ba = base.log_likelihood_bound(batch, 8)
    torch.manual_seed(4)
    torch.testing.assert_close(other.log_likelihood_bound(scaled(batch, UNIT), 8), ba,
                               rtol=1e-9, atol=1e-9)
    # guard: the unit is not ignored (the same times read in another unit differ)
    torch.manual_seed(4)
    assert not torch.allclose(other.log_likelihood_bound(batch, 8), ba)


def test_forecast_time_errors_name_the_datas_times():
    model = linear_model(time_unit=UNIT)
    batch = scaled(irregular_batch(), UNIT)
    last = float(batch.t[0, 5])
    with pytest.raises(Exception, match=f"is not after its last time {last:g}"):
        model.forecast(batch, torch.full((3, 1), last, dtype=torch.float64))


def test_train_keeps_the_datas_unit_unless_an_example_spans_too_few_or_many():
    def size(window_span, sequence_span):
        class Size:
            median_step, time_unit, latent_dim, width, train_window = 7.0, 7.0, 4, 32, 64

            def example_span(self, window):
                return window_span if window == 64 else sequence_span
        return Size()
    unit = lambda s, **kw: model_defaults(LatentODEConfig(**kw), s)["time_unit"]  # noqa: E731
    assert unit(size(441.0, 5000.0)) == 44.1            # dates in days: ten units a window
    assert unit(size(63.0, 5000.0)) == 1.0              # hours: the data's own unit
    assert unit(size(0.05, 5000.0)) == 0.005            # too short a span: stretched
    # one path from z_0 (no segments) trains on whole sequences
    assert unit(size(63.0, 1000.0), segment_steps=None) == 100.0
    with pytest.raises(Exception, match="time_unit"):
        LatentODEConfig(time_unit=0.0)
