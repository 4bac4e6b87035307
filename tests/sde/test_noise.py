"""Step noise handed out in blocks: the same numbers for any block order, the right
law, and the same increments as the Brownian motion it reads from."""

import torch

from dynvae.sde import BrownianTree
from dynvae.sde.noise import DrawnNoise, PathNoise

F64 = torch.float64


def test_drawn_noise_is_the_same_in_any_block_order_and_has_the_right_law(monkeypatch):
    import dynvae.sde.noise as noise_module
    monkeypatch.setattr(noise_module, "CHUNK_ELEMENTS", 3 * 500 * 2 * 2)  # chunks of 3 steps
    hs = torch.tensor([[0.1, 0.2, 0.05, 0.3, 0.0, 0.15, 0.1]], dtype=F64)
    noise = DrawnNoise(hs, 500, 2, True, seed=7)
    assert noise.chunk == 3
    dW, H = noise.block(0, 7)
    parts = [noise.block(5, 7), noise.block(0, 2), noise.block(2, 5)]
    torch.testing.assert_close(torch.cat([parts[1][0], parts[2][0], parts[0][0]]), dW,
                               rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([parts[1][1], parts[2][1], parts[0][1]]), H,
                               rtol=0, atol=0)
    h = hs[0]
    live = h > 0
    dw_ratio = dW.pow(2).mean((1, 2))[live] / h[live]                   # E dW^2 = h
    h_ratio = H.pow(2).mean((1, 2))[live] / (h[live] / 12)                # E H^2 = h / 12
    corr = (dW * H).mean((1, 2))[live] / (h[live] * h[live] / 12).sqrt()  # independent
    # 1000 draws per step: standard errors 0.045 (ratios) and 0.032 (correlation)
    assert (dw_ratio - 1).abs().max() < 0.2 and (h_ratio - 1).abs().max() < 0.2
    assert corr.abs().max() < 0.15
    assert float(dW[4].abs().max()) == 0.0 and float(H[4].abs().max()) == 0.0
    other = DrawnNoise(hs, 500, 2, True, seed=8).block(0, 7)[0]
    assert not torch.equal(other, dW)


def test_path_noise_reads_the_tree_on_per_sequence_grids():
    tree = BrownianTree(0.0, 2.0, (3, 2), seed=1)
    times = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.0, 0.3, 0.9, 2.0], [0.1, 0.2, 0.4, 0.8]],
                         dtype=F64)
    noise = PathNoise(tree, times, (3,), 2, levy=True)
    dW, H = noise.block(1, 3)                                                # (2, 3, 2)
    ref_dW, ref_H = tree.increments(times[:, 1:4])                           # (3, 2, 2)
    torch.testing.assert_close(dW, ref_dW.transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(H, ref_H.transpose(0, 1), rtol=0, atol=0)
    assert float(dW[1, 0].abs().max()) == 0.0                # a zero-length step
