"""Tests for cnnlab.data.fashion_mnist: where the files are looked for and how they are loaded.

Every test but the one marked "real data" runs on a small generated Fashion-MNIST folder and
isolates the search path (no $CNNLAB_DATA_DIR, no Debian folder, a cache under tmp_path), so the
results do not depend on what the machine has installed. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import cnnlab.data.fashion_mnist as fm
from cnnlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    DataNotFoundError,
    candidate_dirs,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
)
from cnnlab.data.idx import IDXError, write_idx
from tests.data.fakes import make_fake_fashion_mnist
from tests.data.http_server import local_server

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = [name for name, _ in FASHION_MNIST_FILES.values()]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Nothing to be found anywhere unless a test puts it there."""
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian" / "fashion-mnist")
    return tmp_path


# ---------------------------------------------------------------- constants


def test_the_four_standard_file_names_and_ten_classes():
    assert NAMES == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert all(len(md5) == 32 for _, md5 in FASHION_MNIST_FILES.values())


# ---------------------------------------------------------------- loading


def test_load_generated_folder(isolated):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    raw = load_fashion_mnist(data_dir=folder)
    for role, expected in arrays.items():
        got = getattr(raw, role)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    assert raw.train_images.shape == (60, 28, 28)
    assert raw.test_images.shape == (20, 28, 28)
    assert raw.classes == FASHION_MNIST_CLASSES
    assert raw.source == str(folder)


def test_data_dir_may_be_a_string(isolated):
    folder = isolated / "fake"
    make_fake_fashion_mnist(folder)
    assert len(load_fashion_mnist(data_dir=str(folder)).train_labels) == 60


def test_raw_file_names_work(isolated):
    folder = isolated / "raw"
    arrays = make_fake_fashion_mnist(folder, gz=False)
    assert not any(p.suffix == ".gz" for p in folder.iterdir())
    paths = find_fashion_mnist(folder)
    assert paths["train_images"] == folder / "train-images-idx3-ubyte"
    raw = load_fashion_mnist(folder)
    np.testing.assert_array_equal(raw.test_labels, arrays["test_labels"])
    np.testing.assert_array_equal(raw.train_images, arrays["train_images"])


def test_mixed_gz_and_raw_files_work(isolated):
    folder = isolated / "mixed"
    arrays = make_fake_fashion_mnist(folder)
    name = FASHION_MNIST_FILES["train_labels"][0]
    (folder / name).rename(folder / name.removesuffix(".gz"))  # still gzip content, raw name
    raw = load_fashion_mnist(folder)
    np.testing.assert_array_equal(raw.train_labels, arrays["train_labels"])


def test_find_returns_every_role(isolated):
    folder = isolated / "fake"
    make_fake_fashion_mnist(folder)
    paths = find_fashion_mnist(folder)
    assert set(paths) == set(FASHION_MNIST_FILES)
    for role, (name, _) in FASHION_MNIST_FILES.items():
        assert paths[role] == folder / name


# ---------------------------------------------------------------- search order


def test_candidate_dirs_order(isolated, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(isolated / "env"))
    assert candidate_dirs(isolated / "explicit") == [
        isolated / "explicit",
        isolated / "env",
        isolated / "debian" / "fashion-mnist",
        isolated / "xdg-cache" / "cnnlab" / "fashion-mnist",
    ]
    monkeypatch.delenv("CNNLAB_DATA_DIR")
    assert candidate_dirs() == [isolated / "debian" / "fashion-mnist", isolated / "xdg-cache" / "cnnlab" / "fashion-mnist"]


def test_cache_dir_falls_back_to_home(isolated, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert candidate_dirs()[-1] == isolated / "home" / ".cache" / "cnnlab" / "fashion-mnist"


def test_explicit_data_dir_beats_env_and_debian(isolated, monkeypatch):
    for name, seed in (("explicit", 1), ("env", 2), ("debian/fashion-mnist", 3)):
        make_fake_fashion_mnist(isolated / name, seed=seed)
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(isolated / "env"))
    assert find_fashion_mnist(isolated / "explicit")["train_images"].parent == isolated / "explicit"
    expected = make_fake_fashion_mnist(isolated / "check", seed=1)["train_images"]
    np.testing.assert_array_equal(load_fashion_mnist(isolated / "explicit").train_images, expected)


