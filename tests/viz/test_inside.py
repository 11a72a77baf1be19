"""Filters, feature maps and the deletion/insertion faithfulness curves."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlab.models import create_model
from cnnlab.viz import VizError
from cnnlab.viz.faithfulness import deletion_insertion
from cnnlab.viz.inside import effective_receptive_field, feature_maps, filters, layer_outputs


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("fmnist-cnn")


def test_filters_of_the_first_layer_are_pictures(model):
    name, w = filters(model)
    assert name == "features.block1.conv1"
    assert w.shape == (32, 1, 3, 3)
    assert torch.equal(w, model.features.block1.conv1.weight.detach())


def test_deeper_filters_as_norm_maps_or_channels(model):
    name, norm = filters(model, "features.block2.conv1")
    w = model.features.block2.conv1.weight.detach()
    assert norm.shape == (64, 1, 3, 3)
    torch.testing.assert_close(norm[5, 0], w[5].pow(2).sum(0).sqrt())
    _, chans = filters(model, "features.block2.conv1", mode="channels")
    assert chans.shape == (64 * 32, 1, 3, 3) and torch.equal(chans[33, 0], w[1, 1])
    with pytest.raises(VizError, match="pictures need 1 or 3"):
        filters(model, "features.block2.conv1", mode="pictures")


def test_a_layer_that_is_not_conv_lists_the_conv_layers(model):
    with pytest.raises(VizError, match=r"'classifier.fc1' is not a conv layer; conv layers: features.block1.conv1"):
        filters(model, "classifier.fc1")


def test_feature_maps_are_the_layer_outputs_and_leave_the_model_as_it_was(model):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 28, 28)
    maps = feature_maps(model, x)
    assert list(maps) == ["features.block1.conv1", "features.block1.conv2", "features.block2.conv1",
                          "features.block2.conv2"]
    assert maps["features.block2.conv1"].shape == (64, 14, 14)
    torch.testing.assert_close(maps["features.block1.conv1"], model.features.block1.conv1(x[None]).detach()[0])
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(VizError, match="one image"):
        feature_maps(model, torch.randn(2, 1, 28, 28))


class _Left(nn.Module):
    """Class 1 logit = mean of the left half minus the right half: only the left half matters."""

    def forward(self, x):
        d = x[:, 0, :, :14].mean((1, 2)) - x[:, 0, :, 14:].mean((1, 2))
        return torch.stack([-d, d], 1) * 20


def test_deletion_and_insertion_reward_the_map_that_points_at_the_evidence():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, :, :14] = 1.0  # evidence for class 1 on the left
    targets = torch.ones(8, dtype=torch.long)
    right = torch.zeros(8, 28, 28)
    right[:, :, :14] = 1.0  # points at the evidence
    wrong = 1.0 - right
    good = deletion_insertion(_Left(), x, right, targets, steps=10)
    bad = deletion_insertion(_Left(), x, wrong, targets, steps=10)
    assert good["deletion"].shape == (8, 11) and good["fractions"][-1] == 1.0
    assert good["deletion_auc"] < bad["deletion_auc"] - 0.2  # 0.72 vs 0.97
    assert good["insertion_auc"] > bad["insertion_auc"] + 0.2
    # both curves end where they must: nothing left / everything back
    torch.testing.assert_close(good["deletion"][:, -1], bad["deletion"][:, -1])
    torch.testing.assert_close(good["insertion"][:, -1], bad["insertion"][:, -1])
    with pytest.raises(VizError, match="maps must have shape"):
        deletion_insertion(_Left(), x, right[:, :10], targets)


def test_layer_outputs_are_every_leaf_copied_before_in_place_relu(model):
    x = torch.randn(1, 28, 28)
    out = layer_outputs(model, x)
    assert list(out) == [n for n, m in model.named_modules() if n and not list(m.children())]
    conv = out["features.block1.conv1"]
    assert conv.shape == (32, 28, 28) and conv.min() < 0  # the conv's own output, before ReLU(inplace=True)
    model.eval()
    with torch.no_grad():
        expected = model.features.block1.conv1(x.unsqueeze(0))[0]
    torch.testing.assert_close(conv, expected)
    assert out["classifier.fc2"].shape == (10,)
    assert all(not m._forward_hooks for m in model.modules())


def test_effective_receptive_field_lies_inside_the_theoretical_one(model):
    from cnnlab.analysis import field_report, summarize

    x = torch.randn(1, 28, 28)
    erf = effective_receptive_field(model, x, "features.block2.conv1", channel=5, position=(3, 4))
    assert erf.shape == (28, 28) and erf.sum() > 0
    region = field_report(summarize(model, (1, 28, 28)), layer="features.block2.conv1", unit=(3, 4)).unit["regions"]
    rows, cols = erf.nonzero(as_tuple=True)
    (r0, r1), (c0, c1) = region[0]["pixels"], region[1]["pixels"]
    assert r0 <= rows.min() and rows.max() <= r1 and c0 <= cols.min() and cols.max() <= c1
    first = effective_receptive_field(model, x, "features.block1.conv1", channel=0, position=(10, 10))
    assert set(first.nonzero()[:, 0].tolist()) == {9, 10, 11}  # a 3x3 conv's unit sees 3x3 pixels
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("channel,position", [(32, (0, 0)), (0, (28, 0)), (0, (-1, 0)), (0, (1,))])
def test_effective_receptive_field_of_a_unit_that_does_not_exist(model, channel, position):
    with pytest.raises(VizError, match="outside layer 'features.block1.conv1'"):
        effective_receptive_field(model, torch.randn(1, 28, 28), "features.block1.conv1", channel=channel,
                                  position=position)
