"""cnnlab.layers.Dropout: the same inverted dropout as nn.Dropout, with a cheaper CPU mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlab.layers import Dropout, dropout_mask_bytes


@pytest.mark.parametrize("p", [0.25, 0.5, 0.2])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    d = Dropout(p).train()
    x = torch.ones(200_000)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(d.effective_p, abs=0.005)
    assert abs(d.effective_p - p) <= 1 / 512
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - d.effective_p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased in expectation


def test_quarter_and_half_are_exact():
    assert Dropout(0.25).effective_p == 0.25 and Dropout(0.5).effective_p == 0.5


def test_eval_mode_and_p0_are_identity_p1_drops_all():
    x = torch.randn(4, 8)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 16, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.75
    assert torch.allclose(x.grad, expected)


def test_reproducible_with_manual_seed_and_different_without():
    d = Dropout(0.5).train()
    x = torch.ones(1000)
    torch.manual_seed(3)
    a = d(x)
    torch.manual_seed(3)
    b = d(x)
    c = d(x)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_channels_last_layout_is_kept_and_bf16_works():
    x = torch.randn(8, 16, 5, 5).contiguous(memory_format=torch.channels_last).bfloat16()
    y = Dropout(0.25).train()(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    r = dropout_mask_bytes(x)
    assert r.shape == x.shape and r.dtype == torch.uint8 and r.stride() == x.stride()


def test_mask_bytes_are_uniform():
    torch.manual_seed(0)
    r = dropout_mask_bytes(torch.empty(400_000)).long()
    counts = torch.bincount(r, minlength=256).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    # the top byte of each 64-bit word is as random as the others (no sign bit bias)
    assert r.view(-1, 8)[:, 7].float().mean().item() == pytest.approx(127.5, abs=1.0)


def test_is_an_nn_dropout():
    d = Dropout(0.3)
    assert isinstance(d, nn.Dropout) and repr(d) == "Dropout(p=0.3, inplace=False)"



def test_the_lecture_cnn_compiles_with_torch_compile():
    """Under torch.compile the byte mask (an int64 tensor viewed as uint8, which AOTAutograd's aliasing of the
    lecture CNN's outputs cannot follow) gives way to F.dropout, whose mask the compiler generates itself: so
    ``cnnlab train --compile`` trains instead of failing in the compiler (aot_eager captures the same graphs
    without a C++ build)."""
    from cnnlab.models import create_model

    torch.manual_seed(0)
    model = create_model("fmnist-cnn").to(memory_format=torch.channels_last)
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(x)
    out.float().sum().backward()
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())
    layer = torch.compile(Dropout(0.25), backend="aot_eager")
    kept = (layer(torch.ones(64, 64)) != 0).float().mean().item()
    assert 0.65 < kept < 0.85
