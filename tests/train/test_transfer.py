"""Training a transferred model: the frozen backbone is unchanged bit for bit (BatchNorm statistics
too), fine-tuning uses the backbone's learning-rate multiplier, a killed transfer run resumes without its
source, and --extract-features writes what the new head would see."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cnnlab.data import FASHION_MNIST_CLASSES, load_dataset, normalize
from cnnlab.models import EvalBatchNorm2d
from cnnlab.train import TrainConfig, fit, load_run
from cnnlab.errors import CnnlabError
from cnnlab.train.transfer import build_transfer_model, extract_features

pytestmark = pytest.mark.usefixtures("single_thread")

NEW = ["Pullover", "Coat"]
QUIET = {"progress": False, "log": lambda s: None}


def few_shot(source: Path, data_dir: Path, **kw) -> TrainConfig:
    base = dict(source=str(source), data_dir=str(data_dir), classes=NEW, per_class=30, val_size=0, batch_size=20,
                epochs=2, device="cpu", precision="fp32", checkpoint_interval=1e9)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def source(fake_fmnist_dir, tmp_path_factory) -> Path:
    """A small fmnist-gap (widths 8, 16) trained one epoch on the 8 other classes of the generated data."""
    out = tmp_path_factory.mktemp("transfer") / "source"
    cfg = TrainConfig(model="fmnist-gap", model_kwargs={"widths": [8, 16]}, data_dir=str(fake_fmnist_dir),
                      classes=[c for c in FASHION_MNIST_CLASSES if c not in NEW], val_size=100, subset=800, epochs=1,
                      batch_size=64, device="cpu", precision="fp32")
    fit(cfg, out, **QUIET)
    return out


def test_head_only_training_leaves_the_backbone_bit_for_bit(source, fake_fmnist_dir, tmp_path):
    cfg = few_shot(source, fake_fmnist_dir)
    torch.manual_seed(cfg.seed)  # the head fit() starts from
    data = load_dataset("fashion-mnist", fake_fmnist_dir, val_size=0, classes=NEW, per_class=30)
    initial, _ = build_transfer_model(cfg, data)
    metrics = fit(cfg, tmp_path / "run", **QUIET)

    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    backbone = [k for k in before if k.startswith("features.")]
    assert any(k.endswith("running_mean") for k in backbone)
    assert any(k.endswith("num_batches_tracked") for k in backbone)
    for k in backbone:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(after["classifier.fc.weight"], initial.classifier.fc.weight)  # the head did learn
    assert metrics["model"] == "fmnist-gap" and metrics["classes"] == NEW
    assert metrics["trainable_params"] == 16 * 2 + 2
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["source"] == str(source) and saved["train"]["model"] == "fmnist-gap"
    source_data = json.loads((source / "config.json").read_text())["data"]
    assert saved["data"]["mean"] == source_data["mean"] and saved["data"]["std"] == source_data["std"]
    # the run loads as any run: frozen BatchNorm layers and all
    model = load_run(tmp_path / "run").model
    assert isinstance(model.features.block1.bn1, EvalBatchNorm2d)


def _param_groups(run: Path) -> list[dict]:
    with safe_open(str(run / "checkpoint" / "last.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["optimizer"])["param_groups"]


def test_fine_tuning_trains_the_backbone_at_its_multiplier(source, fake_fmnist_dir, tmp_path):
    cfg = few_shot(source, fake_fmnist_dir, freeze="none", backbone_lr_mult=0.25, lr=1e-3, schedule="constant")
    fit(cfg, tmp_path / "run", **QUIET)
    groups = _param_groups(tmp_path / "run")
    assert sorted((g["lr_scale"], g["lr"]) for g in groups) == [(0.25, 2.5e-4)] * 2 + [(1.0, 1e-3)] * 2
    assert sum(len(g["params"]) for g in groups if g["lr_scale"] == 1.0) == 2  # the head's weight and bias
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert not torch.equal(before["features.block2.conv2.weight"], after["features.block2.conv2.weight"])
    assert not torch.equal(before["features.block1.bn1.running_mean"], after["features.block1.bn1.running_mean"])


def test_killed_transfer_run_resumes_without_its_source(source, fake_fmnist_dir, tmp_path):
    src = shutil.copytree(source, tmp_path / "source")
    before = load_file(src / "model.safetensors")
    fit(few_shot(src, fake_fmnist_dir, freeze=1, epochs=3), tmp_path / "reference", **QUIET)

    class Killed(Exception):
        pass

    def log(line: str) -> None:  # dies as epoch 2 ends, before its checkpoint: the last one is epoch 1's
        if line.startswith("epoch   2/"):
            raise Killed

    with pytest.raises(Killed):
        fit(few_shot(src, fake_fmnist_dir, freeze=1, epochs=3), tmp_path / "run", progress=False, log=log)
    assert not (tmp_path / "run" / "metrics.json").exists()
    shutil.rmtree(src)  # the run rebuilds from its own model.json
    fit(resume=tmp_path / "run", **QUIET)

    ref = load_file(tmp_path / "reference" / "model.safetensors")
    resumed = load_file(tmp_path / "run" / "model.safetensors")
    assert ref.keys() == resumed.keys()
    for k in ref:
        assert torch.equal(ref[k], resumed[k]), k
    frozen = [k for k in before if k.startswith("features.block1.")]
    assert frozen and all(torch.equal(before[k], resumed[k]) for k in frozen)
    assert not torch.equal(before["features.block2.conv1.weight"], resumed["features.block2.conv1.weight"])


def test_extract_features_writes_what_the_head_would_see(source, fake_fmnist_dir, tmp_path):
    cfg = TrainConfig(source=str(source), data_dir=str(fake_fmnist_dir), classes=NEW, val_size=40, device="cpu")
    summary = extract_features(cfg, tmp_path / "f.npz", log=lambda s: None)
    z = np.load(tmp_path / "f.npz")
    assert set(z.files) == {"train_features", "train_labels", "val_features", "val_labels", "test_features",
                            "test_labels", "classes", "mean", "std", "source"}
    data = load_dataset("fashion-mnist", fake_fmnist_dir, val_size=40, classes=NEW)
    assert summary["sizes"] == {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)}
    assert z["train_features"].shape == (len(data.train_y), 16) and z["train_features"].dtype == np.float32
    assert z["classes"].tolist() == NEW and str(z["source"]) == str(source)
    np.testing.assert_array_equal(z["test_labels"], data.test_y.numpy())
    run = load_run(source)
    np.testing.assert_allclose(z["mean"], run.data["mean"], rtol=1e-6)
    with torch.no_grad():  # global average pooling of the trunk, on images normalised as the source's
        expected = run.model.features(normalize(data.test_x, run.data["mean"], run.data["std"])).mean((2, 3))
    np.testing.assert_allclose(z["test_features"], expected.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(CnnlabError, match="exists; pass --overwrite"):
        extract_features(cfg, tmp_path / "f.npz", log=lambda s: None)
    mine = tmp_path / "mine.npz"
    np.savez(mine, notes=np.arange(3))  # the user's own .npz: never replaced, even with --overwrite
    with pytest.raises(CnnlabError, match="not written by cnnlab"):
        extract_features(cfg, mine, overwrite=True, log=lambda s: None)
    assert np.load(mine)["notes"].tolist() == [0, 1, 2]
