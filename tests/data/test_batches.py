"""Tests for cnnlab.data.batches: in-memory batching, seeded order and batch augmentation.

The synthetic datasets use ``labels = arange(N)``, so the labels of a batch say exactly which
images it holds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.batches import (ERASING_AREA, ERASING_RATIO, Augment, BatchLoader, normalize, random_crop,
                                  random_erasing, random_hflip)

N = 50


def dataset(n: int = N, c: int = 1, h: int = 8, w: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)  # no zeros: zero fill is visible
    return images, torch.arange(n)


def loader(batch_size: int = 8, **kwargs) -> BatchLoader:
    images, labels = dataset()
    return BatchLoader(images, labels, batch_size, **kwargs)


def labels_of(batches) -> list[int]:
    return [i for _, y in batches for i in y.tolist()]


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = x[..., i + dy, j + dx], zero outside (what a crop of a zero-padded image gives)."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    xp = F.pad(x, (p, p, p, p))
    return xp[..., p + dy : p + dy + h, p + dx : p + dx + w]


def matching_shifts(out: torch.Tensor, img: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-padding, padding + 1)
        for dx in range(-padding, padding + 1)
        if torch.equal(out, shift(img, dy, dx))
    ]


def assert_same_batches(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)


# ---------------------------------------------------------------- length and order


def test_len_without_drop_last():
    ld = loader(8)
    assert len(ld) == 7  # ceil(50 / 8)
    batches = list(ld.epoch(0))
    assert len(batches) == 7
    assert [len(y) for _, y in batches] == [8] * 6 + [2]
    assert ld.num_samples == 50


def test_len_with_drop_last():
    ld = loader(8, drop_last=True)
    assert len(ld) == 6
    batches = list(ld.epoch(0))
    assert [len(y) for _, y in batches] == [8] * 6
    assert ld.num_samples == 48


def test_len_when_batch_divides_the_data():
    assert len(loader(10)) == len(loader(10, drop_last=True)) == 5


def test_without_shuffle_order_is_the_stored_order():
    ld = loader(8)
    assert labels_of(ld.epoch(0)) == list(range(N))
    assert labels_of(ld.epoch(5)) == list(range(N))


def test_iter_is_epoch_zero():
    ld = loader(8, shuffle=True, seed=3)
    assert_same_batches(iter(ld), ld.epoch(0))


def test_batches_hold_the_images_of_their_labels():
    images, _ = dataset()
    ld = loader(8, shuffle=True, seed=1)  # mean 0, std 1: x == image / 255
    for x, y in ld.epoch(2):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), 1, 8, 8)
        torch.testing.assert_close(x * 255, images[y].float(), rtol=0, atol=1e-4)


def test_shuffled_epoch_is_a_permutation():
    ld = loader(8, shuffle=True, seed=0)
    seen = labels_of(ld.epoch(0))
    assert sorted(seen) == list(range(N))
    assert seen != list(range(N))


def test_shuffled_epoch_with_drop_last_has_no_repeats():
    ld = loader(8, shuffle=True, seed=0, drop_last=True)
    seen = labels_of(ld.epoch(1))
    assert len(seen) == len(set(seen)) == 48
    assert sorted(seen + sorted(set(range(N)) - set(seen))) == list(range(N))


def test_shuffle_is_deterministic_per_seed_and_epoch():
    a, b = loader(8, shuffle=True, seed=11), loader(8, shuffle=True, seed=11)
    for epoch in (0, 1, 7):
        assert labels_of(a.epoch(epoch)) == labels_of(b.epoch(epoch))
        assert torch.equal(a.order(epoch), b.order(epoch))


def test_shuffle_differs_across_epochs_and_seeds():
    ld = loader(8, shuffle=True, seed=11)
    orders = [tuple(labels_of(ld.epoch(e))) for e in range(4)]
    assert len(set(orders)) == 4
    other_seed = loader(8, shuffle=True, seed=12)
    assert labels_of(other_seed.epoch(0)) != list(orders[0])


# ---------------------------------------------------------------- resuming


@pytest.mark.parametrize(
    "augment", [None, Augment(crop_padding=2), Augment(hflip=True), Augment(crop_padding=3, hflip=True)]
)
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_yields_the_tail_of_the_epoch(augment, drop_last):
    ld = loader(8, shuffle=True, seed=5, augment=augment, drop_last=drop_last, mean=(0.4,), std=(0.3,))
    full = list(ld.epoch(3))
    for k in (0, 1, 4, len(ld) - 1):
        assert_same_batches(ld.epoch(3, start_step=k), full[k:])
    assert list(ld.epoch(3, start_step=len(ld))) == []


def test_resume_in_a_fresh_loader():
    first = loader(8, shuffle=True, seed=5, augment=Augment(2, True))
    second = loader(8, shuffle=True, seed=5, augment=Augment(2, True))
    full = list(first.epoch(1))
    assert_same_batches(second.epoch(1, start_step=3), full[3:])


# ---------------------------------------------------------------- normalisation


def test_normalisation_in_the_loader():
    images, _ = dataset()
    mean, std = (0.3,), (0.2,)
    ld = loader(8, shuffle=True, mean=mean, std=std)
    for x, y in ld.epoch(0):
        expected = (images[y].double() / 255 - mean[0]) / std[0]
        torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-5)


def test_normalize_per_channel():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = (0.1, 0.2, 0.5), (0.5, 0.25, 0.1)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    expected = [(0 / 255 - 0.1) / 0.5, (51 / 255 - 0.2) / 0.25, (255 / 255 - 0.5) / 0.1]
    for ch in range(3):
        torch.testing.assert_close(out[:, ch], torch.full((2, 2, 2), expected[ch]), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- augmentation functions


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_random_crop_only_shifts_images(padding):
    g = torch.Generator().manual_seed(padding)
    x = torch.randint(1, 256, (64, 2, 7, 9), generator=g, dtype=torch.uint8)
    out = random_crop(x, padding, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = []
    for i in range(len(x)):
        found = matching_shifts(out[i], x[i], padding)
        assert len(found) == 1, f"image {i} is not a zero-filled shift of its input"
        shifts.append(found[0])
    assert len(set(shifts)) > 1  # the offsets are random, not one for all
    assert all(abs(dy) <= padding and abs(dx) <= padding for dy, dx in shifts)


def test_random_crop_reaches_the_extreme_offsets():
    x = torch.randint(1, 256, (400, 1, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = random_crop(x, 1, torch.Generator().manual_seed(1))
    shifts = {matching_shifts(out[i], x[i], 1)[0] for i in range(len(x))}
    assert shifts == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def test_random_crop_is_deterministic_and_zero_padding_is_identity():
    x = torch.randint(0, 256, (16, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = random_crop(x, 2, torch.Generator().manual_seed(9))
    b = random_crop(x, 2, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert torch.equal(random_crop(x, 0, torch.Generator().manual_seed(9)), x)


def test_random_hflip_flips_a_subset_only():
    x = torch.randint(0, 256, (64, 2, 5, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = random_hflip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    flipped = []
    for i in range(len(x)):
        same, mirrored = torch.equal(out[i], x[i]), torch.equal(out[i], x[i].flip(-1))
        assert same != mirrored, f"image {i} is neither the input nor its mirror image"
        flipped.append(mirrored)
    assert 0 < sum(flipped) < len(x)


def test_random_hflip_is_deterministic():
    x = torch.randint(0, 256, (32, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(random_hflip(x, torch.Generator().manual_seed(3)), random_hflip(x, torch.Generator().manual_seed(3)))


def test_augment_enabled():
    assert not Augment().enabled
    assert Augment(crop_padding=1).enabled
    assert Augment(hflip=True).enabled
    assert Augment(erasing=0.5).enabled


def test_random_erasing_replaces_one_rectangle_in_the_chosen_share():
    x = torch.zeros(2000, 1, 28, 28, dtype=torch.uint8)
    out = random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    changed = (out != 0)[:, 0]  # noise is 0 with probability 1/256: the box's bounding rows/cols still show it
    erased = changed.flatten(1).any(1)
    assert 0.45 < erased.float().mean() < 0.55
    for img in changed[erased][:200]:
        rows, cols = img.any(1).nonzero()[:, 0], img.any(0).nonzero()[:, 0]
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert len(rows) == h and len(cols) == w, "the erased pixels are not one rectangle"
        assert img.sum() >= h * w - max(3, 0.05 * h * w)  # filled (up to the 1/256 zeros of the noise)
        assert ERASING_AREA[0] * 784 * 0.5 <= h * w <= ERASING_AREA[1] * 784 * 1.6
        assert ERASING_RATIO[0] / 2 <= h / w <= ERASING_RATIO[1] * 2
    assert torch.equal(out, random_erasing(x, 0.5, torch.Generator().manual_seed(0)))
    assert torch.equal(random_erasing(x, 0.0, torch.Generator().manual_seed(0)), x)
    assert random_erasing(x, 1.0, torch.Generator().manual_seed(1)).flatten(1).any(1).all()


# ---------------------------------------------------------------- augmentation in the loader


def test_loader_augmentation_shifts_and_flips_only():
    images, _ = dataset()
    padding = 2
    ld = loader(10, shuffle=True, seed=3, augment=Augment(crop_padding=padding, hflip=True))
    changed = 0
    for x, y in ld.epoch(0):
        raw = (x * 255).round().to(torch.uint8)
        for out, img in zip(raw, images[y]):
            ok = matching_shifts(out, img, padding) or matching_shifts(out, img.flip(-1), padding)
            assert ok, "augmented image is not a shifted (and maybe mirrored) copy of its source"
            changed += not torch.equal(out, img)
    assert changed > N // 2


def test_augmentation_is_seeded_by_epoch():
    ld = loader(10, seed=3, augment=Augment(crop_padding=2, hflip=True))  # no shuffle: same images
    again = loader(10, seed=3, augment=Augment(crop_padding=2, hflip=True))
    assert_same_batches(ld.epoch(4), again.epoch(4))
    x0 = torch.cat([x for x, _ in ld.epoch(0)])
    x1 = torch.cat([x for x, _ in ld.epoch(1)])
    assert not torch.equal(x0, x1)


def test_augmentation_differs_between_steps():
    image = dataset(1)[0]
    images, labels = image.expand(40, -1, -1, -1).contiguous(), torch.arange(40)
    ld = BatchLoader(images, labels, 10, augment=Augment(crop_padding=2, hflip=True))
    batches = [x for x, _ in ld.epoch(0)]
    assert len(batches) == 4
    assert all(not torch.equal(batches[0], b) for b in batches[1:])


# ---------------------------------------------------------------- distributed sharding


@pytest.mark.parametrize("augment", [None, Augment(crop_padding=2, hflip=True)])
def test_two_ranks_together_give_the_single_process_batch(augment):
    kw = dict(shuffle=True, drop_last=True, seed=21, augment=augment, mean=(0.5,), std=(0.25,))
    single = loader(8, **kw)
    ranks = [loader(8, rank=r, world_size=2, **kw) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for epoch in (0, 2):
        whole = list(single.epoch(epoch))
        parts = [list(r.epoch(epoch)) for r in ranks]
        assert len(parts[0]) == len(whole)
        for step, (x, y) in enumerate(whole):
            (x0, y0), (x1, y1) = parts[0][step], parts[1][step]
            assert len(y0) == len(y1) == 4
            assert torch.equal(torch.cat([y0, y1]), y)
            assert torch.equal(torch.cat([x0, x1]), x)


def test_rank_resume_matches():
    kw = dict(shuffle=True, drop_last=True, seed=2, augment=Augment(2, True), rank=1, world_size=2)
    ld = loader(8, **kw)
    assert_same_batches(ld.epoch(1, start_step=2), list(ld.epoch(1))[2:])


def test_batch_not_divisible_by_world_size():
    with pytest.raises(ValueError, match="divisible"):
        loader(9, drop_last=True, world_size=2)


def test_sharding_needs_drop_last():
    with pytest.raises(ValueError, match="drop_last"):
        loader(8, world_size=2)


# ---------------------------------------------------------------- argument checks


def test_batch_larger_than_data_with_drop_last():
    with pytest.raises(ValueError) as info:
        loader(64, drop_last=True)
    assert "batch size 64" in str(info.value)
    assert str(N) in str(info.value)


def test_batch_larger_than_data_without_drop_last_is_one_batch():
    ld = loader(64)
    assert len(ld) == 1
    assert labels_of(ld.epoch(0)) == list(range(N))


@pytest.mark.parametrize("batch_size", [0, -8])
def test_batch_size_must_be_positive(batch_size):
    with pytest.raises(ValueError, match="positive"):
        loader(batch_size)


def test_images_must_be_uint8_nchw():
    images, labels = dataset()
    with pytest.raises(ValueError, match="uint8"):
        BatchLoader(images.float(), labels, 8)
    with pytest.raises(ValueError, match="uint8"):
        BatchLoader(images[:, 0], labels, 8)


def test_images_and_labels_must_match():
    images, labels = dataset()
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(images, labels[:-1], 8)


# ---------------------------------------------------------------- memory format


def test_channels_last_output():
    images, labels = torch.randint(0, 256, (20, 3, 6, 5), dtype=torch.uint8), torch.arange(20)
    kw = dict(shuffle=True, seed=1, augment=Augment(1, True), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    cl = BatchLoader(images, labels, 8, channels_last=True, **kw)
    plain = BatchLoader(images, labels, 8, **kw)
    for (x, y), (xp, yp) in zip(cl.epoch(0), plain.epoch(0)):
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert not x.is_contiguous()  # with 3 channels the two formats really differ
        assert xp.is_contiguous()
        assert torch.equal(y, yp)
        assert torch.equal(x, xp)
