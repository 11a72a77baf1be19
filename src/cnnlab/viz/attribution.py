"""Where a CNN looks: the CAM family (Grad-CAM, HiResCAM, Grad-CAM++, XGradCAM, LayerCAM, ScoreCAM, EigenCAM,
AblationCAM), guided Grad-CAM, occlusion, saliency and integrated gradients for a batch of images.

The CAM family comes from pytorch-grad-cam (:mod:`cnnlab.viz.cam`); captum does guided Grad-CAM, occlusion,
saliency and integrated gradients. cnnlab wraps them with one face (maps of shape (N, H, W) at the input's
resolution, targets checked) and writes none of the methods by hand. Every function leaves the model as it
found it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import GuidedGradCam, IntegratedGradients, Occlusion, Saliency

from cnnlab.viz._state import VizError, untouched
from cnnlab.viz.cam import cam
from cnnlab.viz.layers import conv_layer, grad_cam_module
from cnnlab.viz.targets import resolve_targets, targets_for

__all__ = ["targets_for", "resolve_targets", "grad_cam", "grad_cam_module", "occlusion", "saliency", "integrated_gradients",
           "normalize_maps", "default_patch_sizes", "GRAD_CAM_VARIANTS"]

#: Every CAM-family method (pytorch-grad-cam) and ``guided`` (captum's guided Grad-CAM).
GRAD_CAM_VARIANTS = ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam",
                     "ablationcam", "guided")


@contextmanager
def _quiet_captum() -> Iterator[None]:
    """Captum warns that it set ``requires_grad`` on the input and hooks on ReLUs: both are undone
    when it returns, so the warnings say nothing to a user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
        yield


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map scaled to [0, 1] by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (maps.dim() - 1)))
    return maps / peak


def grad_cam(model: nn.Module, images: torch.Tensor, target=None, *, layer: str | None = None,
             variant: str = "gradcam", upsample: bool = True) -> torch.Tensor:
    """A CAM-family map (N, H, W), non-negative: Grad-CAM (Selvaraju et al., ICCV 2017) by default, the ReLU
    of the conv layer's activations weighted by the spatially averaged gradients of the target class score.

    ``layer``: a conv layer name (default: the last conv layer). Its *activations* are its rectified
    feature maps, as in the paper (whose ``conv5_3`` maps are taken after the ReLU): the output of the
    activation function that follows the conv (after its BatchNorm, if any; for a residual block, after
    the addition). Where no activation follows before anything else that changes the maps (the next
    conv, a pool, a linear layer), or the activation module is shared by several calls, the conv's own
    output is used. See :func:`grad_cam_module`.

    ``variant``: one of :data:`GRAD_CAM_VARIANTS`: a method of :mod:`cnnlab.viz.cam` (pytorch-grad-cam's
    formulas; :func:`cnnlab.viz.cam.cam` also returns why a map is blank) or ``guided`` (captum's
    ``GuidedGradCam``: Grad-CAM times guided backpropagation, at input resolution).
    """
    if variant not in GRAD_CAM_VARIANTS:
        raise VizError(f"variant must be one of {', '.join(GRAD_CAM_VARIANTS)}; got {variant!r}")
    if variant != "guided":
        return cam(model, images, target, method=variant, layer=layer, upsample=upsample).maps
    name, _ = conv_layer(model, layer)
    targets = targets_for(model, images, target)
    images = images.detach()
    maps = grad_cam_module(model, name, images[:1])
    with untouched(model), _quiet_captum():
        attr = GuidedGradCam(model, maps).attribute(images, target=targets)
    return attr.abs().amax(1).detach()


