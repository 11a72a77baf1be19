"""Pruning, the lecture's first post-training approach: "set near-zero weights to zero, fix these and do
some retraining" (Han et al. 2015, "Learning both weights and connections for efficient neural networks").

Two kinds, one entry point (:func:`compress_prune`):

- **Unstructured** pruning zeroes the ``sparsity`` fraction of the weights of every
  :class:`~torch.nn.Conv2d` and :class:`~torch.nn.Linear` -- the last classifier layer included, biases and
  BatchNorm not -- with :mod:`torch.nn.utils.prune`. Which weights (``scope``):

  - ``"lamp"`` (the default): one global threshold on LAMP scores (Lee et al. 2021; :func:`lamp_scores`),
    each weight's square over the sum of the squares of its layer's weights at least as large: within a
    layer the smallest magnitudes go, and the layers share the pruning by how much each can lose rather
    than by the scale of their weights;
  - ``"global"``: one threshold on the magnitudes across all layers (``prune.global_unstructured``);
  - ``"layer"``: the same fraction of each layer (``prune.l1_unstructured``).

  Plain global magnitude hurts ``fmnist-cnn``: its conv and classifier weights are on another scale than
  its 1.6M-weight dense layer's, and at 90% it prunes the classifier 96.5% (18 weights per class left) and
  the 3x3 convs about 70%; LAMP prunes the dense layer 92.7%, the convs 2-33%, the classifier 12%
  (measured: before fine-tuning 55% against 10% on 3,000 test images; after fine-tuning: bench/RESULTS.md).

  The masks hold during fine-tuning (``prune`` recomputes ``weight = weight_orig * mask`` before every
  forward pass, so neither gradients nor weight decay revive a pruned weight) and are then made permanent
  (``prune.remove``): the result is a plain model with exact zeros. Stored: for each pruned weight a 1-bit
  mask of its non-zeros (:func:`~cnnlab.compress.storage.pack_bits`) and those values in float32, every
  other tensor as it is (float32). (8-bit gaps between non-zeros, Han et al.'s index form, measured 2.4%
  smaller after xz at 90% sparsity on ``fmnist-cnn``: not worth a second format.) The dense kernels still
  multiply the zeros, so this saves storage, not time.
- **Structured** (filter) pruning (``structured=True``) removes the ``sparsity`` fraction of the output
  channels of every convolution but the classifier, ranked by the L1 norm of all the weights tied to the
  channel (the filter, its BatchNorm scale and shift, the next layers' input weights: Torch-Pruning's
  ``GroupMagnitudeImportance(p=1)``, after Fang et al. 2023, "DepGraph: towards any structural pruning";
  on ``fmnist-cnn`` at 30% it keeps 86.9% test accuracy before fine-tuning, the filter's own L1 norm (Li et
  al. 2017) 40.0%: here BatchNorm follows the ReLU and rescales each channel), and with them the matching
  BatchNorm channels and the next layers' input channels, the first Linear after a flatten included.
  `Torch-Pruning <https://github.com/VainF/Torch-Pruning>`_ traces the model to find these dependencies
  (residual additions and concatenations couple channels; a depthwise conv's channels are its producer's).
  The model gets smaller and faster. Stored: the kept channel indices (``meta``) and the pruned model's
  state in float32; :func:`rebuild_prune` re-applies the same pruning to a fresh model.

With ``steps > 1`` the sparsity grows over ``steps`` rounds along Zhu & Gupta's cubic schedule (2017, "To
prune, or not to prune"; :func:`sparsity_schedule`), with the fine-tuning epochs spread over the rounds
(:func:`finetune_split`).

Accuracy, artifact size, MACs and latency of these settings on the trained ``fmnist-cnn`` (fine-tuned
with its recipe at a tenth of its learning rate, :mod:`cnnlab.compress.finetune`): see bench/RESULTS.md,
measured by ``bench/compress_fmnist.py``; the figures are kept there only, so that they do not drift from
the measurement. Structured pruning of the convs leaves the dense layer's 512 outputs, so the file shrinks
only by the dense layer's inputs (3136 -> 1960 at 0.375 of the channels), while the MACs fall with the
convs' channels.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
import torch_pruning as tp

from cnnlab.analysis import summarize
from cnnlab.compress.base import CompressError, Compressed, Finetune
from cnnlab.compress.storage import pack_bits, unpack_bits
from cnnlab.layers import PredefinedSparseConv2d

__all__ = ["SCOPES", "compress_prune", "finetune_split", "lamp_scores", "rebuild_prune", "sparsity_schedule"]

SCOPES = ("global", "lamp", "layer")
SCHEDULE = "cubic (Zhu & Gupta 2017): s_t = s * (1 - (1 - t / steps) ** 3), t = 1..steps"

#: Leaf modules whose channels Torch-Pruning's trace maps correctly (elementwise, pooling, flatten,
#: BatchNorm, dense and conv layers). Anything else -- a channel shuffle, a module holding a per-channel
#: buffer -- could be silently mis-pruned, so structured pruning refuses it.
_STRUCTURED_LEAVES = (
    nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout2d,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
    nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
)


# -- settings ---------------------------------------------------------------------------------------------
def sparsity_schedule(sparsity: float, steps: int) -> list[float]:
    """The sparsity after each of ``steps`` rounds: Zhu & Gupta's cubic ramp, fast while many weights are
    redundant, slow near the target; ``steps=3, sparsity=0.9`` gives 0.633, 0.867, 0.9."""
    return [sparsity * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


def finetune_split(epochs: int, steps: int) -> list[int]:
    """Fine-tuning epochs after each round: ``epochs`` spread evenly, the remainder to the last rounds, so
    the last round always gets at least one when ``epochs > 0`` (``(2, 3)`` -> ``[0, 1, 1]``)."""
    base, extra = divmod(epochs, steps)
    return [base + (t >= steps - extra) for t in range(steps)]


def _check_settings(sparsity: float, scope: str, steps: int, finetune: Finetune | None,
                    finetune_epochs: int) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise CompressError(f"sparsity must be a fraction in (0, 1) (0.9: prune 90%); got {sparsity!r}")
    if scope not in SCOPES:
        raise CompressError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CompressError(f"steps must be an integer >= 1; got {steps!r}")
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise CompressError(f"finetune_epochs must be an integer >= 0; got {finetune_epochs!r}")
    if finetune_epochs > 0 and finetune is None:
        raise CompressError(f"finetune_epochs={finetune_epochs} needs a finetune callable; got finetune=None")


def _finetune(model: nn.Module, finetune: Finetune | None, epochs: int) -> list[dict[str, Any]]:
    return finetune(model, epochs) if finetune is not None and epochs > 0 else []


def compress_prune(model: nn.Module, *, sparsity: float = 0.9, scope: str | None = None, steps: int = 1,
                   finetune: Finetune | None = None, finetune_epochs: int = 0, structured: bool = False,
                   input_size: Sequence[int] = (1, 28, 28)) -> Compressed:
    """Prune ``model`` (modified in place) to ``sparsity`` in ``steps`` rounds, fine-tuning
    ``finetune_epochs`` epochs in all (:func:`finetune_split`) through ``finetune``.

    Args:
        sparsity: unstructured: the fraction of conv and linear weights zeroed; structured: the fraction of
            each conv's output channels removed (rounded to whole channels, at least one kept). Default 0.9.
        scope: ``"lamp"`` (one threshold on LAMP scores), ``"global"`` (one threshold on magnitudes) or
            ``"layer"`` (the same fraction of each layer): module docstring. None: ``"lamp"`` unstructured,
            ``"layer"`` structured (the only scope it has).
        steps: pruning rounds, the sparsity following :func:`sparsity_schedule`.
        structured: remove whole channels (module docstring) instead of zeroing weights.
        input_size: (C, H, W) of one input, to trace the model's channel dependencies (structured only).
    """
    scope = scope if scope is not None else ("layer" if structured else "lamp")
    _check_settings(sparsity, scope, steps, finetune, finetune_epochs)
    if structured:
        if scope != "layer":
            raise CompressError(f"structured pruning removes the same fraction of each conv's channels: scope "
                                f"must be 'layer' (or None); got {scope!r}")
        return _compress_structured(model, sparsity, steps, finetune, finetune_epochs, tuple(input_size))
    return _compress_unstructured(model, sparsity, scope, steps, finetune, finetune_epochs)


def rebuild_prune(base: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """The model :func:`compress_prune` returned, from a fresh ``base`` of the same architecture, the stored
    ``tensors`` and ``meta`` (in eval mode)."""
    if meta.get("structured"):
        _apply_kept(base, meta["kept"], meta["input_size"])
        state = dict(tensors)
    else:
        state = _decode_sparse(base, tensors, meta["sparse"])
    base.load_state_dict(state, strict=True)
    return base.eval()


# -- unstructured ---------------------------------------------------------------------------------------
def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise CompressError(f"pruning needs Conv2d or Linear layers; {type(model).__name__} has none")
    return layers


def _masked(module: nn.Module) -> int:
    """Weights ``prune`` has masked so far (a weight that is zero but not masked yet ranks first next)."""
    mask = getattr(module, "weight_mask", None)
    return int((mask == 0).sum()) if mask is not None else 0


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight as the layer computes with it now (``module.weight`` of a masked layer is the one the last
    forward pass computed, from before the optimizer's last step)."""
    if hasattr(module, "weight_mask"):
        return module.weight_orig.detach() * module.weight_mask
    return module.weight.detach()


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP scores (Lee et al. 2021, "Layer-adaptive sparsity for the magnitude-based pruning"): ``w_u^2``
    over the sum of ``w_v^2`` for every ``v`` of the layer at least as large. The largest weight of each layer
    scores 1, so one global threshold never empties a layer, and a layer of small weights (a wide dense
    layer) is not pruned first just for its scale. Pruned (zero) weights score 0."""
    squares, order = weight.reshape(-1).square().sort()
    scores = torch.empty_like(squares)
    scores[order] = squares / squares.flip(0).cumsum(0).flip(0).clamp_min(torch.finfo(squares.dtype).tiny)
    return scores.view_as(weight)


def _prune_round(layers: list[tuple[str, nn.Module]], target: float, scope: str) -> None:
    """Prune (more) of the lowest-scoring weights until ``target`` of them are zero: by magnitude globally or
    per layer, or by LAMP score globally. A repeated ``prune`` call ranks only the weights still unpruned, so
    each round asks for the difference."""
    with torch.no_grad():
        if scope == "layer":
            for _, m in layers:
                prune.l1_unstructured(m, "weight", amount=max(round(target * m.weight.numel()) - _masked(m), 0),
                                      importance_scores=_weight(m))
            return
        score = lamp_scores if scope == "lamp" else torch.Tensor.abs
        total = sum(m.weight.numel() for _, m in layers)
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                  importance_scores={(m, "weight"): score(_weight(m)) for _, m in layers},
                                  amount=max(round(target * total) - sum(_masked(m) for _, m in layers), 0))


def _encode_sparse(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The state dict with each weight in ``names`` as ``<name>.mask`` (its non-zero positions, 1 bit each)
    and ``<name>.values`` (those values, float32, row-major order)."""
    tensors = {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        if key in names:
            nonzero = t != 0
            tensors[f"{key}.mask"] = pack_bits(nonzero, 1)
            tensors[f"{key}.values"] = t[nonzero].float()
        else:
            tensors[key] = t.float() if t.is_floating_point() else t.clone()
    return tensors


def _decode_sparse(base: nn.Module, tensors: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    shapes = {k: v.shape for k, v in base.state_dict().items()}
    packed = {f"{key}.{part}" for key in names for part in ("mask", "values")}
    state = {k: v for k, v in tensors.items() if k not in packed}
    for key in names:
        if key not in shapes:
            raise CompressError(f"stored pruned weight {key!r} is not a parameter of {type(base).__name__}")
        nonzero = unpack_bits(tensors[f"{key}.mask"], 1, math.prod(shapes[key])).bool().view(shapes[key])
        values = tensors[f"{key}.values"]
        if values.numel() != int(nonzero.sum()):
            raise CompressError(f"{key}: {values.numel()} stored values for {int(nonzero.sum())} mask positions")
        weight = torch.zeros(shapes[key], dtype=values.dtype)
        weight[nonzero] = values
        state[key] = weight
    return state


def _compress_unstructured(model: nn.Module, sparsity: float, scope: str, steps: int, finetune: Finetune | None,
                           finetune_epochs: int) -> Compressed:
    layers = _prunable(model)
    schedule, epochs = sparsity_schedule(sparsity, steps), finetune_split(finetune_epochs, steps)
    rounds = []
    model.eval()
    for target, n in zip(schedule, epochs):
        _prune_round(layers, target, scope)
        rounds.append({"sparsity": target, "finetune_epochs": n, "history": _finetune(model, finetune, n)})
    for _, m in layers:
        prune.remove(m, "weight")
    names = [f"{name}.weight" if name else "weight" for name, _ in layers]
    tensors = _encode_sparse(model, names)
    model.load_state_dict(_decode_sparse(model, tensors, names))  # the stored weights, e.g. -0.0 as 0.0
    zeros = {name: int((m.weight == 0).sum()) for name, m in layers}
    rows = [{"name": name, "numel": m.weight.numel(), "zeros": zeros[name], "sparsity": zeros[name] / m.weight.numel()}
            for name, m in layers]
    numel, zeros = sum(r["numel"] for r in rows), sum(r["zeros"] for r in rows)
    report = {"method": "prune", "structured": False, "scope": scope, "steps": steps, "schedule": SCHEDULE,
              "target_sparsity": sparsity, "sparsity": zeros / numel, "pruned_numel": numel, "zeros": zeros,
              "stored": "per pruned weight: 1-bit mask of its non-zeros + their float32 values; the rest float32",
              "layers": rows, "rounds": rounds}
    return Compressed(model.eval(), tensors, {"method": "prune", "structured": False, "sparse": names}, report)


# -- structured -----------------------------------------------------------------------------------------
def _check_structured(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """Check every leaf module can be pruned structurally; return the classifier, the last conv or linear
    layer the forward pass runs (its outputs are the class scores, never pruned)."""
    names = {m: name for name, m in model.named_modules()}
    for name, m in model.named_modules():
        if isinstance(m, PredefinedSparseConv2d):
            raise CompressError(f"structured pruning cannot handle layer {name!r} (PredefinedSparseConv2d: its "
                                "fixed sparsity pattern is not re-indexed); use structured=False")
        if isinstance(m, nn.Conv2d) and m.groups > 1 and not m.groups == m.in_channels == m.out_channels:
            raise CompressError(f"structured pruning cannot handle layer {name!r} (grouped conv, groups="
                                f"{m.groups}); valid: groups=1 or depthwise convs")
        if not any(m.children()) and not isinstance(m, _STRUCTURED_LEAVES):
            raise CompressError(f"structured pruning cannot handle layer {name!r} ({type(m).__name__}: its "
                                "channel mapping is unknown to the tracer); use structured=False")
    ran: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, *_: ran.append(mod))
             for m in names if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not ran:
        raise CompressError(f"pruning needs Conv2d or Linear layers; {type(model).__name__} has none")
    return ran[-1]


def _graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's channel dependencies of ``model``, traced in eval mode (BatchNorm statistics stay).

    The example goes in a tuple: Torch-Pruning calls ``model(*example_inputs)`` first, which unpacks a bare
    tensor along its batch axis into one unbatched (C, H, W) image, and only on an exception retries with
    the tensor. A model without BatchNorm then ran (part of) an unbatched forward pass first (catsdogs-cnn:
    its convs, then Dropout2d warning about a 3-D input, until the dense layer failed), and one whose
    unbatched pass succeeds would be traced on it, its flatten then mapping channels to other features."""
    return tp.DependencyGraph().build_dependency(model.eval(), example_inputs=(example,))


def _apply_kept(model: nn.Module, kept: list[list], input_size: Sequence[int]) -> None:
    """Remove from ``model`` every channel of each named conv not in its kept list (original indices),
    with everything tied to it."""
    graph = _graph(model, torch.zeros(1, *input_size))
    for name, keep in kept:
        conv = model.get_submodule(name)
        drop = sorted(set(range(conv.out_channels)) - set(keep))
        if drop:
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()


def _layer_rows(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _compress_structured(model: nn.Module, fraction: float, steps: int, finetune: Finetune | None,
                         finetune_epochs: int, input_size: tuple[int, ...]) -> Compressed:
    example = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    classifier = _check_structured(model.eval(), example)
    if not any(isinstance(m, nn.Conv2d) and m is not classifier for m in model.modules()):
        raise CompressError(f"structured pruning needs a conv layer besides the classifier; "
                            f"{type(model).__name__} has none (use structured=False)")
    graph = _graph(model, example)
    names = {m: name for name, m in model.named_modules()}
    before, macs_before = _layer_rows(model), summarize(model, input_size).total_macs
    params_before = sum(p.numel() for p in model.parameters())
    importance = tp.importance.GroupMagnitudeImportance(p=1)
    kept: dict[str, list[int]] = {}  # root conv -> its kept channels, in the original indexing
    rounds = []
    for target, n_epochs in zip(sparsity_schedule(fraction, steps), finetune_split(finetune_epochs, steps)):
        model.eval()
        for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=[nn.Conv2d]):
            conv = group[0].dep.target.module
            original = before[names[conv]][1]
            keep = kept.setdefault(names[conv], list(range(original)))
            n_drop = min(round(target * original), original - 1) - (original - len(keep))
            if n_drop <= 0:
                continue
            drop = importance(group).argsort()[:n_drop].tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()
            dropped = set(drop)
            kept[names[conv]] = [k for i, k in enumerate(keep) if i not in dropped]
        rounds.append({"fraction": target, "finetune_epochs": n_epochs,
                       "history": _finetune(model, finetune, n_epochs)})
    model.eval()
    after = _layer_rows(model)
    tensors = {k: (v.float() if v.is_floating_point() else v).detach().cpu().clone()
               for k, v in model.state_dict().items()}
    layers = [{"name": name, "in_before": before[name][0], "in_after": after[name][0],
               "out_before": before[name][1], "out_after": after[name][1]} for name in before]
    report = {"method": "prune", "structured": True, "scope": "layer", "steps": steps, "schedule": SCHEDULE,
              "target_fraction": fraction, "importance": "group L1 norm (torch_pruning GroupMagnitudeImportance, p=1)",
              "classifier": names[classifier], "macs_before": macs_before,
              "macs_after": summarize(model, input_size).total_macs, "params_before": params_before,
              "params_after": sum(p.numel() for p in model.parameters()), "layers": layers, "rounds": rounds}
    meta = {"method": "prune", "structured": True, "input_size": list(input_size),
            "kept": [[name, keep] for name, keep in kept.items()]}
    return Compressed(model, tensors, meta, report)
