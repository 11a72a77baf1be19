"""cnnlab.layers.PredefinedSparseConv2d: patterns, exactness of every execution path against a masked
nn.Conv2d, gradients, zeros held through optimiser steps, saving, errors and MAC counting."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.func import functional_call

import cnnlab.layers.sparse as sparse
from cnnlab.analysis.summary import summarize
from cnnlab.layers import PredefinedSparseConv2d, sparse_pattern

pytestmark = pytest.mark.usefixtures("single_thread")


def reference(m: PredefinedSparseConv2d) -> nn.Conv2d:
    """An nn.Conv2d with the same geometry and the masked weight."""
    ref = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                    m.bias is not None, dtype=m.weight.dtype)
    with torch.no_grad():
        ref.weight.copy_(m.weight * m.mask)
        if m.bias is not None:
            ref.bias.copy_(m.bias)
    return ref


def random_weights(m: nn.Module, seed: int = 0) -> None:
    """Nonzero values everywhere the mask keeps (the init could leave tiny values; make them O(1))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        if isinstance(m, PredefinedSparseConv2d):
            m.weight.mul_(m.mask)


# -- patterns ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,k", [("cyclic", k) for k in range(1, 10)]
                         + [("shifted", k) for k in (1, 2, 3, 4, 6, 9)])
def test_pattern_shape_and_k_per_kernel(kind, k):
    p = sparse_pattern(20, 3, k, kind=kind)
    assert p.shape == (20, 3, 3) and p.dtype == torch.bool
    assert (p.flatten(1).sum(1) == k).all()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8])
def test_cyclic_patterns_cover_every_position_equally(k):
    period = 9 // math.gcd(9, k)
    p = sparse_pattern(3 * period, 3, k, kind="cyclic")
    one = p[:period].flatten(1)
    assert (one.sum(0) == period * k // 9).all()  # every position used equally often over a period
    assert torch.equal(p[period:2 * period], p[:period])  # and the patterns repeat with the period
    assert len({tuple(row.tolist()) for row in one}) == period  # all different within the period


def test_explicit_period_repeats_and_is_as_even_as_it_allows():
    p = sparse_pattern(24, 3, 4, period=6, kind="cyclic").flatten(1)
    assert torch.equal(p[6:12], p[:6]) and not torch.equal(p[1], p[0])
    counts = p[:6].sum(0)  # 24 uses of 9 positions: 2 or 3 each
    assert counts.sum() == 24 and counts.min() >= 2 and counts.max() <= 3


@pytest.mark.parametrize("k,rect,period", [(1, (1, 1), 9), (2, (1, 2), 6), (3, (1, 3), 3), (4, (2, 2), 4),
                                           (6, (2, 3), 2), (9, (3, 3), 1)])
def test_shifted_patterns_are_one_rectangle_at_every_offset(k, rect, period):
    p = sparse_pattern(2 * period, 3, k, kind="shifted")
    assert sparse._rectangles(p)[0] == rect
    assert torch.equal(p[period:], p[:period])
    assert len({tuple(row.flatten().tolist()) for row in p[:period]}) == period  # every offset once


def test_default_kind_is_shifted_where_a_rectangle_exists():
    assert sparse._rectangles(sparse_pattern(8, 3, 4)) is not None
    assert torch.equal(sparse_pattern(8, 3, 4), sparse_pattern(8, 3, 4, kind="shifted"))
    assert torch.equal(sparse_pattern(9, 3, 5), sparse_pattern(9, 3, 5, kind="cyclic"))


def test_patterns_are_deterministic_given_the_seed():
    same = sparse_pattern(16, 3, 4, seed=3, kind="cyclic")
    assert torch.equal(same, sparse_pattern(16, 3, 4, seed=3, kind="cyclic"))
    assert not torch.equal(sparse_pattern(16, 3, 4, seed=3, kind="cyclic"),
                           sparse_pattern(16, 3, 4, seed=4, kind="cyclic"))
    assert torch.equal(sparse_pattern(9, 3, 4, seed=None, kind="cyclic")[0].flatten(),
                       torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool))  # row-major cycle


def test_mask_density_and_repr():
    m = PredefinedSparseConv2d(8, 6, 3, k=4, kind="cyclic")
    assert m.mask.shape == m.weight.shape and m.mask.dtype == torch.bool
    assert m.density == pytest.approx(4 / 9)
    assert (m.weight[~m.mask] == 0).all() and (m.weight[m.mask] != 0).all()
    assert torch.equal(m.channel_pattern, sparse_pattern(8, 3, 4, kind="cyclic"))
    r = repr(m)
    assert "k=4" in r and "kind='cyclic'" in r and "density=0.444" in r and "mode='auto'" in r


