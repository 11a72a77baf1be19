"""The downloadable datasets (cnnlab.data.catalog) from a local HTTP server in their real formats: download,
checksum, unpack, layout, then load and one training step on each. The real URLs and md5s against torchvision's."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from cnnlab.data import catalog, load_dataset
from cnnlab.data.batches import BatchLoader
from cnnlab.data.catalog import MARKER, dataset_status, download_dataset, find_dataset
from cnnlab.data.download import DownloadError, part_path
from cnnlab.data.fashion_mnist import DataNotFoundError
from cnnlab.data.splits import DatasetError
from tests.data.fake_archives import kaggle_competition_zip, serve_catalog
from tests.data.http_server import local_server

quiet = lambda s: None  # noqa: E731


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The user cache moved under tmp_path (nothing is written to ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    return tmp_path / "cache" / "cnnlab"


@pytest.fixture
def served(cache, monkeypatch):
    with local_server() as server:
        serve_catalog(server, monkeypatch)
        yield server


def test_the_real_urls_and_checksums_are_torchvisions():
    from torchvision.datasets import Imagenette, OxfordIIITPet

    pets = catalog.CATALOG["oxford-pets"].files
    assert tuple((f.url, f.md5) for f in pets) == tuple(OxfordIIITPet._RESOURCES)
    (nette,) = catalog.CATALOG["imagenette"].files
    assert (nette.url, nette.md5) == Imagenette._ARCHIVES["320px"]
    assert {w: c[0] for w, c in Imagenette._WNID_TO_CLASS.items()} == catalog.IMAGENETTE_CLASSES
    (cifar,) = catalog.CATALOG["cifar10"].files
    assert cifar.url == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert cifar.md5 == "c32a1d4ab5d03f1284b67883e8d87530"


def _one_step(data) -> float:
    """One SGD step of a tiny conv net on the first training batch; the loss."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(data.in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, data.num_classes))
    xb, yb = next(iter(BatchLoader(data.train_x, data.train_y, 16, mean=data.mean, std=data.std, shuffle=True,
                                   seed=0)))
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return loss.item()


