"""Shared by the time-unit tests of the continuous-time models: a model with time_unit
u on data whose times are u times larger predicts exactly what the same weights with
unit 1 predict on the original data."""

import torch

from dynvae.data.batch import SequenceBatch

UNIT = 1024.0      # a power of two: scaling times by it is exact in floating point
FUTURE = torch.tensor([[0.3, 0.5], [0.2, 0.9], [0.1, 0.4]], dtype=torch.float64)


def scaled(batch: SequenceBatch, unit: float) -> SequenceBatch:
    return SequenceBatch(batch.x, batch.mask, batch.t * unit, batch.lengths)


def assert_predictions_do_not_depend_on_the_unit(base, other, batch: SequenceBatch,
                                                 rtol: float, atol: float) -> None:
    """``base`` (unit 1) on ``batch`` and ``other`` (unit UNIT, same weights) on the
    batch's times times UNIT: equal reconstructions, forecasts (3 sequences, 2 future
    times each) and samples under the same seeds, and times returned in the data's unit."""
    t_last = batch.t.gather(1, (batch.lengths - 1)[:, None])
    outputs = []
    for model, unit in ((base, 1.0), (other, UNIT)):
        torch.manual_seed(5)
        rec = model.reconstruct(scaled(batch, unit))
        torch.manual_seed(6)
        fc = model.forecast(scaled(batch, unit), (t_last + FUTURE) * unit)
        torch.manual_seed(7)
        draws = model.sample(4, torch.arange(6, dtype=torch.float64) * 0.2 * unit)
        outputs.append((rec, fc, draws))
    (ra, fa, sa), (rb, fb, sb) = outputs
    close = dict(rtol=rtol, atol=atol)
    torch.testing.assert_close(rb.mean, ra.mean, **close)
    torch.testing.assert_close(rb.std, ra.std, **close)
    torch.testing.assert_close(rb.t, batch.t * UNIT)               # in the data's unit
    torch.testing.assert_close(fb.mean, fa.mean, **close)
    torch.testing.assert_close(fb.t, fa.t * UNIT)
    torch.testing.assert_close(sb, sa, **close)
