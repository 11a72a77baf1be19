"""cnnlab.compress.prune: magnitude pruning (global and per-layer thresholds, the cubic schedule, masks held
through fine-tuning with weight decay, the stored mask + values, the rebuilt model bit for bit) and
structured channel pruning (which channels go, the layers tied to them, MACs, the rebuild), and the errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from cnnlab.analysis import summarize
from cnnlab.compress.base import CompressError
from cnnlab.compress.finetune import make_finetune
from cnnlab.compress.prune import compress_prune, finetune_split, lamp_scores, rebuild_prune, sparsity_schedule
from cnnlab.compress.storage import read_artifact, unpack_bits, write_artifact
from cnnlab.models import FashionCNN, create_model
from cnnlab.train import TrainConfig, evaluate
from cnnlab.train import make_eval_loader
from tests.compress.models import TINY, tiny_cnn

pytestmark = pytest.mark.usefixtures("single_thread")

LAYERS = ["features.block1.conv1", "features.block1.conv2", "features.block2.conv1", "features.block2.conv2",
          "classifier.fc1", "classifier.fc2"]



def build(name: str) -> nn.Module:
    """A fresh registered model; the large ones narrowed (same layer kinds, fewer channels)."""
    if name == "fmnist-cnn":
        return FashionCNN(**TINY).eval()
    return create_model(name, **{"fmnist-sparse": TINY, "mlp": {"hidden": (64, 32)}}.get(name, {})).eval()


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach().clone() for n in LAYERS}


def assert_same_model(a: nn.Module, b: nn.Module) -> None:
    assert not a.training and not b.training
    x = images()
    assert torch.equal(a(x), b(x))
    xc = x.to(memory_format=torch.channels_last)
    assert torch.equal(a(xc), b(xc))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- schedule -------------------------------------------------------------------------------------------
def test_cubic_schedule_and_epoch_split():
    assert sparsity_schedule(0.9, 3) == pytest.approx([0.9 * (1 - 8 / 27), 0.9 * (1 - 1 / 27), 0.9])
    assert sparsity_schedule(0.5, 1) == [0.5]
    assert finetune_split(3, 3) == [1, 1, 1]
    assert finetune_split(2, 3) == [0, 1, 1]
    assert finetune_split(5, 3) == [1, 2, 2]
    assert finetune_split(0, 2) == [0, 0]


# -- unstructured ---------------------------------------------------------------------------------------
def test_global_scope_one_threshold_over_all_layers_classifier_included():
    model = tiny_cnn()
    before = weights(model)
    c = compress_prune(model, sparsity=0.7, scope="global")
    after = weights(c.model)
    total = sum(w.numel() for w in before.values())
    zeros = sum(int((w == 0).sum()) for w in after.values())
    assert zeros == round(0.7 * total) and c.report["sparsity"] == zeros / total and c.report["scope"] == "global"
    pruned = torch.cat([before[n][after[n] == 0].abs() for n in LAYERS])
    kept = torch.cat([before[n][after[n] != 0].abs() for n in LAYERS])
    assert pruned.max() <= kept.min()  # one threshold across layers
    for n in LAYERS:  # kept weights are the trained ones; the classifier is pruned too
        assert torch.equal(after[n][after[n] != 0], before[n][after[n] != 0])
    rows = {r["name"]: r for r in c.report["layers"]}
    assert list(rows) == LAYERS and rows["classifier.fc2"]["zeros"] > 0
    assert len({round(r["sparsity"], 3) for r in rows.values()}) > 1  # global: layers differ
    for n in LAYERS:  # the pruning is permanent: plain parameters, no masks or hooks left
        m = c.model.get_submodule(n)
        assert isinstance(m.weight, nn.Parameter) and not hasattr(m, "weight_mask") and not m._forward_pre_hooks
        assert rows[n]["numel"] == m.weight.numel() and rows[n]["zeros"] == int((m.weight == 0).sum())
    assert all(torch.equal(c.model.get_submodule(n).bias, model.get_submodule(n).bias) for n in LAYERS)


def test_the_default_sparsity_is_the_librarys():
    import inspect

    from cnnlab.compress.run import method_settings

    c = compress_prune(tiny_cnn())  # no sparsity given: 90% of the weights go, as `cnnlab compress` documents
    total = sum(w.numel() for w in weights(c.model).values())
    assert c.report["target_sparsity"] == 0.9 and c.report["sparsity"] == pytest.approx(0.9, abs=1 / total)
    assert inspect.signature(compress_prune).parameters["sparsity"].default == 0.9
    assert "sparsity" in method_settings()["prune"]  # still a setting the user may give


def test_layer_scope_prunes_each_layer_to_the_target():
    model = tiny_cnn()
    before = weights(model)
    c = compress_prune(model, sparsity=0.6, scope="layer")
    for n, w in weights(c.model).items():
        assert int((w == 0).sum()) == round(0.6 * w.numel())
        assert before[n][w == 0].abs().max() <= before[n][w != 0].abs().min()
    assert c.report["scope"] == "layer"


def small_fc1_cnn() -> nn.Module:
    model = tiny_cnn()
    with torch.no_grad():  # a wide layer of small weights, as a dense layer of large fan-in
        model.classifier.fc1.weight.mul_(0.01)
    return model


def test_lamp_scores_and_scope():
    w = torch.tensor([[3.0, -1.0], [0.0, 2.0]])
    assert torch.allclose(lamp_scores(w), torch.tensor([[1.0, 1 / 14], [0.0, 4 / 13]]))
    before = weights(small_fc1_cnn())
    c = compress_prune(small_fc1_cnn(), sparsity=0.8, scope="lamp")
    after = weights(c.model)
    total = sum(w.numel() for w in before.values())
    assert sum(int((w == 0).sum()) for w in after.values()) == round(0.8 * total) and c.report["scope"] == "lamp"
    scores = {n: lamp_scores(w) for n, w in before.items()}
    pruned = torch.cat([scores[n][after[n] == 0] for n in LAYERS])
    kept = torch.cat([scores[n][after[n] != 0] for n in LAYERS])
    assert pruned.max() <= kept.min()  # one threshold on the LAMP scores
    for n in LAYERS:  # within a layer, still the smallest magnitudes go
        assert before[n][after[n] == 0].abs().max() <= before[n][after[n] != 0].abs().min()
    # plain magnitude takes nearly all from the layer of small weights; LAMP spreads the pruning
    by_magnitude = compress_prune(small_fc1_cnn(), sparsity=0.8, scope="global").report["layers"]
    assert all(r["sparsity"] < 0.01 for r in by_magnitude if ".conv" in r["name"])
    assert all(r["sparsity"] > 0.1 for r in c.report["layers"] if ".conv" in r["name"])


def test_iterative_masks_hold_through_finetuning_with_weight_decay(tiny_data):
    cfg = TrainConfig(lr=0.01, weight_decay=0.5, optimizer="adamw", batch_size=64, augment=False)
    real = make_finetune(cfg, tiny_data, max_steps=3, log=lambda _: None)
    seen: list[tuple[int, float]] = []

    def finetune(model, epochs, **kw):
        masks = {n: model.get_submodule(n).weight_mask.clone() for n in LAYERS}
        origs = {n: model.get_submodule(n).weight_orig.detach().clone() for n in LAYERS}
        history = real(model, epochs, **kw)
        moved = False
        for n in LAYERS:
            m = model.get_submodule(n)
            assert torch.equal(m.weight_mask, masks[n])
            pruned = masks[n] == 0
            moved |= not torch.equal(m.weight_orig[pruned], origs[n][pruned])  # weight decay shrank them
            model(images(1))  # the pre-hook recomputes the weight from the mask: still exactly zero
            assert (m.weight[pruned] == 0).all()
        assert moved
        seen.append((epochs, sum(int((masks[n] == 0).sum()) for n in LAYERS)))
        return history

    c = compress_prune(tiny_cnn(), sparsity=0.8, steps=3, finetune=finetune, finetune_epochs=2)
    total = sum(w.numel() for w in weights(tiny_cnn()).values())
    targets = [round(s * total) for s in sparsity_schedule(0.8, 3)]
    assert seen == [(1, targets[1]), (1, targets[2])]  # [0, 1, 1] epochs after the three rounds
    assert [r["finetune_epochs"] for r in c.report["rounds"]] == [0, 1, 1]
    assert len(c.report["rounds"][2]["history"]) == 1
    assert sum(int((w == 0).sum()) for w in weights(c.model).values()) == targets[2]
    assert c.report["steps"] == 3 and "cubic" in c.report["schedule"]


def test_stored_form_is_a_bit_mask_and_the_values(tmp_path):
    c = compress_prune(tiny_cnn(), sparsity=0.9)
    assert c.report["scope"] == "lamp" and c.meta == {"method": "prune", "structured": False,
                                                      "sparse": [f"{n}.weight" for n in LAYERS]}
    for n in LAYERS:
        w = c.model.get_submodule(n).weight
        mask, values = c.tensors[f"{n}.weight.mask"], c.tensors[f"{n}.weight.values"]
        assert mask.dtype == torch.uint8 and mask.numel() == math.ceil(w.numel() / 8)
        assert values.dtype == torch.float32 and torch.equal(values, w[w != 0])
        assert torch.equal(unpack_bits(mask, 1, w.numel()).bool().view(w.shape), w != 0)
        assert f"{n}.weight" not in c.tensors and torch.equal(c.tensors[f"{n}.bias"], c.model.get_submodule(n).bias)
    assert c.tensors["features.block1.bn1.running_var"].dtype == torch.float32
    dense = sum(t.numel() * t.element_size() for t in c.model.state_dict().values())
    stored = sum(t.numel() * t.element_size() for t in c.tensors.values())
    assert stored < 0.6 * dense  # 10% of the values plus 1/32 for the mask, the biases and BatchNorm whole


@pytest.mark.parametrize("name", ["fmnist-cnn", "mlp", "gap-cnn", "resnet-small", "fmnist-mobile", "fmnist-sparse"])
def test_unstructured_rebuilt_model_is_the_compressed_one_bit_for_bit(tmp_path, name):
    model = tiny_cnn() if name == "fmnist-cnn" else build(name)
    c = compress_prune(model, sparsity=0.75, scope="layer" if name in ("mlp", "fmnist-sparse") else "global")
    assert c.report["sparsity"] == pytest.approx(0.75, abs=2e-3)  # fmnist-sparse's fixed zeros count, once
    write_artifact(tmp_path / "m.cnnz", c.tensors, c.meta)
    tensors, meta = read_artifact(tmp_path / "m.cnnz")
    assert_same_model(rebuild_prune(build(name), tensors, meta), c.model)


def test_compressed_model_evaluates(tiny_data):
    c = compress_prune(tiny_cnn(), sparsity=0.5)
    result = evaluate(c.model, make_eval_loader(tiny_data.test_x, tiny_data.test_y, tiny_data, "cpu", batch_size=64), 10)
    assert 0 <= result["accuracy"] <= 1 and not c.model.training


# -- structured -----------------------------------------------------------------------------------------
DEAD = {"features.block1.conv1": [1], "features.block1.conv2": [2], "features.block2.conv1": [0, 5],
        "features.block2.conv2": [3, 6]}
NEXT = {"features.block1.conv1": "features.block1.conv2", "features.block1.conv2": "features.block2.conv1",
        "features.block2.conv1": "features.block2.conv2"}


def dead_channel_cnn() -> nn.Module:
    """tiny_cnn with 1/4 of each conv's channels dead: filter, bias, BatchNorm and the next layer's input
    weights zero (the last conv's next layer is fc1, 7*7 inputs per channel after the flatten)."""
    model = tiny_cnn()
    with torch.no_grad():
        for name, idx in DEAD.items():
            conv = model.get_submodule(name)
            bn = model.get_submodule(name.replace("conv", "bn"))
            for t in (conv.weight, conv.bias, bn.weight, bn.bias):
                t[idx] = 0
            if name in NEXT:
                model.get_submodule(NEXT[name]).weight[:, idx] = 0
            else:
                fc1 = model.get_submodule("classifier.fc1").weight.view(16, 8, 49)
                fc1[:, idx] = 0
    return model


@pytest.mark.parametrize("steps", [1, 2])
def test_structured_removes_the_weakest_channels_and_keeps_the_function(steps):
    model = dead_channel_cnn()
    x = images(8)
    expected = model(x)
    c = compress_prune(model, sparsity=0.25, structured=True, steps=steps)
    assert torch.allclose(c.model(x), expected, atol=1e-5)  # only dead channels went, fc1's columns with them
    kept = dict(c.meta["kept"])
    widths = {"features.block1.conv1": 4, "features.block1.conv2": 4, "features.block2.conv1": 8,
              "features.block2.conv2": 8}
    assert kept == {n: [i for i in range(widths[n]) if i not in DEAD[n]] for n in DEAD}
    m = c.model
    assert (m.features.block1.conv1.out_channels, m.features.block1.bn1.num_features) == (3, 3)
    assert (m.features.block1.conv2.in_channels, m.features.block2.conv2.out_channels) == (3, 6)
    assert m.classifier.fc1.in_features == 6 * 49 and m.classifier.fc2.out_features == 10
    rows = {r["name"]: r for r in c.report["layers"]}
    assert rows["classifier.fc1"]["in_before"] == 8 * 49 and rows["classifier.fc1"]["in_after"] == 6 * 49
    assert rows["features.block2.conv1"]["out_before"] == 8 and rows["features.block2.conv1"]["out_after"] == 6
    assert c.report["macs_after"] == summarize(m, (1, 28, 28)).total_macs < c.report["macs_before"]
    assert c.report["params_after"] == sum(p.numel() for p in m.parameters()) < c.report["params_before"]
    assert c.report["classifier"] == "classifier.fc2" and len(c.report["rounds"]) == steps


@pytest.mark.parametrize("name", ["fmnist-cnn", "gap-cnn", "resnet-small", "fmnist-mobile", "inception-small"])
def test_structured_rebuilt_model_is_the_compressed_one_bit_for_bit(tmp_path, name):
    calls = []

    def finetune(model, epochs, **kw):  # stands in for training: moves every parameter
        calls.append(epochs)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.01)
        return [{"epoch": 1}]

    model = tiny_cnn() if name == "fmnist-cnn" else build(name)
    c = compress_prune(model, sparsity=0.5, structured=True, steps=2, finetune=finetune, finetune_epochs=2)
    assert calls == [1, 1] and c.report["macs_after"] < c.report["macs_before"] / 2
    classifier = c.model.get_submodule(c.report["classifier"])
    assert getattr(classifier, "out_features", getattr(classifier, "out_channels", None)) == 10
    write_artifact(tmp_path / "m.cnnz", c.tensors, c.meta)
    tensors, meta = read_artifact(tmp_path / "m.cnnz")
    assert_same_model(rebuild_prune(build(name), tensors, meta), c.model)


