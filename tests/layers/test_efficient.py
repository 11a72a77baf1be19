"""The constrained-filtering layers: the lecture's parameter counts, equivalence with the plain convs they
stand for, the shuffle's permutation, and clear errors for channels the groups do not divide."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.layers import (
    ChannelShuffle,
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    GroupedConv2d,
    PointwiseConv2d,
    ShuffleUnit,
    channel_shuffle,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_the_lectures_mobilenet_example_688_against_4640():
    assert count(nn.Conv2d(16, 32, 3, padding=1)) == 4640
    sep = DepthwiseSeparableConv2d(16, 32)
    assert count(sep) == 688
    assert count(sep.depthwise) == 16 * 3 * 3 and sep.depthwise.bias is None
    assert count(sep.pointwise) == 32 * 16 + 32
    assert sep(torch.randn(2, 16, 64, 64)).shape == (2, 32, 64, 64)


def test_separable_is_depthwise_then_pointwise_by_hand():
    torch.manual_seed(0)
    sep = DepthwiseSeparableConv2d(6, 10, kernel_size=3, stride=2).double()
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    dw = torch.cat([F.conv2d(x[:, c:c + 1], sep.depthwise.weight[c:c + 1], stride=2, padding=1) for c in range(6)], 1)
    ref = torch.einsum("oi,nihw->nohw", sep.pointwise.weight[:, :, 0, 0], dw) + sep.pointwise.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(sep(x), ref)


def test_separable_with_norm_is_the_papers_block():
    sep = DepthwiseSeparableConv2d(8, 16, norm=True)
    assert [n for n, _ in sep.named_children()] == ["depthwise", "bn1", "relu1", "pointwise", "bn2", "relu2"]
    assert sep.pointwise.bias is None
    assert (sep.eval()(torch.randn(1, 8, 5, 5)) >= 0).all()


def test_grouped_conv_sees_only_its_group():
    torch.manual_seed(0)
    g = GroupedConv2d(8, 12, 3, groups=4)
    assert count(g) == 12 * 2 * 9 + 12 and g.padding == (1, 1)
    x = torch.randn(1, 8, 7, 7, requires_grad=True)
    g(x)[0, 0].sum().backward()  # output channel 0 belongs to group 0: input channels 0, 1
    touched = x.grad.abs().sum((0, 2, 3)) > 0
    assert touched.tolist() == [True, True] + [False] * 6


def test_depthwise_multiplier_and_pointwise_groups():
    dw = DepthwiseConv2d(5, kernel_size=5, multiplier=3)
    assert dw.out_channels == 15 and dw.groups == 5 and dw.padding == (2, 2) and dw.bias is None
    pw = PointwiseConv2d(8, 4, groups=2)
    assert pw.weight.shape == (4, 4, 1, 1)


def test_channel_shuffle_is_the_transpose_permutation_in_both_layouts():
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 3, 4).contiguous()
    y = channel_shuffle(x, 2)
    assert y[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]  # groups (0 1 2)(3 4 5) interleaved
    z = ChannelShuffle(2)(x.to(memory_format=torch.channels_last))
    assert torch.equal(y, z) and z.is_contiguous(memory_format=torch.channels_last)
    assert channel_shuffle(channel_shuffle(x, 2), 3).equal(x)  # (2, 3) then (3, 2): the inverse


@pytest.mark.parametrize("stride, cin, cout", [(1, 32, 32), (2, 16, 48)])
def test_shuffle_unit_shapes_and_gradients(stride, cin, cout):
    u = ShuffleUnit(cin, cout, groups=4, stride=stride)
    x = torch.randn(2, cin, 14, 14, requires_grad=True)
    y = u(x)
    assert y.shape == (2, cout, 14 // stride, 14 // stride) and (y >= 0).all()
    y.sum().backward()
    assert all(p.grad is not None for p in u.parameters())


@pytest.mark.parametrize("make, message", [
    (lambda: GroupedConv2d(16, 30, groups=4), "out_channels=30 is not divisible by groups=4; groups dividing both 16 and 30: 1, 2"),
    (lambda: GroupedConv2d(10, 8, groups=4), "in_channels=10 is not divisible by groups=4"),
    (lambda: PointwiseConv2d(6, 9, groups=2), "out_channels=9 is not divisible by groups=2"),
    (lambda: DepthwiseConv2d(0), "in_channels must be a positive integer; got 0"),
    (lambda: ChannelShuffle(0), "groups must be a positive integer; got 0"),
    (lambda: ShuffleUnit(32, 48, stride=1), "in_channels \\(32\\) must equal out_channels \\(48\\)"),
    (lambda: ShuffleUnit(32, 32, stride=2), "out_channels \\(32\\) must exceed in_channels \\(32\\)"),
    (lambda: ShuffleUnit(32, 32, stride=3), "stride must be 1 or 2; got 3"),
])
def test_bad_channels_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_channel_shuffle_refuses_channels_the_groups_do_not_divide():
    with pytest.raises(ValueError, match="5 channels are not divisible by groups=2"):
        channel_shuffle(torch.zeros(1, 5, 2, 2), 2)