def black(mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A black pixel in normalised inputs, one value per channel: ``(0 - mean) / std``, shape (C,)."""
    return (0 - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)


def as_baseline(baseline: float | torch.Tensor, images: torch.Tensor) -> float | torch.Tensor:
    """A scalar as it is; one value per channel, (C,), as a (1, C, H, W) image matching ``images``."""
    if not isinstance(baseline, torch.Tensor):
        return float(baseline)
    c, h, w = images.shape[1:]
    if baseline.numel() != c:
        raise VizError(f"a baseline of {baseline.numel()} values for images of {c} channels; give one per channel")
    return baseline.to(images).reshape(1, c, 1, 1).expand(1, c, h, w).contiguous()


def default_patch_sizes(size: int) -> tuple[int, ...]:
    """Three patch sizes for an image side: about 1/7, 1/4 and 1/2 of it (28 -> 4, 7, 14; the lecture's
    10-90 px on 224 spans 1/22 to 2/5)."""
    return tuple(sorted({max(2, round(size / 7)), max(2, round(size / 4)), max(2, round(size / 2))}))


#: Input pixels per forward pass of occlusion's perturbed copies (about 1,300 Fashion-MNIST images, 6 at
#: 3x224x224). Captum runs ``perturbations_per_eval`` copies of *every* image at once: 256 copies of 256 images
#: held 6.3 GB of activations in one `viz --evaluate`.
OCCLUSION_BATCH_PIXELS = 1 << 20


def occlusion(model: nn.Module, images: torch.Tensor, target=None, *, patch_sizes: Sequence[int] | None = None,
              stride: int | None = None, baseline: float | torch.Tensor = 0.0) -> dict[int, torch.Tensor]:
    """Occlusion sensitivity (Zeiler & Fergus, 2014) with captum's ``Occlusion``: a ``p x p`` patch of
    ``baseline`` (0 = the dataset mean in normalised inputs; a tensor of one value per channel, e.g.
    :func:`black`, for a colour) slides over the image (stride default
    ``p // 2``); each pixel gets the mean drop of the target class probability over the patches that
    covered it. Returns ``{patch size: (N, H, W)}``."""
    h, w = images.shape[-2:]
    sizes = tuple(patch_sizes) if patch_sizes else default_patch_sizes(min(h, w))
    bad = [p for p in sizes if not (isinstance(p, int) and 1 <= p <= min(h, w))]
    if bad:
        raise VizError(f"patch size {bad[0]!r} must be an integer from 1 to the image side {min(h, w)}")
    targets = targets_for(model, images, target)
    c = images.shape[1]
    per_eval = max(1, OCCLUSION_BATCH_PIXELS // (c * h * w * len(images)))
    out = {}
    with untouched(model), torch.no_grad():
        occ = Occlusion(lambda x: F.softmax(model(x), dim=1))
        for p in sizes:
            s = stride or max(1, p // 2)
            attr = occ.attribute(images, sliding_window_shapes=(c, p, p), strides=(c, s, s),
                                 baselines=as_baseline(baseline, images),
                                 target=targets, perturbations_per_eval=per_eval)
            out[p] = attr.mean(1).detach()
    return out


def saliency(model: nn.Module, images: torch.Tensor, target=None) -> torch.Tensor:
    """Saliency (Simonyan et al., 2014) with captum's ``Saliency``: |d score / d input|, max over channels;
    (N, H, W)."""
    targets = targets_for(model, images, target)
    with untouched(model), _quiet_captum():
        attr = Saliency(model).attribute(images.detach(), target=targets, abs=True)
    return attr.amax(1).detach()


def integrated_gradients(model: nn.Module, images: torch.Tensor, target=None, *, steps: int = 32,
                         baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al., 2017) with captum, from a ``baseline`` image (a value, or
    one value per channel: :func:`as_baseline`); |attribution| summed over channels, (N, H, W)."""
    targets = targets_for(model, images, target)
    with untouched(model), _quiet_captum():
        attr = IntegratedGradients(model).attribute(images.detach(), baselines=as_baseline(baseline, images),
                                                    target=targets, n_steps=steps,
                                                    internal_batch_size=max(1, 512 // max(1, len(images))) * len(images))
    return attr.abs().sum(1).detach()