def test_init_uses_the_effective_fan_in():
    torch.manual_seed(0)
    m = PredefinedSparseConv2d(64, 64, 3, k=4)
    kept = m.weight[m.mask]
    bound = 1 / math.sqrt(64 * 4)  # nn.Conv2d's bound with the kept coefficients as fan-in
    assert kept.abs().max() <= bound and kept.abs().max() > 0.9 * bound


# -- exactness: every path equals nn.Conv2d with the masked weight ----------------------------------------------
CASES = [  # kind, k, stride, padding, dilation, groups, bias, input (C, H, W), channels_last
    ("shifted", 4, 1, 1, 1, 1, True, (6, 9, 7), False),
    ("shifted", 4, 2, 1, 1, 1, False, (6, 9, 7), True),
    ("shifted", 2, 1, "same", 1, 1, True, (5, 6, 8), True),
    ("shifted", 6, 2, 0, 1, 2, True, (6, 10, 9), False),
    ("shifted", 3, 1, 2, 2, 3, False, (6, 8, 8), True),
    ("cyclic", 4, 1, 1, 1, 1, True, (6, 9, 7), False),
    ("cyclic", 4, 2, 1, 1, 1, True, (6, 9, 7), True),
    ("cyclic", 2, 1, "valid", 1, 1, False, (5, 6, 8), False),
    ("cyclic", 5, 2, 1, 1, 2, True, (6, 10, 9), True),
    ("cyclic", 7, 1, 2, 2, 3, True, (6, 8, 8), False),
]


def make(case, mode, dtype=torch.float64):
    kind, k, stride, padding, dilation, groups, bias, (c, h, w), cl = case
    m = PredefinedSparseConv2d(c, 6, 3, stride, padding, dilation, groups, bias, k=k, kind=kind, mode=mode,
                               dtype=dtype)
    random_weights(m)
    x = torch.randn(3, c, h, w, dtype=dtype, generator=torch.Generator().manual_seed(1))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    return m, x


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}")
@pytest.mark.parametrize("mode", ["masked", "regrouped"])
def test_output_equals_conv2d_with_masked_weight(case, mode):
    m, x = make(case, mode)
    assert m.execution(x) == {"masked": "masked", "regrouped": "shifted" if case[0] == "shifted" else "im2col"}[mode]
    y = m(x)
    torch.testing.assert_close(y, reference(m)(x), rtol=1e-12, atol=1e-12)
    if mode == "regrouped":  # the memory format follows the input, as nn.Conv2d's
        assert y.is_contiguous(memory_format=torch.channels_last if case[-1] else torch.contiguous_format)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}")
def test_gradients_equal_between_paths(case):
    grads = {}
    for mode in ("masked", "regrouped"):
        m, x = make(case, mode)
        x.requires_grad_()
        y = m(x)
        y.backward(torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2)))
        assert (m.weight.grad[~m.mask] == 0).all()  # exactly zero where the kernel is pruned
        grads[mode] = (x.grad, m.weight.grad, None if m.bias is None else m.bias.grad)
    for a, b in zip(grads["masked"], grads["regrouped"]):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_chunked_batches_equal_one_chunk(monkeypatch):
    """The im2col path processes the batch in chunks; make them tiny so several are exercised."""
    monkeypatch.setattr(sparse, "_CHUNK_BYTES", 1)
    m, x = make(CASES[6], "regrouped")  # cyclic, stride 2, channels-last
    x = torch.cat([x, x.flip(0), x * 2]).requires_grad_()
    assert m._plan(x, "im2col").chunk == 1
    y = m(x)
    torch.testing.assert_close(y, reference(m)(x), rtol=1e-12, atol=1e-12)
    y.sum().backward()
    ref = reference(m)
    xr = x.detach().clone().requires_grad_()
    ref(xr).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.weight.grad, ref.weight.grad * m.mask, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["shifted", "cyclic"])
def test_gradcheck_regrouped(kind):
    m = PredefinedSparseConv2d(4, 3, 3, stride=2, k=4, kind=kind, mode="regrouped", dtype=torch.float64)
    expected = "shifted" if kind == "shifted" else "im2col"
    assert m.execution(torch.zeros(1, 4, 5, 6, dtype=torch.float64)) == expected
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = m.weight.detach().clone().requires_grad_()
    b = m.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: functional_call(m, {"weight": w, "bias": b}, (x,)), (x, w, b))


