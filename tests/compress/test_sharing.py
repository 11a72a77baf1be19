"""Weight sharing (k-means) and INQ: the values they allow, the artifact, bit-identical rebuilds,
fine-tuning that keeps the constraint, and settings they refuse."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from cnnlab.compress.base import CompressError
from cnnlab.compress.finetune import make_finetune
from cnnlab.compress.sharing import (compress_cluster, compress_inq, inq_codes, inq_n1, inq_values, kmeans_1d,
                                     rebuild_cluster, rebuild_inq)
from cnnlab.compress.storage import artifact_bytes, read_artifact, write_artifact
from cnnlab.layers import PredefinedSparseConv2d
from cnnlab.models import create_model
from cnnlab.train import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

METHODS = {"cluster": (compress_cluster, rebuild_cluster), "inq": (compress_inq, rebuild_inq)}


def small_net(seed: int = 0, sparse: bool = False) -> nn.Sequential:
    """conv -> ReLU -> BN -> conv (or a pre-defined sparse conv) -> ReLU -> pool -> linear, with
    BatchNorm statistics that are not the defaults."""
    torch.manual_seed(seed)
    conv = PredefinedSparseConv2d(8, 8, 3, k=4) if sparse else nn.Conv2d(8, 8, 3, padding=1)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8), conv, nn.ReLU(),
                        nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * 7 * 7, 10))
    with torch.no_grad():
        net(torch.randn(16, 1, 28, 28))  # training mode: running statistics move
    return net.eval()


def weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def x_batch(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def assert_rebuilds(result, rebuild, base: nn.Module, tmp_path) -> None:
    """Through the artifact on disk, the fresh ``base`` gives the very outputs of ``result.model``."""
    write_artifact(tmp_path / "m.cnnz", result.tensors, result.meta)
    tensors, meta = read_artifact(tmp_path / "m.cnnz")
    rebuilt = rebuild(base, tensors, meta)
    with torch.no_grad():
        assert torch.equal(rebuilt(x_batch()), result.model(x_batch()))
    assert not rebuilt.training and not result.model.training


# -- k-means -------------------------------------------------------------------------------------------
def dense_lloyd(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook Lloyd with an n x k distance matrix, the same initialisation and stopping rule."""
    c = torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64)
    codes = None
    while True:
        new = (x[:, None] - c[None]).abs().argmin(1)  # ties: the first (lower) centroid
        if codes is not None and torch.equal(new, codes):
            return c, codes
        codes = new
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, x)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)


def test_kmeans_1d_is_lloyd_with_linear_initialisation():
    g = torch.Generator().manual_seed(0)
    # a wide gap leaves clusters of the linear initialisation empty
    x = torch.cat([torch.randn(3000, generator=g, dtype=torch.float64) * 0.05, torch.tensor([2.0, 2.1])])
    codebook, codes, iterations = kmeans_1d(x.float(), 16)
    ref_c, ref_codes = dense_lloyd(x.float().double(), 16)
    assert torch.equal(codes, ref_codes)
    assert torch.allclose(codebook.double(), ref_c, rtol=0, atol=1e-6)
    assert 1 < iterations < 10_000
    assert len(codes.unique()) < 16  # some clusters stayed empty and kept their initial centroid
    assert torch.all(codebook[1:] >= codebook[:-1])


def test_kmeans_1d_recovers_evenly_spaced_levels_exactly():
    levels = torch.linspace(-1, 1, 8)
    x = levels[torch.randint(0, 8, (50, 20), generator=torch.Generator().manual_seed(0))]
    x[0, :8] = levels  # every level present, the extremes included
    codebook, codes, iterations = kmeans_1d(x, 8)
    assert codes.shape == x.shape
    assert torch.equal(codebook[codes], x)
    assert iterations == 1


# -- weight sharing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_cluster_shares_2_pow_bits_values_and_rebuilds_bit_identically(sparse, tmp_path):
    model = small_net(sparse=sparse)
    original = {n: m.weight.detach().clone() for n, m in weighted(model).items()}
    result = compress_cluster(model, bits=3)
    for name, module in weighted(result.model).items():
        weight = module.weight.detach()
        layer = result.report["layers"][name]
        sparse_conv = isinstance(module, PredefinedSparseConv2d)
        active = module.mask if sparse_conv else torch.ones_like(weight, dtype=torch.bool)
        assert torch.all(weight[~active] == 0)
        assert len(weight[active].unique()) == layer["clusters_used"] <= 8
        assert set(weight[active].unique().tolist()) <= set(layer["codebook"])
        assert layer["bits"] == 3 and layer["weights"] == int(active.sum())
        # each weight took a nearby shared value
        assert (weight - original[name]).abs().max() < (original[name].max() - original[name].min()) / 7
        packed = result.tensors[f"{name}.weight.codes"]
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(int(active.sum()) * 3 / 8)
        assert result.tensors[f"{name}.weight.codebook"].dtype == torch.float32
        assert f"{name}.weight" not in result.tensors
    assert result.tensors["2.running_var"].dtype == torch.float32
    assert_rebuilds(result, rebuild_cluster, small_net(seed=5, sparse=sparse), tmp_path)


