"""cnnlab.ops.options: which options go with which 2D op, an example's input and kernel, and errors that name
the Python parameters (a face renames them)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.ops import OptionsError, conv_options, conv_setup, trace2d
from cnnlab.ops.examples import EXAMPLES

K = np.ones((3, 3))
X = np.arange(25.0).reshape(5, 5)


def test_options_hold_only_what_is_given():
    assert conv_options("correlate", kernel=K) == {}
    assert conv_options("correlate", kernel=K, stride=2, padding="same", dilation=(1, 2), padding_mode="constant",
                        value=-1.0) == {"stride": 2, "padding": "same", "dilation": (1, 2),
                                        "padding_mode": "constant", "value": -1.0}
    assert conv_options("avg", kernel=None, kernel_size=2, ceil_mode=True, count_include_pad=False) == {
        "kernel_size": 2, "ceil_mode": True, "count_include_pad": False}
    assert conv_options("max", kernel=None, stride=1, defaults={"kernel_size": 3, "stride": 2}) == {
        "kernel_size": 3, "stride": 1}


@pytest.mark.parametrize("op, kwargs, words, params", [
    ("max", {"padding_mode": "reflect"}, ["padding_mode applies to correlate/convolve, not max pooling"],
     ("padding_mode",)),
    ("avg", {"padding_mode": "constant", "value": 2.0}, ["padding_mode and value apply to correlate/convolve",
                                                         "not avg pooling"], ("padding_mode", "value")),
    ("correlate", {"kernel": K, "kernel_size": 2}, ["kernel_size applies to pooling (op max or avg), not correlate"],
     ("kernel_size", "op")),
    ("convolve", {"kernel": K, "ceil_mode": True, "count_include_pad": False},
     ["ceil_mode and count_include_pad apply to pooling", "not convolve"], ("ceil_mode", "count_include_pad", "op")),
    ("correlate", {}, ["op correlate needs kernel (a matrix)"], ("op", "kernel")),
    ("min", {}, ["op must be one of correlate, convolve, max, avg; got 'min'"], ("op",)),
])
def test_options_that_do_not_go_with_the_op_are_refused(op, kwargs, words, params):
    kwargs = {"kernel": None, **kwargs}
    with pytest.raises(OptionsError) as e:
        conv_options(op, **kwargs)
    assert isinstance(e.value, CnnlabError) and e.value.params == params
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_an_examples_pooling_options_are_checked_against_the_op_given():
    with pytest.raises(OptionsError, match="kernel_size applies to pooling"):
        conv_setup(example="maxpool-3x3", op="correlate")


def test_a_face_renames_the_parameters_in_the_message():
    with pytest.raises(OptionsError) as e:
        conv_options("correlate", kernel=K, kernel_size=2)
    assert e.value.message({"kernel_size": "--size", "op": "--op"}) == (
        "--size applies to pooling (--op max or avg), not correlate")
    assert e.value.message({"op": "--op"}) == "kernel_size applies to pooling (--op max or avg), not correlate"
    with pytest.raises(OptionsError) as e:
        conv_options("{op}}", kernel=None)  # the value is text, never a template
    assert e.value.message({"op": "--op"}) == "--op must be one of correlate, convolve, max, avg; got '{op}}'"


def test_setup_from_an_example_or_from_matrices():
    s = conv_setup(example="stride-2")
    ex = EXAMPLES["stride-2"]
    assert (s.x, s.kernel, s.op, s.options, s.example) == (ex.input, ex.kernel, "correlate", ex.options, ex)
    assert s.options is not ex.options  # the example's own dict is never changed
    assert conv_setup(example="stride-2", stride=1, op="convolve").options == {"stride": 1, "padding": 1}
    assert conv_setup(example="maxpool-3x3", op="avg").op == "avg"
    assert not ex.check(trace2d(s.x, s.kernel, s.op, **s.options).output)
    s = conv_setup(X, K, padding=1)
    assert s.op == "correlate" and s.options == {"padding": 1} and s.example is None and s.x is X
    assert conv_setup(X, op="max", kernel_size=2).options == {"kernel_size": 2}


@pytest.mark.parametrize("kwargs, message, params", [
    ({"example": "sharpen", "x": X}, "example 'sharpen' gives the input and the kernel; drop x", ("example", "x")),
    ({"example": "sharpen", "x": X, "kernel": K}, "example 'sharpen' gives the input and the kernel; drop x and "
                                                  "kernel", ("example", "x", "kernel")),
    ({}, "give x (the input matrix) or example (a worked example's name)", ("x", "example")),
    ({"kernel": K}, "give x (the input matrix) or example (a worked example's name)", ("x", "example")),
    ({"example": "nope"}, f"unknown example 'nope'; choose from {', '.join(EXAMPLES)}", ()),
    ({"x": X}, "op correlate needs kernel (a matrix)", ("op", "kernel")),
])
def test_setup_refuses_what_does_not_go_together(kwargs, message, params):
    with pytest.raises(OptionsError) as e:
        conv_setup(**kwargs)
    assert str(e.value) == message and e.value.params == params
