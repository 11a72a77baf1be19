"""Every compression method on every registered cnnlab model (the table timm's tests make over
``list_models()``): compress a freshly built model with the method's own ``compress_<method>`` (no
training, no data: random weights, random BatchNorm statistics, random calibration batches), write the
artifact with :func:`~cnnlab.compress.storage.write_artifact`, read it back, rebuild it with
``rebuild_<method>`` from a fresh model of the same spec (other random weights), and check that the
rebuilt model computes what the compressed one does, bit for bit.

A pair a method cannot take is listed in :data:`REFUSED` with the reason, and must be refused with a
one-line :class:`~cnnlab.compress.CompressError` naming it; every other pair must work."""

from __future__ import annotations

import importlib
import inspect
import lzma
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

from cnnlab.compress import CompressError
from cnnlab.compress import storage
from cnnlab.compress.run import METHODS
from cnnlab.models import build_from_spec, create_model, list_models, model_info, model_spec
from tests.compress.models import randomize_bn

pytestmark = pytest.mark.usefixtures("single_thread")

#: The registry's own models (``list_models()`` without the torchvision ``tv:`` zoo).
MODELS = list_models()

#: Constructor arguments that keep a model fast to compress (seconds, on one thread); the rest are its
#: defaults, its input size the registry's. Dense-head fmnist variants: ``fmnist-cnn``'s 3136x512 dense
#: layer (1.6M weights, 1.5 s per method to prune, cluster or write) shrinks to 3136x32; the layer kinds,
#: names and the input size stay. ``fmnist-cnn`` itself has no such argument and keeps its size.
#: ``catsdogs-cnn`` at 3x150x150 has a 32768x512 dense layer (23M weights; 40 s to prune and write): 24 is the
#: smallest ``image_size`` it takes (dense 512x512); its 6.4M conv weights stay, 2-5 s per method.
#: ``rf-demo`` (9,408 conv weights) is fast at its 3x256x256.
SMALL: dict[str, dict[str, Any]] = {
    "catsdogs-cnn": {"image_size": 24},
    "fmnist-separable": {"hidden": 32},
    "fmnist-grouped": {"hidden": 32},
    "fmnist-shuffle": {"hidden": 32},
    "fmnist-sparse": {"hidden": 32},
}


def _calibration(size: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(8, *size, generator=g) for _ in range(2)]


#: variant -> (method in METHODS, its settings; ``size`` is the model's input size (C, H, W)).
VARIANTS: dict[str, tuple[str, Callable[[tuple[int, ...]], dict[str, Any]]]] = {
    "prune": ("prune", lambda size: {"sparsity": 0.5}),
    "prune-structured": ("prune", lambda size: {"sparsity": 0.5, "structured": True, "input_size": size}),
    "quantize": ("quantize", lambda size: {"calibration": _calibration(size)}),
    "cluster": ("cluster", lambda size: {"bits": 4}),
    "inq": ("inq", lambda size: {"bits": 5}),
    "binarize-bwn": ("binarize", lambda size: {"mode": "bwn"}),
    "binarize-xnor": ("binarize", lambda size: {"mode": "xnor"}),
}

_GROUPED = r"structured pruning cannot handle layer '.*' \(grouped conv, groups=4\)"
_SPARSE_CONV = r"structured pruning cannot handle layer '.*' \(PredefinedSparseConv2d"
_NO_CONV = r"structured pruning needs a conv layer besides the classifier; .* has none"
_SPARSE_BINARY = r"cannot binarize layer .*: PredefinedSparseConv2d is not a plain Conv2d"
_ONE_LAYER = r"nothing to binarize: RFDemo's layers \(features.conv\) are only its first and last"
_RELU_FED = r"mode 'xnor' cannot binarize the input of layer .*: it comes from ReLU .* and is never negative"

#: (model, variant) -> what the CompressError's message says (a regex). Every pair not here must work.
REFUSED: dict[tuple[str, str], str] = {
    # Torch-Pruning would have to re-index each group of a grouped conv (4 groups: the kept channels
    # must stay balanced across them); structured pruning takes groups=1 and depthwise convs only.
    ("fmnist-grouped", "prune-structured"): _GROUPED,
    ("fmnist-shuffle", "prune-structured"): _GROUPED,  # the same grouped convs, each before a shuffle
    # a pre-defined sparse conv's fixed kernel pattern (its mask buffer) is not re-indexed by the tracer
    ("fmnist-sparse", "prune-structured"): _SPARSE_CONV,
    # the classifier (the last layer) is never pruned, and these have no other conv: the MLP has only
    # dense layers, rf-demo one conv (its output is the feature map)
    ("mlp", "prune-structured"): _NO_CONV,
    ("rf-demo", "prune-structured"): _NO_CONV,
    # ChannelShuffle.forward branches on its input's channel count and memory format, which torch.fx
    # cannot trace; the layer is named (tests/compress/test_quantize.py::test_untraceable_layer_is_named
    # holds this refusal as its example of an untraceable layer)
    ("fmnist-shuffle", "quantize"): r"layer features\.block1\.conv2\.shuffle \(ChannelShuffle\) cannot be traced "
                                    r"for quantization",
    # binarizing a pre-defined sparse conv's weight would fill its designed zeros with +-alpha
    ("fmnist-sparse", "binarize-bwn"): _SPARSE_BINARY,
    ("fmnist-sparse", "binarize-xnor"): _SPARSE_BINARY,
    # rf-demo's one conv is both its first and its last layer, which stay float (XNOR-Net's rule)
    ("rf-demo", "binarize-bwn"): _ONE_LAYER,
    ("rf-demo", "binarize-xnor"): _ONE_LAYER,
    # XNOR binarizes each layer's input; these feed convs or dense layers straight from a ReLU, whose
    # output is never negative: sign(x) = +1 everywhere (fmnist-cnn and its variants put a BatchNorm
    # after each ReLU, so XNOR takes them)
    ("catsdogs-cnn", "binarize-xnor"): _RELU_FED,
    ("gap-cnn", "binarize-xnor"): _RELU_FED,
    ("inception-small", "binarize-xnor"): _RELU_FED,
    ("mlp", "binarize-xnor"): _RELU_FED,
    ("resnet-small", "binarize-xnor"): _RELU_FED,
    ("vgg-small", "binarize-xnor"): _RELU_FED,
}


