"""``--pretrained`` on the command line: summary, rf, predict and train --from with torchvision's weights from torch
hub's cache (a file the test placed there) or a local server; offline, one line naming the weights, the URL and
the path to place the file at."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnlab.models.pretrained import resolve_weights, weights_path
from tests.cli.helpers import one_line_error, run_cli
from tests.models.test_pretrained import fake_squeezenet_bytes

CACHED = "squeezenet1_1-b8a52dc0.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    path = weights_path(resolve_weights("squeezenet1_1"))
    path.parent.mkdir(parents=True)
    path.write_bytes(fake_squeezenet_bytes())
    return path.parent


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    return tmp_path / "photo.jpg"


def test_predict_names_imagenet_categories(hub, photo, capsys):
    code, out, err = run_cli(capsys, "predict", "tv:squeezenet1_1", "--pretrained", str(photo))
    assert code == 0, err
    assert out.startswith(f"{photo}: boxer ")  # the category's name, from the weights' metadata
    code, out, err = run_cli(capsys, "predict", "tv:squeezenet1_1", str(photo), "--pretrained", "IMAGENET1K_V1",
                             "--top", "2", "--json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert r["weights"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1" and r["top"][0]["class"] == "boxer"
    assert r["top"][0]["index"] == 242 and len(r["top"]) == 2


def test_summary_and_rf_with_pretrained_weights(hub, capsys):
    code, out, err = run_cli(capsys, "summary", "tv:squeezenet1_1", "--pretrained", "--json")
    assert code == 0, err
    assert json.loads(out)["total_params"] == 1235496
    code, out, err = run_cli(capsys, "rf", "tv:squeezenet1_1", "--pretrained")
    assert code == 0, err


def test_what_is_missing_or_wrong_is_one_line(hub, photo, capsys, monkeypatch, tmp_path):
    code, _, err = run_cli(capsys, "predict", "tv:squeezenet1_1", str(photo))
    assert code == 2
    one_line_error(err, "random weights without --pretrained")
    code, _, err = run_cli(capsys, "predict", "tv:squeezenet1_1", "--pretrained", "IMAGENET21K", str(photo))
    assert code == 2
    one_line_error(err, "'IMAGENET21K' is not a weights name of tv:squeezenet1_1", "DEFAULT, IMAGENET1K_V1")
    code, _, err = run_cli(capsys, "summary", "fmnist-cnn", "--pretrained")
    assert code == 2
    one_line_error(err, "--pretrained applies to torchvision models")
    # offline: not in the cache, and nothing answers
    monkeypatch.setenv("CNNLAB_MIRROR", "http://127.0.0.1:9")
    code, _, err = run_cli(capsys, "predict", "tv:resnet18", "--pretrained", str(photo))
    assert code == 2
    one_line_error(err, "ResNet18_Weights.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                   f"place it at {hub / 'resnet18-f37072fd.pth'}")
    assert not list(hub.glob("resnet18*"))


def test_train_from_pretrained(hub, capsys, tmp_path):
    rng = np.random.default_rng(0)
    for c, shift in (("cat", 0), ("dog", 120)):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(10):
            a = rng.integers(0, 120, (48, 48, 3), dtype=np.uint8) + shift
            Image.fromarray(a.astype(np.uint8)).save(tmp_path / "pets" / c / f"{i}.png")
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--from", "tv:squeezenet1_1", "--pretrained", "--dataset",
                             f"folder:{tmp_path / 'pets'}", "--image-size", "64", "--epochs", "1", "--out", str(run),
                             "--device", "cpu", "--no-progress", "--precision", "fp32")
    assert code == 0, err
    spec = json.loads((run / "model.json").read_text())
    assert spec["pretrained"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    assert spec["transfer"][-1]["weights"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["mean"] == [0.485, 0.456, 0.406] and "SqueezeNet1_1_Weights" in data["normalization"]
    code, out, err = run_cli(capsys, "predict", str(run), str(tmp_path / "pets" / "dog" / "0.png"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--from", "tv:squeezenet1_1", "--dataset", f"folder:{tmp_path / 'pets'}")
    assert code == 2
    one_line_error(err, "needs --pretrained [WEIGHTS]", "--weights PATH")


def test_viz_explore_and_predict_name_the_pretrained_model_as_a_run(hub, photo, capsys, tmp_path):
    code, out, err = run_cli(capsys, "viz", "tv:squeezenet1_1", "--pretrained", "--image", str(photo), "--methods",
                             "gradcam", "--target", "boxer")
    assert code == 0, err
    run = tmp_path / "runs" / "pretrained" / "tv-squeezenet1_1-IMAGENET1K_V1"
    assert (run / "viz" / "index.html").is_file()
    captions = [f["caption"] for f in json.loads((run / "viz" / "viz.json").read_text())["figures"]]
    assert any("target: boxer" in c for c in captions), captions  # the name, as class 242 of ImageNet
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["transform"]["resize_size"] == 256 and config["data"]["image_size"] == [224, 224]
    assert config["data"]["classes"][242] == "boxer"
    assert json.loads((run / "model.json").read_text())["pretrained"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    code, out, err = run_cli(capsys, "predict", str(run), str(photo))  # the run directory, like any run
    assert code == 0 and f"{photo}: boxer " in out
    mtime = (run / "model.safetensors").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "viz", "tv:squeezenet1_1", "--pretrained")
    assert code == 2
    one_line_error(err, "no test set here", "--image FILE")
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 2
    one_line_error(err, "ImageNet", "is not here", "give the model image files")
    from cnnlab.explore import ExploreSession

    session = ExploreSession(run)  # what `cnnlab explore tv:squeezenet1_1 --pretrained` serves
    session.close()
    from cnnlab.runs import pretrained_run

    assert pretrained_run("tv:squeezenet1_1", "IMAGENET1K_V1", log=lambda s: None) == run.relative_to(tmp_path)
    assert (run / "model.safetensors").stat().st_mtime_ns == mtime  # made once, reused
    for argv in (["predict", str(run), str(photo), "--pretrained"], ["viz", str(run), "--pretrained"]):
        code, _, err = run_cli(capsys, *argv)  # a run directory brings its own weights, on every command
        assert code == 2
        one_line_error(err, "--pretrained applies to tv:NAME", "brings its own weights")
