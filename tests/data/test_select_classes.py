"""A class subset of any dataset (--classes, --per-class): relabelled in the order given, every split
filtered, at most N training images per class taken in the seeded order (nested as N grows)."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import DatasetError, channel_stats, select_classes

pytestmark = pytest.mark.usefixtures("single_thread")


def test_classes_are_relabelled_in_the_order_given(tiny_data):
    names = [tiny_data.classes[7], tiny_data.classes[2]]
    sub = select_classes(tiny_data, names)
    assert sub.classes == tuple(names)
    for split in ("train", "val", "test"):
        x, y = getattr(tiny_data, f"{split}_x"), getattr(tiny_data, f"{split}_y")
        sx, sy = getattr(sub, f"{split}_x"), getattr(sub, f"{split}_y")
        keep = (y == 7) | (y == 2)
        assert torch.equal(sx, x[keep]) and torch.equal(sy, torch.where(y[keep] == 7, 0, 1))
    assert (sub.mean, sub.std) == channel_stats(sub.train_x) != (tiny_data.mean, tiny_data.std)
    assert select_classes(tiny_data) is tiny_data  # nothing asked: the same splits


def test_per_class_takes_the_first_n_of_each_class_nested(tiny_data):
    small, large = select_classes(tiny_data, per_class=3), select_classes(tiny_data, per_class=10)
    assert torch.bincount(small.train_y, minlength=10).tolist() == [3] * 10
    assert small.info["per_class"] == 3 and small.classes == tiny_data.classes
    for c in range(10):  # the 3 are the first 3 of the 10, in the split's (seeded) order
        assert torch.equal(small.train_x[small.train_y == c], large.train_x[large.train_y == c][:3])
    assert torch.equal(small.test_y, tiny_data.test_y)  # test and validation keep every image


@pytest.mark.parametrize("classes,per_class,needle", [
    (["Coat", "Cape"], None, "unknown: Cape"),
    (["Coat"], None, "two or more different class names"),
    (["Coat", "Coat"], None, "two or more different class names"),
    (None, 0, "--per-class must be a positive integer, got 0"),
])
def test_bad_selection_is_refused(tiny_data, classes, per_class, needle):
    with pytest.raises(DatasetError, match=needle):
        select_classes(tiny_data, classes, per_class)
