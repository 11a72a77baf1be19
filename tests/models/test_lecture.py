"""The lecture's numbers for its own models: Fashion-MNIST CNN and MLP, dogs-vs-cats CNN, receptive-field Net."""

from __future__ import annotations

import torch

from cnnlab.models import count_parameters, create_model, model_info

# the lecture's Keras table ("LET'S JUMP IN... PYTORCH"), layer by layer: (output shape, Keras params)
KERAS_TABLE = [
    ((32, 28, 28), 320), ((32, 28, 28), 128), ((32, 28, 28), 9248), ((32, 28, 28), 128),
    ((64, 14, 14), 18496), ((64, 14, 14), 256), ((64, 14, 14), 36928), ((64, 14, 14), 256),
    ((512,), 1606144), ((512,), 2048), ((10,), 5130),
]


def test_fmnist_cnn_parameter_counts_match_the_lecture():
    m = create_model("fmnist-cnn")
    running = sum(b.numel() for n, b in m.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_parameters(m, trainable_only=True) == 1_677_674
    assert running == 1_408  # Keras' "non-trainable": BatchNorm moving mean and variance
    assert count_parameters(m) + running == 1_679_082


def test_fmnist_cnn_layers_match_the_keras_table():
    m = create_model("fmnist-cnn").eval()
    rows = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: rows.append(
        (tuple(o.shape[1:]), sum(p.numel() for p in mod.parameters())
         + sum(b.numel() for n, b in mod.named_buffers() if "running" in n))))
        for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d,
                                                   torch.nn.BatchNorm1d))]
    m(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert rows == KERAS_TABLE


def test_fmnist_cnn_order_is_conv_relu_bn():
    block = create_model("fmnist-cnn").features.block1
    kinds = [type(x).__name__ for x in block]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout"]


def test_mlp_size():
    assert count_parameters(create_model("mlp")) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10 == 669_706


# the lecture's dogs-vs-cats table ("DOGS-V-CATS: CATS AND DOGS - CNN.IPYNB"): (layer, output shape, params)
CATSDOGS_TABLE = [
    ("Conv2d", (32, 150, 150), 896), ("Conv2d", (64, 150, 150), 18_496), ("MaxPool2d", (64, 75, 75), 0),
    ("Conv2d", (128, 75, 75), 73_856), ("Conv2d", (128, 75, 75), 147_584), ("MaxPool2d", (128, 37, 37), 0),
    ("Conv2d", (256, 37, 37), 295_168), ("Conv2d", (512, 37, 37), 1_180_160), ("MaxPool2d", (512, 18, 18), 0),
    ("Conv2d", (512, 18, 18), 2_359_808), ("Conv2d", (512, 18, 18), 2_359_808), ("MaxPool2d", (512, 8, 8), 0),
    ("Linear", (512,), 16_777_728), ("Linear", (1,), 513),
]


def _table_rows(model, x, kinds):
    rows = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: rows.append(
        (type(mod).__name__, tuple(o.shape[1:]), sum(p.numel() for p in mod.parameters()))))
        for mod in model.modules() if isinstance(mod, kinds)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows, out


def test_catsdogs_cnn_size_matches_the_lecture():
    m = create_model("catsdogs-cnn")
    assert count_parameters(m) == count_parameters(m, trainable_only=True) == 23_214_017
    assert sum(b.numel() for b in m.buffers()) == 0  # the table's "Non-trainable params: 0"


def test_catsdogs_cnn_layers_match_the_lecture_table():
    m = create_model("catsdogs-cnn").eval()
    rows, out = _table_rows(m, torch.zeros(1, 3, 150, 150), (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.Linear))
    assert rows == CATSDOGS_TABLE
    assert out.shape == (1, 1)


def test_catsdogs_cnn_structure():
    m = create_model("catsdogs-cnn")
    trunk = [type(x).__name__ for x in m.features.modules() if not isinstance(x, torch.nn.Sequential)]
    assert trunk == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"] * 4  # ReLU after every conv
    assert [type(x).__name__ for x in m.classifier] == ["Dropout2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    last = m.features.block4.pool
    assert (last.kernel_size, last.stride) == (3, 2)  # 18x18 -> 8x8, as the table's MaxPool2d-12
    assert m.classifier.drop.p == 0.5
    # Dropout2d on the 4D map drops whole channels
    torch.manual_seed(0)
    y = m.classifier.drop.train()(torch.ones(2, 512, 8, 8))
    per_channel = y.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2)) and 0 < (y == 0).float().mean() < 1


def test_catsdogs_cnn_dense_input_follows_image_size():
    # 64 -> 32 -> 16 -> 8 -> (8 - 3) // 2 + 1 = 3
    m = create_model("catsdogs-cnn", image_size=64, num_classes=2)
    assert m.classifier.fc1.in_features == 512 * 3 * 3
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_rf_demo_is_the_lecture_net():
    m = create_model("rf-demo")
    assert [name for name, _ in m.features.named_children()] == ["conv", "bn", "relu", "maxpool"]
    conv, bn, relu, pool = m.features
    assert isinstance(conv, torch.nn.Conv2d) and conv.bias is None
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == \
        (3, 64, (7, 7), (2, 2), (3, 3))
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == 64
    assert isinstance(relu, torch.nn.ReLU) and relu.inplace
    assert isinstance(pool, torch.nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    assert isinstance(m.classifier, torch.nn.Identity)
    assert count_parameters(m) == 3 * 64 * 49 + 2 * 64


def test_rf_demo_map_sizes_match_the_lecture():
    m = create_model("rf-demo").eval()
    rows, out = _table_rows(m, torch.zeros(1, 3, 256, 256), (torch.nn.Conv2d, torch.nn.MaxPool2d))
    assert [shape for _, shape, _ in rows] == [(64, 128, 128), (64, 64, 64)]  # the table's [128,128], [64,64]
    assert out.shape == (1, 64, 64, 64)
    assert model_info("rf-demo").input_size == (3, 256, 256) and model_info("rf-demo").num_classes is None
