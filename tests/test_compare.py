"""cnnlab.compare: the lecture's layer arithmetic, the latency timer, and comparing trained models."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn
from PIL import Image

from cnnlab.analysis import summarize
from cnnlab.analysis.latency import LatencyError
from cnnlab.compare import compare_layers, compare_models, format_layers, measure_latency
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from tests.helpers import one_thread

pytestmark = pytest.mark.usefixtures("single_thread")

REQUIRED = {"name", "params", "macs", "latency_ms_b1", "latency_ms_b256", "test_accuracy", "threads",
            "train_seconds_per_epoch", "params_ratio", "macs_ratio", "speedup_b256", "how"}


def _recipe(data_dir) -> dict:
    return {"data_dir": str(data_dir), "val_size": 100, "batch_size": 64, "device": "cpu", "augment": False}


@pytest.fixture(scope="module")
def compared(tmp_path_factory, fake_fmnist_dir):
    """Two tiny models compared once (1 epoch on 256 images), and the log of that call."""
    out = tmp_path_factory.mktemp("compare")
    lines: list[str] = []
    with one_thread():
        result = compare_models(["mlp", "gap-cnn"], epochs=1, subset=256, out=out, overrides=_recipe(fake_fmnist_dir),
                                threads=1, latency_repeats=2, log=lines.append, progress=False)
    return out, result, lines


def test_layers_reproduce_the_lecture_numbers():
    rows = {r["name"]: r for r in compare_layers(threads=1, repeats=1, batch=2)}
    conv, sep = rows["conv3x3"], rows["depthwise-separable"]
    assert conv["params"] == 4640 and sep["params"] == 688
    assert conv["macs"] == 16 * 32 * 9 * 64 * 64  # summarize counts no bias adds
    assert sep["macs"] == 16 * 9 * 64 * 64 + 16 * 32 * 64 * 64
    assert rows["depthwise"]["params"] == 16 * 9 and rows["depthwise"]["output_shape"] == [16, 64, 64]
    assert rows["pointwise"]["params"] == 16 * 32 + 32
    assert rows["grouped-g2"]["params"] == 16 * 32 * 9 // 2 + 32
    assert rows["grouped-g4"]["macs"] == 16 * 32 * 9 * 64 * 64 // 4
    assert sep["params_ratio"] == pytest.approx(688 / 4640) and conv["speedup_batch"] == 1.0
    assert rows["shuffle-unit"]["output_shape"] == [32, 64, 64]
    # 4 of 9 positions: the sparse conv keeps a dense weight, but only 4/9 of it reaches the output
    for name in ("sparse-k4", "sparse-k4-masked"):
        assert rows[name]["params"] == 4640
        assert rows[name]["effective_params"] == 16 * 32 * 4 + 32
    # MACs are those that run: the regrouped path skips the zeros, the masked one multiplies them
    assert rows["sparse-k4"]["macs"] == 16 * 32 * 4 * 64 * 64
    assert rows["sparse-k4-masked"]["macs"] == conv["macs"]
    for r in rows.values():
        assert r["params"] is not None, r["note"]
        assert r["latency_ms_b1"] > 0 and r["latency_ms_batch"] > 0 and r["threads"] == 1
        assert r["effective_params"] <= r["params"]
    text = format_layers(list(rows.values()))
    assert "4,640" in text and "688" in text and "18,874,368" in text


def test_layers_that_the_channel_arithmetic_forbids_are_skipped_with_the_reason():
    rows = {r["name"]: r for r in compare_layers(3, out_channels=5, size=8, batch=2, threads=1, repeats=1)}
    assert rows["conv3x3"]["params"] == 3 * 5 * 9 + 5
    assert rows["grouped-g2"]["params"] is None and "in_channels=3" in rows["grouped-g2"]["note"]
    assert rows["shuffle-unit"]["params"] is None and "groups=4" in rows["shuffle-unit"]["note"]
    assert "skipped" in format_layers(list(rows.values()))


def test_layers_written_to_out_atomically_into_a_claimed_folder(tmp_path):
    out = tmp_path / "layers"
    lines: list[str] = []
    rows = compare_layers(3, out_channels=6, size=8, batch=2, threads=1, repeats=1, out=out, log=lines.append)
    assert json.loads((out / "layers.json").read_text()) == rows
    assert (out / "layers.md").read_text() == format_layers(rows, markdown=True)
    assert (out / ".cnnlab").is_file() and not [p for p in os.listdir(out) if p.endswith(".tmp")]
    assert all(line.startswith("warning: ") for line in lines)  # only the busy-machine warning is logged
    again = compare_layers(3, out_channels=6, size=8, batch=2, threads=1, repeats=1, out=out)  # its own folder
    assert json.loads((out / "layers.json").read_text()) == again


def test_layers_out_refuses_a_foreign_folder_and_bad_arguments_create_none(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(CnnlabError, match="mine"):
        compare_layers(3, out_channels=6, size=8, batch=2, threads=1, repeats=1, out=foreign)
    assert os.listdir(foreign) == ["notes.txt"]
    with pytest.raises(CnnlabError, match="--size"):
        compare_layers(size=0, out=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_layers_take_every_setting_after_the_first_by_keyword():
    with pytest.raises(TypeError):
        compare_layers(16, 32)


@pytest.mark.parametrize("kwargs,needle", [
    ({"in_channels": 0}, "--in-channels must be a positive integer; got 0"),
    ({"size": 2.5}, "--size"),
    ({"threads": 10_000}, "--threads 10000"),
    ({"batch": 4096, "size": 1024}, "GiB"),
])
def test_layers_bad_arguments(kwargs, needle):
    with pytest.raises(CnnlabError, match=needle):  # CompareError, or LatencyError for --threads
        compare_layers(**kwargs)


def test_measure_latency_restores_the_model_and_the_threads():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    mean = model[1].running_mean.clone()
    threads = min(2, len(os.sched_getaffinity(0)))
    m = measure_latency(model, (1, 8, 8), 3, repeats=4, warmup=1, threads=threads)
    assert m["repeats"] == 4 and m["batch"] == 3 and m["threads"] == threads
    assert 0 < m["min_ms"] <= m["median_ms"]
    assert [mod.training for mod in model] == [True, False, True] and model.training
    assert torch.get_num_threads() == 1 and torch.equal(model[1].running_mean, mean)
    assert m["channels_last"] and model[0].weight.is_contiguous()  # measured on a channels-last copy
    assert not measure_latency(model, (1, 8, 8), repeats=1, channels_last=False)["channels_last"]


def test_measure_latency_adapts_its_repeats_to_the_budget():
    assert measure_latency(nn.Linear(4, 4), (4,), 1, warmup=0, budget_s=60, max_repeats=7)["repeats"] == 7
    assert measure_latency(nn.Linear(4, 4), (4,), 1, warmup=0, budget_s=0.0)["repeats"] == 5


def test_measure_latency_refuses_what_it_would_measure_wrongly():
    with pytest.raises(LatencyError, match="float32.*torch.float64"):
        measure_latency(nn.Linear(4, 4).double(), (4,))
    with pytest.raises(LatencyError, match="batch must be a positive integer; got 0"):
        measure_latency(nn.Linear(4, 4), (4,), 0)


def test_compare_models_writes_the_table_plot_and_json(compared):
    out, result, lines = compared
    rows = result["rows"]
    assert [r["name"] for r in rows] == ["mlp", "gap-cnn"] and all(r["how"] == "trained" for r in rows)
    saved = json.loads((out / "compare.json").read_text())
    assert saved["rows"] == rows and saved["recipe"]["epochs"] == 1 and saved["recipe"]["subset"] == 256
    assert saved["machine"]["torch_threads"] == 1 and saved["date"]
    for r in rows:
        assert REQUIRED <= set(r)
        assert 0 < r["latency_ms_b1"] < r["latency_ms_b256"], r
        assert r["latency_repeats_b1"] == 2 and r["threads"] == 1 and r["train_seconds_per_epoch"] > 0
        assert 0 <= r["test_accuracy"] <= 1 and r["epochs"] == 1
        model = create_model(r["name"]).eval()
        assert r["params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert r["macs"] == summarize(model, (1, 28, 28)).total_macs
    assert rows[0]["params_ratio"] == rows[0]["macs_ratio"] == rows[0]["speedup_b256"] == 1.0
    assert [r["channels_last"] for r in rows] == [False, True]  # as each run trained: the MLP has no conv
    assert rows[1]["macs_ratio"] == pytest.approx(rows[1]["macs"] / rows[0]["macs"])
    md = (out / "compare.md").read_text()
    assert "| gap-cnn |" in md and "1 thread" in md and f"{rows[1]['params']:,}" in md
    with Image.open(out / "compare.png") as im:
        assert im.format == "PNG" and im.width > 600
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert any(ln.startswith("gap-cnn: training into") for ln in lines)


def test_compare_models_reuses_finished_runs(compared, fake_fmnist_dir):
    out, first, _ = compared
    weights = out / "mlp" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    lines: list[str] = []
    again = compare_models(["mlp"], epochs=1, subset=256, out=out, overrides=_recipe(fake_fmnist_dir), threads=1,
                           latency_repeats=2, log=lines.append)
    assert again["rows"][0]["how"] == "reused" and any("reusing the finished run" in ln for ln in lines)
    assert not any("training into" in ln for ln in lines) and weights.stat().st_mtime_ns == before
    assert again["rows"][0]["test_accuracy"] == first["rows"][0]["test_accuracy"]
    assert json.loads((out / "compare.json").read_text())["rows"][0]["how"] == "reused"


def test_a_stored_comparison_is_returned_untimed_only_when_asked_and_it_matches(compared, fake_fmnist_dir,
                                                                                monkeypatch):
    out, _, _ = compared
    kw = dict(epochs=1, subset=256, out=out, overrides=_recipe(fake_fmnist_dir), threads=1, latency_repeats=2,
              log=lambda _: None)
    stored = compare_models(["mlp"], **kw)  # compare.json now compares mlp alone

    def no_timing(*a, **k):
        raise AssertionError("timed again")

    monkeypatch.setattr("cnnlab.compare.measure_latency", no_timing)
    lines: list[str] = []
    again = compare_models(["mlp"], **kw | {"log": lines.append}, remeasure=False)
    assert again["rows"] == stored["rows"] and again["date"] == stored["date"]
    assert any(ln.startswith("reused ") and "compare.json" in ln for ln in lines)
    with pytest.raises(AssertionError, match="timed again"):  # other names: the stored table does not answer
        compare_models(["mlp", "gap-cnn"], **kw, remeasure=False)
    with pytest.raises(AssertionError, match="timed again"):  # remeasure (the default) always times
        compare_models(["mlp"], **kw)


def test_a_run_of_another_recipe_is_refused_not_reused(compared, fake_fmnist_dir):
    out, _, _ = compared
    from cnnlab.train.reuse import RecipeMismatchError

    with pytest.raises(RecipeMismatchError, match=r"epochs 1 there, 2 here.*--overwrite"):
        compare_models(["mlp"], epochs=2, subset=256, out=out, overrides=_recipe(fake_fmnist_dir), threads=1)


@pytest.mark.parametrize("names,kwargs,needle", [
    (["mlp", "nope"], {}, "unknown model 'nope'; registered: .*fmnist-cnn.*mlp"),
    (["mlp", "mlp"], {}, "'mlp' is given twice"),
    ([], {}, "give one or more models"),
    (["mlp"], {"overrides": {"colour": 1}}, "unknown recipe setting 'colour'; valid: .*batch_size"),
    (["mlp"], {"overrides": {"epochs": 3}}, "overrides may not set 'epochs'"),
    (["mlp"], {"epochs": 0}, "--epochs must be a positive integer"),
])
def test_bad_arguments_fail_before_training(tmp_path, names, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        compare_models(names, out=tmp_path / "c", threads=1, **kwargs)
    assert not (tmp_path / "c").exists()


def test_a_setting_added_after_a_run_was_made_counts_as_its_default():
    from dataclasses import replace

    from cnnlab.train.reuse import recipe_differences
    from cnnlab.train import TrainConfig

    want = TrainConfig().to_dict()
    saved = dict(want)
    del saved["label_smoothing"]  # as if the run predated the setting
    assert recipe_differences(saved, want) == []
    other = replace(TrainConfig(), label_smoothing=0.0).to_dict()
    assert recipe_differences(saved, other) == ["label_smoothing 0.1 there, 0.0 here"]
