"""GP-VAE site encoders: which steps the sites of step t read."""

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.nn.site_encoder import SITE_ENCODERS, ConvSiteEncoder


@pytest.mark.parametrize("name, radius", [("conv", 2), ("mlp", 0)])
def test_sites_read_the_steps_within_the_kernel(name, radius):
    torch.manual_seed(0)
    enc = SITE_ENCODERS[name](4, 3, (8, 8)).double()
    x = torch.randn(2, 12, 4, dtype=torch.float64, requires_grad=True)
    mean, var = enc(x)
    assert mean.shape == var.shape == (2, 12, 3) and (var > 0).all()
    (grad,) = torch.autograd.grad(mean[:, 6].sum() + var[:, 6].sum(), x)
    reach = grad.abs().sum((0, 2)) > 0                                # (T,)
    assert reach.nonzero().flatten().tolist() == list(range(6 - radius, 7 + radius))


def test_conv_kernel_must_be_odd():
    with pytest.raises(ConfigError, match="odd"):
        ConvSiteEncoder(4, 3, (8,), kernel_size=4)