def test_env_beats_debian(isolated, monkeypatch):
    make_fake_fashion_mnist(isolated / "env", seed=2)
    make_fake_fashion_mnist(isolated / "debian" / "fashion-mnist", seed=3)
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(isolated / "env"))
    assert find_fashion_mnist()["train_labels"].parent == isolated / "env"
    assert load_fashion_mnist().source == str(isolated / "env")


def test_debian_beats_cache(isolated):
    make_fake_fashion_mnist(isolated / "debian" / "fashion-mnist")
    make_fake_fashion_mnist(isolated / "xdg-cache" / "cnnlab" / "fashion-mnist")
    assert find_fashion_mnist()["test_images"].parent == isolated / "debian" / "fashion-mnist"


def test_cache_is_used_when_nothing_else_has_the_files(isolated):
    cache = isolated / "xdg-cache" / "cnnlab" / "fashion-mnist"
    make_fake_fashion_mnist(cache)
    assert load_fashion_mnist().source == str(cache)


def test_folder_missing_one_file_is_skipped_when_not_explicit(isolated):
    debian = isolated / "debian" / "fashion-mnist"
    make_fake_fashion_mnist(debian)
    (debian / FASHION_MNIST_FILES["test_labels"][0]).unlink()
    cache = isolated / "xdg-cache" / "cnnlab" / "fashion-mnist"
    make_fake_fashion_mnist(cache)
    assert find_fashion_mnist()["test_labels"].parent == cache


@pytest.mark.parametrize("missing_role", list(FASHION_MNIST_FILES))
def test_explicit_data_dir_missing_a_file_is_an_error(isolated, monkeypatch, missing_role):
    # complete copies elsewhere must not be used silently instead
    make_fake_fashion_mnist(isolated / "env")
    make_fake_fashion_mnist(isolated / "debian" / "fashion-mnist")
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(isolated / "env"))
    folder = isolated / "explicit"
    make_fake_fashion_mnist(folder)
    missing = FASHION_MNIST_FILES[missing_role][0]
    (folder / missing).unlink()

    with pytest.raises(DataNotFoundError) as info:
        find_fashion_mnist(folder)
    message = str(info.value)
    assert str(folder) in message
    missing_part = message.split("missing ", 1)[1].split(" (expected", 1)[0]
    assert missing_part == missing  # only the file that is really missing
    with pytest.raises(DataNotFoundError):
        load_fashion_mnist(folder)


def test_explicit_data_dir_that_does_not_exist(isolated):
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(isolated / "nowhere")
    for name in NAMES:
        assert name in str(info.value)


def test_data_not_found_is_a_file_not_found_error():
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_nothing_found_anywhere_explains_how_to_get_it(isolated, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(isolated / "empty-env"))
    (isolated / "empty-env").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist()
    message = str(info.value)
    for name in NAMES:
        assert name in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "CNNLAB_DATA_DIR" in message
    for folder in (isolated / "empty-env", isolated / "debian" / "fashion-mnist", isolated / "xdg-cache" / "cnnlab" / "fashion-mnist"):
        assert str(folder) in message


