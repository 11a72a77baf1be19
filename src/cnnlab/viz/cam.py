"""The class activation map (CAM) family, computed by the field's library, pytorch-grad-cam (PyPI ``grad-cam``).

Each method weighs a conv layer's activation maps ``A`` (C, h, w) and sums them over channels; they differ in
the weights. pytorch-grad-cam supplies each method's formula (its ``get_cam_weights`` / ``get_cam_image``);
cnnlab feeds it the activations and the gradients of the target class *score* (the logit) taken without side
effects on the model, and keeps what the library's ``__call__`` throws away: the map *before* the final ReLU
and min-max scaling. That is what lets cnnlab say why a map is blank (:attr:`CamMaps.blank`): a
Grad-CAM map that is empty is a channel-weighted sum that is negative everywhere, a fact about the model, not a
bug -- and the user is told so, with the methods that do not go blank for that reason.

========== ======================================================= ================================
method     weights (per channel k; g = d score / d A)              reference
========== ======================================================= ================================
gradcam    mean of g over positions                                Selvaraju et al., ICCV 2017
hirescam   none: sum over k of g * A, position by position         Draelos & Carin, 2020
gradcam++  sum of relu(g) * alpha, alpha from g^2, g^3 (closed     Chattopadhay et al., WACV 2018
           form for an exponential score)
xgradcam   sum of g * A / sum(A)                                   Fu et al., BMVC 2020
layercam   none: sum over k of relu(g) * A, position by position   Jiang et al., TIP 2021
scorecam   softmax over k of the score of the image masked by      Wang et al., CVPR-W 2020
           each (upsampled, min-max scaled) map; no gradients
eigencam   none: the first principal component of A, its sign chosen Muhammad & Yeasin, IJCNN 2020
           so that the larger side is positive (the library's
           Seg-Eigen-CAM correction); no gradients, no class
ablationcam the relative drop of the score when channel k is       Desai & Ramaswamy, WACV 2020
           zeroed; no gradients
========== ======================================================= ================================

Maps are (N, H, W), non-negative, bilinearly upsampled to the input (``upsample=False``: the layer's own
resolution); they are not rescaled, so magnitudes compare across images of one method (not across methods).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from threadpoolctl import threadpool_limits

from cnnlab.viz._state import VizError, untouched
from cnnlab.viz.layers import _ACTIVATIONS, _ELEMENTWISE, conv_layer, grad_cam_module
from cnnlab.viz.layers import layer as find_layer
from cnnlab.viz.targets import resolve_targets

__all__ = ["CAM_METHODS", "DEFAULT_CAM", "GRADIENT_FREE", "CamMaps", "cam", "cam_target_module", "layer_choices", "library_cam",
           "scale01"]

#: The CAM methods, each by its pytorch-grad-cam class name.
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
    "layercam": "LayerCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM", "ablationcam": "AblationCAM"}
#: The method a user sees first (the explorer, ``cam()``), chosen by ``cnnlab viz --evaluate`` on the lecture's
#: trained CNN (256 test images, bench/RESULTS.md): HiResCAM and LayerCAM rank first and second on
#: faithfulness, within 0.003 of each other on every measure (deletion, insertion, black and blurred; ROAD),
#: far ahead of Grad-CAM (9th); HiResCAM's maps depend on the model much more (Spearman 0.15 with the
#: trained maps after re-initialising the output layer alone, against LayerCAM's 0.47), and it is the one
#: of the two proven faithful to the score for a model whose head is linear in the maps (Draelos & Carin).
DEFAULT_CAM = "hirescam"
#: Methods that need no gradient (one forward per channel, or none).
GRADIENT_FREE = ("scorecam", "eigencam", "ablationcam")
#: The most memory ScoreCAM's masked copies of one batch of images may take.
_SCORECAM_BYTES = 256 * 2**20
_SCORECAM_MAX_ONE_IMAGE = 2 * 2**30


@dataclass
class CamMaps:
    """A CAM method's maps for a batch, and what the maps were before the final ReLU."""

    maps: torch.Tensor  # (N, H, W), >= 0
    method: str
    layer: str  # the conv layer asked for
    module: str  # the module whose output is used as the activation maps (e.g. the ReLU after the conv)
    targets: torch.Tensor  # (N,) the class explained
    raw_max: torch.Tensor  # (N,) the largest value of the map before the final ReLU
    raw_min: torch.Tensor  # (N,)
    active: torch.Tensor  # (N,) the largest activation of the layer for the image

    @property
    def blank(self) -> torch.Tensor:
        """(N,) bool: the map is zero everywhere."""
        return self.raw_max <= 0

    def why_blank(self, i: int) -> str | None:
        """One line saying why map ``i`` is empty, or ``None`` when it is not."""
        if not bool(self.blank[i]):
            return None
        if float(self.active[i]) <= 0:
            return (f"blank: every activation of {self.module} is zero for this image, so no weighting of them can "
                    f"show anything; choose an earlier layer")
        if self.method in ("gradcam", "xgradcam", "gradcam++", "scorecam", "ablationcam"):
            return (f"blank: the channel-weighted sum of {self.module}'s maps is negative everywhere (largest value "
                    f"{float(self.raw_max[i]):.3g}), so {self.method}'s final ReLU removes all of it: channels whose "
                    f"weight for class {int(self.targets[i])} is negative dominate every position. HiResCAM and "
                    f"LayerCAM weigh each position by its own gradient and show the positive evidence this "
                    f"average hides; the conv's output before its ReLU is another layer to try")
        return (f"blank: {self.method}'s map is negative or zero everywhere (largest value "
                f"{float(self.raw_max[i]):.3g}) and the final ReLU removes it")


