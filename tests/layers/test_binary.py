"""cnnlab.layers.BinaryConv2d / BinaryLinear: the forward against dense references built independently
(BWN: a dense conv with alpha * sign(W); XNOR: the paper's K from avg_pool2d), the straight-through
estimator, exact idempotence of the binarization, from_float and a save/reload round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from cnnlab.layers import BinaryConv2d, BinaryLinear, PredefinedSparseConv2d, binarize_weight, sign_ste, weight_scale

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t < 0, -1.0, 1.0).to(t.dtype)


def reference_binary_weight(w: torch.Tensor) -> torch.Tensor:
    """alpha * sign(W), alpha = mean |W| per output channel, in float64 and not through the layer's code."""
    alpha = w.detach().double().abs().flatten(1).mean(1).to(w.dtype)
    return reference_sign(w.detach()) * alpha.view(-1, *([1] * (w.dim() - 1)))


def random_conv(seed: int = 0, **kwargs) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(**{"in_channels": 6, "out_channels": 4, "kernel_size": 3, "padding": 1, **kwargs},
                     dtype=torch.float64)
    with torch.no_grad():
        conv.weight.normal_()
        if conv.bias is not None:
            conv.bias.normal_()
    return conv


# -- sign and the straight-through estimator ------------------------------------------------------------
def test_sign_is_plus_minus_one_with_zero_positive_and_keeps_dtype_and_layout():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0], dtype=torch.bfloat16)
    assert sign_ste(x).tolist() == [-1, 1, 1, 1, -1, 1] and sign_ste(x).dtype == torch.bfloat16
    y = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)
    assert sign_ste(y).is_contiguous(memory_format=torch.channels_last)


def test_ste_passes_the_gradient_where_abs_x_is_at_most_one():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.999, 1.0, 1.001, 7.0], requires_grad=True)
    g = torch.arange(1.0, 9.0)
    sign_ste(x).backward(g)
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]


# -- the weight binarization -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 3136), (64, 32, 3, 3), (10, 1, 3, 3), (5, 7)])
def test_binarization_is_idempotent_to_the_bit(shape):
    """A weight that is alpha * sign binarizes to itself: how a stored model is rebuilt exactly."""
    torch.manual_seed(1)
    alpha = torch.rand(shape[0]) * 0.1 + 1e-3
    signs = reference_sign(torch.randn(shape))
    w = signs * alpha.view(-1, *([1] * (len(shape) - 1)))
    assert torch.equal(weight_scale(w), alpha)
    assert torch.equal(binarize_weight(w), w)
    once = binarize_weight(torch.randn(shape))
    assert torch.equal(binarize_weight(once), once)


def test_weight_scale_is_the_mean_absolute_weight_per_output_channel():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.25]])
    assert weight_scale(w).tolist() == [2.0, 0.375]
    assert binarize_weight(w).tolist() == [[2.0, -2.0], [0.375, 0.375]]


def test_weight_gradient_is_the_ste_through_sign_and_the_exact_gradient_of_alpha():
    torch.manual_seed(2)
    conv = BinaryConv2d.from_float(random_conv())
    with torch.no_grad():
        conv.weight[0, 0, 0, :] = torch.tensor([1.5, -2.0, 0.75])  # outside [-1, 1]: the STE clips these
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    upstream = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    (conv(x) * upstream).sum().backward()

    wb = reference_binary_weight(conv.weight).requires_grad_()
    (F.conv2d(x, wb, conv.bias.detach(), padding=1) * upstream).sum().backward()
    g, w = wb.grad, conv.weight.detach()
    alpha = w.abs().mean((1, 2, 3), keepdim=True)
    s = reference_sign(w)
    expected = alpha * g * (w.abs() <= 1) + s * (g * s).mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(conv.weight.grad, expected, rtol=1e-12, atol=1e-12)
    assert conv.weight.grad[0, 0, 0, 0] == expected[0, 0, 0, 0]  # the clipped entries keep the alpha term only


