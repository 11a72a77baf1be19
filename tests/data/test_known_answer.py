"""``--dataset known-answer``: generated the same every time, the evidence box of every image recorded and
kept aligned through the validation split, ``--subset`` and ``--classes``, the class carried by the object
alone, and a CLI that trains on it and lists it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import list_datasets, load_dataset
from cnnlab.data.known_answer import (CLASSES, OBJECT, REGION_COLS, REGION_ROWS, TEST_IMAGES, TRAIN_IMAGES, box_masks,
                                      known_answer_split, make_task, masks_to_boxes, to_uint8)
from cnnlab.errors import CnnlabError
from tests.cli.helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("known-answer", val_size=1000, seed=3)


def test_registered_and_deterministic(data):
    assert "known-answer" in list_datasets()
    assert data.classes == CLASSES and data.in_channels == 1 and data.image_size == (28, 28)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (TRAIN_IMAGES - 1000, 1000, TEST_IMAGES)
    again = load_dataset("known-answer", val_size=1000, seed=3)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_x, data.test_x)
    other = load_dataset("known-answer", val_size=1000, seed=4)  # the seed splits; the test split stays
    assert torch.equal(other.test_x, data.test_x) and not torch.equal(other.val_x, data.val_x)
    assert data.describe()["evidence"] and data.describe()["source"].startswith("generated")
    counts = torch.bincount(data.test_y, minlength=3)
    assert counts.min() > TEST_IMAGES / 3 * 0.9  # balanced classes


def _object_pixels(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box cut out (N, 8, 8), in task units."""
    t = (x[:, 0].float() - 128) / 24
    return torch.stack([t[i, b[0]:b[2], b[1]:b[3]] for i, b in enumerate(boxes)])


def test_every_image_has_its_evidence_box(data):
    for split, y in (("train", data.train_y), ("val", data.val_y), ("test", data.test_y)):
        boxes = data.evidence[split]
        assert boxes.shape == (len(y), 4) and boxes.dtype == torch.int64
        has = boxes[:, 2] > boxes[:, 0]
        assert torch.equal(has, y < 2), split  # an object exactly where the class says there is one
        b = boxes[has]
        assert (b[:, 2] - b[:, 0] == OBJECT).all() and (b[:, 3] - b[:, 1] == OBJECT).all()
        assert (b[:, 0] >= REGION_ROWS[0]).all() and (b[:, 2] <= REGION_ROWS[1]).all()
        assert (b[:, 1] >= REGION_COLS[0]).all() and (b[:, 3] <= REGION_COLS[1]).all()
    # the box holds the bars: horizontal ones make rows 1-2 and 5-6 bright, vertical ones those columns
    x, y, boxes = data.test_x[:200], data.test_y[:200], data.evidence["test"][:200]
    keep = y < 2
    obj = _object_pixels(x[keep], boxes[keep])
    rows, cols = obj.mean(2)[:, [1, 2, 5, 6]].mean(1), obj.mean(1)[:, [1, 2, 5, 6]].mean(1)
    assert torch.equal(rows > cols, y[keep] == 0)


def test_the_object_is_the_only_cue(data):
    """Outside the region the object may occupy, the three classes look alike: the same mean and spread, and
    the distractor as often in every place."""
    x = data.train_x[:6000, 0].float()
    y = data.train_y[:6000]
    outside = torch.ones(28, 28, dtype=torch.bool)
    outside[REGION_ROWS[0]:REGION_ROWS[1], REGION_COLS[0]:REGION_COLS[1]] = False
    stats = [(x[y == c][:, outside].mean(), x[y == c][:, outside].std()) for c in range(3)]
    for m, s in stats[1:]:
        assert abs(m - stats[0][0]) < 0.1 and abs(s - stats[0][1]) < 0.2
    spread = torch.stack([(x[y == c] - 128).abs().gt(40).float().mean(0) for c in range(3)])  # where the patch is
    assert ((spread - spread.mean(0)).abs() * outside).max() < 0.05
    # and the class 2 images are noise where the others have their object
    inside = box_masks(data.evidence["train"][:6000], 28)
    assert x[inside].mean() > x[y == 2].mean() + 10


def test_subset_and_classes_keep_the_boxes_aligned():
    full = load_dataset("known-answer", val_size=500)
    sub = load_dataset("known-answer", val_size=500, subset=300)
    assert torch.equal(sub.train_x, full.train_x[:300]) and torch.equal(sub.evidence["train"], full.evidence["train"][:300])
    two = load_dataset("known-answer", val_size=500, classes=["no object", "vertical bars"])
    keep = full.test_y >= 1
    assert torch.equal(two.test_x, full.test_x[keep]) and torch.equal(two.evidence["test"], full.evidence["test"][keep])
    assert torch.equal(two.evidence["test"][:, 2] > 0, two.test_y == 1)  # relabelled: vertical bars is now 1


def test_uint8_is_the_task_rounded():
    x, y, box = make_task(64, torch.Generator().manual_seed(1))
    u = to_uint8(x)
    back = (u.float() - 128) / 24
    inside = (x > -128 / 24) & (x < 127 / 24)
    assert (back - x)[inside].abs().max() <= 0.5 / 24 + 1e-6
    gen_x, gen_y, gen_boxes = known_answer_split(64, 1)
    assert torch.equal(gen_x, u) and torch.equal(gen_y, y) and torch.equal(box_masks(gen_boxes), box)


def test_boxes_and_masks_round_trip():
    _, _, box = make_task(50, torch.Generator().manual_seed(2))
    boxes = masks_to_boxes(box)
    assert torch.equal(box_masks(boxes, 28), box)
    grown = F.max_pool2d(box.float()[:, None], 3, 1, 1)[:, 0].bool()  # dilation by one pixel
    assert torch.equal(box_masks(boxes, 28, margin=1), grown)
    edge = torch.tensor([[0, 0, 2, 3], [0, 0, 0, 0]])
    m = box_masks(edge, (4, 5), margin=1)
    assert m[0].sum() == 3 * 4 and not m[1].any()  # clipped at the border; empty stays empty


def test_data_dir_is_refused():
    with pytest.raises(CnnlabError, match="known-answer is generated"):
        load_dataset("known-answer", "/tmp")


def test_train_on_it_and_data_info_lists_it(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "info")
    assert out.splitlines()[0].startswith("known-answer (generated") if code == 0 else "known-answer" in out
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--dataset", "known-answer", "--model", "fmnist-cnn", "--subset", "1024",
                             "--val-size", "256", "--epochs", "3", "--batch-size", "64", "--out", str(run),
                             "--device", "cpu", "--no-progress", "--precision", "fp32")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95, metrics["test_accuracy"]  # learnable: 1,024 images, 48 steps
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["name"] == "known-answer" and data["classes"] == list(CLASSES)
    code, _, err = run_cli(capsys, "train", "--dataset", "known-answer", "--data-dir", str(tmp_path), "--out",
                           str(tmp_path / "r2"), "--epochs", "1")
    assert code == 2
    one_line_error(err, "--data-dir", "known-answer")
