"""Tests for cnnlab.data.datasets: named datasets held in memory with a seeded validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import DataSplits, UnknownDatasetError, channel_stats, list_datasets, load_dataset
from cnnlab.data.fashion_mnist import FASHION_MNIST_CLASSES
from tests.data.fakes import make_fake_fashion_mnist

N_TRAIN, N_TEST = 60, 20


def ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].tolist()


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fmnist")
    make_fake_fashion_mnist(folder)
    return folder


def load(fake_dir, **kwargs) -> DataSplits:
    kwargs.setdefault("val_size", 10)
    return load_dataset("fashion-mnist", fake_dir, **kwargs)


# ---------------------------------------------------------------- shapes and types


def test_shapes_dtypes_and_metadata(fake_dir):
    d = load(fake_dir, val_size=10)
    assert d.name == "fashion-mnist"
    assert d.train_x.shape == (50, 1, 28, 28)
    assert d.val_x.shape == (10, 1, 28, 28)
    assert d.test_x.shape == (20, 1, 28, 28)
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.uint8
    for y in (d.train_y, d.val_y, d.test_y):
        assert y.dtype == torch.int64
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (50, 10, 20)
    assert d.classes == FASHION_MNIST_CLASSES and d.num_classes == 10
    assert d.in_channels == 1 and d.image_size == (28, 28)
    assert d.source == str(fake_dir)


def test_describe(fake_dir):
    info = load(fake_dir, val_size=7, subset=30, seed=3).describe()
    assert info["sizes"] == {"train": 30, "val": 7, "test": 20}
    assert info["in_channels"] == 1 and info["image_size"] == [28, 28]
    assert info["classes"] == list(FASHION_MNIST_CLASSES)
    assert (info["val_size"], info["subset"], info["split_seed"]) == (7, 30, 3)
    assert len(info["mean"]) == len(info["std"]) == 1


@pytest.mark.parametrize("val_size", [0, 1, 10, 59])
def test_split_sizes(fake_dir, val_size):
    d = load(fake_dir, val_size=val_size)
    assert len(d.val_x) == len(d.val_y) == val_size
    assert len(d.train_x) == len(d.train_y) == N_TRAIN - val_size
    assert d.val_x.shape[1:] == (1, 28, 28)


# ---------------------------------------------------------------- the split


def test_images_keep_their_labels(fake_dir):
    d = load(fake_dir, val_size=15, seed=4)
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert [i % 10 for i in ids(x)] == y.tolist()


def test_train_and_val_are_disjoint_and_cover_the_training_set(fake_dir):
    arrays = make_fake_fashion_mnist(fake_dir.parent / "again")
    d = load(fake_dir, val_size=15, seed=5)
    train_ids, val_ids = ids(d.train_x), ids(d.val_x)
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(N_TRAIN))
    # whole images are kept, not just the id pixel
    for x in (d.train_x, d.val_x):
        np.testing.assert_array_equal(x[:, 0].numpy(), arrays["train_images"][ids(x)])


def test_split_is_shuffled(fake_dir):
    d = load(fake_dir, val_size=15, seed=0)
    assert ids(d.val_x) != list(range(15))


def test_test_split_is_untouched(fake_dir):
    arrays = make_fake_fashion_mnist(fake_dir.parent / "again2")
    d = load(fake_dir, val_size=15, seed=9, subset=5)
    np.testing.assert_array_equal(d.test_x[:, 0].numpy(), arrays["test_images"])
    np.testing.assert_array_equal(d.test_y.numpy(), arrays["test_labels"])


def test_seeded_split_is_deterministic(fake_dir):
    a = load(fake_dir, val_size=15, seed=7)
    b = load(fake_dir, val_size=15, seed=7)
    assert ids(a.train_x) == ids(b.train_x)
    assert ids(a.val_x) == ids(b.val_x)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)


def test_another_seed_gives_another_split(fake_dir):
    a = load(fake_dir, val_size=15, seed=7)
    b = load(fake_dir, val_size=15, seed=8)
    assert set(ids(a.val_x)) != set(ids(b.val_x))


def test_subset_keeps_the_first_n_training_images(fake_dir):
    full = load(fake_dir, val_size=10, seed=2)
    sub = load(fake_dir, val_size=10, seed=2, subset=12)
    assert ids(sub.train_x) == ids(full.train_x)[:12]
    assert sub.train_y.tolist() == full.train_y.tolist()[:12]
    assert ids(sub.val_x) == ids(full.val_x)  # the validation split does not change
    assert len(sub.test_x) == N_TEST


def test_subset_larger_than_training_set_keeps_all_and_says_so(fake_dir):
    with pytest.warns(UserWarning, match="--subset 1000 is more than the 50 training images"):
        d = load(fake_dir, val_size=10, subset=1000)
    assert len(d.train_x) == 50
    said = []
    load_dataset("fashion-mnist", fake_dir, val_size=10, subset=1000, log=said.append)
    assert said == ["note: --subset 1000 is more than the 50 training images of fashion-mnist; training on all of them"]


# ---------------------------------------------------------------- statistics


def test_mean_and_std_come_from_the_training_images(fake_dir):
    d = load(fake_dir, val_size=10, subset=20, seed=1)
    x = d.train_x.numpy().astype(np.float64) / 255.0
    assert d.mean[0] == pytest.approx(x.mean(), abs=1e-6)
    assert d.std[0] == pytest.approx(x.std(), rel=1e-3)
    # the statistics follow the training images: another subset gives other numbers
    other = load(fake_dir, val_size=10, subset=20, seed=2)
    assert other.mean != d.mean


def test_channel_stats_per_channel():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 1] = 255
    images[:2, 2] = 255  # half the images white in channel 2
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.0, 1.0, 0.5))
    assert std[0] > 0 and std[0] < 1e-5  # constant channel: clamped, never zero
    assert std[1] < 1e-5
    assert std[2] == pytest.approx(0.5, rel=0.05)
    assert all(isinstance(v, float) for v in mean + std)


def test_channel_stats_of_known_values():
    values = torch.tensor([0, 51, 102, 153, 204, 255], dtype=torch.uint8).view(6, 1, 1, 1)
    mean, std = channel_stats(values)
    x = values.double().flatten() / 255
    assert mean[0] == pytest.approx(0.5, abs=1e-6)
    assert std[0] == pytest.approx(float(x.std()), abs=1e-6)


# ---------------------------------------------------------------- errors


def test_list_datasets():
    assert list_datasets() == ["cifar10", "dogs-vs-cats", "fashion-mnist", "imagenette", "known-answer", "oxford-pets"]


def test_unknown_dataset_lists_valid_names(fake_dir):
    with pytest.raises(UnknownDatasetError) as info:
        load_dataset("cifar-10", fake_dir)
    assert "cifar-10" in str(info.value)
    assert "fashion-mnist" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("val_size", [-1, N_TRAIN, N_TRAIN + 1, 5000])
def test_bad_val_size(fake_dir, val_size):
    with pytest.raises(ValueError) as info:
        load(fake_dir, val_size=val_size)
    assert str(val_size) in str(info.value)
    assert str(N_TRAIN) in str(info.value)


@pytest.mark.parametrize("subset", [0, -5])
def test_bad_subset(fake_dir, subset):
    with pytest.raises(ValueError, match="subset"):
        load(fake_dir, val_size=10, subset=subset)
