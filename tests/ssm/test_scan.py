"""The generic associative scan against sequential folds."""

import pytest
import torch

from dynvae.ssm import associative_scan


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 8, 13, 32, 33])
def test_scan_of_sums_equals_cumsum(T):
    x = torch.randn(T, 4, dtype=torch.float64)
    (out,) = associative_scan(lambda a, b: (a[0] + b[0],), (x,))
    torch.testing.assert_close(out, torch.cumsum(x, 0))
    (rev,) = associative_scan(lambda a, b: (a[0] + b[0],), (x,), reverse=True)
    torch.testing.assert_close(rev, torch.flip(torch.cumsum(torch.flip(x, (0,)), 0), (0,)))


@pytest.mark.parametrize("T", [1, 6, 7, 19])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_of_affine_maps_keeps_order(T, reverse):
    """Non-commutative operator on a tuple: affine maps z -> M z + c, earlier applied first."""
    M = torch.randn(T, 2, 3, 3, dtype=torch.float64)
    c = torch.randn(T, 2, 3, dtype=torch.float64)

    def compose(a, b):                       # apply a, then b
        return b[0] @ a[0], (b[0] @ a[1].unsqueeze(-1)).squeeze(-1) + b[1]

    outM, outc = associative_scan(compose, (M, c), reverse=reverse)
    order = range(T - 1, -1, -1) if reverse else range(T)
    accM, accc = None, None
    expect = {}
    for t in order:
        if accM is None:
            accM, accc = M[t], c[t]
        elif reverse:
            accM, accc = compose((M[t], c[t]), (accM, accc))
        else:
            accM, accc = compose((accM, accc), (M[t], c[t]))
        expect[t] = (accM, accc)
    torch.testing.assert_close(outM, torch.stack([expect[t][0] for t in range(T)]))
    torch.testing.assert_close(outc, torch.stack([expect[t][1] for t in range(T)]))


def test_scan_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="same length"):
        associative_scan(lambda a, b: a, (torch.zeros(3), torch.zeros(4)))
