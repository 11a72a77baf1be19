"""field_report: the receptive-field table and one unit's input region, straight from the library (the
lecture's rf-demo: a 7x7 stride-2 conv, then a 3x3 stride-2 max pool, on 3x256x256)."""

from __future__ import annotations

import pytest

from cnnlab.analysis import FieldError, field_report, summarize
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model


@pytest.fixture(scope="module")
def rf_demo():
    return summarize(create_model("rf-demo"), (3, 256, 256), model_name="rf-demo")


def test_table_without_a_unit(rf_demo):
    r = field_report(rf_demo)
    assert r.unit is None
    assert [t["receptive_field"]["size"][0] for t in r.layers[:5]] == [1, 7, 7, 7, 11]
    assert [t["receptive_field"]["jump"][0] for t in r.layers[:5]] == [1, 2, 2, 2, 4]
    assert r.to_dict()["input"] == [3, 256, 256]
    assert r.text().splitlines()[0] == "rf-demo, input 3x256x256: input pixel centres at 0.5, 1.5, ..."


def test_a_unit_by_name_and_by_index(rf_demo):
    by_name = field_report(rf_demo, layer="features.bn", unit=(1, 1))
    assert by_name.unit == field_report(rf_demo, layer=2, unit=[1, 1]).unit == field_report(rf_demo, layer="2",
                                                                                             unit=[1, 1]).unit
    assert by_name.unit["layer"] == "features.bn"
    for region in by_name.unit["regions"]:
        assert region["pixels"] == [0, 5] and region["bounds"] == [0, 6] and region["unclipped"] == [-1, 6]
    assert "rows 0-5, columns 0-5" in by_name.text()


def test_default_unit_and_layer(rf_demo):
    last = field_report(rf_demo, unit=(0, 0))
    assert last.unit["index"] == len(last.layers) - 1
    assert field_report(rf_demo, layer="features.maxpool").unit["unit"] == [0, 0]


@pytest.mark.parametrize("kwargs,match", [
    ({"layer": "nope"}, r"unknown layer 'nope'; valid: input, features.conv.*\(or an index 0-"),
    ({"layer": 99}, r"unknown layer 99"),
    ({"layer": 2, "unit": (1,)}, r"unit must be 2 integers .*'features.bn'.*got \[1\]"),
    ({"layer": 2, "unit": (128, 0)}, r"unit \[128, 0\] is outside layer 'features.bn''s map 128x128"),
    ({"layer": 2, "unit": (0, -1)}, r"unit \[0, -1\] is outside"),
])
def test_bad_layer_or_unit(rf_demo, kwargs, match):
    with pytest.raises(FieldError, match=match) as e:
        field_report(rf_demo, **kwargs)
    assert isinstance(e.value, CnnlabError)


def test_a_dense_layer_has_no_map():
    s = summarize(create_model("fmnist-cnn"), (1, 28, 28), model_name="fmnist-cnn")
    with pytest.raises(FieldError, match="'classifier.fc1' has no spatial map"):
        field_report(s, layer="classifier.fc1", unit=(0, 0))