def _library():
    """pytorch-grad-cam, imported on first use (it imports scikit-learn and OpenCV: seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    return pytorch_grad_cam, ClassifierOutputTarget


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """ScoreCAM and AblationCAM draw a tqdm bar per image on stderr; a library call must not print."""
    import pytorch_grad_cam.ablation_cam as ablation
    import pytorch_grad_cam.score_cam as score

    silent = SimpleNamespace(tqdm=lambda iterable, *a, **k: iterable)
    with mock.patch.object(score, "tqdm", silent), mock.patch.object(ablation, "tqdm", silent):
        yield


def cam_target_module(model: nn.Module, layer: str | None, example: torch.Tensor) -> tuple[str, str, nn.Module]:
    """(layer asked for, name of the module whose output is used, that module). A conv layer (or ``None``: the
    last conv of the trunk) means its rectified maps where an activation follows it (see
    :func:`cnnlab.viz.layers.grad_cam_module`), else the conv's own output; any other module (a ReLU,
    a BatchNorm, a block) is used as it is, if its output is a stack of maps (checked when it runs)."""
    modules = dict(model.named_modules())
    if layer and layer in modules and not isinstance(modules[layer], nn.Conv2d):
        return layer, layer, modules[layer]
    name, _ = conv_layer(model, layer)
    module = grad_cam_module(model, name, example[:1])
    module_name = next(n for n, m in model.named_modules() if m is module)
    return name, module_name, module


def layer_choices(model: nn.Module, layer: str | None, example: torch.Tensor) -> list[str]:
    """The modules a CAM could read for conv ``layer``: the conv itself and each elementwise module after it
    that keeps its maps' shape (activation, BatchNorm, dropout), in the order they run -- e.g.
    ``block2.conv2``, ``block2.relu2``, ``block2.bn2`` in the lecture's conv-ReLU-BN order."""
    name, conv = conv_layer(model, layer)
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, tuple]] = []
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(lambda m, i, o: calls.append((m, tuple(getattr(o, "shape", ()))))) for m in leaves]
    try:
        with untouched(model), torch.no_grad():
            model(example[:1].detach())
    finally:
        for h in handles:
            h.remove()
    at = [i for i, (m, _) in enumerate(calls) if m is conv]
    if len(at) != 1:
        return [name]
    shape, out = calls[at[0]][1], [name]
    for m, s in calls[at[0] + 1:]:
        if not isinstance(m, _ELEMENTWISE + _ACTIVATIONS) or s != shape:
            break
        if names[m] not in out and not isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            out.append(names[m])
    return out


