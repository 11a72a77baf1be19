"""cnnlab.compress.quantize: the exact float rewrites (Keras-ordered BatchNorms split or moved), which layers
run in int8, the stored plain tensors, the rebuilt model bit for bit, the models with residual adds and
pooled heads, the engines, and the errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from cnnlab.compress.base import CompressError
from cnnlab.compress.quantize import _float_graph, compress_quantize, rebuild_quantize
from cnnlab.compress.storage import artifact_bytes, read_artifact, write_artifact
from cnnlab.layers import PredefinedSparseConv2d
from cnnlab.models import CompactCNN, FashionCNN, create_model
from cnnlab.train import evaluate
from cnnlab.train import make_eval_loader
from tests.compress.models import TINY, randomize_bn, tiny_cnn

pytestmark = pytest.mark.usefixtures("single_thread")





def batches(n: int = 2, size: int = 32, shape=(1, 28, 28), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, *shape, generator=g) for _ in range(n)]


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def test_fmnist_cnn_int8_layers_and_keras_ordered_batchnorms():
    model = tiny_cnn()
    c = compress_quantize(tiny_cnn(), calibration=batches())
    r = c.report
    assert r["backend"] == "x86" and r["calibration_images"] == 64
    kinds = {q["layer"]: q["kind"] for q in r["quantized"]}
    for conv in ("features.block1.conv1", "features.block1.conv2", "features.block2.conv1", "features.block2.conv2"):
        assert kinds[conv] == "ConvReLU2d"
    assert kinds["classifier.fc1"] == "LinearReLU" and kinds["classifier.fc2"] == "Linear"
    # BNs before a padded conv stay (quantized) BNs; the one before a max pool runs after it
    assert {k for k, v in kinds.items() if v == "BatchNorm2d"} == {"features.block1.bn1", "features.block1.bn2",
                                                                   "features.block2.bn1"}
    assert r["batchnorm_moved_after_pool"] == [{"layer": "features.block1.bn2", "after": "features.block1.pool"}]
    assert r["batchnorm_split"] == [
        {"layer": "features.block2.bn2", "scale_into": "features.block2.conv2", "shift_into": "classifier.fc1",
         "through": ["features.block2.pool", "flatten"]},
        {"layer": "classifier.bn", "scale_into": "classifier.fc1", "shift_into": "classifier.fc2", "through": []}]
    assert r["float"] == []
    x = batches(1, 64, seed=1)[0]
    with torch.inference_mode():
        ref, out = model(x), c.model(x)
    assert out.dtype == torch.float32 and out.shape == (64, 10)
    assert rel_error(out, ref) < 0.05
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.85


def test_float_rewrites_are_exact_and_respect_negative_scales():
    model = tiny_cnn()
    with torch.no_grad():  # a negative scale: BN no longer commutes with max pooling or ReLU
        model.features.block1.bn2.weight[0] = -0.7
        model.classifier.bn.weight[3] = -1.0
    x = batches(1, 8, seed=2)[0]
    with torch.no_grad():
        ref = model(x)
        graph, plan = _float_graph(model, x[:1], plan=None)
        torch.testing.assert_close(graph(x), ref, rtol=1e-5, atol=1e-5)
    assert [step["bn"] for step in plan] == ["features.block2.bn2"]
    assert any(isinstance(m, nn.BatchNorm1d) for m in graph.modules())  # classifier.bn stays


def test_rebuild_is_bit_identical_through_the_artifact(tmp_path):
    c = compress_quantize(tiny_cnn(), calibration=batches())
    write_artifact(tmp_path / "model.cnnz", c.tensors, c.meta)
    tensors, meta = read_artifact(tmp_path / "model.cnnz")
    rebuilt = rebuild_quantize(FashionCNN(**TINY), tensors, meta)  # untrained: every value comes from the file
    x = batches(1, 16, seed=3)[0]
    with torch.inference_mode():
        out = c.model(x)
        assert torch.equal(rebuilt(x), out)
        assert torch.equal(rebuilt(x.contiguous(memory_format=torch.channels_last)), out)


def test_stored_tensors_are_plain_int8_and_scales():
    model = tiny_cnn()
    c = compress_quantize(model, calibration=batches())
    assert all(not t.is_quantized for t in c.tensors.values())
    w = c.tensors["graph.features.block2.conv1.weight"]
    assert w.dtype == torch.int8 and w.shape == (8, 4, 3, 3)
    assert c.tensors["graph.features.block2.conv1.weight::scale"].shape == (8,)  # per output channel
    assert c.tensors["graph.classifier.fc1._packed_params._packed_params::0"].dtype == torch.int8
    json.dumps(c.meta)
    float_bytes = sum(p.numel() * 4 for p in tiny_cnn().state_dict().values())
    assert artifact_bytes(c.tensors, c.meta) < float_bytes / 2


def test_evaluate_runs_the_quantized_model_unchanged(tiny_data):
    c = compress_quantize(tiny_cnn(), calibration=batches())
    loader = make_eval_loader(tiny_data.test_x, tiny_data.test_y, tiny_data, "cpu", batch_size=64)
    result = evaluate(c.model, loader, 10)
    assert result["count"] == len(tiny_data.test_y)
    x = torch.cat([xb for xb, _ in loader])
    with torch.inference_mode():
        predicted = c.model(x).argmax(1)
    assert result["accuracy"] == pytest.approx(float((predicted == tiny_data.test_y).float().mean()))


@pytest.mark.parametrize("name", ["mlp", "resnet-small", "fmnist-mobile"])
def test_registered_models_quantize_and_rebuild(name):
    torch.manual_seed(0)
    model = randomize_bn(create_model(name))
    x = batches(1, 16, seed=4)[0]
    with torch.inference_mode():
        ref = model(x)
    c = compress_quantize(model, calibration=batches())
    rebuilt = rebuild_quantize(create_model(name), c.tensors, c.meta)
    with torch.inference_mode():
        out = c.model(x)
        assert torch.equal(rebuilt(x), out)
    assert rel_error(out, ref) < 0.05
    assert c.report["float"] == []
    if name == "resnet-small":  # the residual adds run on int8 tensors, fused with their ReLU
        assert sum(1 for n in c.model.graph.graph.nodes if "add_relu" in str(n.target)) == 6


def test_sparse_conv_keeps_its_zeros():
    torch.manual_seed(0)
    sparse = PredefinedSparseConv2d(1, 8, 3, k=4)
    model = nn.Sequential(sparse, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28 * 28, 10)).eval()
    c = compress_quantize(model, calibration=batches())
    w = c.tensors["graph.0.weight"]
    assert w.dtype == torch.int8
    assert not w[~sparse.mask].any() and w[sparse.mask].ne(0).float().mean() > 0.9


def test_untraceable_layer_is_named():
    model = randomize_bn(CompactCNN(conv="shuffle", **TINY))
    with pytest.raises(CompressError, match=r"features\.block1\.conv2\.shuffle \(ChannelShuffle\)"):
        compress_quantize(model, calibration=batches())


def test_layer_with_its_own_forward_is_refused():
    class ClampedConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x).clamp(-1, 1)

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(ClampedConv(4, 4, 3))).eval()
    with pytest.raises(CompressError, match=r"layer 1\.0 \(ClampedConv\).*no int8 kernel"):
        compress_quantize(model, calibration=batches())


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "arm"}, r"backend 'arm'.*valid: x86, fbgemm"),
    ({"per_channel": "yes"}, r"per_channel must be true or false; got 'yes'"),
    ({"calibration": []}, r"calibration is empty"),
    ({"calibration": [torch.zeros(2, 1, 28, 28, dtype=torch.uint8)]}, r"float tensors.*torch.uint8"),
])
def test_bad_settings(kwargs, message):
    kwargs = {"calibration": batches(1, 4), **kwargs}
    with pytest.raises(CompressError, match=message):
        compress_quantize(tiny_cnn(), **kwargs)


@pytest.mark.parametrize("backend, per_channel", [("fbgemm", True), ("onednn", True), ("qnnpack", False),
                                                  ("x86", False)])
def test_engines_and_per_tensor_weights(backend, per_channel):
    engine = torch.backends.quantized.engine
    c = compress_quantize(tiny_cnn(), calibration=batches(), backend=backend, per_channel=per_channel)
    assert torch.backends.quantized.engine == engine  # restored
    axis = c.meta["state"]["graph.features.block1.conv2.weight"]["axis"]
    assert axis == (0 if per_channel else None)
    # per-tensor weights: no BN scale goes into a layer's weights (it would set the layer's one scale)
    assert [s["layer"] for s in c.report["batchnorm_split"]] == (["features.block2.bn2", "classifier.bn"]
                                                                 if per_channel else [])
    rebuilt = rebuild_quantize(FashionCNN(**TINY), c.tensors, c.meta)
    x = batches(1, 8, seed=5)[0]
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), c.model(x))


def test_rebuild_refuses_another_architecture():
    c = compress_quantize(tiny_cnn(), calibration=batches(1, 8))
    with pytest.raises(CompressError, match="quantize plan"):
        rebuild_quantize(create_model("mlp"), c.tensors, c.meta)
