"""`cnnlab train --dataset folder:PATH` end to end, and `cnnlab predict` with the run's own transform."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import DatasetWarning, load_dataset, normalize
from cnnlab.predict import load_run_image, predict_files
from cnnlab.train import ConfigError, TrainConfig, load_run
from tests.cli.helpers import one_line_error, run_cli
from tests.helpers import write_folder

pytestmark = pytest.mark.usefixtures("single_thread")

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("shapes") / "shapes")


@pytest.fixture(scope="module")
def folder_run(folder, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "shapes-run"
    code = main(["train", "--dataset", f"folder:{folder}", "--image-size", "16", "--model", "gap-cnn",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--precision", "fp32",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    return out, str(folder)


def test_train_on_a_folder_records_the_transform(folder_run):
    run, folder = folder_run
    config = json.loads((run / "config.json").read_text())
    data = config["data"]
    assert data["name"] == f"folder:{folder}" and data["classes"] == ["disc", "square"]
    assert data["in_channels"] == 3 and data["image_size"] == [16, 16]
    assert data["transform"]["image_size"] == [16, 16] and data["transform"]["grayscale"] is False
    assert data["transform"]["resize"] == "cover-then-center-crop"
    assert len(data["mean"]) == len(data["std"]) == 3
    assert data["files"] == 65 and len(data["skipped"]) == 1 and "corrupt.jpg" in data["skipped"][0]
    sizes = data["sizes"]  # 80/10/10 of each class (65 files: 51, 7, 7), the corrupt file left out
    assert sum(sizes.values()) == 64 and sizes["train"] >= 50 and min(sizes["val"], sizes["test"]) >= 6
    assert config["train"]["image_size"] == 16 and config["train"]["val_size"] is None
    model = json.loads((run / "model.json").read_text())
    assert model["kwargs"]["in_channels"] == 3 and model["kwargs"]["num_classes"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_images"] == sizes["test"] and metrics["classes"] == ["disc", "square"]


def test_train_warns_about_the_corrupt_file(capsys, folder, tmp_path):
    code, out, err = run_cli(capsys, "train", "--dataset", f"folder:{folder}", "--image-size", "8,12", "--grayscale",
                             "--model", "mlp", "--model-arg", "hidden=[8]", "--epochs", "1", "--batch-size", "32",
                             "--device", "cpu", "--no-progress", "--out", str(tmp_path / "r"))
    assert code == 0
    text = out + err
    assert re.search(r"warning: skipped .*corrupt\.jpg: not a readable image", text)
    assert f"skipped 1 of 65 files in {folder}" in text
    data = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert data["in_channels"] == 1 and data["image_size"] == [8, 12]  # H, W
    assert json.loads((tmp_path / "r" / "model.json").read_text())["kwargs"]["image_size"] == [8, 12]


def test_train_streams_a_folder_from_the_disk_cache(capsys, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_FOLDER_MEMORY", "1K")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["train", "--dataset", f"folder:{folder}", "--image-size", "8", "--model", "mlp", "--model-arg",
            "hidden=[8]", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress"]
    outs = []
    for run in ("a", "b"):
        code, out, _ = run_cli(capsys, *args, "--out", str(tmp_path / run))
        assert code == 0
        outs.append(out)
    assert "decoding 65 images to 3x8x8 in this process into cache" in outs[0]
    assert "64 decoded images from the cache" in outs[1] and "decoding" not in outs[1]  # nothing decoded again
    (cached,) = (tmp_path / "cache" / "cnnlab" / "folders").glob("*.u8")
    data = json.loads((tmp_path / "b" / "config.json").read_text())["data"]
    assert data["storage"] == f"cache {cached}" and cached.stat().st_size == 64 * 3 * 8 * 8


def test_predict_applies_the_runs_transform(capsys, folder_run):
    run, folder = folder_run
    files = [Path(folder) / "disc" / "00.png", Path(folder) / "square" / "01.jpg", Path(folder) / "disc" / "02.bmp"]
    code, out, _ = run_cli(capsys, "predict", str(run), *map(str, files), "--json")
    assert code == 0
    result = json.loads(out)
    assert [r["image"] for r in result] == list(map(str, files))
    for r in result:
        assert sorted(t["class"] for t in r["top"]) == ["disc", "square"]  # top 3 of 2 classes: both
        assert abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-5

    # the file decodes to exactly the training tensor, so the model sees the same input and gives the same logits
    loaded = load_run(run)
    with pytest.warns(DatasetWarning) as record:
        data = load_dataset(loaded.data["name"], image_size=16)
    assert [str(w.message).startswith(s) for w, s in zip(record, ("skipped /", "skipped 1 of 65"))] == [True, True]
    x = load_run_image(files[0], loaded.data)
    decoded = torch.cat([data.train_x, data.val_x, data.test_x])
    rows = [i for i in range(len(decoded)) if torch.equal(decoded[i], x)]
    assert len(rows) == 1
    model = loaded.model.eval()
    with torch.inference_mode():
        logits = model(normalize(decoded[rows[0]][None], loaded.data["mean"], loaded.data["std"]))
    expected = torch.softmax(logits.float(), dim=1)[0]
    got = predict_files(loaded, [str(files[0])], top=2)[0]["top"]
    for t in got:
        assert t["probability"] == pytest.approx(float(expected[t["index"]]), abs=1e-6)


def test_eval_reloads_the_folder_run(capsys, folder_run):
    run, _ = folder_run
    code, out, err = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0 and "warning: skipped 1 of 65 files" in err
    result = json.loads(out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert result["test_images"] == metrics["test_images"]
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.parametrize("args,needles", [
    (["--dataset", "folder:{tmp}/nope"], ["{tmp}/nope", "no such folder"]),
    (["--dataset", "folder:{folder}", "--image-size", "0"], ["--image-size", "'0'", "N or H,W"]),
    (["--dataset", "folder:{folder}", "--image-size", "8,8,8"], ["--image-size", "'8,8,8'"]),
    (["--dataset", "folder:{folder}", "--val-size", "1.5"], ["--val-size", "'1.5'", "fraction in [0, 1)"]),
    (["--image-size", "32"], ["--image-size and --grayscale apply to image folders", "fashion-mnist"]),
    (["--val-size", "0.1"], ["--val-size 0.1", "fashion-mnist takes a count"]),
    (["--dataset", "folder:{folder}", "--data-dir", "{tmp}"], ["--data-dir applies to fashion-mnist"]),
])
def test_bad_folder_flags_are_one_line_errors(capsys, folder, tmp_path, args, needles):
    fill = lambda s: s.format(tmp=tmp_path, folder=folder)  # noqa: E731
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["train", *map(fill, args), "--epochs", "1", "--out", str(tmp_path / "r")]))
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, *map(fill, needles))


def test_train_config_folder_fields():
    cfg = TrainConfig(dataset="folder:x", image_size=(32, 48), grayscale=True).validate()
    assert cfg.image_size == [32, 48] and cfg.val_size is None  # a list for config.json; the folder's default split
    assert TrainConfig(dataset="folder:x", image_size=[24]).validate().image_size == 24
    assert TrainConfig().validate().val_size == 5000  # Fashion-MNIST's count, as recorded before
    for bad in (0, [8, -1], [1, 2, 3], 2.5, True):
        with pytest.raises(ConfigError, match="--image-size must be N or H,W"):
            TrainConfig(dataset="folder:x", image_size=bad).validate()
    with pytest.raises(ConfigError, match=r"--val-size 1\.0: a fraction must be in \[0, 1\)"):
        TrainConfig(dataset="folder:x", val_size=1.0).validate()
    with pytest.raises(ConfigError, match="--image-size and --grayscale apply to image folders"):
        TrainConfig(grayscale=False).validate()


def test_predict_refuses_invert_for_a_folder_run(capsys, folder_run):
    run, folder = folder_run
    code, _, err = run_cli(capsys, "predict", str(run), str(Path(folder) / "disc" / "00.png"), "--invert", "yes")
    assert code == 2
    one_line_error(err, "--invert applies to runs trained on Fashion-MNIST", "recorded transform")


def test_predict_shows_no_library_warning(folder_run):
    """Normal input reaches the user with no library warning: the CLI runs with every warning an error."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    run, folder = folder_run
    r = subprocess.run([sys.executable, "-W", "error", "-m", "cnnlab", "predict", str(run),
                        str(Path(folder) / "disc" / "00.png"), str(Path(folder) / "square" / "01.jpg")],
                       capture_output=True, text=True, env=cli_env(), timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.splitlines()) == 2 and all("%" in ln for ln in r.stdout.splitlines())
