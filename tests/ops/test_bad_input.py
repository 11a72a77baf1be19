"""Bad input: one ValueError that names the parameter and what would be valid."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import ops
from cnnlab.ops.matrix import load_matrix, parse_matrix

X = np.zeros((1, 4, 5, 5))
W = np.zeros((6, 4, 3, 3))


@pytest.mark.parametrize("call, words", [
    (lambda: ops.conv2d(X, np.zeros((6, 3, 3, 3))), ["4 channels", "expects 3"]),
    (lambda: ops.conv2d(X, np.zeros((6, 4, 7, 3))), ["kernel size 7", "at most 5"]),
    (lambda: ops.conv2d(X, np.zeros((6, 4, 4, 4)), dilation=2), ["dilation 2", "spans 7", "at most 5"]),
    (lambda: ops.conv2d(X, W, stride=0), ["stride", "positive integer", "0"]),
    (lambda: ops.conv2d(X, W, stride=(1, -1)), ["stride", "positive"]),
    (lambda: ops.conv2d(X, W, dilation=0), ["dilation", "positive integer"]),
    (lambda: ops.conv2d(X, np.zeros((6, 2, 3, 3)), groups=3), ["groups=3", "divide", "(4)"]),
    (lambda: ops.conv2d(X, np.zeros((6, 1, 3, 3)), groups=4), ["groups=4", "output channels (6)"]),
    (lambda: ops.conv2d(X, W, padding_mode="mirror"), ["padding_mode", "reflect", "'mirror'"]),
    (lambda: ops.conv2d(X, W, padding="half"), ["padding", "valid, same, full", "'half'"]),
    (lambda: ops.conv2d(X, W, padding=(1, 2, 3)), ["padding", "2 or 4 ints"]),
    (lambda: ops.conv2d(X, W, padding=-1), ["padding", "non-negative"]),
    (lambda: ops.conv2d(X, W, padding=5, padding_mode="reflect"), ["reflect", "smaller than", "5"]),
    (lambda: ops.conv2d(X, W, padding=6, padding_mode="circular"), ["circular", "at most", "5"]),
    (lambda: ops.conv2d(X, W, b=np.zeros(5)), ["bias", "(6,)"]),
    (lambda: ops.conv2d(np.zeros((5, 5)), W), ["input", "(N, C, H, W)"]),
    (lambda: ops.conv2d(X, np.zeros((6, 4, 3))), ["weight", "kH, kW"]),
    (lambda: ops.correlate2d(np.zeros((5, 5)), np.zeros(3)), ["correlate2d", "2-dimensional"]),
    (lambda: ops.correlate2d([[1, 2], [3]], [[1]]), ["input", "rectangular"]),
    (lambda: ops.max_pool2d(X, 3, padding=2), ["padding 2", "half the kernel size"]),
    (lambda: ops.max_pool2d(X, 0), ["kernel_size", "positive"]),
    (lambda: ops.max_pool2d(X, 7), ["kernel_size 7", "at most 5"]),
    (lambda: ops.avg_pool2d(X, 2, stride=0), ["stride", "positive"]),
    (lambda: ops.conv_output_size(4, 5), ["kernel 5", "at most 4"]),
    (lambda: ops.conv_output_size(0, 3), ["size", "positive"]),
    (lambda: ops.conv_transpose_output_size(3, 3, stride=2, output_padding=2), ["output_padding 2", "smaller"]),
    (lambda: ops.trace2d([[1, 2]], [[1]], op="min"), ["op", "correlate, convolve, max, avg", "'min'"]),
    (lambda: parse_matrix("1 2 3; 4 5", "--input"), ["--input", "ragged", "3, 2"]),
    (lambda: parse_matrix("1 2; 3 x", "--kernel"), ["--kernel", "row 2", "not a number"]),
    (lambda: parse_matrix(" ; ", "--input"), ["--input", "empty"]),
    (lambda: load_matrix("missing.npy", "--input"), ["--input", "missing.npy", "does not exist"]),
])
def test_bad_input_names_the_parameter(call, words):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_matrices_from_files(tmp_path):
    np.save(tmp_path / "k.npy", np.array([[1, 2], [3, 4]]))
    (tmp_path / "x.csv").write_text("1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(load_matrix(str(tmp_path / "k.npy")), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(load_matrix(str(tmp_path / "x.csv")), [[1, 2, 3], [4, 5, 6]])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="could not be read"):  # never unpickled
        load_matrix(str(tmp_path / "obj.npy"), "--input")
