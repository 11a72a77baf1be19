"""Weight sharing (k-means per layer) and incremental network quantization (powers of two).

Both replace each ``nn.Conv2d``/``nn.Linear`` weight by a few values and store it as ``bits``-bit codes
(:func:`~cnnlab.compress.storage.pack_bits`); biases, BatchNorm and every other tensor stay float32.

**Weight sharing** (:func:`compress_cluster`; Han et al. 2016, *Deep Compression*, section 3): the
weights of a layer are clustered into ``2**bits`` shared values by 1-D k-means with linear initialisation
over ``[min, max]`` (the paper found it the best of three, since it keeps the few large weights that
matter most). Lloyd's algorithm is exact and cheap in one dimension: the clusters of sorted values are
contiguous runs, so after one sort each iteration is ``k`` binary searches and ``k`` differences of a
prefix sum, whatever the number of weights (scikit-learn's ``KMeans`` would be a new dependency doing
``n * k`` distance work per iteration for the same fixed point). Stored per layer: the float32 codebook
and the packed codes.

Fine-tuning keeps the sharing through a parametrization (``torch.nn.utils.parametrize``):
``weight = codebook[codes]`` with the codebook as the trained parameter and the codes fixed. Autograd
then gives each shared value the *sum* of its weights' gradients -- the paper's centroid gradient (its
eq. 3) -- and the run's optimizer steps the codebook with state per shared value. The alternative,
an ``after_step`` that resets each cluster to the mean of its weights, takes the mean of per-weight
AdamW steps (each normalised by its own moment estimates): not a step of any optimizer on the
codebook, and ~2 moment tensors of the weight's size for ``k`` free values. With the parametrization
the constraint also holds in every forward pass, not only after the step. The codebook is 1-D, so
cnnlab's optimizer puts it with the biases, without weight decay; the recipe's decoupled decay
(lr 3e-4 x 5e-3 per step when fine-tuning fmnist-cnn) would have scaled the shared values by ~0.9997
over an epoch.

**INQ** (:func:`compress_inq`; Zhou et al. 2017, *Incremental network quantization*): each weight
becomes ``0`` or ``+-2**n`` with ``n2 <= n <= n1``, ``n1 = floor(log2(4 s / 3))``, ``s = max|W|``
of the trained layer, ``n2 = n1 + 1 - 2**(b-1) / 2`` (``b`` bits, one of them for zero), rounding to
the nearest value (ties away from zero: the thresholds of the paper's eq. 4). At each of the
cumulative ``fractions`` the largest-magnitude weights not yet quantized are quantized and frozen;
the rest are retrained (``epochs_per_step`` epochs through ``finetune``); the final fraction 1.0
quantizes the rest, with no retraining after it. A frozen weight's gradient is zeroed by a tensor
hook and its value is restored after every step: AdamW's decoupled weight decay moves weights whose
gradient is zero. Stored per layer: the packed codes (0 = zero, ``1..E`` = ``+2**(n2+i-1)``,
``E+1..2E`` the negatives, ``E = 2**(b-2)``) and ``n1`` in ``meta``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from cnnlab.compress.base import CompressError, Compressed, Finetune
from cnnlab.compress.storage import pack_bits, unpack_bits
from cnnlab.layers import PredefinedSparseConv2d

__all__ = ["compress_cluster", "rebuild_cluster", "compress_inq", "rebuild_inq", "kmeans_1d", "inq_n1", "inq_values",
           "inq_codes"]

#: Lloyd iterations at most per layer. Measured on the trained fmnist-cnn, one thread: every layer
#: converges (no assignment changes) within it at 2-8 bits; the slowest, fc1 (1.6M weights) at 8 bits,
#: takes 7,729 iterations and 1.4 s (527 and 0.5 s at 4 bits, most of it the sort).
KMEANS_MAX_ITER = 10_000

_BITS = range(2, 9)


# -- shared helpers ----------------------------------------------------------------------------------
def _check_bits(bits: Any, what: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in _BITS:
        raise CompressError(f"bits must be an integer from 2 to 8 for {what}; got {bits!r}")
    return bits


def _layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """The layers whose weight is shared: every ``nn.Conv2d`` and ``nn.Linear`` (subclasses included)."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise CompressError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer whose weight could be "
                            "shared")
    for name, m in layers:
        if parametrize.is_parametrized(m):
            raise CompressError(f"layer {name!r} is parametrized (pruning masks, ...); weight sharing takes a plain "
                                "trained model")
    return layers