def test_changing_the_mask_in_place_rebuilds_the_indices():
    m = PredefinedSparseConv2d(4, 4, 3, k=2, kind="cyclic", mode="regrouped")
    x = torch.randn(2, 4, 6, 6)
    m(x)
    with torch.no_grad():
        m.mask[:, :, 1, 1] = True  # every kernel now also keeps its centre
        m.weight.copy_(torch.randn(m.weight.shape) * m.mask)
    torch.testing.assert_close(m(x), reference(m)(x))


def test_built_and_run_in_inference_mode():
    with torch.inference_mode():
        for kind in ("shifted", "cyclic"):
            m = PredefinedSparseConv2d(4, 4, 3, k=4, kind=kind, mode="regrouped")
            x = torch.randn(2, 4, 6, 6)
            torch.testing.assert_close(m(x), reference(m)(x))


def test_unbatched_input():
    m = PredefinedSparseConv2d(4, 5, 3, k=4, mode="regrouped")
    x = torch.randn(4, 7, 7)
    torch.testing.assert_close(m(x), reference(m)(x))


# -- execution choice and MACs -----------------------------------------------------------------------------
def test_auto_takes_the_measured_fastest_path():
    x = torch.randn(2, 8, 6, 6)
    assert PredefinedSparseConv2d(8, 8, k=4).execution(x) == "shifted"
    assert PredefinedSparseConv2d(8, 8, k=6).execution(x) == "masked"  # measured no faster at 6 of 9
    assert PredefinedSparseConv2d(8, 8, k=4, kind="cyclic").execution(x) == "masked"
    small = PredefinedSparseConv2d(8, 8, k=2, kind="cyclic")
    assert small.execution(x) == "masked"  # training: the weight needs a gradient
    with torch.no_grad():
        assert small.execution(x) == "im2col"
    assert PredefinedSparseConv2d(8, 8, k=4).execution(x.double()) == "masked"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert PredefinedSparseConv2d(8, 8, k=4).execution(x) == "masked"
    per_output = torch.rand(8, 8, 3, 3, generator=torch.Generator().manual_seed(0)) < 0.5
    per_output[..., 1, 1] = True
    m = PredefinedSparseConv2d(8, 8, pattern=per_output)
    assert m.channel_pattern is None and m.execution(x) == "masked"
    torch.testing.assert_close(m(x), reference(m)(x))


@pytest.mark.parametrize("kwargs", [dict(k=4), dict(k=4, kind="cyclic", mode="regrouped"), dict(k=2, stride=2)])
def test_summary_counts_the_effective_macs(kwargs):
    model = nn.Sequential(PredefinedSparseConv2d(32, 32, 3, padding=1, **kwargs)).eval()
    s = summarize(model, (32, 28, 28))
    hw = 28 // kwargs.get("stride", 1)
    assert s.total_macs == 32 * 32 * kwargs["k"] * hw * hw  # out * in * k * H * W, not * 9
    assert s.rows[-1].output_shape == (32, hw, hw)


# -- training holds the zeros ------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
@pytest.mark.parametrize("mode,kind", [("masked", "shifted"), ("regrouped", "shifted"), ("regrouped", "cyclic")])
def test_masked_weights_stay_exactly_zero_through_optimizer_steps(opt, mode, kind):
    torch.manual_seed(0)
    m = PredefinedSparseConv2d(6, 8, 3, k=4, kind=kind, mode=mode)
    before = m.weight.detach().clone()
    if opt == "sgd":
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        optimizer = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(4):
        optimizer.zero_grad()
        x = torch.randn(4, 6, 7, 7)
        (m(x) ** 2).mean().backward()
        optimizer.step()
    assert (m.weight[~m.mask] == 0.0).all()
    assert (m.weight[m.mask] != before[m.mask]).all()  # the kept coefficients did learn


