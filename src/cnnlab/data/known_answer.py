"""``--dataset known-answer``: a generated task whose evidence is known, so that an attribution map can be
scored against the truth (``cnnlab viz RUN --evaluate`` adds its localisation column on such a run).

Every image (1x28x28): Gaussian noise (std :data:`NOISE`) everywhere; in the top right an 8x8 object --
class 0 two horizontal bars, class 1 two vertical bars -- whose top-left corner is drawn from rows 4-6 and
cols 14-16, so that it always lies in rows 4-13, cols 14-23; class 2 ("no object") has none. In the lower
half, rows 16-26, a 6x6 patch of strong noise (std 1.5) is a distractor that no class depends on. The class
therefore depends only on the object, and its 8x8 box is each image's evidence: a faithful attribution puts
its mass there. (Why three classes, and why a global-max-pooling head localises best on it: measured in
``tests/viz/helpers.py``.)

:func:`make_task` draws images in *task units* (the noise's scale: the object adds :data:`AMPLITUDE`); the
dataset stores them as uint8, ``128 + 24 * x`` rounded and clipped (clipping touches about 3 pixels in
100,000, all in the distractor). The splits are a pure function of :data:`GENERATOR_SEED` and torch's CPU
generator: :data:`TRAIN_IMAGES` training images (the validation split is carved from them, as for
Fashion-MNIST) and :data:`TEST_IMAGES` test images, generated in well under a second, so nothing is cached
on disk. Each split's object boxes travel with it (:attr:`cnnlab.data.DataSplits.evidence`).
"""

from __future__ import annotations

import torch

__all__ = ["AMPLITUDE", "CLASSES", "GENERATOR_SEED", "KNOWN_ANSWER", "NOISE", "OBJECT", "REGION_COLS",
           "REGION_ROWS", "TEST_IMAGES", "TRAIN_IMAGES", "box_masks", "known_answer_split", "make_task",
           "known_answer_summary", "masks_to_boxes", "to_uint8"]

#: The dataset's registry name.
KNOWN_ANSWER = "known-answer"
SIZE = 28
OBJECT = 8  # the object's side, pixels
REGION_ROWS, REGION_COLS = (4, 14), (14, 24)  # the known region the object always lies in
JITTER = 3  # top-left corner: REGION_ROWS[0] + 0..2, REGION_COLS[0] + 0..2
NOISE, AMPLITUDE = 0.35, 2.0
CLASSES = ("horizontal bars", "vertical bars", "no object")
#: uint8 = OFFSET + SCALE * (task units), rounded and clipped to 0-255
OFFSET, SCALE = 128, 24
TRAIN_IMAGES, TEST_IMAGES = 20_000, 4_000
#: the seed of the one known-answer dataset (its test split is the same for every run)
GENERATOR_SEED = 0
_CHUNK = 4096  # images generated at a time (bounded memory: about 13 MB of floats per chunk)


def _pattern(kind: int) -> torch.Tensor:
    m = torch.zeros(OBJECT, OBJECT)
    if kind == 0:
        m[1:3, :], m[5:7, :] = 1, 1
    else:
        m[:, 1:3], m[:, 5:7] = 1, 1
    return m


def _span(start: torch.Tensor, length: int) -> torch.Tensor:
    """(N, SIZE) bool: start <= i < start + length."""
    i = torch.arange(SIZE)
    return (i >= start[:, None]) & (i < start[:, None] + length)


def make_task(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images (N, 1, 28, 28) float in task units, labels (N,) in 0-2 and the object's box (N, 28, 28) bool
    (all False for class 2), drawn from ``gen``."""
    x = torch.randn(n, 1, SIZE, SIZE, generator=gen) * NOISE
    y = torch.randint(0, len(CLASSES), (n,), generator=gen)
    r = REGION_ROWS[0] + torch.randint(0, JITTER, (n,), generator=gen)
    c = REGION_COLS[0] + torch.randint(0, JITTER, (n,), generator=gen)
    box = _span(r, OBJECT)[:, :, None] & _span(c, OBJECT)[:, None, :]
    box &= (y < 2)[:, None, None]
    patterns = torch.stack([_pattern(0), _pattern(1)])
    obj = torch.zeros(n, SIZE, SIZE)
    obj[box] = patterns[y[y < 2]].reshape(-1)  # the box's pixels in row-major order, image by image
    x[:, 0] += AMPLITUDE * obj
    dr = torch.randint(16, 22, (n,), generator=gen)
    dc = torch.randint(0, SIZE - 6 + 1, (n,), generator=gen)
    patch = _span(dr, 6)[:, :, None] & _span(dc, 6)[:, None, :]
    x[:, 0] += patch * torch.randn(n, SIZE, SIZE, generator=gen) * 1.5
    return x, y, box


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Task units as the dataset's uint8 pixels: ``OFFSET + SCALE * x``, rounded and clipped."""
    return (x * SCALE + OFFSET).round_().clamp_(0, 255).to(torch.uint8)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool masks -> (N, 4) int64 boxes (top, left, bottom, right), bottom and right exclusive: the
    smallest box around each mask; (0, 0, 0, 0) for an empty mask."""
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[1:]
    top, left = rows.int().argmax(1), cols.int().argmax(1)
    bottom, right = h - rows.flip(1).int().argmax(1), w - cols.flip(1).int().argmax(1)
    boxes = torch.stack([top, left, bottom, right], 1).long()
    boxes[~rows.any(1)] = 0
    return boxes


def box_masks(boxes: torch.Tensor, size: tuple[int, int] | int = SIZE, margin: int = 0) -> torch.Tensor:
    """(N, 4) boxes (top, left, bottom, right; exclusive) -> (N, H, W) bool masks, each box grown by ``margin``
    pixels on every side (clipped to the image); an empty box stays empty."""
    h, w = (size, size) if isinstance(size, int) else size
    boxes = boxes.long()
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    grown = boxes + torch.tensor([-margin, -margin, margin, margin])
    i, j = torch.arange(h), torch.arange(w)
    rows = (i >= grown[:, 0, None]) & (i < grown[:, 2, None])
    cols = (j >= grown[:, 1, None]) & (j < grown[:, 3, None])
    return rows[:, :, None] & cols[:, None, :] & ~empty[:, None, None]


def known_answer_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images of the task as the dataset stores them: uint8 (N, 1, 28, 28), labels int64 (N,) and the
    object's boxes int64 (N, 4), from a generator seeded with ``seed`` (in chunks, so memory stays small)."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys, boxes = [], [], []
    for start in range(0, n, _CHUNK):
        x, y, box = make_task(min(_CHUNK, n - start), gen)
        xs.append(to_uint8(x))
        ys.append(y)
        boxes.append(masks_to_boxes(box))
    if not xs:
        return torch.zeros(0, 1, SIZE, SIZE, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), \
            torch.zeros(0, 4, dtype=torch.int64)
    return torch.cat(xs), torch.cat(ys), torch.cat(boxes)


def known_answer_summary() -> str:
    """One line for ``cnnlab data info``."""
    return (f"{KNOWN_ANSWER} (generated, seed {GENERATOR_SEED}, no files): {TRAIN_IMAGES:,} training and "
            f"{TEST_IMAGES:,} test images of {SIZE}x{SIZE}, {len(CLASSES)} classes: {', '.join(CLASSES)}; each "
            f"image's evidence box is known, so `cnnlab viz RUN --evaluate` also scores localisation")