def _method(method: str) -> str:
    if method not in CAM_METHODS:
        raise VizError(f"unknown CAM method {method!r}; valid: {', '.join(CAM_METHODS)}")
    return method


def cam(model: nn.Module, images: torch.Tensor, target=None, *, method: str = DEFAULT_CAM, layer: str | None = None,
        module: str | None = None, upsample: bool = True) -> CamMaps:
    """``method``'s maps for ``images`` (N, C, H, W, normalised as the model expects) at conv ``layer`` (default:
    the last conv of the trunk); ``target``: ``None`` (each image's predicted class), one class, or one per
    image. ``module``: read exactly this module's output instead (e.g. a conv's raw output, which ``layer``
    would replace by the activation after it). Works for any input size and channel count; leaves the model
    as it found it (mode, gradients, hooks, modules)."""
    _method(method)
    images = images.detach()
    if images.dim() != 4:
        raise VizError(f"images must be a batch (N, C, H, W); got shape {tuple(images.shape)}")
    if module is not None:
        name, module_name, target_module = module, module, find_layer(model, module)
    else:
        name, module_name, target_module = cam_target_module(model, layer, images)
    module = target_module
    lib, ClassifierOutputTarget = _library()
    with untouched(model):
        acts, grads, targets = _activations(model, module, module_name, images, target,
                                            need_grad=method not in GRADIENT_FREE)
        obj = getattr(lib, CAM_METHODS[method])(model, [module])
        obj.activations_and_grads.release()  # cnnlab took the activations itself, without touching .grad
        calls = [ClassifierOutputTarget(int(t)) for t in targets]
        with _no_progress_bars(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the library's own (e.g. deprecations): nothing a user can act on
            raw = _raw_maps(obj, method, model, module, images, calls, acts, grads)
    raw = torch.from_numpy(np.ascontiguousarray(raw)).float()
    maps = raw.clamp_min(0)
    if upsample:
        maps = F.interpolate(maps[:, None], size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        maps = maps.clamp_min(0)
    return CamMaps(maps=maps, method=method, layer=name, module=module_name, targets=targets.cpu(),
                   raw_max=raw.flatten(1).amax(1), raw_min=raw.flatten(1).amin(1),
                   active=torch.from_numpy(acts).flatten(1).amax(1))


def _activations(model, module, module_name: str, images, target, *, need_grad: bool):
    """The module's output for ``images`` and, if asked, the gradient of the target scores with respect to
    it, as float32 numpy arrays, and the targets (:func:`cnnlab.viz.attribution.resolve_targets` on the same
    forward pass); parameters' ``.grad`` are not touched (``torch.autograd.grad``)."""
    store: dict[str, torch.Tensor] = {}

    def keep(m, i, o):
        # the rest of the model gets a copy: an in-place activation after the module (the lecture's
        # ReLU(inplace=True) after each conv) would otherwise rectify the very tensor read here, and a conv's
        # raw output would silently be its ReLU's
        store["a"] = o
        return o.clone() if isinstance(o, torch.Tensor) else o

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad() if need_grad else torch.no_grad():
            x = images.requires_grad_(True) if need_grad else images
            logits = model(x)
            if "a" not in store:
                raise VizError(f"the model's forward pass does not run {module_name}; choose another layer")
            a = store["a"]
            targets = resolve_targets(logits.detach(), target)
            if not isinstance(a, torch.Tensor) or a.dim() != 4:
                shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                raise VizError(f"layer {module_name!r} gives outputs of shape {shape}; a CAM needs a layer whose "
                               f"output is a stack of maps (N, C, h, w): a conv layer or what follows it")
            g = None
            if need_grad:
                (g,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), a)
    finally:
        handle.remove()
        images.requires_grad_(False)
    as_np = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    return as_np(a), (as_np(g) if g is not None else None), targets


def _raw_maps(obj, method: str, model, module, images, calls, acts, grads) -> np.ndarray:
    """The library's map before its ReLU and scaling: ``get_cam_image`` (which calls ``get_cam_weights``),
    in chunks of images where the method makes a forward pass per channel."""
    if method == "ablationcam":
        return _ablation(obj, model, module, images, calls, acts)
    if method == "eigencam":
        # An SVD's sign is arbitrary: the library's EigenCAM returns the map or its negative depending on
        # float noise (the same image alone or in a batch gave opposite maps), and its ReLU then keeps the
        # complement. The library's own sign correction (Seg-Eigen-CAM, Eq. 13) makes the larger side positive.
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

        # one small SVD per image: OpenBLAS's threads only fight torch's for the two cores (1.7 s -> 0.4 s
        # for 256 Fashion-MNIST images)
        with threadpool_limits(limits=1, user_api="blas"):
            return get_2d_projection_with_sign_correction(acts)
    if method == "scorecam":
        per_image = acts.shape[1] * images[0].numel() * 4
        if per_image > _SCORECAM_MAX_ONE_IMAGE:
            raise VizError(f"scorecam on this layer needs {per_image / 2**30:.1f} GiB per image ({acts.shape[1]} "
                           f"channels x {tuple(images.shape[1:])}); choose an earlier layer or another method")
        obj.batch_size = max(1, min(acts.shape[1], _SCORECAM_BYTES // max(1, images[0].numel() * 4)))
        step = max(1, _SCORECAM_BYTES // per_image)
        return np.concatenate([obj.get_cam_image(images[i:i + step], module, calls[i:i + step], acts[i:i + step],
                                                 None, False) for i in range(0, len(images), step)])
    return obj.get_cam_image(images, module, calls, acts, grads, False)


def _ablation(obj, model, module, images, calls, acts) -> np.ndarray:
    """AblationCAM swaps the layer for an ablating one while it runs; a fresh ablation layer per call (the
    library's default argument is one shared instance) and the layer put back whatever happens."""
    from pytorch_grad_cam.ablation_layer import AblationLayer
    from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

    obj.ablation_layer = AblationLayer()
    obj.batch_size = max(1, min(acts.shape[1], 64))
    try:
        return obj.get_cam_image(images, module, calls, acts, None, False)
    finally:
        if any(m is obj.ablation_layer for m in model.modules()):
            replace_layer_recursive(model, obj.ablation_layer, module)


def library_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, method: str, module: nn.Module) -> np.ndarray:
    """The map as pytorch-grad-cam's own ``__call__`` returns it (ReLU, min-max scaled per image, resized
    with OpenCV): the reference cnnlab's maps are tested against."""
    lib, ClassifierOutputTarget = _library()
    with untouched(model), _no_progress_bars():
        obj = getattr(lib, CAM_METHODS[_method(method)])(model, [module])
        try:
            return obj(images.detach(), [ClassifierOutputTarget(int(t)) for t in targets])
        finally:
            obj.activations_and_grads.release()


def scale01(maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to [0, 1] as pytorch-grad-cam scales its output (a constant map becomes 0)."""
    flat = maps.flatten(1)
    lo = flat.amin(1).view(-1, *([1] * (maps.dim() - 1)))
    shifted = maps - lo
    return shifted / (1e-7 + shifted.flatten(1).amax(1).view(-1, *([1] * (maps.dim() - 1))))

