"""The lecture's worked examples and output-size arithmetic, reproduced exactly."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import ops
from cnnlab.ops.examples import EXAMPLES, LECTURE_5X5, LECTURE_KERNEL, SHARPEN_IMAGE, SHARPEN_KERNEL


def test_correlation_of_the_5x5_input():
    out = ops.correlate2d(LECTURE_5X5, LECTURE_KERNEL)
    np.testing.assert_array_equal(out, [[12, 12, 17], [10, 17, 19], [9, 6, 14]])


def test_convolution_flips_the_kernel():
    k = np.array(LECTURE_KERNEL)
    np.testing.assert_array_equal(ops.convolve2d(LECTURE_5X5, k), ops.correlate2d(LECTURE_5X5, k[::-1, ::-1]))
    # this kernel is not symmetric, so the two definitions really differ here
    assert not np.array_equal(ops.convolve2d(LECTURE_5X5, k), ops.correlate2d(LECTURE_5X5, k))


def test_sharpening_kernel_first_output_is_114():
    out = ops.correlate2d(SHARPEN_IMAGE, SHARPEN_KERNEL, padding=1)
    assert out.shape == (5, 5)
    assert out[0, 0] == 114  # 5*60 - 113 - 73 (the zero padding contributes nothing)
    # the kernel is symmetric: convolution and correlation agree
    np.testing.assert_array_equal(out, ops.convolve2d(SHARPEN_IMAGE, SHARPEN_KERNEL, padding=1))


def test_max_pool_2x2_on_arange_100():
    x = np.arange(100, dtype=float).reshape(1, 1, 10, 10)
    out = ops.max_pool2d(x, 2)
    assert out.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(out[0, 0, 0], [11, 13, 15, 17, 19])
    np.testing.assert_array_equal(out[0, 0, :, 0], [11, 31, 51, 71, 91])
    np.testing.assert_array_equal(out[0, 0, 4], [91, 93, 95, 97, 99])


@pytest.mark.parametrize("i, k, s, p, d, expected", [
    (4, 3, 1, 0, 1, 2),   # no padding
    (5, 3, 1, 1, 1, 5),   # half ("same") padding
    (5, 3, 1, 2, 1, 7),   # full padding
    (6, 3, 2, 1, 1, 3),   # stride 2: the last padded row is never covered
    (7, 3, 1, 0, 2, 3),   # dilation 2
])
def test_lecture_output_sizes(i, k, s, p, d, expected):
    assert ops.conv_output_size(i, k, stride=s, padding=p, dilation=d) == expected
    x = np.ones((1, 1, i, i))
    w = np.ones((1, 1, k, k))
    assert ops.conv2d(x, w, stride=s, padding=p, dilation=d).shape == (1, 1, expected, expected)


def test_padding_strings():
    assert ops.conv_output_size(5, 3, padding="valid") == 3
    assert ops.conv_output_size(5, 3, padding="same") == 5
    assert ops.conv_output_size(5, 3, padding="full") == 7
    assert ops.conv_output_size(5, 4, padding="same") == 5  # even kernel: the extra pad goes after
    assert ops.conv_output_size(7, 3, stride=2, padding="same") == 4  # ceil(7 / 2), TensorFlow's rule
    assert ops.conv_output_size(5, 3, padding=(0, 2)) == 5


def test_3x3_pooling_with_stride_1_on_5x5_gives_3x3():
    x = np.array(LECTURE_5X5, dtype=float)[None, None]
    assert ops.avg_pool2d(x, 3, stride=1).shape == (1, 1, 3, 3)
    assert ops.max_pool2d(x, 3, stride=1).shape == (1, 1, 3, 3)
    assert ops.pool_output_size(5, 3, stride=1) == 3


def test_pool_output_size_ceil_mode_drops_a_window_starting_in_the_padding():
    assert ops.pool_output_size(5, 2) == 2
    assert ops.pool_output_size(5, 2, ceil_mode=True) == 3
    # (6 + 2*1 - 2) / 2 rounds up to 4 windows, but the 4th would start in the right padding
    assert ops.pool_output_size(6, 2, stride=2, padding=1, ceil_mode=True) == 4
    assert ops.pool_output_size(5, 3, stride=2, padding=1, ceil_mode=True) == 3


def test_conv_transpose_output_size_inverts_conv_output_size():
    for i, k, s, p in [(5, 3, 2, 1), (7, 4, 3, 0), (28, 3, 1, 1)]:
        o = ops.conv_output_size(i, k, stride=s, padding=p)
        extra = (i + 2 * p - k) % s  # the rows a strided conv drops, given back by output_padding
        assert ops.conv_transpose_output_size(o, k, stride=s, padding=p, output_padding=extra) == i


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_worked_example_matches(name):
    ex = EXAMPLES[name]
    trace = ops.trace2d(ex.input, ex.kernel, ex.op, **ex.options)
    assert ex.check(trace.output) == []
    assert len(trace.steps) == trace.output.size
    assert [s.result for s in trace.steps] == trace.output.ravel().tolist()


def test_example_check_reports_a_difference():
    ex = EXAMPLES["lecture-3x3"]
    assert ex.check(np.zeros((3, 3)))
    assert ex.check(np.zeros((2, 2)))


def test_trace_steps_hold_the_products_the_lecture_draws():
    trace = ops.trace2d(LECTURE_5X5, LECTURE_KERNEL)
    first = trace.steps[0]
    assert first.index == (0, 0)
    np.testing.assert_array_equal(first.values, [[3, 3, 2], [0, 0, 1], [3, 1, 2]])
    assert float((first.values * first.weights).sum()) == first.result == 12
    assert first.formula("correlate") == "3*0 + 3*1 + 2*2 + 0*2 + 0*2 + 1*0 + 3*0 + 1*1 + 2*2 = 12"
    last = trace.steps[-1]
    assert last.index == (2, 2) and list(last.rows) == [2, 3, 4] and list(last.cols) == [2, 3, 4]


def test_trace_with_stride_padding_and_dilation_reads_the_right_cells():
    x = np.arange(36).reshape(6, 6)
    trace = ops.trace2d(x, np.ones((3, 3)), stride=2, padding=1, dilation=2)
    assert trace.padded.shape == (8, 8)
    assert trace.is_padding.sum() == 64 - 36
    step = trace.steps[1]  # output (0, 1): window starts at padded column 2
    assert list(step.rows) == [0, 2, 4] and list(step.cols) == [2, 4, 6]
    np.testing.assert_array_equal(step.values, trace.padded[np.ix_([0, 2, 4], [2, 4, 6])])
    assert step.result == step.values.sum()


def test_trace_of_average_pooling_records_the_divisor():
    trace = ops.trace2d([[1, 2, 3], [4, 5, 6]], op="avg", kernel_size=2, stride=1, padding=1,
                        count_include_pad=False)
    assert trace.steps[0].divisor == 1 and trace.steps[0].result == 1
    assert trace.steps[5].divisor == 4 and trace.steps[5].result == 3  # (1 + 2 + 4 + 5) / 4
    assert trace.steps[0].formula("avg") == "(0 + 0 + 0 + 1) / 1 = 1"


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert y[0, 0, 0, 0] == 3 and idx[0, 0, 0, 0] == 1  # row-major: (0, 1) before (1, 0)
    grad = ops.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    np.testing.assert_array_equal(grad[0, 0], [[0, 1], [0, 0]])


def test_avg_pool_backward_spreads_one_over_q():
    x = np.zeros((1, 1, 4, 4))
    g = ops.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x.shape, 2)
    np.testing.assert_array_equal(g, np.full((1, 1, 4, 4), 0.25))


def test_conv_backward_is_a_full_correlation_with_the_flipped_kernel():
    """The lecture's result for one channel, stride 1: delta_x = delta_y (padded "full") correlated with h[-m, -n]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 7))
    h = rng.standard_normal((3, 2))
    delta_y = rng.standard_normal(ops.correlate2d(x, h).shape)
    gx, gw, gb = ops.conv2d_backward(x[None, None], h[None, None], delta_y[None, None])
    np.testing.assert_allclose(gx[0, 0], ops.correlate2d(delta_y, h[::-1, ::-1], padding="full"), atol=1e-12)
    np.testing.assert_allclose(gw[0, 0], ops.correlate2d(x, delta_y), atol=1e-12)
    assert gb[0] == pytest.approx(delta_y.sum())
