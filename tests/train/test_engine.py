"""The training engine on small generated data: learning, the run directory, NaN, evaluation."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn as nn

from cnnlab.train import (
    ConfigError,
    RunExistsError,
    TrainConfig,
    TrainingDivergedError,
    evaluate,
    fit,
    load_run,
    make_eval_loader,
)
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.config import DEFAULT_LR

SMALL_MLP = {"hidden": [64]}


def _cfg(**kw) -> TrainConfig:
    base = dict(model="mlp", model_kwargs=SMALL_MLP, epochs=2, batch_size=64, precision="fp32", device="cpu",
                augment=False)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_learns_and_writes_a_complete_run(tiny_data, tmp_path):
    metrics = fit(_cfg(epochs=3), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    run = tmp_path / "run"
    for name in ("config.json", "model.json", "model.safetensors", "history.csv", "metrics.json",
                 "curves.png", "confusion.png", "checkpoint/last.safetensors"):
        assert (run / name).is_file(), name
    assert metrics["test_accuracy"] >= 0.9  # the generated classes are easy
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert sum(map(sum, saved["confusion_matrix"])) == len(tiny_data.test_y) == saved["test_images"]
    assert set(saved["per_class_accuracy"]) == set(tiny_data.classes)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["lr"] == DEFAULT_LR["adamw"] and cfg["machine"]["torch"] == torch.__version__
    assert cfg["data"]["mean"] == list(tiny_data.mean)
    assert not [p for p in run.rglob("*.tmp")]


def test_saved_weights_reproduce_the_test_metrics(tiny_data, tmp_path):
    metrics = fit(_cfg(), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    loaded = load_run(tmp_path / "run")
    assert not loaded.model.training
    loader = make_eval_loader(tiny_data.test_x, tiny_data.test_y, loaded.data, "cpu")
    again = evaluate(loaded.model, loader, 10)
    assert again["accuracy"] == metrics["test_accuracy"]
    assert again["confusion_matrix"] == metrics["confusion_matrix"]


def test_same_seed_same_weights_other_seed_differs(tiny_data, tmp_path):
    a = fit(_cfg(), tmp_path / "a", data=tiny_data, progress=False, log=lambda s: None).model
    b = fit(_cfg(), tmp_path / "b", data=tiny_data, progress=False, log=lambda s: None).model
    c = fit(_cfg(seed=1), tmp_path / "c", data=tiny_data, progress=False, log=lambda s: None).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_existing_run_is_never_overwritten_without_asking(tiny_data, tmp_path):
    fit(_cfg(epochs=1), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(RunExistsError, match="holds a finished run; pass --overwrite"):
        fit(_cfg(epochs=1, seed=5), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    fit(_cfg(epochs=1, seed=5), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None, overwrite=True)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() != before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = nn.CrossEntropyLoss.forward
    steps_per_epoch = len(tiny_data.train_y) // 64

    def poisoned(self, input, target):
        calls["n"] += 1
        loss = real(self, input, target)
        return loss * float("nan") if calls["n"] > steps_per_epoch + 2 else loss

    monkeypatch.setattr(nn.CrossEntropyLoss, "forward", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2 step 3.*last good checkpoint"):
        fit(_cfg(epochs=3), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    state = load_checkpoint(tmp_path / "run" / "checkpoint" / "last.safetensors", load_run_model(tmp_path / "run"))
    assert (state["epoch"], state["step"]) == (1, 0)
    assert not (tmp_path / "run" / "metrics.json").exists()


def load_run_model(path):
    from cnnlab.models import build_from_spec

    return build_from_spec(json.loads((path / "model.json").read_text()))


@pytest.mark.parametrize("field,value,flag", [
    ("epochs", 0, "--epochs"), ("batch_size", -1, "--batch-size"), ("lr", 0.0, "--lr"),
    ("optimizer", "rmsprop", "--optimizer"), ("schedule", "linear", "--schedule"),
    ("precision", "fp8", "--precision"), ("device", "tpu", "--device"),
])
def test_bad_settings_name_the_flag(field, value, flag, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=flag):
        fit(_cfg(**{field: value}), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_the_data_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="--batch-size 4096 is larger than the 512 training images"):
        fit(_cfg(batch_size=4096), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_fmnist_cnn_trains_with_bf16_and_channels_last(tiny_data, tmp_path):
    metrics = fit(TrainConfig(epochs=1, batch_size=64, precision="bf16", device="cpu"), tmp_path / "run",
                  data=tiny_data, progress=False, log=lambda s: None)
    assert metrics["precision"] == "bf16" and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["trainable_params"] == 1_677_674


def test_fit_never_changes_the_callers_config(tiny_data, tmp_path):
    cfg = _cfg(epochs=1)
    before = cfg.to_dict()
    fit(cfg, tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    assert cfg.to_dict() == before


def test_a_small_training_set_is_one_batch_unless_a_batch_size_is_given(tiny_data, tmp_path):
    import dataclasses

    small = dataclasses.replace(tiny_data, train_x=tiny_data.train_x[:96], train_y=tiny_data.train_y[:96])
    said = []
    fit(_cfg(epochs=1, batch_size=None), tmp_path / "run", data=small, progress=False, log=said.append)
    assert any(s.startswith("note: the 96 training images are fewer than the default batch of 128; training with "
                            "batches of 96") for s in said), said
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["resolved"]["batch_size"] == 96 and saved["train"]["batch_size"] is None
    with pytest.raises(ConfigError, match="--batch-size 128 is larger than the 96 training images"):
        fit(_cfg(epochs=1, batch_size=128), tmp_path / "run2", data=small, progress=False, log=lambda s: None)
