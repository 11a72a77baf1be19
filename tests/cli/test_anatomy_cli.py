"""`cnnlab summary`, `cnnlab rf` and `cnnlab models`: the lecture's numbers on the command line, JSON,
and bad input as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from cnnlab.cli import main
from cnnlab.models import count_parameters, create_model, list_models
from tests.cli.helpers import run_cli as _run, one_line_error as _one_line_error


pytestmark = pytest.mark.usefixtures("single_thread")




def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


# ---------------------------------------------------------------------------------------- summary
def test_summary_keras_counting(capsys):
    code, out, err = _run(capsys, "summary", "fmnist-cnn", "--keras")
    assert code == 0 and not err
    assert "Total params: 1,679,082" in out
    assert "Trainable params: 1,677,674" in out
    assert "Non-trainable params: 1,408" in out
    bn = [ln for ln in out.splitlines() if ln.startswith("features.block1.bn1")]
    assert len(bn) == 1 and "128" in bn[0].split()  # 4 x 32 in Keras counting
    fc1 = next(ln for ln in out.splitlines() if ln.startswith("classifier.fc1"))
    assert "1,606,144" in fc1 and "1,605,632" in fc1  # parameters, MACs


def test_summary_pytorch_counting(capsys):
    code, out, _ = _run(capsys, "summary", "fmnist-cnn")
    assert code == 0
    assert "Total params: 1,677,674" in out and "Non-trainable params: 0" in out
    bn = next(ln for ln in out.splitlines() if ln.startswith("features.block1.bn1"))
    assert "64" in bn.split()
    assert "Total MACs: 19,899,904" in out


def test_summary_json_schema(capsys):
    code, out, _ = _run(capsys, "summary", "fmnist-cnn", "--keras", "--json")
    assert code == 0
    d = json.loads(out)
    assert {"model", "input", "layers", "total_params", "trainable_params", "non_trainable_params",
            "total_macs"} <= set(d)
    assert d["model"] == "fmnist-cnn" and d["input"] == [1, 28, 28]
    assert (d["total_params"], d["trainable_params"], d["non_trainable_params"]) == (1_679_082, 1_677_674, 1_408)
    assert d["total_macs"] == 19_899_904
    for layer in d["layers"]:
        assert {"name", "type", "output_shape", "params", "trainable_params", "macs", "receptive_field"} <= set(layer)
        rf = layer["receptive_field"]
        assert rf is None or (set(rf) == {"size", "jump", "start"} and all(len(rf[k]) == 2 for k in rf))
    layers = {layer["name"]: layer for layer in d["layers"]}
    assert layers["features.block2.pool"]["receptive_field"] == {"size": [16, 16], "jump": [4, 4], "start": [2, 2]}
    assert layers["classifier.fc2"]["receptive_field"] is None
    assert layers["classifier.fc2"]["output_shape"] == [10]
    assert sum(layer["params"] for layer in d["layers"]) == d["total_params"]


def test_summary_depth_1(capsys):
    code, out, _ = _run(capsys, "summary", "fmnist-cnn", "--depth", "1")
    assert code == 0
    names = [ln.split()[0] for ln in out.splitlines() if ln and ln.split()[0] in ("input", "features", "classifier")]
    assert names == ["input", "features", "classifier"]
    assert "features.block1.conv1" not in out
    assert "Total params: 1,677,674" in out and "Total MACs: 19,899,904" in out
    features = next(ln for ln in out.splitlines() if ln.startswith("features "))
    assert "65,376" in features and "64x7x7" in features


def test_summary_dense_equivalent(capsys):
    code, out, _ = _run(capsys, "summary", "fmnist-cnn", "--dense-equivalent")
    assert code == 0
    assert "Dense equivalent" in out
    conv1 = next(ln for ln in out.splitlines() if ln.startswith("features.block1.conv1"))
    assert conv1.split()[-1] == "19,694,080"  # 784 x 25,088 + 25,088
    conv = next(ln for ln in out.splitlines() if ln.startswith("features.block2.conv2"))
    assert conv.split()[-1] == "157,364,480"  # 12,544 x 12,544 + 12,544
    _, plain, _ = _run(capsys, "summary", "fmnist-cnn")
    assert "Dense equivalent" not in plain and "157,364,480" not in plain


def test_summary_input_and_model_arg(capsys):
    code, out, err = _run(capsys, "summary", "fmnist-cnn", "--input", "3,32,32", "--model-arg", "in_channels=3")
    assert code == 0, err
    assert "input 3x32x32" in out


def test_summary_input_with_matching_model_args(capsys):
    code, out, err = _run(capsys, "summary", "fmnist-cnn", "--input", "3,32,32", "--model-arg", "in_channels=3",
                          "--model-arg", "image_size=32")
    assert code == 0, err
    assert "input 3x32x32" in out
    conv1 = next(ln for ln in out.splitlines() if ln.startswith("features.block1.conv1"))
    assert "896" in conv1.split() and "32x32x32" in conv1  # 3 x 9 x 32 + 32
    assert "64x8x8" in out


def test_summary_of_a_torchvision_model(capsys):
    code, out, err = _run(capsys, "summary", "tv:squeezenet1_1", "--input", "3,64,64", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["model"] == "tv:squeezenet1_1" and d["input"] == [3, 64, 64]
    assert d["total_params"] == count_parameters(create_model("tv:squeezenet1_1")) and d["total_macs"] > 0


# --------------------------------------------------------------------------------------------- rf
def _table(out: str) -> dict[int, list[str]]:
    rows = {}
    for ln in out.splitlines():
        m = re.match(r"^(\d+)\s+(\S+)\s+(\S+)\s+\[(\d+), (\d+)\]\s+(\S+), (\S+)\s+(\S+), (\S+)\s+(\S+), (\S+)$", ln)
        if m:
            rows[int(m.group(1))] = list(m.groups()[1:])
    return rows


def test_rf_lecture_table_and_unit_region(capsys):
    code, out, err = _run(capsys, "rf", "rf-demo", "--layer", "2", "--unit", "1,1")
    assert code == 0, err
    rows = _table(out)
    want = {0: ("input", 256, 1, 1), 1: ("features.conv", 128, 2, 7), 2: ("features.bn", 128, 2, 7),
            3: ("features.relu", 128, 2, 7), 4: ("features.maxpool", 64, 4, 11)}
    for i, (name, size, jump, rf) in want.items():
        r = rows[i]
        assert r[0] == name
        assert r[2:4] == [str(size)] * 2, (i, r)
        assert [float(v) for v in r[4:6]] == [0.5, 0.5], (i, r)  # start
        assert [float(v) for v in r[6:8]] == [jump, jump], (i, r)
        assert [float(v) for v in r[8:10]] == [rf, rf], (i, r)
    region = [ln for ln in out.splitlines() if "sees input" in ln]
    assert len(region) == 1
    assert "rows 0-5" in region[0] and "columns 0-5" in region[0]
    assert "(0, 6)" in region[0] and "features.bn" in region[0] and "(1, 1)" in region[0]


def test_rf_layer_by_name_and_json(capsys):
    code, out, err = _run(capsys, "rf", "rf-demo", "--layer", "features.bn", "--unit", "1,1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["model"] == "rf-demo" and d["input"] == [3, 256, 256]
    assert [t["name"] for t in d["layers"][:5]] == ["input", "features.conv", "features.bn", "features.relu",
                                                   "features.maxpool"]
    assert [t["receptive_field"]["size"][0] for t in d["layers"][:5]] == [1, 7, 7, 7, 11]
    assert [t["receptive_field"]["jump"][0] for t in d["layers"][:5]] == [1, 2, 2, 2, 4]
    assert [t["map_size"] for t in d["layers"][:5]] == [[256, 256], [128, 128], [128, 128], [128, 128], [64, 64]]
    unit = d["unit"]
    assert unit["layer"] == "features.bn" and unit["index"] == 2 and unit["unit"] == [1, 1]
    assert len(unit["regions"]) == 2
    for r in unit["regions"]:
        assert r["pixels"] == [0, 5] and r["bounds"] == [0, 6] and r["unclipped"] == [-1, 6]
    code, by_index, _ = _run(capsys, "rf", "rf-demo", "--layer", "2", "--unit", "1,1", "--json")
    assert code == 0 and json.loads(by_index)["unit"] == unit


def test_rf_last_unit_of_the_pool(capsys):
    code, out, _ = _run(capsys, "rf", "rf-demo", "--layer", "features.maxpool", "--unit", "63,63", "--json")
    assert code == 0
    for r in json.loads(out)["unit"]["regions"]:
        assert r["pixels"] == [247, 255] and r["unclipped"] == [247, 258] and r["bounds"] == [247, 256]


def test_rf_dense_layers_are_global(capsys):
    code, out, _ = _run(capsys, "rf", "fmnist-cnn", "--json")
    assert code == 0
    layers = {t["name"]: t for t in json.loads(out)["layers"]}
    assert layers["classifier.fc1"]["receptive_field"] is None
    assert layers["classifier.fc1"]["note"].startswith("every input pixel")
    assert layers["features.block2.pool"]["receptive_field"]["size"] == [16, 16]


# ----------------------------------------------------------------------------------------- models
def test_models_lists_registered_models_with_parameter_counts(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert set(lines) == set(list_models())
    assert "23,214,017" in lines["catsdogs-cnn"].split()
    assert "1,677,674" in lines["fmnist-cnn"].split()
    assert "3x150x150" in lines["catsdogs-cnn"]
    assert not any(name.startswith("tv:") for name in lines)


def test_models_zoo_text_and_json(capsys):
    import torchvision.models as tvm

    code, out, _ = _run(capsys, "models", "--zoo")
    assert code == 0
    names = [ln.split()[0] for ln in out.splitlines() if ln.strip()]
    assert "tv:resnet18" in names and "tv:vgg16" in names and "fmnist-cnn" in names
    code, out, _ = _run(capsys, "models", "--zoo", "--json")
    assert code == 0
    rows = json.loads(out)
    tv = [r for r in rows if r["name"].startswith("tv:")]
    assert sorted(r["name"][3:] for r in tv) == sorted(tvm.list_models(module=tvm))
    assert len(tv) == 80  # torchvision 0.29's classification models
    by_name = {r["name"]: r for r in rows}
    assert by_name["catsdogs-cnn"]["params"] == 23_214_017
    assert by_name["tv:resnet18"]["input_size"] == [3, 224, 224] and by_name["tv:resnet18"]["num_classes"] == 1000
    assert (by_name["fmnist-cnn"]["params"], by_name["fmnist-cnn"]["trainable_params"]) == (1_677_674, 1_677_674)
    assert by_name["rf-demo"]["params"] == 9_536
    assert all(by_name[name]["params"] > 0 for name in list_models())
    assert all("params" not in r for r in tv)  # names only: building 80 models would take a while


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv,needles", [
    (["summary", "nope"], ["unknown model 'nope'", "fmnist-cnn", "rf-demo"]),
    (["rf", "nope"], ["unknown model 'nope'", "catsdogs-cnn"]),
    (["summary", "tv:nope"], ["unknown torchvision model 'nope'", "resnet18"]),
    (["rf", "rf-demo", "--layer", "nope"], ["unknown layer 'nope'", "features.bn", "features.maxpool"]),
    (["rf", "rf-demo", "--layer", "99"], ["unknown layer '99'", "features.conv"]),
    (["summary", "fmnist-cnn", "--input", "3,x"], ["--input", "'3,x'"]),
    (["rf", "fmnist-cnn", "--input", "0,28,28"], ["--input", "'0,28,28'"]),
    (["summary", "fmnist-cnn", "--input", "1,8,8", "--model-arg", "image_size=28"],
     ["fmnist-cnn", "classifier.fc1", "[1, 256]"]),
    (["rf", "catsdogs-cnn", "--input", "3,28,28", "--model-arg", "image_size=150"], ["catsdogs-cnn", "classifier.fc1"]),
    (["summary", "catsdogs-cnn", "--input", "3,16,16"], ["catsdogs-cnn", "image_size", "too small"]),
    (["rf", "rf-demo", "--layer", "2", "--unit", "128,0"], ["unit [128, 0] is outside", "features.bn", "128x128"]),
    (["rf", "rf-demo", "--layer", "2", "--unit=-1,0"], ["unit [-1, 0] is outside", "features.bn", "128x128"]),
    (["rf", "rf-demo", "--layer", "2", "--unit", "1"], ["unit must be 2 integers", "[1]"]),
    (["rf", "rf-demo", "--layer", "2", "--unit", "1,x"], ["--unit", "'1,x'"]),
    (["summary", "tv:resnet18", "--input", "1,64,64"], ["tv:resnet18 takes 3-channel images", "in_channels"]),
    (["rf", "fmnist-cnn", "--layer", "classifier.fc1", "--unit", "0,0"], ["classifier.fc1", "no spatial map"]),
    (["summary", "fmnist-cnn", "--weights", "missing.safetensors"], ["missing.safetensors", "does not exist"]),
    (["summary", "fmnist-cnn", "--model-arg", "colour=1"], ["colour", "valid:", "image_size"]),
    (["summary", "fmnist-cnn", "--depth", "0"], ["--depth", "'0'"]),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, needles):
    assert _exit_code(argv) == 2
    out, err = capsys.readouterr()
    assert not out
    _one_line_error(err, *needles)


def test_weights_that_do_not_match(capsys, tmp_path):
    state = {k: v.clone() for k, v in create_model("rf-demo").state_dict().items()}
    state.pop("features.bn.running_var")
    state["features.extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    for command in ("summary", "rf"):
        assert _exit_code([command, "rf-demo", "--weights", str(bad)]) == 2
        out, err = capsys.readouterr()
        assert not out
        line = _one_line_error(err, "bad.safetensors", "missing keys", "features.bn.running_var", "unexpected keys",
                               "features.extra.weight")
        assert line.startswith(f"cnnlab {command}: error:")
    shape = tmp_path / "shape.safetensors"
    save_file({**create_model("rf-demo").state_dict(), "features.conv.weight": torch.zeros(64, 3, 5, 5)}, str(shape))
    assert _exit_code(["summary", "rf-demo", "--weights", str(shape)]) == 2
    _one_line_error(capsys.readouterr().err, "features.conv.weight", "(64, 3, 5, 5)", "(64, 3, 7, 7)")


def test_matching_weights_load(capsys, tmp_path):
    model = create_model("rf-demo")
    good = tmp_path / "good.safetensors"
    save_file(model.state_dict(), str(good))
    code, out, err = _run(capsys, "summary", "rf-demo", "--weights", str(good), "--json")
    assert code == 0, err
    assert json.loads(out)["total_params"] == 9_536


def test_bad_model_arg_value(capsys):
    assert _exit_code(["summary", "fmnist-cnn", "--model-arg", "image_size=abc"]) == 2
    _one_line_error(capsys.readouterr().err, "image_size")