def _active(module: nn.Module) -> torch.Tensor | None:
    """The weight positions that exist: a pre-defined sparse conv's mask (its other weights are zero
    and stay zero), else None (all of them)."""
    return module.mask if isinstance(module, PredefinedSparseConv2d) else None


def _other_tensors(model: nn.Module, coded: set[str]) -> dict[str, torch.Tensor]:
    """Every state-dict entry but the coded weights: floating ones as float32, the rest (BatchNorm's
    ``num_batches_tracked``, a sparse conv's bool mask) as they are."""
    out = {}
    for key, t in model.state_dict().items():
        if key not in coded:
            t = t.detach().cpu()
            out[key] = (t.float() if t.is_floating_point() else t).contiguous()
    return out


def _layer(base: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    """``base``'s layer ``name``, which the artifact coded (rebuild)."""
    try:
        module = base.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise CompressError(f"layer {name!r} of the artifact is not an nn.Conv2d/nn.Linear of {type(base).__name__}; "
                            "rebuild from the architecture that was compressed")
    return module


def _load(model: nn.Module, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
          coded_suffixes: Sequence[str]) -> nn.Module:
    """Load the decoded ``weights`` and the stored other tensors into ``model`` (the same path for the
    compressed model and the rebuilt one, so both hold the same values in the same layout)."""
    state = {k: v for k, v in tensors.items() if not k.endswith(tuple(coded_suffixes))}
    state.update(weights)
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CompressError(f"the stored tensors do not fit {type(model).__name__}: missing {missing[:4]}, "
                            f"unexpected {extra[:4]}; rebuild from the architecture that was compressed")
    model.load_state_dict(state)
    return model.eval()


# -- weight sharing ----------------------------------------------------------------------------------
def kmeans_1d(x: torch.Tensor, k: int, max_iter: int = KMEANS_MAX_ITER) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's k-means of the values ``x`` (any shape) into ``k`` clusters, linearly initialised over
    ``[min, max]``; an empty cluster keeps its centroid.

    Returns ``(codebook, codes, iterations)``: ``codebook`` (k,) float32, sorted; ``codes`` int64 of
    ``x``'s shape, each value's nearest centroid (ties to the lower one); ``iterations`` run (fewer than
    ``max_iter`` means converged: one more would change no assignment). Computed in float64.
    """
    flat = x.detach().reshape(-1).double().cpu()
    xs = flat.sort().values
    prefix = torch.cat([xs.new_zeros(1), xs.cumsum(0)])
    n = xs.numel()
    centroids = torch.linspace(float(xs[0]), float(xs[-1]), k, dtype=torch.float64)
    ends = None
    iterations = 0
    while iterations < max_iter:
        # 1-D Lloyd keeps the centroids sorted (each is the mean of the run between its neighbours'
        # midpoints), so cluster j holds xs[ends[j-1]:ends[j]], cut at the midpoints.
        new_ends = torch.searchsorted(xs, (centroids[1:] + centroids[:-1]) / 2, right=True)
        if ends is not None and torch.equal(new_ends, ends):
            break
        ends = new_ends
        bounds = torch.cat([ends.new_zeros(1), ends, ends.new_full((1,), n)])
        counts = bounds[1:] - bounds[:-1]
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        iterations += 1
    codes = torch.bucketize(flat, (centroids[1:] + centroids[:-1]) / 2)
    return centroids.float(), codes.reshape(x.shape), iterations


class _SharedWeight(nn.Module):
    """Parametrization ``weight = codebook[codes]`` (zero outside ``active``): the codebook, shape (k,),
    is what trains; each shared value receives the sum of its weights' gradients."""

    def __init__(self, codes: torch.Tensor, active: torch.Tensor | None, codebook: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("active", active)
        self.register_buffer("initial", codebook)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        weight = codebook[self.codes]
        return weight if self.active is None else weight.masked_fill(~self.active, 0.0)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The codebook to start from: the k-means centroids (``weight`` is already ``codebook[codes]``)."""
        return self.initial.to(weight.dtype).clone()


_CLUSTER_SUFFIXES = (".weight.codebook", ".weight.codes")


def compress_cluster(model: nn.Module, *, bits: int, finetune: Finetune | None = None, finetune_epochs: int = 0,
                     lr_scale: float = 1.0) -> Compressed:
    """Share ``2**bits`` values per ``nn.Conv2d``/``nn.Linear`` weight (k-means), then optionally
    fine-tune the shared values for ``finetune_epochs`` epochs (codes fixed; module docstring).

    ``bits``: 2..8. ``lr_scale``: passed to ``finetune``. A pre-defined sparse conv's absent positions
    stay zero and are not clustered or stored. ``model`` is modified in place and returned in eval mode
    as ``Compressed.model``. ``report["layers"][name]``: bits, weights coded, clusters used (the others
    are empty), the codebook, k-means iterations.
    """
    bits = _check_bits(bits, "weight sharing")
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise CompressError(f"finetune_epochs must be an integer >= 0; got {finetune_epochs!r}")
    if finetune_epochs and finetune is None:
        raise CompressError(f"finetune_epochs={finetune_epochs} needs a finetune callable; pass finetune= or 0 epochs")
    layers = _layers(model)
    k = 2**bits
    codes_of: dict[str, torch.Tensor] = {}
    codebooks: dict[str, torch.Tensor] = {}
    report_layers: dict[str, dict[str, Any]] = {}
    for name, module in layers:
        active = _active(module)
        values = module.weight.detach() if active is None else module.weight.detach()[active]
        codebook, codes, iterations = kmeans_1d(values, k)
        codes_of[name], codebooks[name] = codes, codebook
        report_layers[name] = {"bits": bits, "weights": values.numel(), "kmeans_iterations": iterations,
                               "kmeans_converged": iterations < KMEANS_MAX_ITER}

    history: list[dict[str, Any]] = []
    if finetune_epochs:
        history = _finetune_codebooks(model, layers, codes_of, codebooks, finetune, finetune_epochs, lr_scale)

    tensors = _other_tensors(model, {f"{name}.weight" for name, _ in layers})
    for name, _ in layers:
        tensors[f"{name}.weight.codebook"] = codebooks[name]
        tensors[f"{name}.weight.codes"] = pack_bits(codes_of[name], bits)
        used = torch.bincount(codes_of[name].reshape(-1), minlength=k) > 0
        report_layers[name] |= {"clusters_used": int(used.sum()), "codebook": codebooks[name].tolist()}
    meta = {"bits": bits, "layers": [name for name, _ in layers]}
    report = {"method": "weight sharing (k-means, linear initialisation)", "bits": bits,
              "finetune_epochs": finetune_epochs, "finetune": history, "layers": report_layers}
    return Compressed(rebuild_cluster(model, tensors, meta), tensors, meta, report)


def _finetune_codebooks(model: nn.Module, layers: list[tuple[str, nn.Conv2d | nn.Linear]],
                        codes_of: dict[str, torch.Tensor], codebooks: dict[str, torch.Tensor], finetune: Finetune,
                        epochs: int, lr_scale: float) -> list[dict[str, Any]]:
    """Train the codebooks (codes fixed) through :class:`_SharedWeight`; updates ``codebooks``."""
    for name, module in layers:
        device, active = module.weight.device, _active(module)
        if active is None:
            full = codes_of[name].reshape(module.weight.shape)
        else:
            full = torch.zeros(module.weight.shape, dtype=torch.int64)
            full[active.cpu()] = codes_of[name]
        parametrize.register_parametrization(
            module, "weight", _SharedWeight(full.to(device), None if active is None else active.clone(),
                                            codebooks[name].to(device)))
    try:
        history = finetune(model, epochs, lr_scale=lr_scale)
        for name, module in layers:
            codebooks[name] = module.parametrizations.weight.original.detach().float().cpu().clone()
    finally:
        for _, module in layers:  # back to a plain weight (codebook[codes]); the caller reloads it anyway
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return history


def rebuild_cluster(base: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """The model :func:`compress_cluster` returned, from a fresh ``base`` of the same architecture."""
    bits = _check_bits(meta.get("bits"), "weight sharing")
    weights = {}
    for name in meta["layers"]:
        module = _layer(base, name)
        codebook = tensors[f"{name}.weight.codebook"]
        if isinstance(module, PredefinedSparseConv2d):
            active = tensors[f"{name}.mask"]
            weight = torch.zeros(module.weight.shape, dtype=codebook.dtype)
            weight[active] = codebook[unpack_bits(tensors[f"{name}.weight.codes"], bits, int(active.sum()))]
        else:
            codes = unpack_bits(tensors[f"{name}.weight.codes"], bits, module.weight.numel())
            weight = codebook[codes].reshape(module.weight.shape)
        weights[f"{name}.weight"] = weight
    return _load(base, weights, tensors, _CLUSTER_SUFFIXES)


# -- incremental network quantization ----------------------------------------------------------------
def inq_n1(weight: torch.Tensor) -> int:
    """``n1 = floor(log2(4 s / 3))``, ``s = max|weight|`` (Zhou et al. 2017, section 2.1); 0 for an
    all-zero weight (whose codes are all zero, so ``n1`` does not matter). Exact at powers of two."""
    s = float(weight.detach().abs().max())
    return math.frexp(4 * s / 3)[1] - 1 if s > 0 else 0


def inq_values(n1: int, bits: int) -> torch.Tensor:
    """The float32 value of each code: ``[0, +2**n2, ..., +2**n1, -2**n2, ..., -2**n1]``,
    ``n2 = n1 + 1 - 2**(bits-2)``; ``2**(bits-1) + 1`` values (exact powers of two)."""
    e = 2 ** (bits - 2)
    mags = [2.0 ** (n1 + 1 - e + i) for i in range(e)]
    return torch.tensor([0.0, *mags, *(-m for m in mags)], dtype=torch.float32)


def inq_codes(weight: torch.Tensor, n1: int, bits: int) -> torch.Tensor:
    """Each weight's code in :func:`inq_values`: the nearest value, ties away from zero (|w| at or above
    the midpoint of two neighbouring magnitudes takes the larger, the paper's eq. 4); int64, ``weight``'s
    shape. Magnitudes above ``2**n1`` take ``2**n1``."""
    e = 2 ** (bits - 2)
    mags = inq_values(n1, bits)[1:e + 1].double()
    lower = torch.cat([mags.new_zeros(1), mags[:-1]])
    index = torch.bucketize(weight.detach().abs().double(), ((lower + mags) / 2).to(weight.device), right=True)
    return torch.where(weight < 0, index + e, index).masked_fill(index == 0, 0)


def _check_fractions(fractions: Any) -> tuple[float, ...]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if (not values or values[-1] != 1.0 or values[0] <= 0
            or any(b <= a for a, b in zip(values, values[1:]))):
        raise CompressError(f"fractions must increase strictly within (0, 1] and end at 1.0 (e.g. 0.5,0.75,0.875,1); "
                            f"got {fractions!r}")
    return values


class _InqLayer:
    """One layer's INQ state: which weights are frozen, their codes, and the values of those codes."""

    def __init__(self, module: nn.Conv2d | nn.Linear, bits: int) -> None:
        self.module = module
        self.n1 = inq_n1(module.weight)
        self.table = inq_values(self.n1, bits).to(module.weight.device)
        self.codes = torch.zeros(module.weight.shape, dtype=torch.int64, device=module.weight.device)
        self.frozen = torch.zeros(module.weight.shape, dtype=torch.bool, device=module.weight.device)

    def quantize_to(self, fraction: float, bits: int) -> None:
        """Quantize and freeze the largest-magnitude weights not yet frozen, up to ``fraction`` of all."""
        weight = self.module.weight.detach()
        target = weight.numel() if fraction == 1.0 else round(fraction * weight.numel())
        new = target - int(self.frozen.sum())
        if new <= 0:
            return
        magnitude = weight.abs().masked_fill(self.frozen, -1.0).reshape(-1)
        pick = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        pick[magnitude.topk(new).indices] = True
        pick = pick.reshape(weight.shape)
        self.codes = torch.where(pick, inq_codes(weight, self.n1, bits), self.codes)
        self.frozen |= pick
        self.restore()

    def restore(self) -> None:
        """Set the frozen weights to their quantized values (after a step moved them)."""
        with torch.no_grad():
            weight = self.module.weight
            weight.copy_(torch.where(self.frozen, self.table[self.codes], weight))


def compress_inq(model: nn.Module, *, bits: int = 5, fractions: Sequence[float] = (0.5, 0.75, 0.875, 1.0),
                 finetune: Finetune | None = None, epochs_per_step: int = 1, lr_scale: float = 1.0) -> Compressed:
    """Incremental network quantization of every ``nn.Conv2d``/``nn.Linear`` weight to ``{0, +-2**n}``
    (module docstring).

    ``bits``: 2..8 (the paper: 2..5; ``2**(bits-1)`` nonzero values plus zero). ``fractions``: the
    cumulative share of each layer's weights quantized at each step, strictly increasing, ending at 1.0.
    After every step but the last, ``finetune(model, epochs_per_step)`` retrains the weights not yet
    quantized; with ``finetune=None`` or ``epochs_per_step=0`` nothing retrains and the result is
    one-shot power-of-two quantization. ``lr_scale``: passed to ``finetune``. ``model`` is modified in
    place. ``report["layers"][name]``: n1, n2, share of zeros.
    """
    bits = _check_bits(bits, "INQ")
    steps = _check_fractions(fractions)
    if isinstance(epochs_per_step, bool) or not isinstance(epochs_per_step, int) or epochs_per_step < 0:
        raise CompressError(f"epochs_per_step must be an integer >= 0; got {epochs_per_step!r}")
    layers = _layers(model)
    state = {name: _InqLayer(module, bits) for name, module in layers}

    def after_step(_: nn.Module) -> None:
        for layer in state.values():
            layer.restore()

    report_steps = []
    for fraction in steps:
        for layer in state.values():
            layer.quantize_to(fraction, bits)
        history: list[dict[str, Any]] = []
        if fraction < 1.0 and finetune is not None and epochs_per_step:
            # frozen weights get no gradient (none enters the optimizer's state or a gradient norm), and
            # after_step restores them: AdamW's decoupled weight decay moves them even so
            hooks = [layer.module.weight.register_hook(lambda g, frozen=layer.frozen: g.masked_fill(frozen, 0.0))
                     for layer in state.values()]
            try:
                history = finetune(model, epochs_per_step, lr_scale=lr_scale, after_step=after_step)
            finally:
                for hook in hooks:
                    hook.remove()
        report_steps.append({"fraction": fraction, "finetune": history})

    tensors = _other_tensors(model, {f"{name}.weight" for name in state})
    report_layers = {}
    for name, layer in state.items():
        tensors[f"{name}.weight.codes"] = pack_bits(layer.codes.cpu(), bits)
        report_layers[name] = {"bits": bits, "n1": layer.n1, "n2": layer.n1 + 1 - 2 ** (bits - 2),
                               "zero_share": float((layer.codes == 0).float().mean())}
    meta = {"bits": bits, "layers": {name: layer.n1 for name, layer in state.items()}}
    report = {"method": "incremental network quantization (powers of two)", "bits": bits, "fractions": list(steps),
              "epochs_per_step": epochs_per_step if finetune is not None else 0, "steps": report_steps,
              "layers": report_layers}
    return Compressed(rebuild_inq(model, tensors, meta), tensors, meta, report)


def rebuild_inq(base: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """The model :func:`compress_inq` returned, from a fresh ``base`` of the same architecture."""
    bits = _check_bits(meta.get("bits"), "INQ")
    weights = {}
    for name, n1 in meta["layers"].items():
        module = _layer(base, name)
        codes = unpack_bits(tensors[f"{name}.weight.codes"], bits, module.weight.numel())
        weights[f"{name}.weight"] = inq_values(int(n1), bits)[codes].reshape(module.weight.shape)
    return _load(base, weights, tensors, (".weight.codes",))
