"""The per-coordinate tanh layers of diagonal diffusions (dynvae.nn.diffusion), computed
through sigmoids: the hand-written backward in both layouts ((N, H, Z) for large inputs,
(N, Z, H) for small ones) and the plain autograd expressions all equal the textbook tanh
expressions, in value, slope and every first derivative (and the value alone in its
second derivatives)."""

from __future__ import annotations

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.nn import diffusion as dmod
from dynvae.nn.diffusion import DiagonalDiffusion, tanh_layer, tanh_layer_and_slope

Z, H = 5, 7


def _reference(z, w1, b1, w2):
    h = torch.tanh(z.unsqueeze(-1) * w1 + b1)
    return (h * w2).sum(-1), ((1 - h * h) * w1 * w2).sum(-1)


def _inputs(seed=0, shape=(3, 4)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, Z, generator=g, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(Z, H, generator=g, dtype=torch.float64, requires_grad=True)
              for _ in range(3)]
    return [z, *params]


@pytest.fixture(params=["fused-transposed", "fused-units-last", "plain"])
def path(request, monkeypatch):
    transposed = request.param == "fused-transposed"
    monkeypatch.setattr(dmod, "TRANSPOSED_MIN_ELEMENTS", 0 if transposed else 1 << 62)
    monkeypatch.setattr(dmod, "FUSED_BACKWARD", request.param != "plain")
    return request.param


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.7, -1.3)])
def test_values_and_gradients_equal_the_plain_expressions(path, weights):
    args = _inputs()
    a, s = tanh_layer_and_slope(*args)
    ra, rs = _reference(*args)
    torch.testing.assert_close(a, ra, rtol=0, atol=1e-14)
    torch.testing.assert_close(s, rs, rtol=0, atol=1e-14)
    torch.testing.assert_close(tanh_layer(*args), ra, rtol=0, atol=1e-14)
    g = torch.Generator().manual_seed(1)
    ca, cs = (torch.randn(a.shape, generator=g, dtype=a.dtype) * w for w in weights)
    ours = torch.autograd.grad((a * ca + s * cs).sum(), args)
    theirs = torch.autograd.grad((ra * ca + rs * cs).sum(), args)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-13)


def test_gradcheck_of_the_fused_backward(path):
    args = _inputs(seed=2, shape=(6,))
    assert torch.autograd.gradcheck(lambda *x: tanh_layer_and_slope(*x), args)
    assert torch.autograd.gradcheck(lambda *x: tanh_layer(*x), args)


def test_a_gradient_for_one_output_or_some_arguments(path):
    z, w1, b1, w2 = _inputs(seed=3)
    w1.requires_grad_(False)
    a, s = tanh_layer_and_slope(z, w1, b1, w2)
    ra, rs = _reference(z, w1, b1, w2)
    for mine, ref in ((s, rs), (a, ra)):
        ours = torch.autograd.grad(mine.sum(), (z, b1, w2), retain_graph=True)
        theirs = torch.autograd.grad(ref.sum(), (z, b1, w2), retain_graph=True)
        for x, y in zip(ours, theirs, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)


def test_without_gradients_the_same_numbers(path):
    args = _inputs(seed=4)
    with_grad = tanh_layer_and_slope(*args)
    with torch.no_grad():
        without = tanh_layer_and_slope(*args)
    for x, y in zip(with_grad, without, strict=True):
        torch.testing.assert_close(x.detach(), y, rtol=0, atol=1e-15)


def test_without_gradients_the_workspace_leaks_nothing_between_calls(path):
    """Without a graph the activations live in a per-thread workspace reused by the next
    call: results of one call stay as they were after calls on other inputs, shapes and
    dtypes."""
    args = [x.detach() for x in _inputs(seed=7)]
    ra, rs = _reference(*args)
    with torch.no_grad():
        a, s = tanh_layer_and_slope(*args)
        value = tanh_layer(*args)
        others = [x.detach() for x in _inputs(seed=8)]
        for shape_args in (others, [others[0][:2], *others[1:]],
                           [x.float() for x in others]):
            oa, os_ = tanh_layer_and_slope(*shape_args)
            ova = tanh_layer(*shape_args)
            ea, es = _reference(*shape_args)
            tol = 1e-14 if shape_args[0].dtype == torch.float64 else 1e-5
            for mine, ref in ((oa, ea), (os_, es), (ova, ea)):
                torch.testing.assert_close(mine, ref, rtol=0, atol=tol)
    for mine, ref in ((a, ra), (s, rs), (value, ra)):
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("threshold", [0, 1 << 62])
def test_the_fused_backward_refuses_a_second_derivative(monkeypatch, threshold):
    monkeypatch.setattr(dmod, "TRANSPOSED_MIN_ELEMENTS", threshold)
    z, w1, b1, w2 = _inputs(seed=5)
    a, s = tanh_layer_and_slope(z, w1, b1, w2)
    with pytest.raises(ConfigError, match="first derivatives only"):
        torch.autograd.grad(s.sum(), z, create_graph=True)
    monkeypatch.setattr(dmod, "FUSED_BACKWARD", False)       # the plain expressions can
    a, s = tanh_layer_and_slope(z, w1, b1, w2)
    (gz,) = torch.autograd.grad(s.sum(), z, create_graph=True)
    assert torch.autograd.grad(gz.sum(), w1)[0].abs().sum() > 0


def test_the_value_alone_is_differentiable_twice_on_both_paths(path):
    """tanh_layer is plain autograd operations on either path: Milstein's correction by
    autograd (create_graph=True) and its gradient equal the tanh expressions'."""
    z, w1, b1, w2 = _inputs(seed=6)
    ours, ref = tanh_layer(z, w1, b1, w2), _reference(z, w1, b1, w2)[0]
    (dz,) = torch.autograd.grad(ours.sum(), z, create_graph=True)
    (rdz,) = torch.autograd.grad(ref.sum(), z, create_graph=True)
    torch.testing.assert_close(dz, rdz, rtol=1e-12, atol=1e-13)
    for mine, theirs in zip(torch.autograd.grad((dz * ours).sum(), (z, w1, b1, w2)),
                            torch.autograd.grad((rdz * ref).sum(), (z, w1, b1, w2)),
                            strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_the_threshold_picks_the_layout(monkeypatch):
    """The default threshold sends a (1024, 64) state with 16 units to the (N, H, Z)
    layout and a (1024, 4) one to the parameters' own (the measured crossover); the
    hand-written backward runs on both."""
    w1 = torch.zeros(64, 16)
    assert dmod._transposed(torch.zeros(1024, 64), w1)
    assert not dmod._transposed(torch.zeros(1024, 4), w1[:4])
    assert dmod.FUSED_BACKWARD
    z = torch.zeros(1024, 4, requires_grad=True)
    a, s = tanh_layer_and_slope(z, w1[:4], w1[:4], w1[:4])
    nodes = [a.grad_fn, *(f for f, _ in a.grad_fn.next_functions)]     # after a reshape
    assert "_TanhLayerAndSlopeBackward" in {type(f).__name__ for f in nodes}


def test_diagonal_diffusion_on_both_paths(path):
    torch.manual_seed(0)
    net = DiagonalDiffusion(Z, hidden=H).double()
    z = torch.randn(8, Z, dtype=torch.float64, requires_grad=True)
    g, d = net.value_and_derivative(z)
    torch.testing.assert_close(g, net(z), rtol=0, atol=1e-15)
    (auto,) = torch.autograd.grad(net(z).sum(), z)
    torch.testing.assert_close(d, auto, rtol=1e-12, atol=1e-14)