@pytest.fixture(autouse=True)
def fast_xz(monkeypatch):
    """The same xz format, written with LZMA2's fastest settings: random weights do not compress, and at
    preset 6 (or even 0) xz took most of catsdogs-cnn's seconds."""
    fastest = [{"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 4096, "nice_len": 2, "depth": 1,
                "mf": lzma.MF_HC3}]
    monkeypatch.setattr(storage, "_XZ", {"format": lzma.FORMAT_XZ, "filters": fastest})


def _functions(method: str) -> tuple[Callable[..., Any], Callable[..., nn.Module]]:
    module = importlib.import_module(METHODS[method][0])
    return getattr(module, f"compress_{method}"), getattr(module, f"rebuild_{method}")


def _no_finetuning(compress: Callable[..., Any]) -> dict[str, Any]:
    """The fine-tuning arguments ``compress`` takes, set to none: no training."""
    params = inspect.signature(compress).parameters
    out: dict[str, Any] = {"finetune": None} if "finetune" in params else {}
    out |= {k: 0 for k in ("finetune_epochs", "epochs_per_step") if k in params}
    return out


def _input_size(name: str) -> tuple[int, ...]:
    c, h, w = model_info(name).input_size
    size = SMALL.get(name, {}).get("image_size")
    return (c, size, size) if size is not None else (c, h, w)


def _build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(create_model(name, **SMALL.get(name, {})), seed, negative=0.125)  # about one in eight


def test_the_table_covers_every_method_and_names_only_real_pairs():
    assert {method for method, _ in VARIANTS.values()} == set(METHODS)  # a new method needs its rows
    assert not [n for n in MODELS if n.startswith("tv:")] and len(MODELS) >= 14
    assert set(SMALL) <= set(MODELS)
    assert {model for model, _ in REFUSED} <= set(MODELS) and {v for _, v in REFUSED} <= set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", MODELS)
def test_compress_write_rebuild(name, variant, tmp_path):
    method, settings = VARIANTS[variant]
    compress, rebuild = _functions(method)
    size = _input_size(name)
    model = _build(name, seed=0)
    kwargs = settings(size) | _no_finetuning(compress)
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(3))
    if (name, variant) in REFUSED:
        with pytest.raises(CompressError, match=REFUSED[(name, variant)]) as info:
            compress(model, **kwargs)
        assert "\n" not in str(info.value)
        return

    with torch.no_grad():
        float_shape = model(x).shape
    result = compress(model, **kwargs)
    path = tmp_path / storage.ARTIFACT
    storage.write_artifact(path, result.tensors, result.meta)
    tensors, meta = storage.read_artifact(path)
    base = build_from_spec(model_spec(_build(name, seed=1)))  # other weights: the artifact must hold them all
    rebuilt = rebuild(base, tensors, meta)

    with torch.no_grad():
        expected = result.model(x)
        # exactly, for every method: the rebuild loads the very tensors the compressed model computes with
        # (decoded sparse values, codebook values, powers of two, +-alpha, and for int8 the same integer
        # values and scales, which pack into the same kernels), one thread, the same input
        assert torch.equal(rebuilt(x), expected)
        x_cl = x.contiguous(memory_format=torch.channels_last)  # as `cnnlab eval` feeds a channels-last run
        assert torch.equal(rebuilt(x_cl), result.model(x_cl))
    assert expected.dtype == torch.float32 and bool(expected.isfinite().all())
    assert expected.shape == float_shape  # float input in, the float model's output out


def test_structured_pruning_traces_the_batched_example():
    """Torch-Pruning calls ``model(*example_inputs)``: given the bare (1, C, H, W) tensor it first ran an
    unbatched (C, H, W) forward pass (catsdogs-cnn, which has no BatchNorm to fail at once, ran its convs
    and warned from Dropout2d about a 3-D input) and traced the batched one only after an exception."""
    from cnnlab.compress.prune import compress_prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Dropout2d(0.5), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 24 * 24, 10))
    seen: list[int] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].dim()))
    result = compress_prune(model, sparsity=0.5, structured=True, input_size=(1, 28, 28))
    assert seen and set(seen) == {4}
    assert [m.out_channels for m in result.model if isinstance(m, nn.Conv2d)] == [4, 4]  # the Linear classifier stays
