"""The lecture's numbers for its Fashion-MNIST models."""

from __future__ import annotations

import torch

from cnnlab.models import count_parameters, create_model

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