# -- saving ---------------------------------------------------------------------------------------------------
def test_state_dict_has_the_mask_and_round_trips_through_safetensors(tmp_path):
    a = PredefinedSparseConv2d(6, 8, 3, k=4, kind="cyclic", seed=1)
    random_weights(a, 3)
    sd = a.state_dict()
    assert set(sd) == {"weight", "bias", "mask"} and sd["mask"].dtype == torch.bool
    save_file(sd, tmp_path / "m.safetensors")
    b = PredefinedSparseConv2d(6, 8, 3, k=4, kind="cyclic", seed=2)  # another pattern until loaded
    assert not torch.equal(b.mask, a.mask)
    b.load_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(b.mask, a.mask) and torch.equal(b.weight, a.weight)
    assert b.kind is None and b.k == 4  # the constructor's description no longer holds; k does
    x = torch.randn(2, 6, 9, 9)
    for mode in ("masked", "regrouped"):
        a.mode = b.mode = mode
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def test_loading_a_dense_conv_masks_its_weight():
    dense = nn.Conv2d(6, 8, 3, padding=1)
    m = PredefinedSparseConv2d(6, 8, 3, k=4)
    result = m.load_state_dict(dense.state_dict(), strict=False)
    assert result.missing_keys == ["mask"]
    torch.testing.assert_close(m.weight, dense.weight * m.mask, rtol=0, atol=0)


def test_loading_a_mask_with_an_empty_kernel_is_refused():
    m = PredefinedSparseConv2d(4, 4, 3, k=4)
    sd = m.state_dict()
    sd["mask"][2, 1] = False
    with pytest.raises(ValueError, match="output 2, input channel 1"):
        m.load_state_dict(sd)


# -- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0), r"k must be an integer from 1 to 9 .*got 0"),
    (dict(k=10), r"from 1 to 9 .*got 10"),
    (dict(k=5, kind="shifted"), r"k=5 \(valid: 1, 2, 3, 4, 6, 9\)"),
    (dict(kind="diagonal"), r"kind must be .*got 'diagonal'"),
    (dict(mode="fast"), r"mode must be one of 'auto', 'masked', 'regrouped'; got 'fast'"),
    (dict(groups=4), r"in_channels=6 is not divisible by groups=4"),
    (dict(period=0), r"period must be a positive integer; got 0"),
    (dict(pattern=torch.tensor([[[1, 0, 0], [0, 0, 0], [0, 0, 0]], [[0] * 3] * 3])),
     r"pattern\[1\] keeps none of the 9 kernel positions"),
    (dict(pattern=torch.ones(2, 2, dtype=torch.bool)), r"pattern must have shape .*got \(2, 2\)"),
    (dict(pattern=torch.full((3, 3), 2)), "only 0 and 1"),
    (dict(pattern=torch.eye(3, dtype=torch.bool), k=2), r"k=2 does not match the pattern, which keeps \[3\]"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PredefinedSparseConv2d(6, 8, 3, **kwargs)


def test_empty_kernel_in_a_full_mask_and_regrouped_per_output_masks():
    full = torch.ones(4, 4, 3, 3, dtype=torch.bool)
    full[3, 2] = False
    with pytest.raises(ValueError, match="output 3, input channel 2"):
        PredefinedSparseConv2d(4, 4, pattern=full)
    full[3, 2, 0, 0] = True
    m = PredefinedSparseConv2d(4, 4, pattern=full, mode="regrouped")
    with pytest.raises(ValueError, match="depends only on the input channel"):
        m(torch.randn(1, 4, 5, 5))


def test_user_patterns_repeat_with_their_period_and_rectangles_run_shifted():
    cross = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    m = PredefinedSparseConv2d(4, 4, pattern=cross, mode="regrouped")
    assert m.k == 5 and (m.mask == cross).all() and m.execution(torch.randn(1, 4, 5, 5)) == "im2col"
    blocks = torch.zeros(2, 3, 3, dtype=torch.bool)
    blocks[0, :2, 1:] = blocks[1, 1:, :2] = True
    m = PredefinedSparseConv2d(6, 4, pattern=blocks, mode="regrouped")
    assert torch.equal(m.channel_pattern, blocks[torch.arange(6) % 2])
    x = torch.randn(2, 6, 5, 5)
    assert m.execution(x) == "shifted"
    torch.testing.assert_close(m(x), reference(m)(x))


def test_all_paths_agree_in_float32_on_the_benchmark_layout():
    """float32, channels-last, batch of several chunks: the paths differ only by rounding."""
    for kind, k in itertools.product(["shifted", "cyclic"], [2, 4]):
        m = PredefinedSparseConv2d(16, 16, 3, k=k, kind=kind, mode="regrouped")
        x = torch.randn(8, 16, 14, 14).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(m(x), reference(m)(x), rtol=1e-4, atol=1e-4)
