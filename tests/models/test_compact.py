"""The reduced-complexity fmnist-cnn variants: one change at a time against fmnist-cnn, with exact counts."""

from __future__ import annotations

import pytest
import torch

from cnnlab.analysis.summary import summarize
from cnnlab.layers import ChannelShuffle, DepthwiseSeparableConv2d, GroupedConv2d
from cnnlab.models import CompactCNN, count_parameters, create_model, list_models

pytestmark = pytest.mark.usefixtures("single_thread")

VARIANTS = ["fmnist-separable", "fmnist-grouped", "fmnist-shuffle", "fmnist-sparse", "fmnist-gap", "fmnist-mobile"]


def macs(model) -> int:
    return summarize(model.eval(), (1, 28, 28)).total_macs


def test_standard_dense_is_fmnist_cnn_module_for_module():
    ref, same = create_model("fmnist-cnn"), CompactCNN(conv="standard", head="dense")
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}
    assert count_parameters(same) == 1_677_674


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_is_registered_and_classifies(name):
    assert name in list_models()
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert [n for n, _ in model.named_children()] == ["features", "classifier"]


def test_the_first_conv_stays_standard_and_the_others_change():
    sep = create_model("fmnist-separable")
    assert type(sep.features.block1.conv1) is torch.nn.Conv2d
    assert all(isinstance(m, DepthwiseSeparableConv2d)
               for m in (sep.features.block1.conv2, sep.features.block2.conv1, sep.features.block2.conv2))
    shuf = create_model("fmnist-shuffle").features.block2.conv1
    assert isinstance(shuf.conv, GroupedConv2d) and shuf.conv.groups == 4 and isinstance(shuf.shuffle, ChannelShuffle)


def test_exact_counts_against_fmnist_cnn():
    """The conv savings by hand. fmnist-cnn's three replaced convs hold 9,248 + 18,496 + 36,928 = 64,672
    parameters; its dense head 1,606,144 + 5,130 (+ 1,024 BatchNorm)."""
    base = count_parameters(create_model("fmnist-cnn"))
    head = 3136 * 512 + 512 + 2 * 512 + 512 * 10 + 10
    # separable: depthwise c*9 (no bias) + pointwise c_in*c_out + c_out for each replaced conv
    sep = (32 * 9 + 32 * 32 + 32) + (32 * 9 + 32 * 64 + 64) + (64 * 9 + 64 * 64 + 64)
    assert count_parameters(create_model("fmnist-separable")) == base - 64_672 + sep
    grouped = (32 * 8 * 9 + 32) + (64 * 8 * 9 + 64) + (64 * 16 * 9 + 64)  # 4 groups: a quarter of the weights
    assert count_parameters(create_model("fmnist-grouped")) == base - 64_672 + grouped
    assert count_parameters(create_model("fmnist-shuffle")) == count_parameters(create_model("fmnist-grouped"))
    assert count_parameters(create_model("fmnist-gap")) == base - head + 64 * 10 + 10 == 66_026


def test_the_compact_model_is_within_the_issues_budget():
    """The issue's compact target: <= 1/5 of fmnist-cnn's MACs and <= 1/10 of its parameters (accuracy and
    speed are measured in bench/, not here)."""
    ref, mobile = create_model("fmnist-cnn"), create_model("fmnist-mobile")
    assert macs(ref) == 19_899_904
    assert macs(mobile) * 5 <= macs(ref)
    assert count_parameters(mobile) * 10 <= count_parameters(ref)


def test_grouped_macs_are_a_quarter_of_the_replaced_convs():
    ref, grouped = macs(create_model("fmnist-cnn")), macs(create_model("fmnist-grouped"))
    replaced = 28 * 28 * 32 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 14 * 14 * 64 * 64 * 9
    assert ref - grouped == replaced - replaced // 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(conv="dilated"), "unknown conv kind 'dilated'; valid: standard, separable, grouped, shuffle, sparse"),
    (dict(head="attention"), "unknown head 'attention'; valid: dense, gap"),
    (dict(conv="grouped", groups=3), "not divisible by groups=3"),
])
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompactCNN(**kwargs)
