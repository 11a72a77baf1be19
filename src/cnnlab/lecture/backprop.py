"""Outline of back-propagation for CNNs: the lecture's identity (the input gradient is the output gradient
correlated, "full", with the flipped kernels: "back-prop: convolve with h[-i, -j]") checked on random float64
layers, cnnlab's explicit backward pass (:func:`cnnlab.ops.conv2d_backward`) against ``torch.autograd``; and
pooling: max pooling routes each gradient to its argmax, average pooling spreads ``1/Q`` of it over the window
(:func:`cnnlab.ops.max_pool2d_backward`, :func:`cnnlab.ops.avg_pool2d_backward`) on a small 4x4 example."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from cnnlab._plot import new_figure
from cnnlab.ops import (avg_pool2d, avg_pool2d_backward, conv2d, conv2d_backward, correlate, max_pool2d,
                        max_pool2d_backward)

COMMAND = "cnnlab lecture --section backprop"
TOLERANCE = 1e-9  # float64: the two computations sum in different orders

#: the 4x4 pooling example (2x2 windows, stride 2) and the gradient arriving at its 2x2 output
POOL_INPUT = np.array([[1, 5, 2, 0], [3, 4, 8, 1], [0, 2, 6, 7], [9, 1, 3, 4]], dtype=float)
POOL_GRAD = np.array([[1, 2], [3, 4]], dtype=float)
POOL_COMMAND = 'cnnlab conv --input "1 5 2 0; 3 4 8 1; 0 2 6 7; 9 1 3 4" --op max --size 2 --steps'


def _autograd(x: np.ndarray, w: np.ndarray, b: np.ndarray, dy: np.ndarray, **options):
    """(grad_x, grad_w, grad_b) of ``F.conv2d`` by ``torch.autograd`` (float64)."""
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    F.conv2d(xt, wt, bt, **options).backward(torch.tensor(dy, dtype=torch.float64))
    return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _max_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def run(s, ctx) -> None:
    rng = np.random.default_rng(0)
    _single_channel(s, rng)
    _layers(s, rng)
    _pooling(s)


def _single_channel(s, rng) -> None:
    x, h = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    dy = rng.standard_normal((4, 4))  # the gradient at the 4x4 output of a valid 3x3 correlation on 6x6
    grad_x = conv2d_backward(x[None, None], h[None, None], dy[None, None], bias=False)[0][0, 0]
    full = correlate(dy, np.flip(h), padding="full")
    fig, axes = new_figure(1, 4, figsize=(11, 3))
    panels = (("delta_y (4x4), zero-padded by 2", np.pad(dy, 2)), ("kernel h (3x3)", h),
              ("h[-i, -j]: flipped", np.flip(h)), ("delta_x (6x6): cnnlab", grad_x))
    for ax, (title, a) in zip(axes, panels):
        ax.imshow(a, cmap="RdBu_r", vmin=-np.abs(a).max(), vmax=np.abs(a).max())
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].add_patch(Rectangle((-0.5, -0.5), 3, 3, fill=False, edgecolor="black", linewidth=1.5))
    fig.suptitle("back-prop through a 3x3 correlation: slide the flipped kernel over the padded output gradient",
                 fontsize=10)
    fig.tight_layout()
    file = s.figure("conv-identity", fig, "the input gradient as a full correlation of the output gradient with "
                                          "the flipped kernel (the black square: the first window)")
    s.within("2D, one channel: delta_x[i, j] = sum_(m,n) h[-m, -n] delta_y[i + m, j + n], i.e. back-prop "
             "'convolves' (correlates, full padding) the output gradient with h[-i, -j]: cnnlab's backward pass "
             "against that correlation, largest difference", 0.0, lambda: _max_error(grad_x, full),
             tolerance=TOLERANCE, command=COMMAND, figure=file)
    xt = torch.tensor(x[None, None], requires_grad=True)
    F.conv2d(xt, torch.tensor(h[None, None])).backward(torch.tensor(dy[None, None]))
    s.within("... and against torch.autograd, largest difference", 0.0,
             lambda: _max_error(grad_x, xt.grad[0, 0].numpy()), tolerance=TOLERANCE, command=COMMAND)
    s.exact("the input gradient has the input's shape (full correlation of 4x4 with 3x3: 6x6)", [6, 6],
            list(full.shape), command=COMMAND)


def _layers(s, rng) -> None:
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    dy = rng.standard_normal((2, 4, 6, 6))
    gx, gw, gb = conv2d_backward(x, w, dy)
    ax, aw, ab = _autograd(x, w, b, dy)
    layer = "a random Conv2d(3, 4, 3) layer, batch 2, 8x8, float64"
    s.within(f"the standard Conv2D (many channels): delta_x = sum over output channels of correlations with the "
             f"reflected kernels, {layer}: cnnlab's grad_x against torch.autograd, largest difference", 0.0,
             lambda: _max_error(gx, ax), tolerance=TOLERANCE, command=COMMAND)
    s.within("... 'standard 2DConv with reflected 2D kernels': a conv2d of delta_y with the kernels flipped and "
             "their channels exchanged (padding 2), against cnnlab's grad_x", 0.0,
             lambda: _max_error(conv2d(dy, np.flip(w, (2, 3)).swapaxes(0, 1), padding=2), gx),
             tolerance=TOLERANCE, command=COMMAND)
    s.within("... the kernel gradient (correlation of the input with delta_y) against torch.autograd", 0.0,
             lambda: _max_error(gw, aw), tolerance=TOLERANCE, command=COMMAND)
    s.within("... the bias gradient (delta_y summed per channel) against torch.autograd", 0.0,
             lambda: _max_error(gb, ab), tolerance=TOLERANCE, command=COMMAND)

    x2 = rng.standard_normal((2, 3, 9, 9))
    dy2 = rng.standard_normal((2, 4, 5, 5))
    s.within("with stride 2 and padding 1 (delta_y dilated by the stride, the padding cropped): cnnlab's grad_x "
             "against torch.autograd", 0.0,
             lambda: _max_error(conv2d_backward(x2, w, dy2, stride=2, padding=1)[0],
                                _autograd(x2, w, b, dy2, stride=2, padding=1)[0]),
             tolerance=TOLERANCE, command=COMMAND)


def _torch_pool_grad(x: np.ndarray, dy: np.ndarray, op: str, **options) -> list:
    xt = torch.tensor(x[None, None], requires_grad=True)
    (F.max_pool2d if op == "max" else F.avg_pool2d)(xt, **options).backward(torch.tensor(dy[None, None]))
    return xt.grad[0, 0].tolist()


def _pooling(s) -> None:
    x, dy = POOL_INPUT, POOL_GRAD
    y, idx = max_pool2d(x[None], 2, return_indices=True)
    gmax = max_pool2d_backward(dy[None], idx, (1, 4, 4))[0]
    gavg = avg_pool2d_backward(dy[None], (1, 4, 4), 2)[0]
    fig, axes = new_figure(1, 4, figsize=(11.5, 3.2))
    panels = (("input x (4x4), 2x2 windows", x, "{:g}"), ("delta_y at the 2x2 output", dy, "{:g}"),
              ("max pool: delta_x", gmax, "{:g}"), ("average pool: delta_x (1/4 each)", gavg, "{:g}"))
    flat_idx = idx[0].ravel()
    for ax, (title, a, fmt) in zip(axes, panels):
        ax.imshow(a, cmap="Blues", vmin=0, vmax=max(a.max(), 1))
        for (i, j), v in np.ndenumerate(a):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=10)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if a.shape == (4, 4):
            for r in (0, 2):
                for c in (0, 2):
                    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 2, 2, fill=False, edgecolor="#555", linewidth=1.5))
    for k in flat_idx:
        i, j = divmod(int(k), 4)
        for ax in (axes[0], axes[2]):
            ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="#c0504d", linewidth=2))
    fig.suptitle("pooling back-prop: max routes each gradient to its argmax (red), average spreads 1/Q of it",
                 fontsize=10)
    fig.tight_layout()
    file = s.figure("pooling", fig, "max and average pooling back-propagated on the 4x4 example (cnnlab.ops)")
    s.exact("max pooling, 2x2 windows, stride 2, on the 4x4 example (forward)", [[5.0, 8.0], [9.0, 7.0]],
            y[0].tolist(), command=POOL_COMMAND)
    s.exact("... (i*, j*) ~ argmax of each window, as flat indices i * 4 + j", [[1, 6], [12, 11]], idx[0].tolist(),
            command=POOL_COMMAND)
    routed = [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 4.0], [3.0, 0.0, 0.0, 0.0]]
    s.exact("max pooling back-prop: the gradient flows through (i*, j*) only (output gradient [[1, 2], [3, 4]])",
            routed, gmax.tolist(), command=COMMAND, figure=file)
    s.exact("... PyTorch's autograd routes it the same", routed, lambda: _torch_pool_grad(x, dy, "max", kernel_size=2),
            command=COMMAND)
    tie = np.array([[7.0, 7.0], [7.0, 1.0]])
    first = [[1.0, 0.0], [0.0, 0.0]]
    s.exact("... at a tie (max is not differentiable there: 'just a convention that works') one pixel takes all of "
            "it: the first in row-major order, in cnnlab and in PyTorch (window [[7, 7], [7, 1]], gradient 1)",
            [first, first],
            lambda: [max_pool2d_backward(np.ones((1, 1, 1)), max_pool2d(tie[None], 2, return_indices=True)[1],
                                         (1, 2, 2))[0].tolist(),
                     _torch_pool_grad(tie, np.ones((1, 1)), "max", kernel_size=2)], command=COMMAND)

    s.exact("average pooling, 2x2 windows, stride 2, on the same 4x4 (forward): Q = 4 pixels averaged",
            [[3.25, 2.75], [3.0, 5.0]], avg_pool2d(x[None], 2)[0].tolist(),
            command='cnnlab conv --input "1 5 2 0; 3 4 8 1; 0 2 6 7; 9 1 3 4" --op avg --size 2')
    spread = [[0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 1.0, 1.0], [0.75, 0.75, 1.0, 1.0]]
    s.exact("average pooling back-prop: 1/Q (Q = 4) of each output's gradient flows to each of its Q pixels",
            spread, gavg.tolist(), command=COMMAND, figure=file)
    s.exact("... PyTorch's autograd spreads it the same", spread, lambda: _torch_pool_grad(x, dy, "avg", kernel_size=2),
            command=COMMAND)
    dy3 = np.arange(1.0, 5.0).reshape(2, 2)
    s.within("overlapping windows (3x3, stride 1, Q = 9): a pixel in several windows sums their 1/9 shares; cnnlab "
             "against autograd, largest difference", 0.0,
             lambda: _max_error(avg_pool2d_backward(dy3[None], (1, 4, 4), 3, 1)[0],
                                _torch_pool_grad(x, dy3, "avg", kernel_size=3, stride=1)),
             tolerance=1e-12, command=COMMAND)
