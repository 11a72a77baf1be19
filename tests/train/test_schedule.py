import math

import pytest

from cnnlab.train.schedule import lr_factor


def test_onecycle_warms_up_then_decays_to_zero():
    f = [lr_factor("onecycle", s, 100, warmup=0.2) for s in range(101)]
    assert f[0] == pytest.approx(0.04)
    assert max(f) == pytest.approx(1.0) and f.index(max(f)) == 20
    assert all(a <= b for a, b in zip(f[:20], f[1:21]))
    assert all(a >= b for a, b in zip(f[20:], f[21:]))
    assert f[100] == 0.0


def test_cosine_and_step_and_constant():
    assert lr_factor("cosine", 50, 100, warmup=0.0) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100, warmup=0.0) == pytest.approx(0.0, abs=1e-12)
    assert [lr_factor("step", s, 100) for s in (0, 49, 50, 74, 75, 99)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    assert lr_factor("constant", 7, 10) == 1.0


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("triangle", 0, 10)


def test_factors_are_finite_for_degenerate_lengths():
    assert math.isfinite(lr_factor("onecycle", 0, 0)) and math.isfinite(lr_factor("cosine", 0, 1, warmup=0.5))
