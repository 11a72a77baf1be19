"""``cnnlab data download NAME`` / ``data info`` and ``train --dataset NAME`` against a local HTTP server serving
the datasets in their real formats (no network): one line and exit 2 for everything that is missing or wrong."""

from __future__ import annotations

import json

import pytest

from tests.cli.helpers import one_line_error, run_cli
from tests.data.fake_archives import kaggle_train_zip, serve_catalog
from tests.data.http_server import local_server


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    return tmp_path / "cache" / "cnnlab"


def test_download_info_and_train_on_cifar10(cache, capsys, monkeypatch, tmp_path):
    with local_server() as server:
        serve_catalog(server, monkeypatch)
        code, out, err = run_cli(capsys, "data", "download", "cifar10", "--no-progress")
        assert code == 0, err
        assert f"cifar10 in {cache / 'cifar10'}" in out and "--dataset cifar10" in out
    code, out, err = run_cli(capsys, "data", "info")
    assert code == 0, err
    assert f"cifar10 in {cache / 'cifar10'}: 100 train and 20 test images, 10 classes: airplane" in out
    assert "oxford-pets: not downloaded (cnnlab data download oxford-pets" in out
    code, out, _ = run_cli(capsys, "data", "info", "cifar10", "--json")
    assert code == 0 and json.loads(out)[0]["images"] == {"train": 100, "test": 20}
    code, out, _ = run_cli(capsys, "data", "info", "imagenette")
    assert code == 2 and "imagenette: not downloaded" in out
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--dataset", "cifar10", "--model", "gap-cnn", "--val-size", "10",
                             "--subset", "30", "--epochs", "1", "--out", str(run), "--device", "cpu",
                             "--no-progress", "--precision", "fp32")
    assert code == 0, err
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["name"] == "cifar10" and data["image_size"] == [32, 32] and data["in_channels"] == 3


def test_catsdogs_cnn_trains_on_oxford_pets(cache, capsys, monkeypatch, tmp_path):
    with local_server() as server:
        serve_catalog(server, monkeypatch)
        code, out, err = run_cli(capsys, "data", "download", "oxford-pets", "--no-progress")
        assert code == 0, err
    run = tmp_path / "pets"
    code, out, err = run_cli(capsys, "train", "--dataset", "oxford-pets", "--model", "catsdogs-cnn", "--image-size",
                             "32", "--epochs", "1", "--out", str(run), "--device", "cpu",
                             "--no-progress", "--precision", "fp32")
    assert code == 0, err
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["name"] == "oxford-pets" and data["classes"] == ["cat", "dog"] and data["image_size"] == [32, 32]


def test_missing_and_wrong_data_are_one_line_errors(cache, capsys, monkeypatch, tmp_path):
    code, _, err = run_cli(capsys, "train", "--dataset", "imagenette", "--epochs", "1")
    assert code == 2
    one_line_error(err, "dataset imagenette is not in", "cnnlab data download imagenette",
                   "imagenette2-320.tgz")
    code, _, err = run_cli(capsys, "data", "download", "dogs-vs-cats")
    assert code == 2
    one_line_error(err, "Kaggle needs a login", "kaggle.com", "--from FILE", "oxford-pets")
    code, _, err = run_cli(capsys, "data", "download", "mnist")
    assert code == 2
    one_line_error(err, "unknown dataset 'mnist'", "cifar10", "oxford-pets")
    # offline: nothing answers at the mirror
    code, _, err = run_cli(capsys, "data", "download", "cifar10", "--mirror", "http://127.0.0.1:9/", "--no-progress")
    assert code == 2
    one_line_error(err, "cannot download http://127.0.0.1:9/cifar-10-binary.tar.gz", "--from cifar-10-binary.tar.gz")
    with local_server() as server:
        serve_catalog(server, monkeypatch, wrong="imagenette2-320.tgz")
        code, _, err = run_cli(capsys, "data", "download", "imagenette", "--no-progress")
        assert code == 2
        one_line_error(err, "imagenette2-320.tgz: md5", "does not match the published", "removed")
        server.files["train.zip"] = b"PK\x03\x04 not a zip"
        code, _, err = run_cli(capsys, "data", "download", "dogs-vs-cats", "--no-progress")
        assert code == 2
        one_line_error(err, "train.zip")
    assert not (cache / "imagenette").exists() and not (cache / "dogs-vs-cats").exists()


def test_dogs_vs_cats_from_a_file(cache, capsys, tmp_path):
    (tmp_path / "train.zip").write_bytes(kaggle_train_zip(per_class=5))
    code, out, err = run_cli(capsys, "data", "download", "dogs-vs-cats", "--from", str(tmp_path / "train.zip"),
                             "--data-dir", str(tmp_path / "dvc"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "data", "info", "dogs-vs-cats", "--data-dir", str(tmp_path / "dvc"))
    assert code == 0 and "5 cat and 5 dog images" in out
    code, _, err = run_cli(capsys, "data", "download", "dogs-vs-cats", "--from", str(tmp_path / "nothing.zip"),
                           "--data-dir", str(tmp_path / "d2"))
    assert code == 2
    one_line_error(err, "nothing.zip: no such file")