def test_cifar10_downloads_unpacks_and_trains(served, cache):
    root = download_dataset("cifar10", progress=False, log=quiet)
    assert root == cache / "cifar10"
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "batches.meta.txt", MARKER])
    assert not list(cache.glob(".cifar10.*partial")) and not (cache / ".cifar10.downloads").exists()
    marker = json.loads((root / MARKER).read_text())
    assert marker["images"] == {"train": 100, "test": 20} and marker["classes"][0] == "airplane"
    data = load_dataset("cifar10", val_size=10)
    assert data.train_x.shape == (90, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert data.classes[-1] == "truck" and data.name == "cifar10" and "transform" in data.describe()
    assert _one_step(data) > 0
    served.requests.clear()
    assert download_dataset("cifar10", progress=False, log=quiet) == root  # present: nothing fetched
    assert served.requests == []


def test_cifar10_with_a_bad_record_size_or_label_is_refused(cache, tmp_path):
    root = cache / "cifar10"
    root.mkdir(parents=True)
    (root / MARKER).write_text("{}")
    for i in range(1, 6):
        (root / f"data_batch_{i}.bin").write_bytes(bytes(3073))
    (root / "test_batch.bin").write_bytes(bytes(3072))
    with pytest.raises(DatasetError, match="test_batch.bin: 3072 bytes is not a CIFAR-10 binary batch"):
        load_dataset("cifar10", val_size=1)
    (root / "test_batch.bin").write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(DatasetError, match="label 10 out of range"):
        load_dataset("cifar10", val_size=1)


def test_oxford_pets_as_cats_vs_dogs(served, cache):
    root = download_dataset("oxford-pets", progress=False, log=quiet)
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/*")) == [
        "test/cat", "test/dog", "train/cat", "train/dog"]
    data = load_dataset("oxford-pets", image_size=24, log=quiet)
    assert data.name == "oxford-pets" and data.classes == ("cat", "dog")
    assert data.train_x.shape[1:] == (3, 24, 24) and len(data.test_y) == 16 and len(data.train_y) + len(data.val_y) == 16
    assert _one_step(data) > 0
    assert dataset_status("oxford-pets")["images"] == {"train": 16, "test": 16}


def test_imagenette_with_class_names(served, cache):
    root = download_dataset("imagenette", progress=False, log=quiet)
    data = load_dataset("imagenette", image_size=16, log=quiet)
    assert "tench" in data.classes and "English springer" in data.classes and len(data.classes) == 10
    assert len(data.test_y) == 20 and data.train_x.shape[1:] == (3, 16, 16)
    assert (root / "test" / "parachute").is_dir()
    assert _one_step(data) > 0


def test_dogs_vs_cats_needs_a_file_from_kaggle(cache, tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        download_dataset("dogs-vs-cats", progress=False, log=quiet)
    assert "Kaggle needs a login" in str(info.value) and "--from FILE" in str(info.value)
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("dogs-vs-cats")
    assert "dataset dogs-vs-cats is not in" in str(info.value) and "--from" in str(info.value)
    (tmp_path / "dogs-vs-cats.zip").write_bytes(kaggle_competition_zip(per_class=10))
    root = download_dataset("dogs-vs-cats", source=tmp_path / "dogs-vs-cats.zip", log=quiet)
    assert len(list((root / "cat").iterdir())) == 10 and len(list((root / "dog").iterdir())) == 10
    assert (tmp_path / "dogs-vs-cats.zip").is_file()  # the user's file is left alone
    data = load_dataset("dogs-vs-cats", image_size=20, log=quiet)
    assert data.classes == ("cat", "dog") and len(data.train_y) == 16
    assert _one_step(data) > 0


def test_dogs_vs_cats_from_a_mirror_and_a_file_that_is_not_it(served, cache, tmp_path):
    root = download_dataset("dogs-vs-cats", data_dir=tmp_path / "dvc", progress=False, log=quiet)
    assert root == tmp_path / "dvc" and len(list((root / "dog").iterdir())) == 12
    (tmp_path / "other.zip").write_bytes(served.files["cifar-10-binary.tar.gz"])
    with pytest.raises(Exception) as info:
        download_dataset("dogs-vs-cats", data_dir=tmp_path / "x", source=tmp_path / "other.zip", log=quiet)
    assert "not a readable" in str(info.value) or "not Kaggle's" in str(info.value)
    assert not (tmp_path / "x").exists()


def test_a_wrong_checksum_and_a_cut_download(cache, tmp_path, monkeypatch):
    with local_server() as server:
        serve_catalog(server, monkeypatch, wrong="cifar-10-binary.tar.gz")
        with pytest.raises(DownloadError, match="md5 .* does not match the published 0{32}; the file was removed"):
            download_dataset("cifar10", progress=False, log=quiet)
        assert not (cache / "cifar10").exists() and not list(cache.glob(".cifar10.downloads/*"))
    with local_server() as server:
        files = serve_catalog(server, monkeypatch)
        server.cut["cifar-10-binary.tar.gz"] = 1000
        with pytest.raises(DownloadError, match="cut at"):
            download_dataset("cifar10", progress=False, log=quiet)
        assert part_path(cache / ".cifar10.downloads" / "cifar-10-binary.tar.gz").stat().st_size == 1000
        assert dataset_status("cifar10")["partial_downloads"] and not dataset_status("cifar10")["present"]
        with pytest.raises(DataNotFoundError, match="dataset cifar10 is not in"):
            find_dataset("cifar10")
        del server.cut["cifar-10-binary.tar.gz"]
        download_dataset("cifar10", progress=False, log=quiet)
        assert ("cifar-10-binary.tar.gz", "bytes=1000-") in server.requests
        assert len(files["cifar-10-binary.tar.gz"]) > 1000 and dataset_status("cifar10")["present"]


def test_a_folder_in_the_way_is_not_overwritten(served, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DatasetError, match="is not a complete cifar10 folder"):
        download_dataset("cifar10", data_dir=tmp_path / "mine", progress=False, log=quiet)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
