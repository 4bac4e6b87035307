"""Sequence summaries: step t sees exactly the steps its direction allows, padding never
reaches a valid step, and one GRU step equals the matching step of a full pass."""

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.nn.recurrent import SequenceSummary, run_gru, step_gru

VISIBLE = {
    "forward": lambda t, L: set(range(t + 1)),
    "backward": lambda t, L: set(range(t, L)),
    "bidirectional": lambda t, L: set(range(L)),
}


@pytest.mark.parametrize("direction", sorted(VISIBLE))
def test_step_t_sees_its_part_of_each_sequence_and_no_padding(direction):
    torch.manual_seed(0)
    summary = SequenceSummary(3, 4, direction).double()
    assert summary.out_features == (8 if direction == "bidirectional" else 4)
    features = torch.randn(2, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 5])
    base = summary(features, lengths)
    t = 2
    for s in range(7):
        other = features.clone()
        other[:, s] += 1.0
        c = summary(other, lengths)
        for b, L in enumerate(lengths.tolist()):
            changed = not torch.allclose(c[b, t], base[b, t], rtol=0, atol=1e-12)
            assert changed == (s in VISIBLE[direction](t, L)), (direction, b, s)
    # the short sequence alone, without padding, gives the same valid steps
    alone = summary(features[1:, :5], lengths[1:])
    torch.testing.assert_close(alone, base[1:, :5], rtol=1e-12, atol=1e-12)


def test_one_step_equals_the_full_pass():
    torch.manual_seed(1)
    rnn = torch.nn.GRU(3, 4, batch_first=True).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    full = run_gru(rnn, x)
    h = full[:, 2]
    torch.testing.assert_close(step_gru(rnn, x[:, 3], h), full[:, 3])


def test_one_step_has_the_full_pass_gradients():
    """The cell form of a one-layer GRU and the module on a length-one sequence: same
    values and gradients with respect to inputs, state and weights."""
    torch.manual_seed(2)
    rnn = torch.nn.GRU(3, 4, batch_first=True).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    wrt = [x, h, *rnn.parameters()]
    weights = torch.randn(5, 4, dtype=torch.float64)
    module = rnn(x.unsqueeze(1), h.unsqueeze(0))[0][:, 0]
    step = step_gru(rnn, x, h)
    torch.testing.assert_close(step, module, rtol=1e-13, atol=1e-14)
    for a, b in zip(torch.autograd.grad((step * weights).sum(), wrt),
                    torch.autograd.grad((module * weights).sum(), wrt), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_unknown_direction_is_a_config_error():
    with pytest.raises(ConfigError, match="direction"):
        SequenceSummary(3, 4, "sideways")
