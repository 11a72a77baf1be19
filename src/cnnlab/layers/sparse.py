"""Pre-defined sparse convolution: kernels in which some positions are zero by design, fixed before
training and held at zero through training and inference (Kundu et al., "pSConv: A Pre-defined Sparse
Kernel Based Convolution for Deep CNNs", 2019, and "Pre-defined Sparsity for Low-Complexity
Convolutional Neural Networks", IEEE Trans. Computers 2020).

A :class:`PredefinedSparseConv2d` keeps ``k`` of the ``kh * kw`` positions of each kernel. Which ones is
a function of the *input channel* (:func:`sparse_pattern`): ``period`` patterns that repeat along the
input channels, the same for every output channel. The zeros are in the stored ``weight`` (so any tool
that reads it sees the real kernel), the pattern is a persistent bool ``mask`` buffer (saved with the
model), and the gradient of a masked coefficient is exactly zero, so SGD with momentum and weight decay,
Adam and AdamW all leave it at 0.0.

Two families of patterns (``kind``):

- ``"shifted"`` (default where ``k`` allows it: k = 1, 2, 3, 4, 6, 9 of 3x3): every pattern is the same
  dense ``bh x bw`` rectangle (``bh * bw = k``: 1x2, 1x3, 2x2, 2x3) at one of its positions inside the
  kernel, ``period`` = the number of positions. Coverage is uneven (the 2x2 blocks of k = 4 use the
  centre in 4 of 4 patterns, a corner in 1), but the zeros can be skipped by a *dense* convolution
  (below), which is what made it faster than the masked dense conv.
- ``"cyclic"`` (default for other ``k``): consecutive windows of ``k`` positions on a seeded cycle
  through the kernel positions; over one period every position is used equally often.

How it runs (``mode``; :meth:`PredefinedSparseConv2d.execution` says which path an input takes):

- ``"masked"``: ``F.conv2d(x, weight * mask)``, the dense convolution: never faster than dense.
- ``"regrouped"``: the zeros are skipped. Because the pattern depends only on the input channel, the
  convolution regroups exactly:

  * ``"shifted"`` path, for rectangle patterns: shift each input channel by its rectangle's offset (one
    gather of the input, written channels-last) and run one dense ``bh x bw`` convolution (oneDNN) with
    the packed ``(out, in, bh, bw)`` weight: ``k / (kh * kw)`` of the multiply-accumulates at nearly a
    dense convolution's efficiency, for one extra pass over the input.
  * ``"im2col"`` path, for any input-channel pattern: ``sum_p W[:, S_p, p] @ shift_p(x[S_p])`` over
    kernel positions ``p`` (``S_p``: the channels that keep ``p``) is one product of the packed
    ``(out, in * k)`` weight with a *sparse im2col* block that stacks the ``k`` shifted copies of each
    channel, run as a 1x1 convolution on chunks of the batch. ``k / (kh * kw)`` of the MACs, but ``k``
    copies of the input go through memory, and a 1x1 convolution with few output channels does far less
    work per loaded value than a 3x3 one: faster than the masked conv only at 2 of 9.

  Both are exact (the tests compare them with an ``nn.Conv2d`` holding the masked weight, in float64),
  and cnnlab's MAC counter, which counts the aten ops that run, sees the effective MACs
  (``out * in * k * H_out * W_out`` per sample) and nothing for the gathers.
- ``"auto"`` (default): the path measured fastest: ``shifted`` for rectangle patterns up to
  :data:`AUTO_SHIFTED_MAX_DENSITY`, ``im2col`` in inference up to :data:`AUTO_IM2COL_MAX_DENSITY`, else
  ``masked``. Zero skipping only on the CPU in float32 outside autocast: that is where it was measured,
  and under CPU bf16 autocast the masked conv runs oneDNN's bf16 kernels (measured: 10.1 ms against
  14.1 ms for the float32 shifted path, 32 channels of 28x28, k = 4, inference).

Measured (``python bench/sparse_conv.py``, which writes ``bench/out/sparse_conv.json``): 2-core AMD EPYC
(AVX-512), torch 2.14, 2 threads, float32, batch 256, 3x3, padding 1, medians of 15 calls, load
average 0.6-1.6; time relative to the masked dense conv (below 1 = faster)::

    k = 4 of 9                     shifted           cyclic (im2col)
                               eval     train       eval     train
    32->32, 28x28, NCHW        0.92     0.83        1.21     1.46
    32->32, 28x28, ch.-last    0.76     0.78        1.19     1.80
    64->64, 14x14, NCHW        0.80     0.63        1.00     1.11
    64->64, 14x14, ch.-last    0.69     0.63        1.07     1.28

At k = 2 the shifted path took 0.44-0.69 of the masked conv's time, the im2col path 0.69-0.88 in
inference and 0.71-0.92 in training; at k = 6 the shifted path 0.84-1.08, the im2col path 1.4-2.6, so
``auto`` runs k = 6 masked. An earlier run of the same benchmark gave 0.36-0.92 (inference) and
0.63-1.13 (training) for the shifted path at k = 4: the NCHW masked conv at 32 channels of 28x28
varied between 20 and 57 ms from run to run (its ~25 MB output sits at glibc's mmap threshold, and a
fresh mapping page-faults); channels-last timings were stable. On a machine that other work keeps
busy, every multi-threaded path suffers, the chunked im2col path most (each of its parallel regions
waits for both threads: an earlier version of it took 600 ms instead of 40 ms at load 3 on the 2 cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["AUTO_IM2COL_MAX_DENSITY", "AUTO_SHIFTED_MAX_DENSITY", "KINDS", "MODES", "PredefinedSparseConv2d",
           "sparse_pattern"]

MODES = ("auto", "masked", "regrouped")
KINDS = ("shifted", "cyclic")

#: ``mode="auto"`` runs rectangle patterns through the shifted path up to this density (the kept
#: fraction of the kernel coefficients). Measured against the masked dense conv (module docstring):
#: faster at 2 and 3 of 9; at 4 of 9 faster in inference (0.69-0.92 of its time) and in training
#: (0.63-0.83; one run gave 1.01-1.13 for 32 channels of 28x28); at 6 of 9 about as fast (0.84-1.08).
#: At batch 1 the extra ops cost ~0.1 ms (0.2 against 0.13 ms at 4 of 9); auto takes the shifted path
#: anyway, so that the path, and the MACs a summary counts, do not depend on the batch size.
AUTO_SHIFTED_MAX_DENSITY = 5 / 9
#: ``mode="auto"`` runs other patterns through the im2col path up to this density, in inference only
#: (no gradient needed): faster than the masked conv at 2 of 9 in inference (0.44-0.99 of its time over
#: two runs), not at 3 of 9 (32 channels of 28x28: 1.2); in training 0.71-1.25 at 2 of 9.
AUTO_IM2COL_MAX_DENSITY = 2 / 9

# bytes of sparse im2col per chunk of the batch and per thread: large enough that per-op overhead stays
# small, small enough to stay in cache (measured best of 0.5-16 MB, 1 thread, both benchmark shapes)
_CHUNK_BYTES = 4 * 2**20
# zeros after each sample's row in the gather buffers (the gathers' padding value); 16 keeps rows aligned
_PAD = 16


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _pair(name: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    for v in pair:
        _check_positive(name, v)
    return pair  # type: ignore[return-value]


def _rectangle(k: int, kh: int, kw: int) -> tuple[int, int] | None:
    """The most square ``bh x bw`` rectangle of ``k`` positions inside a ``kh x kw`` kernel (wider than
    tall on ties), or None."""
    fits = [(bh, k // bh) for bh in range(1, kh + 1) if k % bh == 0 and k // bh <= kw]
    return min(fits, key=lambda r: (abs(r[0] - r[1]), r[0])) if fits else None


def sparse_pattern(in_channels: int, kernel_size: int | Sequence[int] = 3, k: int = 4, *, period: int | None = None,
                   seed: int | None = 0, kind: str | None = None) -> torch.Tensor:
    """Which kernel positions each input channel keeps: a bool tensor ``(in_channels, kh, kw)`` with
    exactly ``k`` True values per channel. Input channel ``c`` uses pattern ``c % period``.

    ``kind=None`` (default): ``"shifted"`` where ``k`` is a rectangle that fits the kernel (k = 1, 2, 3,
    4, 6, 9 of 3x3), else ``"cyclic"``: the family that runs fastest (module docstring).

    ``kind="cyclic"``: the ``period`` patterns are consecutive windows of ``k`` positions on a cycle
    through the ``kh * kw`` positions (pattern ``j`` starts at ``j * k``), so they use every position as
    evenly as ``period`` allows. The default ``period``, ``kh * kw / gcd(kh * kw, k)`` (9 for k = 2 or 4
    of 3x3, 3 for k = 3 or 6), is the smallest for which every position is used exactly
    ``period * k / (kh * kw)`` times: no position is favoured, and each output sees every kernel offset
    once ``in_channels`` reaches the period (with fewer channels only the first patterns are used). The
    cycle is a permutation of the positions drawn from ``seed`` (row-major order for ``seed=None``), so
    patterns are deterministic and differ in shape.

    ``kind="shifted"``: every pattern is the same dense ``bh x bw`` rectangle (``bh * bw = k``, as square
    as fits: 1x2, 1x3, 2x2, 2x3 for k = 2, 3, 4, 6 of 3x3) at one of its ``(kh - bh + 1) * (kw - bw + 1)``
    positions (the default ``period``), in an order drawn from ``seed``. This is the family whose zeros
    a dense convolution skips (see the module docstring); k without such a rectangle is a ``ValueError``.
    """
    _check_positive("in_channels", in_channels)
    kh, kw = _pair("kernel_size", kernel_size)
    n = kh * kw
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer from 1 to {n} (the positions of a {kh}x{kw} kernel); got {k!r}"
                         + (" (k=0 would leave every kernel empty)" if k == 0 else ""))
    if kind is None:
        kind = "shifted" if _rectangle(k, kh, kw) else "cyclic"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))} or None; got {kind!r}")
    if period is not None:
        _check_positive("period", period)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    if kind == "cyclic":
        period = period or n // math.gcd(n, k)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        starts = torch.arange(period).view(-1, 1) * k + torch.arange(k).view(1, -1)
        patterns = torch.zeros(period, n, dtype=torch.bool)
        patterns.scatter_(1, order[starts % n], True)
        patterns = patterns.view(period, kh, kw)
    else:
        rect = _rectangle(k, kh, kw)
        if rect is None:
            valid = [v for v in range(1, n + 1) if _rectangle(v, kh, kw)]
            raise ValueError(f"kind='shifted' needs k = bh * bw for a rectangle inside the {kh}x{kw} kernel; got "
                             f"k={k} (valid: {', '.join(map(str, valid))})")
        bh, bw = rect
        offsets = [(a, b) for a in range(kh - bh + 1) for b in range(kw - bw + 1)]
        if generator is not None:
            offsets = [offsets[i] for i in torch.randperm(len(offsets), generator=generator).tolist()]
        period = period or len(offsets)
        patterns = torch.zeros(period, kh, kw, dtype=torch.bool)
        for j in range(period):
            a, b = offsets[j % len(offsets)]
            patterns[j, a:a + bh, b:b + bw] = True
    return patterns[torch.arange(in_channels) % period]


def _flat_input(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` as (N, C*H*W) in the memory order ``layout`` (a view when ``x`` already has that layout)."""
    if layout == "nchw":
        return x.contiguous().view(x.shape[0], -1)
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _output_size(in_hw, kernel, stride, padding, dilation) -> tuple[int, int]:
    out = tuple((i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d in zip(in_hw, kernel, stride, padding,
                                                                                dilation))
    if min(out) < 1:
        raise ValueError(f"input of {in_hw[0]}x{in_hw[1]} pixels is smaller than the {kernel[0]}x{kernel[1]} "
                         f"kernel (dilation {tuple(dilation)}, padding {tuple(padding)})")
    return out  # type: ignore[return-value]


# -- the "shifted" path: per-channel shift + one dense bh x bw convolution -----------------------------------
@dataclass(frozen=True)
class _ShiftPlan:
    """Indices of the shift for one input geometry and memory layout (``layout``: ``"nchw"`` or
    ``"nhwc"``). The shifted input is always channels-last: the gather writes either order at the same
    cost, and with NCHW inputs an NCHW shifted input measured 2-2.6x slower at 32 channels of 28x28
    (oneDNN's NCHW 1x2/2x2 kernels) though 10-25% faster at 64 channels of 14x14 (no conversion of the
    output back to NCHW); channels-last was faster over the benchmark as a whole."""

    layout: str
    shifted_hw: tuple[int, int]
    rect: tuple[int, int]
    forward_index: torch.Tensor  # (1, C*Hs*Ws): into the flattened input
    forward_zero: torch.Tensor  # positions of the shifted input that lie in the padding
    backward_index: torch.Tensor  # (1, C*H*W): into the flattened shifted input
    backward_zero: torch.Tensor  # positions of the input that no shifted position reads
    weight_index: torch.Tensor  # (groups, C/groups * bh * bw): into weight.view(groups, out/groups, -1)


def _rectangles(pattern: torch.Tensor) -> tuple[tuple[int, int], torch.Tensor] | None:
    """``((bh, bw), offsets (C, 2))`` if every channel keeps a full ``bh x bw`` rectangle (the same size for
    all), else None."""
    rows, cols = pattern.any(2), pattern.any(1)
    bh, bw = rows.sum(1), cols.sum(1)
    if not (bool((bh == bh[0]).all()) and bool((bw == bw[0]).all())):
        return None
    if not bool((pattern.flatten(1).sum(1) == bh * bw).all()):
        return None
    return (int(bh[0]), int(bw[0])), torch.stack([rows.int().argmax(1), cols.int().argmax(1)], 1)


def _shift_plan(pattern: torch.Tensor, groups: int, in_hw: tuple[int, int], layout: str, stride, padding,
                dilation, device: torch.device) -> _ShiftPlan:
    """Indices for a rectangle pattern ``(C, kh, kw)``. Channel ``c`` keeps rows ``a_c .. a_c + bh - 1`` and
    columns ``b_c .. b_c + bw - 1``; shifting it by ``(a_c * dh - ph, b_c * dw - pw)`` lines all channels up,
    so that a ``bh x bw`` convolution without padding (same stride and dilation) gives the output."""
    c_in, kh, kw = pattern.shape
    (bh, bw), offsets = _rectangles(pattern)  # type: ignore[misc]
    h, w = in_hw
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = _output_size(in_hw, (kh, kw), stride, padding, dilation)
    hs, ws = (ho - 1) * sh + (bh - 1) * dh + 1, (wo - 1) * sw + (bw - 1) * dw + 1
    ay = (offsets[:, 0] * dh - ph).view(-1, 1, 1)
    ax = (offsets[:, 1] * dw - pw).view(-1, 1, 1)
    chan = torch.arange(c_in).view(-1, 1, 1)
    # shifted[c, y, x] = input[c, y + ay_c, x + ax_c]
    iy, ix = torch.arange(hs).view(1, -1, 1) + ay, torch.arange(ws).view(1, 1, -1) + ax
    outside = (iy < 0) | (iy >= h) | (ix < 0) | (ix >= w)
    src = chan * (h * w) + iy * w + ix if layout == "nchw" else (iy * w + ix) * c_in + chan
    src, outside = torch.where(outside, 0, src).permute(1, 2, 0), outside.permute(1, 2, 0)  # written as nhwc
    # input[c, y, x] = shifted[c, y - ay_c, x - ax_c] (the shift is one-to-one)
    ys, xs = torch.arange(h).view(1, -1, 1) - ay, torch.arange(w).view(1, 1, -1) - ax
    unread = (ys < 0) | (ys >= hs) | (xs < 0) | (xs >= ws)
    dst = torch.where(unread, 0, (ys * ws + xs) * c_in + chan)  # read from the nhwc gradient
    if layout == "nhwc":
        dst, unread = dst.permute(1, 2, 0), unread.permute(1, 2, 0)
    cg = c_in // groups
    ci = torch.arange(cg).view(-1, 1, 1)
    widx = []
    for g in range(groups):
        off = offsets[g * cg:(g + 1) * cg]
        widx.append((ci * (kh * kw) + (off[:, 0].view(-1, 1, 1) + torch.arange(bh).view(1, -1, 1)) * kw
                     + off[:, 1].view(-1, 1, 1) + torch.arange(bw).view(1, 1, -1)).reshape(-1))
    flat = lambda t: t.reshape(1, -1).to(device)  # noqa: E731
    where = lambda t: t.reshape(-1).nonzero().view(-1).to(device)  # noqa: E731
    return _ShiftPlan(layout, (hs, ws), (bh, bw), flat(src), where(outside), flat(dst), where(unread),
                      torch.stack(widx).to(device))


class _Shift(torch.autograd.Function):
    """Per-channel shift (a gather of the input, zero where it falls in the padding); its adjoint is the
    reverse shift, again one gather."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: _ShiftPlan) -> torch.Tensor:
        n, c = x.shape[:2]
        hs, ws = plan.shifted_hw
        # gather then zero the (few) padding positions: cheaper than staging the input with zeros
        y = torch.gather(_flat_input(x, plan.layout), 1, plan.forward_index.expand(n, -1))
        y.index_fill_(1, plan.forward_zero, 0)
        ctx.plan, ctx.in_hw = plan, x.shape[2:]
        return y.view(n, hs, ws, c).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        plan: _ShiftPlan = ctx.plan
        n, c = grad.shape[:2]
        h, w = ctx.in_hw
        g = torch.gather(_flat_input(grad, "nhwc"), 1, plan.backward_index.expand(n, -1))
        g.index_fill_(1, plan.backward_zero, 0)
        if plan.layout == "nchw":
            return g.view(n, c, h, w), None
        return g.view(n, h, w, c).permute(0, 3, 1, 2), None


# -- the "im2col" path: sparse im2col + one 1x1 convolution ---------------------------------------------------
@dataclass(frozen=True)
class _Im2colPlan:
    """Index tensors of the regrouped path for one input geometry and memory layout.

    The sparse im2col block of a sample is ``(L, groups * kmax)`` (L = output pixels; per group, its kept
    (channel, position) pairs, padded to ``kmax`` with zeros), read as a channels-last image of
    ``groups * kmax`` channels, so that the matrix product is a 1x1 convolution (oneDNN: AVX-512 and
    multi-threaded on every x86 CPU, measured faster than MKL's GEMM on the 2-core AMD EPYC here).
    ``layout`` is the memory order of the input ("nchw" or "nhwc"), which the gathers read directly.
    """

    layout: str
    out_hw: tuple[int, int]
    kmax: int
    reads: int  # most (channel, position) pairs of one input channel: terms of the adjoint gather
    forward_index: torch.Tensor  # (1, L * groups * kmax): into the flattened input, then _PAD zeros
    weight_index: torch.Tensor  # (groups, kmax): into weight.view(groups, out/groups, -1), then a zero column
    backward_index: torch.Tensor  # (1, reads * C*H*W): into the flattened grad of the block, then _PAD zeros
    chunk: int  # samples per chunk


def _im2col_plan(pattern: torch.Tensor, groups: int, in_hw: tuple[int, int], layout: str,
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 element_size: int, device: torch.device) -> _Im2colPlan:
    """Build the gather indices for a channel pattern ``(C, kh, kw)`` (see :class:`_Im2colPlan`)."""
    c_in, kh, kw = pattern.shape
    h, w = in_hw
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = _output_size(in_hw, (kh, kw), stride, padding, dilation)
    cg = c_in // groups
    length = ho * wo
    # entries: the kept (group, channel-in-group, i, j), per group in the order that reads the input most
    # locally: channel by channel for "nchw" (one channel's plane), position by position for "nhwc"
    # (consecutive channels of one pixel)
    nz = pattern.view(groups, cg, kh, kw).nonzero()  # (g, ci, i, j), lexicographic
    if layout == "nhwc":
        nz = nz[torch.argsort(nz[:, 0] * (kh * kw * cg) + nz[:, 2] * (kw * cg) + nz[:, 3] * cg + nz[:, 1])]
    counts = torch.bincount(nz[:, 0], minlength=groups)
    kmax = int(counts.max())
    width = groups * kmax  # columns of the block
    rank = torch.arange(len(nz)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    g, ci, ki, kj = nz.unbind(1)
    chan = g * cg + ci
    column = g * kmax + rank
    # forward: entry (chan, i, j) at output pixel (oy, ox) reads input (chan, oy*sh - ph + i*dh, ox*sw - pw + j*dw)
    oy = torch.arange(ho).view(1, -1, 1)
    ox = torch.arange(wo).view(1, 1, -1)
    iy = oy * sh - ph + (ki * dh).view(-1, 1, 1)
    ix = ox * sw - pw + (kj * dw).view(-1, 1, 1)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    zero = c_in * h * w  # first of the _PAD zeros after a sample's input
    if layout == "nchw":
        src = chan.view(-1, 1, 1) * (h * w) + iy * w + ix
    else:
        src = (iy * w + ix) * c_in + chan.view(-1, 1, 1)
    fwd = torch.full((width, ho, wo), zero, dtype=torch.long)
    fwd[column] = torch.where(inside, src, zero)
    fwd = fwd.permute(1, 2, 0)  # (ho, wo, width)
    widx = torch.full((groups, kmax), cg * kh * kw, dtype=torch.long)
    widx[g, rank] = ci * (kh * kw) + ki * kw + kj
    # backward: input (chan, y, x) is read by entry (chan, i, j) at output pixel
    # ((y + ph - i*dh) / sh, (x + pw - j*dw) / sw) when that is a whole pixel inside the output
    per_chan = torch.bincount(chan, minlength=c_in)
    reads = int(per_chan.max())
    order = torch.argsort(chan, stable=True)
    slot = torch.empty(len(nz), dtype=torch.long)  # the entry's rank among its channel's entries
    slot[order] = torch.arange(len(nz)) - torch.repeat_interleave(torch.cumsum(per_chan, 0) - per_chan, per_chan)
    y = torch.arange(h).view(1, -1, 1)
    x = torch.arange(w).view(1, 1, -1)
    ny = y + ph - (ki * dh).view(-1, 1, 1)
    nx = x + pw - (kj * dw).view(-1, 1, 1)
    hit = (ny >= 0) & (ny % sh == 0) & (ny // sh < ho) & (nx >= 0) & (nx % sw == 0) & (nx // sw < wo)
    dst = ((ny // sh) * wo + nx // sw) * width + column.view(-1, 1, 1)
    bzero = length * width  # first of the _PAD zeros after a sample's block gradient
    bwd = torch.full((reads, c_in, h, w), bzero, dtype=torch.long)
    bwd[slot, chan] = torch.where(hit, dst, bzero)
    if layout == "nhwc":
        bwd = bwd.permute(0, 2, 3, 1)
    per_sample = length * width * element_size
    chunk = max(1, _CHUNK_BYTES * max(1, torch.get_num_threads()) // per_sample)
    return _Im2colPlan(layout, (ho, wo), kmax, reads, fwd.reshape(1, -1).to(device), widx.to(device),
                       bwd.reshape(1, -1).to(device), chunk)


class _Im2colConv(torch.autograd.Function):
    """The zero-skipping convolution for a fixed :class:`_Im2colPlan`: ``x`` (N, C, H, W), ``wmat`` the
    packed weight (groups, out/groups, kmax), optional ``bias``. Forward: per chunk of the batch, gather the
    block and run a (grouped) 1x1 convolution on it. Backward: per chunk, the block again (cheaper than
    keeping k copies of the input alive until the backward pass), the weight gradient
    ``grad^T @ block``, the block's gradient ``grad @ W`` and the adjoint gather summed over the
    ``reads`` entries of each input channel (a scatter-add would be the direct adjoint, but
    ``index_add_`` along a non-leading dimension is a slow serial loop on the CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, wmat: torch.Tensor, bias: torch.Tensor | None,
                plan: _Im2colPlan) -> torch.Tensor:
        n_all, c_in, h, w = x.shape
        groups, og, kmax = wmat.shape
        ho, wo = plan.out_hw
        weight = wmat.reshape(groups * og, kmax, 1, 1)
        flat = _flat_input(x, plan.layout)
        stage, cols = _chunk_buffers(x, flat.shape[1], plan.forward_index.shape[1], plan.chunk)
        fmt = torch.channels_last if plan.layout == "nhwc" else torch.contiguous_format
        out = None
        for n0 in range(0, n_all, plan.chunk):
            n = min(plan.chunk, n_all - n0)
            block = _gather(flat[n0:n0 + n], stage, cols, plan.forward_index)
            y = F.conv2d(block.view(n, ho, wo, groups * kmax).permute(0, 3, 1, 2), weight, bias, groups=groups)
            if n == n_all and fmt == torch.channels_last:
                out = y  # one chunk, already in the input's layout: no copy
            else:
                if out is None:
                    out = torch.empty((n_all, groups * og, ho, wo), dtype=x.dtype, device=x.device,
                                      memory_format=fmt)
                out[n0:n0 + n].copy_(y)
        ctx.plan, ctx.in_shape, ctx.has_bias = plan, (c_in, h, w), bias is not None
        ctx.save_for_backward(x, wmat)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, wmat = ctx.saved_tensors
        plan: _Im2colPlan = ctx.plan
        c_in, h, w = ctx.in_shape
        n_all = x.shape[0]
        groups, og, kmax = wmat.shape
        length = plan.out_hw[0] * plan.out_hw[1]
        width = groups * kmax
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        flat = _flat_input(x, plan.layout)
        go = grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n_all, length, -1)
        gw = torch.zeros_like(wmat) if need_w else None
        gx = x.new_empty(n_all, c_in * h * w) if need_x else None
        if need_w:
            stage, cols = _chunk_buffers(x, flat.shape[1], plan.forward_index.shape[1], plan.chunk)
        if need_x:
            gbuf, terms = _chunk_buffers(x, length * width, plan.backward_index.shape[1], plan.chunk)
        for n0 in range(0, n_all, plan.chunk):
            n = min(plan.chunk, n_all - n0)
            g_chunk = go[n0:n0 + n]
            if need_w:
                block = _gather(flat[n0:n0 + n], stage, cols, plan.forward_index)
                if groups == 1:
                    gw[0].addmm_(g_chunk.reshape(n * length, og).t(), block.view(n * length, kmax))
                else:
                    gw += torch.matmul(g_chunk.reshape(n * length, groups, og).permute(1, 2, 0),
                                       block.view(n * length, groups, kmax).transpose(0, 1))
            if need_x:
                gblock = gbuf[:n, :length * width]
                if groups == 1:
                    torch.bmm(g_chunk, wmat.expand(n, -1, -1), out=gblock.view(n, length, kmax))
                else:
                    gblock.view(n, length, groups, kmax).copy_(torch.matmul(
                        g_chunk.view(n, length, groups, og).transpose(1, 2), wmat).transpose(1, 2))
                torch.gather(gbuf[:n], 1, plan.backward_index.expand(n, -1), out=terms[:n])
                torch.sum(terms[:n].view(n, plan.reads, -1), 1, out=gx[n0:n0 + n])
        grad_x = None
        if need_x:
            if plan.layout == "nchw":
                grad_x = gx.view(n_all, c_in, h, w)
            else:
                grad_x = gx.view(n_all, h, w, c_in).permute(0, 3, 1, 2)
        grad_b = grad.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return grad_x, gw, grad_b, None


def _chunk_buffers(x: torch.Tensor, size: int, out_size: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Buffers reused by every chunk: a gather's source with ``_PAD`` zeros after each sample (where the
    indices of padding and unused entries point), and its output."""
    rows = min(chunk, x.shape[0])
    src = x.new_empty(rows, size + _PAD)
    src[:, size:] = 0
    return src, x.new_empty(rows, out_size)


def _gather(flat: torch.Tensor, stage: torch.Tensor, cols: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The sparse im2col block of the samples ``flat`` (n, C*H*W): ``(n, L * width)``. ``torch.gather``
    with an expanded index rather than ``index_select``: the same speed on one thread, but parallel
    (``index_select`` along dimension 1 measured no faster on 2 threads than on 1)."""
    n, size = flat.shape
    stage[:n, :size].copy_(flat)
    torch.gather(stage[:n], 1, index.expand(n, -1), out=cols[:n])
    return cols[:n]


class PredefinedSparseConv2d(nn.Conv2d):
    """A 2D convolution whose kernels keep only ``k`` of their ``kh * kw`` positions, by a pattern of the
    input channel fixed at construction (pre-defined sparsity, Kundu et al. 2019; module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias, device, dtype: as
            ``nn.Conv2d`` (zero padding only). ``padding`` defaults to ``dilation * (kernel_size - 1) // 2``
            ("same" at stride 1 for odd kernels); an int, a pair or ``"same"``/``"valid"`` as ``nn.Conv2d``.
        k: kept positions per kernel (default 4; from 1 to ``kh * kw``). With ``pattern`` it may be left
            out; if given it must match the pattern.
        period, seed, kind: passed to :func:`sparse_pattern` for the default pattern.
        pattern: a user pattern instead: bool (or 0/1) of shape ``(kh, kw)`` (every channel), ``(P, kh,
            kw)`` (input channel ``c`` uses ``pattern[c % P]``; ``P = in_channels`` gives one per channel)
            or ``(out_channels, in_channels / groups, kh, kw)`` (any mask; zero skipping needs the mask to
            be a function of the input channel only, so such a mask runs masked unless its rows agree).
            A pattern of filled rectangles of one size takes the fast "shifted" path, whatever its origin.
        mode: ``"auto"``, ``"masked"`` or ``"regrouped"`` (module docstring).

    The state dict is a ``nn.Conv2d``'s (``weight`` of shape (out, in/groups, kh, kw), ``bias``) plus the
    bool ``mask`` of the weight's shape. Loading a state dict re-applies the (loaded) mask to the
    weight, so a dense conv's weights load into a sparse conv with ``strict=False``.

    The weights are initialised like ``nn.Conv2d``'s (uniform, bound ``1/sqrt(fan_in)``) but with the
    *effective* fan-in, the kept coefficients per output: with the dense bound a sparse kernel would
    start with ``sqrt(k / (kh * kw))`` of a dense conv's output scale.

    Output memory format follows the input (channels-last in, channels-last out), as ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str | None = None,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True, *, k: int | None = None,
                 period: int | None = None, pattern: torch.Tensor | None = None, seed: int | None = 0,
                 kind: str | None = None, mode: str = "auto", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        _check_positive("in_channels", in_channels)
        _check_positive("out_channels", out_channels)
        _check_positive("groups", groups)
        for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if c % groups:
                raise ValueError(f"{name}={c} is not divisible by groups={groups}; valid groups divide both "
                                 f"{in_channels} and {out_channels}")
        kh, kw = _pair("kernel_size", kernel_size)
        dh, dw = _pair("dilation", dilation)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
        if padding is None:
            padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        mask = _build_mask(in_channels, out_channels, groups, (kh, kw), k, period, pattern, seed, kind)
        super().__init__(in_channels, out_channels, (kh, kw), stride=stride, padding=padding, dilation=(dh, dw),
                         groups=groups, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", mask.to(self.weight.device))
        self.mode = mode
        self.k = (4 if k is None else k) if pattern is None else _uniform_k(mask)
        if pattern is None and kind is None:
            kind = "shifted" if _rectangle(self.k, kh, kw) else "cyclic"
        self.period, self.seed, self.kind = (period, seed, kind) if pattern is None else (None, None, None)
        self._plans: dict[tuple, _Im2colPlan | _ShiftPlan] = {}
        self._structure: tuple | None = None
        self.register_load_state_dict_post_hook(PredefinedSparseConv2d._after_load)
        self.reset_parameters()

    # -- parameters ---------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        if "mask" not in self._buffers:  # called by nn.Conv2d.__init__ before the mask exists
            return
        fan_in = max(1, int(self.mask.sum((1, 2, 3)).max()))
        bound = 1 / math.sqrt(fan_in)
        with torch.no_grad():
            nn.init.uniform_(self.weight, -bound, bound)
            self.weight.mul_(self.mask)
            if self.bias is not None:
                nn.init.uniform_(self.bias, -bound, bound)

    @staticmethod
    def _after_load(module: "PredefinedSparseConv2d", incompatible_keys) -> None:
        """The loaded mask wins: check it, zero the weight outside it, forget indices built for the old one
        and the constructor's description of the old one if it no longer holds."""
        _check_mask(module.mask)
        with torch.no_grad():
            module.weight.mul_(module.mask)
        module._plans.clear()
        module._structure = None
        if module.kind is not None:
            built = _build_mask(module.in_channels, module.out_channels, module.groups, module.kernel_size,
                                module.k, module.period, None, module.seed, module.kind)
            if not torch.equal(built, module.mask.cpu()):
                module.period = module.seed = module.kind = None
        module.k = _uniform_k(module.mask)

    @property
    def density(self) -> float:
        """Kept fraction of the kernel coefficients (``k / (kh * kw)`` for the default patterns)."""
        return float(self.mask.sum()) / self.mask.numel()

    def _mask_version(self) -> tuple[int, int]:
        """Changes when the mask is replaced or modified in place (the index caches depend on it). Tensors
        made in inference mode keep no version counter; loading a state dict clears the caches anyway."""
        return self.mask.data_ptr(), -1 if self.mask.is_inference() else self.mask._version

    def _pattern_structure(self) -> tuple[torch.Tensor | None, bool]:
        """(channel pattern or None, whether it is a rectangle family), cached per mask version."""
        version = self._mask_version()
        if self._structure is None or self._structure[0] != version:
            g = self.groups
            m = self.mask.view(g, self.out_channels // g, *self.mask.shape[1:])
            same = bool((m == m[:, :1]).all())
            chan = m[:, 0].reshape(self.in_channels, *self.kernel_size).cpu() if same else None
            self._structure = (version, chan, chan is not None and _rectangles(chan) is not None)
        return self._structure[1], self._structure[2]

    @property
    def channel_pattern(self) -> torch.Tensor | None:
        """The mask as a function of the input channel, ``(in_channels, kh, kw)``, or ``None`` if it also
        depends on the output channel (then only the masked path can run it)."""
        return self._pattern_structure()[0]

    # -- forward ----------------------------------------------------------------------------------------
    def execution(self, x: torch.Tensor) -> str:
        """The path :meth:`forward` takes for input ``x``: ``"masked"``, ``"shifted"`` or ``"im2col"``."""
        if self.mode == "masked":
            return "masked"
        chan, rect = self._pattern_structure()
        if self.mode == "regrouped":
            if chan is None:
                raise ValueError("mode='regrouped' needs a mask that depends only on the input channel; this "
                                 "mask differs between output channels (use mode='masked' or 'auto')")
            return "shifted" if rect else "im2col"
        if (chan is None or x.device.type != "cpu" or x.dtype != torch.float32
                or torch.is_autocast_enabled(x.device.type)):
            return "masked"
        if rect:
            return "shifted" if self.density <= AUTO_SHIFTED_MAX_DENSITY else "masked"
        inference = not torch.is_grad_enabled() or not (x.requires_grad or self.weight.requires_grad)
        return "im2col" if inference and self.density <= AUTO_IM2COL_MAX_DENSITY else "masked"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self.execution(x)
        if path == "masked":
            return self._conv_forward(x, self.weight * self.mask, self.bias)
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.in_channels}, H, W) or "
                             f"({self.in_channels}, H, W); got {tuple(x.shape)}")
        g, og = self.groups, self.out_channels // self.groups
        with torch.autocast(x.device.type, enabled=False):
            plan = self._plan(x, path)
            weight = self.weight.to(x.dtype).reshape(g, og, -1)
            bias = self.bias.to(x.dtype) if self.bias is not None else None
            if path == "shifted":
                bh, bw = plan.rect
                wrect = torch.gather(weight, 2, plan.weight_index.unsqueeze(1).expand(-1, og, -1))
                y = F.conv2d(_Shift.apply(x, plan), wrect.reshape(self.out_channels, -1, bh, bw), bias,
                             self.stride, 0, self.dilation, g)
                if plan.layout == "nchw":
                    y = y.contiguous()  # the input's memory format, as nn.Conv2d
            else:
                wpad = F.pad(weight, (0, 1))  # a zero column for the padding entries of unequal groups
                wmat = torch.gather(wpad, 2, plan.weight_index.unsqueeze(1).expand(-1, og, -1))
                y = _Im2colConv.apply(x, wmat, bias, plan)
        return y.squeeze(0) if squeeze else y

    def _plan(self, x: torch.Tensor, path: str) -> _Im2colPlan | _ShiftPlan:
        layout = "nhwc" if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) else "nchw"
        key = (path, tuple(x.shape[1:]), layout, x.device, x.element_size(), self._mask_version(),
               torch.get_num_threads())
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 8:
                self._plans.clear()
            args = (self.channel_pattern, self.groups, tuple(x.shape[2:]), layout, self.stride,
                    self._explicit_padding(), self.dilation)
            if path == "shifted":
                plan = _shift_plan(*args, x.device)
            else:
                plan = _im2col_plan(*args, x.element_size(), x.device)
            self._plans[key] = plan
        return plan

    def _explicit_padding(self) -> tuple[int, int]:
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            pads = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(p % 2 for p in pads):
                raise ValueError(f"padding='same' with the even kernel {self.kernel_size} pads unevenly; zero "
                                 "skipping supports symmetric padding only (use mode='masked')")
            return (pads[0] // 2, pads[1] // 2)
        return tuple(self.padding)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        parts = [super().extra_repr()]
        if self.k is not None:
            parts.append(f"k={self.k}")
        if self.kind is not None:
            parts.append(f"kind={self.kind!r}")
        if self.period is not None:
            parts.append(f"period={self.period}")
        parts += [f"density={self.density:.3f}", f"mode={self.mode!r}"]
        return ", ".join(parts)


def _uniform_k(mask: torch.Tensor) -> int | None:
    kept = mask.sum((2, 3)).unique()
    return int(kept[0]) if len(kept) == 1 else None


def _check_mask(mask: torch.Tensor) -> None:
    empty = (~mask.flatten(2).any(2)).nonzero()
    if len(empty):
        o, c = (int(v) for v in empty[0])
        raise ValueError(f"the sparsity mask keeps no position of the kernel for output {o}, input channel {c} "
                         f"(and {len(empty) - 1} other kernels); every kernel needs at least one of its "
                         f"{mask.shape[2] * mask.shape[3]} positions")


def _build_mask(in_channels: int, out_channels: int, groups: int, kernel_size: tuple[int, int], k: int | None,
                period: int | None, pattern, seed: int | None, kind: str | None) -> torch.Tensor:
    """The bool mask of the weight's shape (out, in/groups, kh, kw) for the constructor's arguments."""
    kh, kw = kernel_size
    cg, og = in_channels // groups, out_channels // groups
    if pattern is None:
        chan = sparse_pattern(in_channels, kernel_size, 4 if k is None else k, period=period, seed=seed, kind=kind)
    else:
        pat = torch.as_tensor(pattern).detach().cpu()
        if pat.dtype != torch.bool:
            if not bool(((pat == 0) | (pat == 1)).all()):
                raise ValueError("pattern must be bool or hold only 0 and 1 (1 = kept kernel position)")
            pat = pat.bool()
        shapes = f"({kh}, {kw}), (period, {kh}, {kw}) or ({out_channels}, {cg}, {kh}, {kw})"
        if pat.dim() not in (2, 3, 4) or tuple(pat.shape[-2:]) != (kh, kw):
            raise ValueError(f"pattern must have shape {shapes}; got {tuple(pat.shape)}")
        if pat.dim() == 4:
            if tuple(pat.shape) != (out_channels, cg, kh, kw):
                raise ValueError(f"pattern must have shape {shapes}; got {tuple(pat.shape)}")
            chan = None
        else:
            pat = pat.view(-1, kh, kw)
            if len(pat) == 0:
                raise ValueError(f"pattern must have shape {shapes}; got {tuple(pat.shape)}")
            empty = (~pat.flatten(1).any(1)).nonzero()
            if len(empty):
                raise ValueError(f"pattern[{int(empty[0])}] keeps none of the {kh * kw} kernel positions; every "
                                 "kernel needs at least one")
            chan = pat[torch.arange(in_channels) % len(pat)]
        if k is not None:
            counts = (pat.flatten(-2).sum(-1)).unique().tolist()
            if counts != [k]:
                raise ValueError(f"k={k} does not match the pattern, which keeps {counts} positions per kernel; "
                                 "leave k out when giving a pattern")
        if chan is None:
            _check_mask(pat)
            return pat.clone()
    chan = chan.view(groups, 1, cg, kh, kw).expand(groups, og, cg, kh, kw)
    return chan.reshape(out_channels, cg, kh, kw).clone()