# -- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0, 1, 1.5, -0.1, float("nan")])
def test_sparsity_outside_the_open_unit_interval_is_refused(sparsity):
    with pytest.raises(CompressError, match=rf"sparsity must be a fraction in \(0, 1\).*got {sparsity}"):
        compress_prune(tiny_cnn(), sparsity=sparsity)


@pytest.mark.parametrize("settings,match", [
    ({"scope": "model"}, "scope must be one of global, lamp, layer; got 'model'"),
    ({"steps": 0}, "steps must be an integer >= 1; got 0"),
    ({"finetune_epochs": 2}, "finetune_epochs=2 needs a finetune callable"),
    ({"structured": True, "scope": "global"}, "scope must be 'layer'.*got 'global'"),
])
def test_bad_settings_are_refused(settings, match):
    with pytest.raises(CompressError, match=match):
        compress_prune(tiny_cnn(), sparsity=0.5, **settings)


@pytest.mark.parametrize("name,match", [
    ("mlp", "needs a conv layer besides the classifier; MLP has none"),
    ("fmnist-grouped", r"layer 'features.block1.conv2' \(grouped conv, groups=4\)"),
    ("fmnist-sparse", r"layer 'features.block1.conv2' \(PredefinedSparseConv2d"),
])
def test_structured_refuses_what_it_cannot_prune(name, match):
    with pytest.raises(CompressError, match=match):
        compress_prune(build(name), sparsity=0.5, structured=True)
