"""The autograd wrappers (cnnlab.ops.autograd): ``torch.autograd.gradcheck`` in float64 (the explicit
backward passes against finite differences of the reference forward), and modules swapped by
``to_reference`` against the original ``nn`` modules.

Deterministic: fixed seeds, and hypothesis with ``derandomize=True``. Tolerances: gradcheck
with eps=1e-6, atol=1e-8, rtol=1e-6 in float64 (its defaults are atol=1e-5, rtol=1e-3); module
comparisons ``rtol=1e-10, atol=1e-12``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from cnnlab.ops import (PADDING_MODES, ReferenceAvgPool2d, ReferenceConv2d, ReferenceMaxPool2d,
                        reference_avg_pool2d, reference_conv2d, reference_max_pool2d, to_reference)

settings.register_profile("cnnlab-ops-gradcheck", derandomize=True, deadline=None, database=None,
                          max_examples=20, print_blob=True)
PROFILE = settings.get_profile("cnnlab-ops-gradcheck")

DT = torch.float64
CLOSE = dict(rtol=1e-10, atol=1e-12)
# tighter than gradcheck's defaults (atol=1e-5, rtol=1e-3): every op here is piecewise linear, so
# central differences are exact up to rounding (~1e-16 * |f| / eps)
GRADCHECK = dict(eps=1e-6, atol=1e-8, rtol=1e-6)


def randn(*shape, seed: int, requires_grad: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DT).requires_grad_(requires_grad)


# --- reference_conv2d ------------------------------------------------------------------------------

CONV_CASES = {
    "defaults": dict(),
    "stride2-pad1": dict(stride=2, padding=1),
    "stride-dilation-per-dim": dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    "groups2": dict(groups=2, padding=1),
    "depthwise": dict(groups=4, padding=1, out=4),
    "dilation2-same-reflect": dict(dilation=2, padding="same", padding_mode="reflect"),
    "per-side-circular": dict(padding=(1, 0, 2, 1), padding_mode="circular"),
    "replicate-stride2": dict(padding=2, padding_mode="replicate", stride=2),
    "constant-value": dict(padding=1, padding_mode="constant", value=0.7),
    "full-groups2": dict(padding="full", groups=2),
    "same-stride2-tf": dict(padding="same", stride=2, padding_mode="reflect"),
    "valid-stride3": dict(padding="valid", stride=3),
    "no-bias": dict(padding=1, bias=False),
    "no-bias-circular-groups": dict(padding=(2, 1), padding_mode="circular", groups=2, bias=False),
    "unbatched-reflect": dict(padding=1, padding_mode="reflect", unbatched=True),
}


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_reference_conv2d_gradcheck(case):
    cfg = dict(CONV_CASES[case])
    out, bias, unbatched = cfg.pop("out", 6), cfg.pop("bias", True), cfg.pop("unbatched", False)
    groups = cfg.get("groups", 1)
    x = randn(*(() if unbatched else (2,)), 4, 6, 5, seed=1)
    w = randn(out, 4 // groups, 3, 2, seed=2)
    inputs = (x, w, randn(out, seed=3)) if bias else (x, w)

    def f(x, w, b=None):
        return reference_conv2d(x, w, b, **cfg)

    y = f(*inputs)
    assert y.dtype == DT and y.dim() == x.dim()
    assert gradcheck(f, inputs, **GRADCHECK)


@settings(PROFILE, max_examples=20)
@given(st.integers(1, 2), st.sampled_from(PADDING_MODES), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2),
       st.integers(1, 3), st.integers(0, 2), st.booleans(), st.integers(0, 2**31 - 1))
def test_reference_conv2d_gradcheck_generated(groups, mode, k, stride, dilation, size_extra, pad, bias, seed):
    size = 2 + size_extra
    if mode == "reflect":
        pad = min(pad, size - 1)
    assume(dilation * (k - 1) + 1 <= size + 2 * pad)
    x = randn(1, 2 * groups, size, size + 1, seed=seed)
    w = randn(groups, 2, k, k, seed=seed + 1)
    inputs = (x, w, randn(groups, seed=seed + 2)) if bias else (x, w)

    def f(x, w, b=None):
        return reference_conv2d(x, w, b, stride, pad, dilation, groups, padding_mode=mode, value=0.5)

    assert gradcheck(f, inputs, **GRADCHECK)


def test_reference_conv2d_gradient_flows_only_where_needed():
    x, w, b = randn(1, 2, 4, 4, seed=4), randn(3, 2, 2, 2, seed=5, requires_grad=False), randn(3, seed=6)
    reference_conv2d(x, w, b, padding=1, padding_mode="circular").sum().backward()
    assert w.grad is None
    assert x.grad is not None and x.grad.shape == x.shape and b.grad.shape == b.shape
    # every output pixel sums one bias: d(sum)/db = number of output pixels per channel
    assert torch.equal(b.grad, torch.full((3,), 25.0, dtype=DT))


# --- pooling ---------------------------------------------------------------------------------------

MAX_POOL_CASES = {
    "k2": dict(kernel_size=2),
    "k3-s2-p1": dict(kernel_size=3, stride=2, padding=1),
    "dilation2": dict(kernel_size=2, stride=1, dilation=2),
    "ceil": dict(kernel_size=2, ceil_mode=True),
    "rect": dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True),
    "overlap": dict(kernel_size=3, stride=1, padding=1),
}


@pytest.mark.parametrize("case", list(MAX_POOL_CASES), ids=list(MAX_POOL_CASES))
def test_reference_max_pool2d_gradcheck(case):
    x = randn(2, 3, 7, 6, seed=7)  # continuous random values: no ties, so max is differentiable
    cfg = MAX_POOL_CASES[case]
    f = lambda x: reference_max_pool2d(x, **cfg)  # noqa: E731
    assert torch.equal(f(x), nn.functional.max_pool2d(x, **cfg))
    assert gradcheck(f, (x,), **GRADCHECK)


AVG_POOL_CASES = {
    "k2": dict(kernel_size=2),
    "k3-s2-p1": dict(kernel_size=3, stride=2, padding=1),
    "exclude-pad": dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "ceil": dict(kernel_size=2, ceil_mode=True),
    "ceil-exclude-pad": dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True,
                             count_include_pad=False),
    "divisor": dict(kernel_size=2, stride=1, divisor_override=3),
}


@pytest.mark.parametrize("case", list(AVG_POOL_CASES), ids=list(AVG_POOL_CASES))
def test_reference_avg_pool2d_gradcheck(case):
    x = randn(2, 3, 7, 6, seed=8)
    cfg = AVG_POOL_CASES[case]
    f = lambda x: reference_avg_pool2d(x, **cfg)  # noqa: E731
    torch.testing.assert_close(f(x), nn.functional.avg_pool2d(x, **cfg), **CLOSE)
    assert gradcheck(f, (x,), **GRADCHECK)


# --- ReferenceConv2d / to_reference ----------------------------------------------------------------

def forward_backward(model: nn.Module, x: torch.Tensor, r: torch.Tensor):
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = model(x)
    (y * r).sum().backward()
    return y.detach(), x.grad, {name: p.grad for name, p in model.named_parameters()}


def assert_same_model(original: nn.Module, swapped: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    with torch.no_grad():
        shape = original(x).shape
    r = randn(*shape, seed=seed, requires_grad=False)
    y0, gx0, grads0 = forward_backward(original, x, r)
    y1, gx1, grads1 = forward_backward(swapped, x, r)
    torch.testing.assert_close(y1, y0, **CLOSE)
    torch.testing.assert_close(gx1, gx0, **CLOSE)
    assert grads1.keys() == grads0.keys() and grads0
    for name in grads0:
        assert grads1[name] is not None, name
        torch.testing.assert_close(grads1[name], grads0[name], **CLOSE, msg=name)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(  # nested: to_reference walks every level
            nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect", bias=False),
            nn.Tanh(),
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
        ),
        nn.Conv2d(6, 2, (2, 3), padding="same", dilation=(2, 1), padding_mode="circular"),
        nn.MaxPool2d(3, stride=1, padding=1),
        nn.Conv2d(2, 5, 2, padding=(1, 0), padding_mode="replicate"),
        nn.AvgPool2d(3, stride=2, padding=1, divisor_override=4),
    ).to(DT)


def test_to_reference_swaps_in_place_and_matches():
    model = small_cnn()
    swapped = to_reference(copy.deepcopy(model))
    kinds = [type(m) for m in swapped.modules()]
    assert kinds.count(ReferenceConv2d) == 4 and nn.Conv2d not in kinds
    assert kinds.count(ReferenceMaxPool2d) == 2 and kinds.count(ReferenceAvgPool2d) == 2
    assert sum(type(m) in (nn.MaxPool2d, nn.AvgPool2d) for m in swapped.modules()) == 0
    assert swapped.state_dict().keys() == model.state_dict().keys()

    shared = small_cnn()
    params = list(shared.parameters())
    assert to_reference(shared) is shared and list(shared.parameters()) == params  # shared, not copied

    x = randn(2, 3, 13, 11, seed=9, requires_grad=False)
    assert_same_model(model, swapped, x)


CONV_MODULES = {
    "default": dict(),
    "stride-pad": dict(stride=2, padding=1),
    "per-dim": dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
    "same-reflect": dict(padding="same", padding_mode="reflect"),
    "same-even-circular": dict(kernel_size=(2, 4), padding="same", padding_mode="circular", dilation=(1, 2)),
    "valid-groups": dict(padding="valid", groups=2),
    "replicate-no-bias": dict(padding=2, padding_mode="replicate", bias=False),
}


@pytest.mark.parametrize("case", list(CONV_MODULES), ids=list(CONV_MODULES))
def test_reference_conv2d_module_matches_nn_conv2d(case):
    cfg = dict(kernel_size=3) | CONV_MODULES[case]
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, **cfg).to(DT)
    ref = ReferenceConv2d(4, 6, **cfg).to(DT)
    ref.load_state_dict(conv.state_dict())
    for x in (randn(2, 4, 9, 8, seed=10, requires_grad=False), randn(4, 7, 9, seed=11, requires_grad=False)):
        assert_same_model(conv, ref, x, seed=12)