# -- forward against dense references ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"stride": 2}, {"groups": 2, "bias": False}, {"padding_mode": "reflect"},
                                    {"dilation": 2, "padding": 2}])
def test_bwn_conv_is_the_dense_conv_with_the_binarized_weight(kwargs):
    float_conv = random_conv(**kwargs)
    conv = BinaryConv2d.from_float(float_conv, "bwn")
    reference = random_conv(**kwargs)
    with torch.no_grad():
        reference.weight.copy_(reference_binary_weight(float_conv.weight))
    x = torch.randn(3, 6, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(conv(x), reference(x), rtol=0, atol=1e-12)
    assert torch.equal(conv.binary_weight(), reference.weight)


def xnor_reference(float_conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's approximation, group by group: (sign(x) * sign(W) alpha) . K + b, K = A (mean |x| over
    the group's channels) averaged over each output position's window with avg_pool2d (zero padding)."""
    g, cin, cout = float_conv.groups, x.shape[1] // float_conv.groups, float_conv.out_channels // float_conv.groups
    wb = reference_binary_weight(float_conv.weight)
    outs = []
    for i in range(g):
        xi = x[:, i * cin:(i + 1) * cin]
        y = F.conv2d(reference_sign(xi), wb[i * cout:(i + 1) * cout], None, float_conv.stride, float_conv.padding)
        k = F.avg_pool2d(xi.abs().mean(1, keepdim=True), float_conv.kernel_size, float_conv.stride,
                         float_conv.padding, count_include_pad=True)
        outs.append(y * k)
    y = torch.cat(outs, 1)
    return y if float_conv.bias is None else y + float_conv.bias.detach().view(-1, 1, 1)


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2}, {"groups": 2, "bias": False}, {"groups": 6, "out_channels": 12},
                                    {"kernel_size": 1, "padding": 0}])
def test_xnor_conv_is_the_papers_binary_conv_scaled_by_k(kwargs):
    float_conv = random_conv(**kwargs)
    conv = BinaryConv2d.from_float(float_conv, "xnor")
    x = torch.randn(3, 6, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(conv(x), xnor_reference(float_conv, x), rtol=1e-12, atol=1e-12)


def test_xnor_conv_equals_bwn_where_the_input_has_constant_magnitude():
    """sign(x) * K == x when |x| is the same everywhere (no padding, so every window is full)."""
    float_conv = random_conv(padding=0)
    x = 0.7 * reference_sign(torch.randn(2, 6, 8, 8, dtype=torch.float64))
    xnor, bwn = BinaryConv2d.from_float(float_conv, "xnor"), BinaryConv2d.from_float(float_conv, "bwn")
    torch.testing.assert_close(xnor(x), bwn(x), rtol=1e-12, atol=1e-12)


def test_xnor_padding_mode_pads_k_the_same_way():
    float_conv = random_conv(padding_mode="reflect")
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    conv = BinaryConv2d.from_float(float_conv, "xnor")
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    plain = random_conv(padding=0)
    with torch.no_grad():
        plain.weight.copy_(float_conv.weight)
        plain.bias.copy_(float_conv.bias)
    torch.testing.assert_close(conv(x), xnor_reference(plain, padded), rtol=1e-12, atol=1e-12)


def test_channels_last_and_unbatched_inputs_give_the_same_result():
    conv = BinaryConv2d.from_float(random_conv(groups=2), "xnor")
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(conv(x.to(memory_format=torch.channels_last)), conv(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv(x[0]), conv(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
def test_linear_matches_its_reference(mode):
    torch.manual_seed(3)
    fc = nn.Linear(20, 7, dtype=torch.float64)
    layer = BinaryLinear.from_float(fc, mode)
    x = torch.randn(5, 20, dtype=torch.float64)
    wb = reference_binary_weight(fc.weight)
    if mode == "bwn":
        expected = F.linear(x, wb, fc.bias.detach())
    else:
        expected = F.linear(reference_sign(x), wb) * x.abs().mean(1, keepdim=True) + fc.bias.detach()
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_xnor_input_gradient_is_clipped_by_the_ste():
    """The input gradient of an XNOR layer has two parts: through sign (the STE: zero where |x| > 1) and
    through K = mean |x| (exact)."""
    torch.manual_seed(4)
    layer = BinaryLinear.from_float(nn.Linear(4, 3, dtype=torch.float64), "xnor")
    x = torch.tensor([[0.5, -2.0, 0.25, 3.0]], dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    s = reference_sign(x.detach())
    wb = reference_binary_weight(layer.weight)
    k = x.detach().abs().mean()
    through_sign = (wb.sum(0) * k) * (x.detach().abs() <= 1)
    through_k = (F.linear(s, wb).sum() / 4) * s
    torch.testing.assert_close(x.grad[0], (through_sign + through_k)[0], rtol=1e-12, atol=1e-12)


# -- construction, from_float, saving -----------------------------------------------------------------------
def test_from_float_copies_geometry_weights_and_does_not_share_them():
    float_conv = random_conv(stride=2, dilation=2, padding=2, groups=2, padding_mode="circular")
    conv = BinaryConv2d.from_float(float_conv, "xnor")
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode"):
        assert getattr(conv, attr) == getattr(float_conv, attr)
    assert conv.mode == "xnor" and conv.weight.dtype == torch.float64 and "mode='xnor'" in repr(conv)
    assert torch.equal(conv.weight, float_conv.weight) and torch.equal(conv.bias, float_conv.bias)
    with torch.no_grad():
        conv.weight.zero_()
    assert float_conv.weight.abs().sum() > 0
    fc = BinaryLinear.from_float(nn.Linear(3, 2, bias=False))
    assert fc.bias is None and fc.mode == "bwn"


def test_from_float_refuses_a_conv_with_its_own_forward_and_bad_modes():
    with pytest.raises(TypeError, match="PredefinedSparseConv2d.*mask"):
        BinaryConv2d.from_float(PredefinedSparseConv2d(8, 8, 3, k=4))
    with pytest.raises(ValueError, match="'bwn', 'xnor'.*'ternary'"):
        BinaryConv2d(2, 2, 3, mode="ternary")
    with pytest.raises(ValueError, match="got 'XNOR'"):
        BinaryLinear.from_float(nn.Linear(2, 2), "XNOR")


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
def test_saved_and_reloaded_layer_gives_identical_outputs(tmp_path, mode):
    conv = BinaryConv2d.from_float(random_conv(), mode).float()
    with torch.no_grad():
        conv.weight[:, 0, 1, 1] = 0.0  # sign(0) = +1 on both sides of the round trip
    save_file(conv.state_dict(), tmp_path / "w.safetensors")
    again = BinaryConv2d(6, 4, 3, padding=1, mode=mode)
    again.load_state_dict(load_file(tmp_path / "w.safetensors"))
    x = torch.randn(2, 6, 7, 7)
    x[0, :, 3, 3] = 0.0
    assert torch.equal(again(x), conv(x))
    assert (again.binary_weight()[:, 0, 1, 1] > 0).all()


def test_the_binarized_weight_is_reused_without_gradients_and_renewed_when_the_weight_changes():
    from cnnlab.layers import BinaryLinear

    layer = BinaryLinear(6, 3)
    with torch.no_grad():
        first = layer.binary_weight()
        assert layer.binary_weight() is first  # kept while nothing changed
        layer.weight.mul_(-1)  # an in-place change bumps the version counter
        second = layer.binary_weight()
    assert second is not first and torch.equal(second, -first)
    x = torch.randn(2, 6)
    with torch.inference_mode():
        y = layer(x)
    assert torch.equal(y, layer(x).detach())
    out = layer(x).sum()  # with gradients: computed afresh, and the STE gradient reaches the weight
    out.backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
