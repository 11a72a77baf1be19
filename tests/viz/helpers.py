"""Plain helpers for the visualisation tests (their fixtures are in ``tests/viz/conftest.py``): the known-answer
task (:mod:`cnnlab.data.known_answer`, the package's ``--dataset known-answer``, here drawn fresh in task units),
a small CNN to train on it, and a check that a model is left as it was found.

The task: Gaussian noise everywhere; in the top right an 8x8 object (class 0 two horizontal bars, class 1 two
vertical bars, class 2 none) that always lies in rows 4-13, cols 14-23; in the lower half a 6x6 patch of strong
noise that no class depends on. The class therefore depends only on the object: a faithful attribution puts
its mass on the object.

Choices measured (seed 0; mean share of the map inside the object's box grown by 1 px; in brackets
class 0 / class 1):
- a "no object" class: softmax cross-entropy's gradients sum to zero over the classes, so with two
  classes training never changes the sum of the two weight vectors of the last layer (weight decay
  shrinks it): one logit is about the other's negative, one class "not the other". With two classes,
  Grad-CAM 0.58 (0.29 / 0.94); with the third, 0.78 (0.57 / 0.96).
- a global-max-pooling head (is the object anywhere? Oquab et al., CVPR 2015, "Is object localization
  for free?"): with flatten + linear, Grad-CAM's spatially averaged weights do not describe
  location-specific weights (0.42: class 1's maps are all zero); with global average pooling every
  background position adds to the logit and saliency leaks there (0.39 instead of 0.85).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from cnnlab.data.known_answer import CLASSES, OBJECT, REGION_COLS, REGION_ROWS, make_task  # noqa: F401 (re-exported)
from cnnlab.viz.evaluate import LOCALISATION_MARGIN as MARGIN  # noqa: F401 (re-exported)


class SmallCNN(nn.Module):
    """conv3x3(8)-ReLU-pool2, conv3x3(16)-ReLU-pool2; head: global max pool, linear (3 classes)."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 16, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2)))
        self.classifier = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveMaxPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(16, num_classes)))

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclass
class KnownAnswer:
    """The trained model and correctly classified test images that contain an object."""

    model: SmallCNN  # eval mode
    images: torch.Tensor  # (N, 1, 28, 28)
    labels: torch.Tensor  # (N,) 0 or 1
    boxes: torch.Tensor  # (N, 28, 28) bool: the object's 8x8 box
    masks: torch.Tensor  # (N, 28, 28) bool: the box grown by MARGIN -- "the object's region"
    test_accuracy: float  # on all test images, the no-object class included
    train_seconds: float



class Snapshot:
    """Everything a visualisation must leave as it was: every module's training flag, the state dict
    (parameters, BatchNorm running statistics and num_batches_tracked), requires_grad flags, .grad values
    and every hook dictionary."""

    _HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                   "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                   "_state_dict_hooks", "_load_state_dict_pre_hooks")

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = {n: m.training for n, m in model.named_modules()}
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.flags = {n: p.requires_grad for n, p in model.named_parameters()}
        self.grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}
        self.hooks = {(n, d): dict(getattr(m, d, {})) for n, m in model.named_modules() for d in self._HOOK_DICTS}
        self.global_hooks = self._global()

    @staticmethod
    def _global():
        import torch.nn.modules.module as mm

        return {k: dict(getattr(mm, k)) for k in dir(mm) if k.startswith("_global_") and k.endswith("hooks")}

    def assert_unchanged(self) -> None:
        m = self.model
        assert {n: x.training for n, x in m.named_modules()} == self.modes
        state = m.state_dict()
        assert state.keys() == self.state.keys()
        for k, v in self.state.items():
            assert torch.equal(state[k], v), k
        assert {n: p.requires_grad for n, p in m.named_parameters()} == self.flags
        for n, p in m.named_parameters():
            g = self.grads[n]
            assert (p.grad is None) == (g is None), n
            assert g is None or torch.equal(p.grad, g), n
        for (n, d), saved in self.hooks.items():
            assert dict(getattr(dict(m.named_modules())[n], d, {})) == saved, (n, d)
        assert self._global() == self.global_hooks