def test_cluster_4_bits_stores_about_an_eighth_of_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    result = compress_cluster(model, bits=4)
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert artifact_bytes(result.tensors, result.meta) < float_bytes / 7


def test_cluster_finetuning_trains_the_codebook_and_keeps_the_codes(tiny_data, tmp_path):
    cfg = TrainConfig(batch_size=32, lr=0.01, weight_decay=0.005, augment=False).validate()
    finetune = make_finetune(cfg, tiny_data, max_steps=3, log=lambda _: None)
    plain = compress_cluster(small_net(), bits=2)
    tuned = compress_cluster(small_net(), bits=2, finetune=finetune, finetune_epochs=1)
    assert len(tuned.report["finetune"]) == 1
    for name, module in weighted(tuned.model).items():
        assert not parametrize.is_parametrized(module)
        assert torch.equal(tuned.tensors[f"{name}.weight.codes"], plain.tensors[f"{name}.weight.codes"])
        codebook = tuned.tensors[f"{name}.weight.codebook"]
        assert not torch.equal(codebook, plain.tensors[f"{name}.weight.codebook"])
        assert set(module.weight.detach().unique().tolist()) <= set(codebook.tolist())
    assert not torch.equal(tuned.tensors["2.running_mean"], plain.tensors["2.running_mean"])
    assert_rebuilds(tuned, rebuild_cluster, small_net(seed=5), tmp_path)


@pytest.mark.parametrize("bits", [1, 9, 4.0, True, "4"])
def test_cluster_refuses_bits_outside_2_to_8(bits):
    with pytest.raises(CompressError, match=rf"2 to 8.*got {bits!r}".replace("'", ".")):
        compress_cluster(small_net(), bits=bits)


def test_cluster_refuses_finetune_epochs_without_finetune_and_models_without_layers():
    with pytest.raises(CompressError, match="finetune_epochs=2"):
        compress_cluster(small_net(), bits=4, finetune_epochs=2)
    with pytest.raises(CompressError, match="finetune_epochs.*-1"):
        compress_cluster(small_net(), bits=4, finetune_epochs=-1)
    with pytest.raises(CompressError, match="no nn.Conv2d or nn.Linear"):
        compress_cluster(nn.Sequential(nn.ReLU()), bits=4)


def test_rebuild_refuses_another_architecture():
    result = compress_cluster(small_net(), bits=4)
    with pytest.raises(CompressError, match="layer '3'"):
        rebuild_cluster(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1)), result.tensors, result.meta)


# -- INQ ---------------------------------------------------------------------------------------------
def test_inq_n1_and_values_follow_the_paper():
    assert inq_n1(torch.tensor([0.1, -0.3])) == math.floor(math.log2(4 * 0.3 / 3)) == -2
    assert inq_n1(torch.tensor([0.75])) == 0  # 4 s / 3 = 1 exactly: no rounding below
    assert inq_n1(torch.tensor([0.7499])) == -1
    for bits in range(2, 9):
        values = inq_values(-2, bits)
        n2 = -2 + 1 - 2 ** (bits - 1) // 2
        positive = sorted(v for v in values.tolist() if v > 0)
        assert len(values) == 2 ** (bits - 1) + 1 <= 2**bits
        assert positive == [2.0**n for n in range(n2, -1)]
        assert sorted(-v for v in values.tolist() if v < 0) == positive and values[0] == 0


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_inq_codes_round_to_the_nearest_value_ties_away_from_zero(bits):
    values = inq_values(-1, bits)
    w = torch.randn(5000, generator=torch.Generator().manual_seed(bits)) * 0.2
    q = values[inq_codes(w, -1, bits)]
    assert torch.all((q - w).abs() <= (values[None] - w[:, None]).abs().min(1).values)
    smallest = float(values[values > 0].min())
    mids = torch.tensor([smallest / 2, 0.75 * 0.5, -0.75 * 0.5, 10.0])  # at midpoints, and above 2**n1
    assert values[inq_codes(mids, -1, bits)].tolist() == [smallest, 0.5, -0.5, 0.5]
    assert values[inq_codes(torch.tensor([smallest / 2 * 0.999]), -1, bits)].tolist() == [0.0]


