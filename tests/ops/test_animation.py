"""cnnlab.ops.animation: frames of a traced 2D operation written as a GIF or numbered PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.ops.animation import animate
from cnnlab.ops.steps import trace2d

X = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
K = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]


def frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        out = []
        for n in range(im.n_frames):
            im.seek(n)
            out.append(np.asarray(im.convert("RGB")))
        return out


def test_gif_of_the_lecture_example(tmp_path):
    path = tmp_path / "conv.gif"
    assert animate(trace2d(X, K), path, fps=2) == [path]
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == 9 + 1
        assert im.info["duration"] == 500
        assert 300 <= im.width <= 2000 and 200 <= im.height <= 2000


def test_frames_change_as_the_window_moves(tmp_path):
    animate(trace2d(X, K), tmp_path / "conv.gif")
    f = frames(tmp_path / "conv.gif")
    assert all(a.shape == f[0].shape for a in f)
    for a, b in zip(f, f[1:]):
        assert (a != b).any(axis=-1).sum() > 100


def test_png_frames(tmp_path):
    written = animate(trace2d(X, K, stride=2), tmp_path / "step.png")
    names = [f"step_{n:03d}.png" for n in range(2 * 2 + 1)]
    assert [p.name for p in written] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    sizes = set()
    for p in written:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"
            sizes.add(im.size)
    assert len(sizes) == 1
    assert not (tmp_path / "step.png").exists()


def test_first_and_last_frames_differ_from_the_window(tmp_path):
    """The first frame shows one output value, the last the whole output without a window."""
    written = animate(trace2d([[1, 2], [3, 4]], [[1]]), tmp_path / "f.png")
    first, step4, final = (np.asarray(Image.open(p).convert("RGB")) for p in (written[0], written[3], written[4]))
    assert (step4 != final).any() and (first != step4).any()


@pytest.mark.parametrize("kwargs, n_steps", [
    (dict(kernel=K, stride=2, padding=1, dilation=2), 2 * 2),
    (dict(kernel=K, padding=1, padding_mode="reflect"), 5 * 5),
    (dict(kernel=K, op="convolve", padding="same", padding_mode="circular"), 5 * 5),
    (dict(op="max", kernel_size=2, padding=1), 3 * 3),
    (dict(op="max", kernel_size=2, stride=1, dilation=2), 3 * 3),
    (dict(op="avg", kernel_size=2, ceil_mode=True), 3 * 3),
    (dict(op="avg", kernel_size=(2, 3), stride=(1, 2), padding=(0, 1)), 4 * 3),
])
def test_every_op_and_setting(tmp_path, kwargs, n_steps):
    trace = trace2d(X, **kwargs)
    assert len(trace.steps) == n_steps
    path = tmp_path / "a.gif"
    animate(trace, path)
    with Image.open(path) as im:
        assert im.n_frames == n_steps + 1


def test_large_input_still_works(tmp_path):
    trace = trace2d(np.arange(21 * 21).reshape(21, 21) % 7, op="max", kernel_size=1)
    assert trace.padded.size > 400 and len(trace.steps) > 400
    written = animate(trace, tmp_path / "big.png", dpi=20)
    assert len(written) == 21 * 21 + 1 and written[-1].name == "big_441.png"


def test_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif") as e:
        animate(trace2d(X, K), tmp_path / "conv.mp4")
    assert "conv.mp4" in str(e.value)
    with pytest.raises(ValueError, match="fps"):
        animate(trace2d(X, K), tmp_path / "conv.gif", fps=0)
    assert list(tmp_path.iterdir()) == []


def test_no_temp_files_left(tmp_path):
    animate(trace2d(X, K), tmp_path / "a.gif")
    animate(trace2d(X, K), tmp_path / "a.gif")
    animate(trace2d(X, K, stride=3), tmp_path / "b.png")
    assert list(tmp_path.glob(".*.tmp")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "b_000.png", "b_001.png"]