def test_nothing_found_with_candidate_dirs_patched(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(fm, "candidate_dirs", lambda data_dir=None: [empty])
    with pytest.raises(DataNotFoundError) as info:
        find_fashion_mnist()
    assert str(empty) in str(info.value)
    assert all(name in str(info.value) for name in NAMES)


# ---------------------------------------------------------------- inconsistent files


def rewrite(folder: Path, role: str, array: np.ndarray) -> Path:
    path = folder / FASHION_MNIST_FILES[role][0]
    write_idx(path, array)
    return path


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_label_count_mismatch_names_both_files(isolated, split):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    labels_path = rewrite(folder, f"{split}_labels", arrays[f"{split}_labels"][:-1])
    images_path = folder / FASHION_MNIST_FILES[f"{split}_images"][0]
    with pytest.raises(IDXError) as info:
        load_fashion_mnist(folder)
    message = str(info.value)
    assert str(images_path) in message and str(labels_path) in message
    n = len(arrays[f"{split}_labels"])
    assert f"{n} images" in message and f"{n - 1} labels" in message


def test_label_out_of_range(isolated):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    labels = arrays["test_labels"].copy()
    labels[5] = 10
    path = rewrite(folder, "test_labels", labels)
    with pytest.raises(IDXError) as info:
        load_fashion_mnist(folder)
    assert str(path) in str(info.value)
    assert "label 10" in str(info.value)


def test_label_nine_is_in_range(isolated):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    labels = np.full_like(arrays["train_labels"], 9)
    rewrite(folder, "train_labels", labels)
    assert load_fashion_mnist(folder).train_labels.max() == 9


def test_images_must_be_three_dimensional(isolated):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    path = rewrite(folder, "train_images", arrays["train_images"].reshape(60, 784))
    with pytest.raises(IDXError, match="expected 3 dimensions") as info:
        load_fashion_mnist(folder)
    assert str(path) in str(info.value)


def test_images_must_be_uint8(isolated):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    rewrite(folder, "test_images", arrays["test_images"].astype(np.float32))
    with pytest.raises(IDXError, match="uint8"):
        load_fashion_mnist(folder)


def test_train_and_test_image_sizes_must_agree(isolated):
    folder = isolated / "fake"
    arrays = make_fake_fashion_mnist(folder)
    rewrite(folder, "test_images", arrays["test_images"][:, :27, :])
    with pytest.raises(IDXError, match="27"):
        load_fashion_mnist(folder)


def test_corrupt_file_is_reported_with_its_path(isolated):
    folder = isolated / "fake"
    make_fake_fashion_mnist(folder)
    path = folder / FASHION_MNIST_FILES["train_images"][0]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IDXError) as info:
        load_fashion_mnist(folder)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- download (network replaced)


def test_download_keeps_files_with_the_right_checksum(tmp_path, monkeypatch):
    contents = {name: f"content of {name}".encode() for name in NAMES}
    patched = {role: (name, hashlib.md5(contents[name]).hexdigest()) for role, (name, _) in FASHION_MNIST_FILES.items()}
    monkeypatch.setattr(fm, "FASHION_MNIST_FILES", patched)
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    with local_server() as server:
        assert download_fashion_mnist(tmp_path, mirror=server.base) == tmp_path
        assert server.requests == []  # nothing fetched for files it already had
    assert {name: (tmp_path / name).read_bytes() for name in NAMES} == contents


def test_download_fetches_missing_files_and_checks_md5(tmp_path, monkeypatch):
    contents = {name: f"payload {name}".encode() * 1000 for name in NAMES}
    patched = {role: (name, hashlib.md5(contents[name]).hexdigest()) for role, (name, _) in FASHION_MNIST_FILES.items()}
    monkeypatch.setattr(fm, "FASHION_MNIST_FILES", patched)
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    with local_server() as server:
        server.files.update({f"good/{name}": data for name, data in contents.items()})
        # the first mirror is down (nothing is served under bad/), the second works
        monkeypatch.setattr(fm, "MIRRORS", (server.base + "/bad/", server.base + "/good/"))
        root = tmp_path / "dl"
        assert download_fashion_mnist(root, progress=False) == root
        assert len(server.requests) == 8  # every file: first mirror fails, second works
    assert {p.name: p.read_bytes() for p in root.iterdir()} == contents  # and no temporary files


def test_download_with_wrong_checksum_fails_and_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "dl"
    with local_server() as server:
        server.files.update({name: b"not the data" for name in NAMES})
        with pytest.raises(DataNotFoundError) as info:
            download_fashion_mnist(root, mirror=server.base, progress=False)
    assert NAMES[0] in str(info.value)
    assert "md5" in str(info.value)
    assert list(root.iterdir()) == []


# ---------------------------------------------------------------- the real data set


@pytest.mark.skipif(
    not all((REAL_DIR / name).is_file() for name in NAMES), reason=f"Fashion-MNIST not installed in {REAL_DIR}"
)
def test_real_fashion_mnist(isolated):
    raw = load_fashion_mnist(REAL_DIR)
    assert raw.train_images.shape == (60000, 28, 28)
    assert raw.test_images.shape == (10000, 28, 28)
    assert raw.train_images.dtype == raw.test_images.dtype == np.uint8
    assert raw.train_labels.shape == (60000,) and raw.test_labels.shape == (10000,)
    assert np.bincount(raw.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(raw.test_labels, minlength=10).tolist() == [1000] * 10
    assert raw.train_images.max() == 255 and raw.train_images.min() == 0
    assert raw.classes == FASHION_MNIST_CLASSES