def test_inq_quantizes_incrementally_and_frozen_weights_do_not_move(tiny_data, tmp_path):
    cfg = TrainConfig(batch_size=32, lr=0.01, weight_decay=0.05, augment=False).validate()
    real = make_finetune(cfg, tiny_data, max_steps=3, log=lambda _: None)
    calls = []

    def recording(model, epochs, *, lr_scale=1.0, after_step=None):
        before = {n: m.weight.detach().clone() for n, m in weighted(model).items()}
        history = real(model, epochs, lr_scale=lr_scale, after_step=after_step)
        after = {n: m.weight.detach().clone() for n, m in weighted(model).items()}
        model.zero_grad()
        model(x_batch()).square().sum().backward()
        for name, module in weighted(model).items():
            frozen = before[name] == after[name]
            assert torch.all(module.weight.grad[frozen] == 0) and module.weight.grad[~frozen].abs().sum() > 0
        model.zero_grad()
        calls.append((before, after))
        return history

    model = small_net()
    original = {n: m.weight.detach().clone() for n, m in weighted(model).items()}
    n1 = {n: inq_n1(w) for n, w in original.items()}
    result = compress_inq(model, bits=4, finetune=recording, epochs_per_step=1)
    assert len(calls) == 3
    for (before, after), fraction in zip(calls, (0.5, 0.75, 0.875)):
        for name, w in before.items():
            frozen = before[name] == after[name]
            assert int(frozen.sum()) == round(fraction * w.numel()), name  # the rest moved (AdamW decay)
            assert set(w[frozen].unique().tolist()) <= set(inq_values(n1[name], 4).tolist())
    first = calls[0][0]
    for name, w in original.items():
        frozen = first[name] == calls[0][1][name]
        assert w[frozen].abs().min() >= w[~frozen].abs().max()  # the largest magnitudes went first
    for name, module in weighted(result.model).items():
        assert set(module.weight.detach().unique().tolist()) <= set(inq_values(n1[name], 4).tolist())
        layer = result.report["layers"][name]
        assert (layer["n1"], layer["n2"]) == (n1[name], n1[name] - 3)
        assert layer["zero_share"] == pytest.approx(float((module.weight == 0).float().mean()))
    assert [s["fraction"] for s in result.report["steps"]] == [0.5, 0.75, 0.875, 1.0]
    assert result.report["steps"][-1]["finetune"] == []
    assert_rebuilds(result, rebuild_inq, small_net(seed=5), tmp_path)


def test_inq_without_finetuning_is_one_shot_power_of_two_rounding(tmp_path):
    model = small_net()
    expected = {n: inq_values(inq_n1(m.weight), 5)[inq_codes(m.weight, inq_n1(m.weight), 5)]
                for n, m in weighted(model).items()}
    result = compress_inq(model, bits=5)
    for name, module in weighted(result.model).items():
        assert torch.equal(module.weight.detach(), expected[name])
    assert result.tensors["0.weight.codes"].numel() == math.ceil(8 * 9 * 5 / 8)
    assert_rebuilds(result, rebuild_inq, small_net(seed=5), tmp_path)


@pytest.mark.parametrize("fractions", [(), (0.5,), (0.5, 0.5, 1.0), (0.0, 1.0), (0.5, 1.2), "abc"])
def test_inq_refuses_fractions_that_do_not_increase_to_1(fractions):
    with pytest.raises(CompressError, match="fractions.*got"):
        compress_inq(small_net(), fractions=fractions)


def test_inq_refuses_bad_bits_and_epochs():
    with pytest.raises(CompressError, match="2 to 8.*got 1"):
        compress_inq(small_net(), bits=1)
    with pytest.raises(CompressError, match="epochs_per_step.*-1"):
        compress_inq(small_net(), epochs_per_step=-1)


# -- cnnlab's models -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fmnist-cnn", "mlp", "gap-cnn", "vgg-small", "resnet-small", "fmnist-mobile",
                                  "inception-small"])
@pytest.mark.parametrize("method", ["cluster", "inq"])
def test_registered_models_compress_and_rebuild(name, method, tmp_path):
    compress, rebuild = METHODS[method]
    torch.manual_seed(0)
    result = compress(create_model(name).eval(), bits=2)
    torch.manual_seed(1)
    assert_rebuilds(result, rebuild, create_model(name), tmp_path)
