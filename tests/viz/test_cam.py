"""The CAM family through pytorch-grad-cam: cnnlab's maps are the library's, agree with captum's Grad-CAM, and
a blank map always says why."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from captum.attr import LayerAttribution, LayerGradCam

from cnnlab.viz import CAM_METHODS, VizError, cam
from cnnlab.viz.cam import cam_target_module, library_cam, scale01
from tests.viz.helpers import Snapshot


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cnnlab_maps_are_the_librarys(known_answer, method):
    """The same images through pytorch-grad-cam's own ``__call__`` (ReLU, min-max scaling, OpenCV resize) and
    through cnnlab (the library's formula on activations taken without side effects, torch's bilinear
    upsampling), scaled alike."""
    ka = known_answer
    x, y = ka.images[:12], ka.labels[:12]
    _, _, module = cam_target_module(ka.model, None, x)
    ours = scale01(cam(ka.model, x, y, method=method).maps)
    theirs = torch.from_numpy(library_cam(ka.model, x, y, method=method, module=module))
    if method == "eigencam":  # cnnlab adds the library's sign correction: the same map, or its other side
        flipped = torch.from_numpy(_library_eigencam_flipped(ka.model, x, module))
        theirs = torch.where(((ours - flipped).abs().amax((1, 2)) < (ours - theirs).abs().amax((1, 2)))[:, None, None],
                             flipped, theirs)
    assert ours.shape == theirs.shape == (12, 28, 28)
    assert (ours - theirs).abs().max() < 1e-4, float((ours - theirs).abs().max())


def _library_eigencam_flipped(model, x, module):
    """The library's EigenCAM map of the negated projection, as its ``__call__`` finishes a map: ReLU, min-max
    scaling, resize, min-max scaling again."""
    import numpy as np
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    store = {}
    h = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach().numpy()))
    with torch.no_grad():
        model(x)
    h.remove()
    return scale_cam_image(scale_cam_image(np.maximum(-get_2d_projection(store["a"]), 0), tuple(x.shape[-1:-3:-1])))


def test_eigencam_does_not_depend_on_the_batch(known_answer):
    """Without the sign correction the same image alone and in a batch gave opposite maps."""
    ka = known_answer
    x = ka.images[:6]
    batched = cam(ka.model, x, method="eigencam").maps
    alone = torch.cat([cam(ka.model, x[i:i + 1], method="eigencam").maps for i in range(6)])
    torch.testing.assert_close(batched, alone, rtol=1e-3, atol=1e-4 * float(batched.max()))


def test_gradcam_agrees_with_captum(known_answer):
    """Two libraries, one formula: captum's LayerGradCam on the same rectified maps."""
    ka = known_answer
    x, y = ka.images[:12], ka.labels[:12]
    _, _, module = cam_target_module(ka.model, None, x)
    ref = LayerGradCam(ka.model, module).attribute(x, target=y, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (28, 28), interpolate_mode="bilinear")[:, 0].clamp_min(0).detach()
    ours = cam(ka.model, x, y, method="gradcam").maps
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))


def test_eigencam_is_the_same_for_every_class(known_answer):
    ka = known_answer
    x = ka.images[:4]
    torch.testing.assert_close(cam(ka.model, x, 0, method="eigencam").maps, cam(ka.model, x, 1, method="eigencam").maps)
    assert not torch.allclose(cam(ka.model, x, 0, method="gradcam").maps, cam(ka.model, x, 1, method="gradcam").maps)


class Votes(nn.Module):
    """conv (positive weights, so every activation is positive) - ReLU - global average pool - linear whose
    class 0 weights are all negative and class 1's all positive: Grad-CAM for class 0 must be blank."""

    def __init__(self, bias: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 4, 3, padding=1), relu=nn.ReLU()))
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.features.conv.weight.fill_(0.1)
            self.features.conv.bias.fill_(bias)
            self.fc.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_a_blank_map_says_why():
    model = Votes()
    x = torch.rand(2, 1, 8, 8)
    against = cam(model, x, 0, method="gradcam")
    assert against.blank.all() and against.maps.abs().max() == 0
    why = against.why_blank(0)
    assert why.startswith("blank: the channel-weighted sum of features.relu's maps is negative everywhere")
    assert "\n" not in why and "class 0" in why
    assert against.module == "features.relu" and against.layer == "features.conv"
    assert float(against.raw_max[0]) < 0 <= float(against.active[0])
    towards = cam(model, x, 1, method="gradcam")
    assert not towards.blank.any() and towards.why_blank(0) is None and towards.maps.max() > 0


def test_a_layer_that_never_turns_on_says_so():
    dead = Votes(bias=-100.0)
    r = cam(dead, torch.rand(1, 1, 8, 8), 1, method="layercam")
    assert r.blank.all() and "every activation of features.relu is zero" in r.why_blank(0)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam", "hirescam"])
def test_no_side_effects_and_no_progress_bars(bn_model, method, capfd):
    snap = Snapshot(bn_model)
    modules = dict(bn_model.named_modules())
    cam(bn_model, torch.randn(2, 1, 28, 28), 3, method=method)
    snap.assert_unchanged()
    assert dict(bn_model.named_modules()).keys() == modules.keys()
    assert all(m is modules[n] for n, m in bn_model.named_modules())  # AblationCAM put its layer back
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_frozen_model_still_has_gradients(known_answer):
    """A transfer-learning model with every parameter frozen: the input carries the graph."""
    import copy

    frozen = copy.deepcopy(known_answer.model).requires_grad_(False)
    assert cam(frozen, known_answer.images[:2], known_answer.labels[:2]).maps.max() > 0  # hirescam, the default


def test_an_unknown_method_lists_the_valid_ones(known_answer):
    with pytest.raises(VizError, match=r"unknown CAM method 'gradcam3'; valid: gradcam, hirescam, gradcam\+\+"):
        cam(known_answer.model, known_answer.images[:1], method="gradcam3")


def test_scorecam_refuses_what_would_exhaust_memory():
    """2,048 masked copies of a 3x320x320 image: 2.3 GiB for one image (the layer itself is only 10x10)."""
    model = nn.Sequential(nn.Conv2d(3, 2048, 32, stride=32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(2048, 2))
    with pytest.raises(VizError, match=r"scorecam on this layer needs 2.3 GiB per image \(2048 channels x \(3, 320, "
                                       r"320\)\); choose an earlier layer or another method"):
        cam(model, torch.rand(1, 3, 320, 320), 0, method="scorecam")


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_a_torchvision_resnet_in_colour_at_any_size(method):
    """torchvision's ResNet-18 (3 channels, 72x56 input): its BasicBlock calls one ReLU module twice, so the CAM
    reads the last conv's own output (no single activation to take), and AblationCAM's swap of that conv is
    undone."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 72, 56)
    r = cam(model, x, [1, 3], method=method, layer="layer4.1.conv2")
    assert r.module == "layer4.1.conv2" and r.maps.shape == (2, 72, 56) and (r.maps >= 0).all()
    assert all(m is not None for m in dict(model.named_modules()).values())
    assert isinstance(model.layer4[1].conv2, nn.Conv2d)
