"""Image folders (cnnlab.data.folder): layouts, formats, the transform, splits, the disk cache, errors, size limits,
links."""

from __future__ import annotations

import os
import re
import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import (DatasetError, DatasetWarning, ImageDecodeError, ImageLimitError, ImageTransform, load_dataset,
                         load_folder)

pytestmark = pytest.mark.usefixtures("single_thread")


def gray_png(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> Path:
    """A flat grayscale PNG of ``value`` (W, H = ``size``): flat images survive any resize unchanged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def id_folder(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    """Class folders of flat gray PNGs whose value is a unique id (start, start + 1, ...)."""
    i = start
    for cls, n in counts.items():
        for _ in range(n):
            gray_png(root / cls / f"{i:03d}.png", i, size=(8 + i % 5, 6 + i % 3))
            i += 1
    return root


def ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].tolist()


def load(path, **kw):
    kw.setdefault("workers", 1)
    return load_folder(path, **kw)


# ---------------------------------------------------------------- formats and the transform


def test_mixed_formats_sizes_and_modes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(root / "cat" / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 50), np.uint8)).save(root / "cat" / "b.JPG", quality=90)
    Image.fromarray(rng.integers(0, 256, (33, 33, 3), np.uint8)).save(root / "cat" / "c.bmp")
    Image.fromarray(rng.integers(0, 256, (20, 90, 4), np.uint8), "RGBA").save(root / "dog" / "d.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)).convert("P").save(root / "dog" / "e.png")
    Image.fromarray(rng.integers(0, 256, (300, 200, 3), np.uint8)).save(root / "dog" / "f.jpeg")
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    (root / ".thumbnails").mkdir()  # hidden: not a class
    d = load(root, image_size=16)
    assert d.classes == ("cat", "dog")
    assert d.in_channels == 3 and d.image_size == (16, 16)
    n = len(d.train_y) + len(d.val_y) + len(d.test_y)
    assert n == 6 and d.info["files"] == 6 and d.info["skipped"] == []
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (3, 16, 16)
    assert d.name == f"folder:{root}" and d.source == str(root)


def test_non_square_size_covers_then_crops_the_centre(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # the outer quarters are cut off by the centre crop of a square
    a[:, 20:60] = (0, 255, 0)
    a[:, 60:] = (0, 0, 255)
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = ImageTransform((16, 16), False)(tmp_path / "wide.png")
    assert x.shape == (3, 16, 16)
    inner = x[:, :, 1:-1]  # the edge columns blend in a little of the cropped neighbours, as resize-then-crop does
    assert (inner[1] == 255).all() and (inner[0] == 0).all() and (inner[2] == 0).all()
    assert x[1].min() > 200 and x[0].max() < 50 and x[2].max() < 50
    y = ImageTransform((10, 20), False)(tmp_path / "wide.png")  # H, W: the same aspect as the image
    assert y.shape == (3, 10, 20)
    assert y[0, :, 0].min() > 200 and y[2, :, -1].min() > 200  # nothing cropped: red left, blue right


def test_transform_is_torchvisions_eval_transform(tmp_path):
    from torchvision.transforms import v2

    rng = np.random.default_rng(1)
    a = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 18, 3), np.uint8)).resize((90, 60), Image.BICUBIC))
    Image.fromarray(a).save(tmp_path / "x.png")
    ours = torch.from_numpy(ImageTransform((24, 24), False)(tmp_path / "x.png")).int()
    tv = v2.Compose([v2.Resize(24, interpolation=v2.InterpolationMode.BILINEAR, antialias=True), v2.CenterCrop(24)])
    ref = torch.from_numpy(np.array(tv(Image.fromarray(a)))).permute(2, 0, 1).int()
    # identical where the resized size is a whole number of pixels (90x60 -> 36x24); elsewhere torchvision
    # rounds the resized size and the crop offset to whole pixels, and the two differ by that sub-pixel shift
    assert torch.equal(ours, ref)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40), np.uint8)
    a[:, :16] = 255  # a bright left edge (the centre crop keeps its inner 6 columns)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "tagged.png", exif=exif)
    im.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")
    t = ImageTransform((16, 16), True)
    tagged, upright = t(tmp_path / "tagged.png"), t(tmp_path / "upright.png")
    assert np.array_equal(tagged, upright)
    assert tagged[0, :3].min() > 200 and tagged[0, -3:].max() < 50  # the bright edge is now at the top


def test_alpha_and_palette_transparency_composite_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (0, 0, 0, 255)  # opaque black top half; transparent (black underneath) bottom half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.paste(0, (0, 0, 8, 4))
    pal.save(tmp_path / "pal.png", transparency=1)  # index 1 (the bottom half) is transparent
    t = ImageTransform((8, 8), False)
    for name in ("rgba.png", "pal.png"):
        x = t(tmp_path / name)
        assert (x[:, :3] == 0).all() and (x[:, 5:] == 255).all(), name


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.zeros((4, 8), np.uint16)
    a[:, 4:] = 65535
    a[:, :4] = 32896  # 128 * 257
    Image.fromarray(a).save(tmp_path / "deep.png")
    x = ImageTransform((4, 8), True)(tmp_path / "deep.png")
    assert (x[0, :, :3] == 128).all() and (x[0, :, 5:] == 255).all()


def test_grayscale_auto_and_forced(tmp_path):
    gray = id_folder(tmp_path / "gray", {"a": 3, "b": 3})
    assert load(gray, image_size=8).in_channels == 1
    forced = load(gray, image_size=8, grayscale=False)
    assert forced.in_channels == 3 and torch.equal(forced.train_x[:, 0], forced.train_x[:, 2])
    assert forced.info["transform"]["grayscale"] is False
    Image.new("RGB", (9, 9), (200, 10, 10)).save(gray / "a" / "red.jpg")
    assert load(gray, image_size=8).in_channels == 3  # one colour image makes the folder RGB
    one = load(gray, image_size=8, grayscale=True)
    assert one.in_channels == 1 and one.info["transform"]["grayscale"] is True


def test_transform_round_trip_and_unknown_policy():
    t = ImageTransform((24, 32), True)
    assert ImageTransform.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="resize 'stretch'"):
        ImageTransform.from_dict({**t.to_dict(), "resize": "stretch"})


def test_decode_errors_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    t = ImageTransform((8, 8), False)
    with pytest.raises(ImageDecodeError, match=r"bad\.png: not a readable image"):
        t(tmp_path / "bad.png")
    with pytest.raises(ImageDecodeError, match=r"gone\.png: no such file"):
        t(tmp_path / "gone.png")


# ---------------------------------------------------------------- unreadable files


def test_corrupt_files_are_skipped_with_a_warning_each_and_a_count(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 10, "b": 10})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    good = root / "b" / "015.png"
    (root / "b" / "truncated.png").write_bytes(good.read_bytes()[:40])
    with pytest.warns(DatasetWarning) as record:
        d = load(root, image_size=8)
    messages = [str(w.message) for w in record]
    assert any("broken.jpg" in m and "not a readable image" in m for m in messages)
    assert any("truncated.png" in m for m in messages)
    assert messages[-1] == f"skipped 2 of 22 files in {root} (unreadable, corrupt or too large)"
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 20
    assert len(d.info["skipped"]) == 2
    lines = []
    load(root, image_size=8, log=lines.append)  # a log callback gets them as lines instead
    assert sum(ln.startswith("warning: skipped") for ln in lines) == 3


def test_a_class_left_without_readable_training_images_is_an_error(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 5})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"junk")
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="no readable training image for class b"):
        load(root, image_size=8)


def test_nothing_readable_is_an_error_and_leaves_no_cache(tmp_path):
    root = tmp_path / "d"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.jpg").write_bytes(b"junk")
    with pytest.warns(DatasetWarning, match="skipped"), pytest.raises(DatasetError, match="none of its 6 images"):
        load(root, image_size=8, memory_limit=1, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))


# ---------------------------------------------------------------- splits


def test_seeded_split_is_stratified_disjoint_and_deterministic(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 30, "b": 50})
    d = load(root, image_size=4, seed=3)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (64, 8, 8)
    for y, want in ((d.val_y, [3, 5]), (d.test_y, [3, 5]), (d.train_y, [24, 40])):
        assert torch.bincount(y, minlength=2).tolist() == want  # 10% / 10% / 80% of each class
    seen = ids(d.train_x) + ids(d.val_x) + ids(d.test_x)
    assert sorted(seen) == list(range(80))  # every image once
    labels = torch.cat([d.train_y, d.val_y, d.test_y]).tolist()
    assert all((i >= 30) == bool(y) for i, y in zip(seen, labels))  # ids 0-29 are class a
    again = load(root, image_size=4, seed=3)
    assert ids(again.val_x) == ids(d.val_x) and ids(again.train_x) == ids(d.train_x)
    other = load(root, image_size=4, seed=4)
    assert set(ids(other.val_x)) != set(ids(d.val_x))
    info = d.describe()
    assert (info["val_size"], info["test_size"], info["split_seed"]) == (0.1, 0.1, 3)
    assert info["sizes"] == {"train": 64, "val": 8, "test": 8} and info["classes"] == ["a", "b"]


def test_split_sizes_as_counts_and_fractions(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 30, "b": 50})
    d = load(root, image_size=4, val_size=8, test_size=0)
    assert torch.bincount(d.val_y).tolist() == [3, 5] and len(d.test_y) == 0 and len(d.train_y) == 72
    d = load(root, image_size=4, val_size=0.25)
    assert torch.bincount(d.val_y).tolist() == [8, 12]  # round(0.25 * 80) = 20, shared 30:50
    with pytest.raises(DatasetError, match=r"--val-size 80 must be between 0 and 79"):
        load(root, image_size=4, val_size=80)
    with pytest.raises(DatasetError, match=r"--val-size 1.5"):
        load(root, image_size=4, val_size=1.5)


def test_subset_keeps_a_prefix_of_the_training_order(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 30, "b": 50})
    full = load(root, image_size=4, seed=2)
    sub = load(root, image_size=4, seed=2, subset=10)
    assert ids(sub.train_x) == ids(full.train_x)[:10]
    assert ids(sub.val_x) == ids(full.val_x) and ids(sub.test_x) == ids(full.test_x)
    assert sub.info["files"] == 26  # only what is used is decoded


def test_train_val_test_folders(tmp_path):
    root = tmp_path / "d"
    id_folder(root / "train", {"a": 6, "b": 6})
    id_folder(root / "val", {"a": 2, "b": 3}, start=100)
    id_folder(root / "test", {"a": 4, "b": 1}, start=200)
    d = load(root, image_size=4)
    assert sorted(ids(d.train_x)) == list(range(12))
    assert sorted(ids(d.val_x)) == list(range(100, 105)) and sorted(ids(d.test_x)) == list(range(200, 205))
    assert torch.bincount(d.test_y).tolist() == [4, 1]
    assert d.info["layout"] == {"train": "train/", "val": "val/", "test": "test/"}
    assert d.info["val_size"] is None and d.info["test_size"] is None
    with pytest.raises(DatasetError, match=r"--val-size 0.2: .* has a val/ folder"):
        load(root, image_size=4, val_size=0.2)


def test_a_missing_test_folder_is_carved_from_train(tmp_path):
    root = tmp_path / "d"
    id_folder(root / "train", {"a": 20, "b": 20})
    id_folder(root / "validation", {"a": 2, "b": 2}, start=100)
    d = load(root, image_size=4)
    assert len(d.val_y) == 4 and torch.bincount(d.test_y).tolist() == [2, 2] and len(d.train_y) == 36
    assert max(ids(d.test_x)) < 40  # from train/


@pytest.mark.parametrize("missing,extra", [(["b"], []), ([], ["c"])])
def test_split_folders_must_have_the_training_classes(tmp_path, missing, extra):
    root = tmp_path / "d"
    id_folder(root / "train", {"a": 3, "b": 3})
    id_folder(root / "val", {c: 1 for c in ["a", "b", *extra] if c not in missing}, start=100)
    with pytest.raises(DatasetError) as e:
        load(root, image_size=4)
    msg = str(e.value)
    assert str(root / "val") in msg and "differ from the training classes" in msg
    assert (f"missing {missing[0]}" if missing else f"extra {extra[0]}") in msg


# ---------------------------------------------------------------- errors


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"folder:{tmp_path / 'nope'}: no such folder")):
        load(tmp_path / "nope")
    gray_png(tmp_path / "file.png", 1)
    with pytest.raises(DatasetError, match="not a folder"):
        load(tmp_path / "file.png")
    one = id_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(DatasetError, match=r"only one class folder \(only\); a classifier needs at least two"):
        load(one)
    loose = tmp_path / "loose"
    for i in range(3):
        gray_png(loose / f"{i}.png", i)
    with pytest.raises(DatasetError, match=r"no class folders \(3 images lie directly in it\)"):
        load(loose)
    empty = id_folder(tmp_path / "empty", {"a": 3})
    (empty / "b").mkdir()
    (empty / "b" / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match=re.escape(f"{empty / 'b'}: an empty class folder")):
        load(empty)
    none = tmp_path / "none"
    (none / "a").mkdir(parents=True)
    (none / "b").mkdir()
    with pytest.raises(DatasetError, match="no images in any class folder"):
        load(none)
    mixed = id_folder(tmp_path / "mixed", {"train": 1, "cat": 1})
    with pytest.raises(DatasetError, match=r"split folders \(train\) beside other folders \(cat\)"):
        load(mixed)
    small = id_folder(tmp_path / "small", {"a": 2, "b": 10})
    with pytest.raises(DatasetError, match=r"small/a: its 2 images leave none for training"):
        load(small, val_size=0.5, test_size=0.5)
    for bad in (0, (4, 0), (1, 2, 3), 2.5, True):
        with pytest.raises(DatasetError, match="--image-size must be"):
            load(small, image_size=bad)


# ---------------------------------------------------------------- the disk cache and the pool


def test_large_datasets_are_decoded_once_into_a_memory_mapped_cache(tmp_path, monkeypatch):
    root = id_folder(tmp_path / "d", {"a": 12, "b": 12})
    (root / "a" / "bad.png").write_bytes(b"junk")
    cache = tmp_path / "cache"
    with pytest.warns(DatasetWarning) as record:
        memory = load(root, image_size=6, cache_dir=cache)
    assert memory.info["storage"] == "memory" and not cache.exists()
    assert "bad.png" in str(record[0].message)
    with pytest.warns(DatasetWarning) as record:
        first = load(root, image_size=6, cache_dir=cache, memory_limit=100, workers=2)
    assert "bad.png" in str(record[0].message)
    (data_file,) = cache.glob("*.u8")
    assert first.info["storage"] == f"cache {data_file}"
    assert data_file.stat().st_size == 24 * 6 * 6  # the unreadable file left no row
    for a, b in ((memory.train_x, first.train_x), (memory.val_x, first.val_x), (memory.test_x, first.test_x)):
        assert torch.equal(a, b)
    assert (memory.mean, memory.std) == (first.mean, first.std)

    def no_decoding(self, path):
        raise AssertionError("decoded again")

    monkeypatch.setattr(ImageTransform, "__call__", no_decoding)
    lines = []
    second = load(root, image_size=6, cache_dir=cache, memory_limit=100, log=lines.append)
    assert torch.equal(second.train_x, first.train_x) and torch.equal(second.test_y, first.test_y)
    assert any("from the cache" in ln for ln in lines)
    assert any("skipped" in ln and "bad.png" in ln for ln in lines)  # still reported
    monkeypatch.undo()
    os.utime(root / "b" / "020.png", ns=(1, 1))  # a changed file: a new key, decoded again
    load(root, image_size=6, cache_dir=cache, memory_limit=100, log=lines.append)
    assert len(list(cache.glob("*.u8"))) == 2


def test_a_worker_pool_decodes_the_same_images(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 20, "b": 20})
    one = load(root, image_size=4, workers=1)
    two = load(root, image_size=4, workers=2)
    assert torch.equal(one.train_x, two.train_x) and torch.equal(one.val_y, two.val_y)


def test_memory_limit_from_the_environment(tmp_path, monkeypatch):
    root = id_folder(tmp_path / "d", {"a": 10, "b": 10})
    monkeypatch.setenv("CNNLAB_FOLDER_MEMORY", "0.1K")
    d = load(root, image_size=4, cache_dir=tmp_path / "c")
    assert d.info["storage"].startswith("cache ")
    monkeypatch.setenv("CNNLAB_FOLDER_MEMORY", "lots")
    with pytest.raises(DatasetError, match=r"\$CNNLAB_FOLDER_MEMORY='lots'"):
        load(root, image_size=4, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_dispatches_folders(tmp_path):
    root = id_folder(tmp_path / "d", {"a": 10, "b": 10})
    d = load_dataset(f"folder:{root}", image_size=(4, 6), grayscale=False)
    assert d.name == f"folder:{root}" and d.image_size == (4, 6) and d.in_channels == 3
    info = d.describe()
    assert info["transform"]["image_size"] == [4, 6] and len(info["mean"]) == 3
    with pytest.raises(DatasetError, match="--data-dir applies to fashion-mnist"):
        load_dataset(f"folder:{root}", tmp_path)
    with pytest.raises(DatasetError, match="--image-size and --grayscale apply to image folders"):
        load_dataset("fashion-mnist", tmp_path, image_size=32)
    with pytest.raises(DatasetError, match="--val-size for fashion-mnist is a count"):
        load_dataset("fashion-mnist", tmp_path, val_size=0.1)


# ---------------------------------------------------------------- size limits


def test_an_image_over_the_pixel_limit_is_skipped_and_named_without_decoding(tmp_path):
    from tests.data.test_images import huge_png

    root = id_folder(tmp_path / "d", {"a": 10, "b": 10})
    big = huge_png(root / "a" / "big.png", 20000, 20000)  # 400 MP by its header, a few hundred bytes on disk
    lines = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning (and no DatasetWarning: they go to the log)
        d = load(root, image_size=8, log=lines.append)
    assert time.perf_counter() - t0 < 5
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 20 and d.info["files"] == 21
    assert f"warning: skipped {big}: 20000x20000 pixels (400.0 MP) is over the limit of 64 MP " \
           "($CNNLAB_MAX_IMAGE_PIXELS); resize it first" in lines
    assert f"warning: skipped 1 of 21 files in {root} (unreadable, corrupt or too large)" in lines


def test_a_bad_limit_in_the_environment_is_one_error_not_a_skip_per_file(tmp_path, monkeypatch):
    root = id_folder(tmp_path / "d", {"a": 3, "b": 3})
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "huge")
    with pytest.raises(ImageLimitError, match=r"\$CNNLAB_MAX_IMAGE_PIXELS='huge'"):
        load(root, image_size=4)


# ---------------------------------------------------------------- links


@contextmanager
def deadline(seconds: float):
    """Fail (instead of hanging) if the block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def every_id(d) -> list[int]:
    return ids(d.train_x) + ids(d.val_x) + ids(d.test_x)


def test_two_links_forming_a_loop_end_with_each_image_once(tmp_path):
    root = id_folder(tmp_path / "d", {"cat/x": 4, "cat/y": 3, "dog": 6})
    os.symlink("../y", root / "cat" / "x" / "to_y")  # x -> y -> x -> ...
    os.symlink("../x", root / "cat" / "y" / "to_x")
    os.symlink("../cat", root / "dog" / "to_cat")  # and between the classes: dog -> cat -> dog
    os.symlink("../dog", root / "cat" / "to_dog")
    lines = []
    with deadline(20):
        d = load(root, image_size=4, log=lines.append)
    assert sorted(every_id(d)) == list(range(13))
    assert torch.bincount(torch.cat([d.train_y, d.val_y, d.test_y])).tolist() == [7, 6]
    (msg,) = [ln for ln in lines if "did not enter" in ln]
    # cat/to_dog, cat/x/to_y/to_x (the loop), cat/y (read already as cat/x/to_y), dog/to_cat
    assert "did not enter 4 folders already read" in msg and msg.endswith(f"{root}/cat/to_dog and 3 more")
    assert not any("kept once" in ln for ln in lines)  # no file was reached twice


def test_a_link_back_to_the_dataset_root_adds_nothing(tmp_path):
    root = id_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    os.symlink("..", root / "cat" / "up")  # followed, it would put every class (and itself, 40 times) into cat
    with pytest.warns(DatasetWarning, match=r"did not enter 1 folders already read .*cat/up$"):
        d = load(root, image_size=4)
    seen = every_id(d)
    assert len(seen) == 20 and sorted(seen) == list(range(20))  # each image once: no file in two splits
    labels = torch.cat([d.train_y, d.val_y, d.test_y]).tolist()
    assert all((i >= 10) == bool(y) for i, y in zip(seen, labels))  # ids 0-9 are cat, 10-19 dog
    assert d.info["files"] == 20


def test_split_folders_linked_into_each_other_keep_each_file_in_its_first_split(tmp_path):
    root = tmp_path / "d"
    id_folder(root / "train", {"a": 6, "b": 6})
    id_folder(root / "val", {"a": 2, "b": 2}, start=100)
    id_folder(root / "test", {"a": 2, "b": 2}, start=200)
    os.symlink("../../train/a/000.png", root / "val" / "a" / "copy.png")  # the same file in train and val
    os.symlink("../../val/b", root / "test" / "b" / "more")  # val's b images again, in test
    os.symlink("../../..", root / "train" / "b" / "root")  # and a loop to the top
    with pytest.warns(DatasetWarning) as record:
        d = load(root, image_size=4)
    assert sorted(ids(d.train_x)) == list(range(12))
    assert sorted(ids(d.val_x)) == [100, 101, 102, 103] and sorted(ids(d.test_x)) == [200, 201, 202, 203]
    messages = [str(w.message) for w in record]
    assert any("kept once 1 image files reached by more than one path" in m for m in messages)
    assert any("did not enter 2 folders already read" in m for m in messages)


def test_a_file_linked_into_two_classes_lands_once(tmp_path):
    root = id_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    shared = gray_png(tmp_path / "elsewhere" / "shared.png", 77)
    os.symlink(shared, root / "cat" / "shared.png")
    os.symlink(shared, root / "dog" / "shared.png")
    os.link(root / "cat" / "000.png", root / "dog" / "hardlink.png")  # a hard link is the same file too
    with pytest.warns(DatasetWarning, match="kept once 2 image files reached by more than one path"):
        d = load(root, image_size=4)
    seen = every_id(d)
    assert sorted(seen) == sorted([*range(10), 77])
    labels = dict(zip(seen, torch.cat([d.train_y, d.val_y, d.test_y]).tolist()))
    assert labels[77] == 0 and labels[0] == 0  # in cat, the first class in sorted order


def test_a_link_to_a_folder_outside_the_dataset_is_followed_once(tmp_path):
    root = id_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    extra = id_folder(tmp_path / "extra", {"more": 3}, start=50) / "more"
    os.symlink(extra, root / "cat" / "more")
    os.symlink(extra, root / "dog" / "more")  # the same folder in a second class: not entered again
    os.symlink(".", extra / "self")  # a loop outside the dataset
    with pytest.warns(DatasetWarning, match="did not enter 2 folders already read"):
        d = load(root, image_size=4)
    seen = every_id(d)
    labels = dict(zip(seen, torch.cat([d.train_y, d.val_y, d.test_y]).tolist()))
    assert sorted(seen) == [*range(10), 50, 51, 52] and [labels[i] for i in (50, 51, 52)] == [0, 0, 0]


def test_a_class_folder_linked_to_another_class_is_an_error(tmp_path):
    root = id_folder(tmp_path / "d", {"cat": 5})
    os.symlink("cat", root / "dog")
    with pytest.raises(DatasetError, match=r"d/dog: all its 5 images were already found through another class"):
        load(root, image_size=4)


def test_an_empty_folder_path_is_an_error_not_the_current_folder(tmp_path, monkeypatch):
    id_folder(tmp_path / "cwd", {"a": 3, "b": 3})
    monkeypatch.chdir(tmp_path / "cwd")  # a loadable current folder, so only the check can fail these
    with pytest.raises(DatasetError, match=r"--dataset 'folder:': give the image folder's path, folder:PATH "
                                           r"\(folder:\. for the current folder\); valid: cifar10, dogs-vs-cats, fashion-mnist, imagenette, known-answer, oxford-pets, folder:PATH"):
        load_dataset("folder:")
    with pytest.raises(DatasetError, match="--dataset 'folder: '"):
        load_dataset("folder: ")
    with pytest.raises(DatasetError, match="folder: needs a path"):
        load_folder("")
    assert load_dataset("folder:.", image_size=4).classes == ("a", "b")
