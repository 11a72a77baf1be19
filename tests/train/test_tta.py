"""Flip test-time augmentation: the averaged prediction of an image and its mirror, always reported beside the
plain test accuracy and labelled, never instead of it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from cnnlab.data import BatchLoader
from cnnlab.train import ConfigError, TrainConfig, evaluate, fit
from cnnlab.train.evaluation import check_tta, tta_label


class _LeftHalf(nn.Module):
    """Logits from the left half of the image only: a model whose answer changes when the image is mirrored."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(14 * 28, 3)

    def forward(self, x):
        return self.fc(x[..., :14].flatten(1))


def test_flip_tta_averages_the_probabilities_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = _LeftHalf()
    x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 3, (40,))
    loader = BatchLoader(x, y, 16)
    plain = evaluate(model, loader, 3)
    tta = evaluate(model, loader, 3, tta="flip")
    xs = x.float() / 255  # what the loader yields: mean 0, std 1 in [0, 1] units
    with torch.no_grad():
        p = (model(xs).softmax(1) + model(xs.flip(-1)).softmax(1)) / 2
    want_acc = (p.argmax(1) == y).float().mean().item()
    want_loss = nn.functional.nll_loss(p.log(), y).item()
    assert tta["accuracy"] == pytest.approx(want_acc)
    assert tta["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert tta["tta"] == "flip" and plain["tta"] is None
    assert tta["accuracy"] != plain["accuracy"] or tta["loss"] != pytest.approx(plain["loss"])
    assert sum(map(sum, tta["confusion_matrix"])) == 40


def test_a_mirror_symmetric_model_gains_nothing_from_flip_tta():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 4))
    x = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 4, (32,))
    loader = BatchLoader(x, y, 32)
    plain, tta = evaluate(model, loader, 4), evaluate(model, loader, 4, tta="flip")
    assert tta["accuracy"] == plain["accuracy"]
    assert tta["loss"] == pytest.approx(plain["loss"], rel=1e-6)


def test_unknown_tta_is_refused_with_the_valid_ones():
    assert check_tta(None) is None and check_tta("flip") == "flip"
    with pytest.raises(ConfigError, match="--tta 'crop'.*flip"):
        check_tta("crop")
    with pytest.raises(ConfigError, match="--tta 'crop'.*flip"):
        TrainConfig(tta="crop").validate()
    assert tta_label("flip") == "with flip TTA" and tta_label(None) == ""


def test_a_run_with_tta_records_both_accuracies_and_keeps_the_plain_one(tiny_data, tmp_path):
    base = dict(model="mlp", model_kwargs={"hidden": [16]}, epochs=1, batch_size=64,
                device="cpu", precision="fp32", augment=False)
    plain = fit(TrainConfig(**base), tmp_path / "plain", data=tiny_data, progress=False, log=lambda s: None)
    with_tta = fit(TrainConfig(**base, tta="flip"), tmp_path / "tta", data=tiny_data, progress=False,
                   log=lambda s: None)
    assert with_tta["test_accuracy"] == plain["test_accuracy"]  # the run's own accuracy is the plain one
    saved = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert saved["tta"]["method"] == "flip" and saved["tta"]["label"] == "with flip TTA"
    assert saved["tta"]["test_images"] == len(tiny_data.test_y)
    assert 0.0 <= saved["tta"]["test_accuracy"] <= 1.0
    assert "tta" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())
