"""Transfer learning in training: the source model of ``cnnlab train --from RUN|tv:NAME`` transferred to
a dataset (:mod:`cnnlab.models.transfer` does the model surgery), and ``--extract-features``.

A source run's images were normalised with its training set's mean and std; a transferred model sees
the new images normalised the same way (when the channels match), because its frozen layers were
trained on inputs of that scale. A torchvision source's images are normalised with the new dataset's
own statistics (cnnlab does not know which were used to train a weights file; ImageNet's are close to
any photo collection's); with ``--pretrained`` the weights' own (torchvision's metadata says which).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from cnnlab._io import atomic_path
from cnnlab._outdir import check_output_file
from cnnlab.data import BatchLoader, DataSplits
from cnnlab.models import ZOO_PREFIX, create_model, has_conv2d, model_entrypoint, transfer
from cnnlab.train.config import ConfigError, TrainConfig
from cnnlab.train.device import resolve_device
from cnnlab.train.rundir import RunDir, load_run

__all__ = ["source_name", "build_transfer_model", "extract_features"]


def source_name(cfg: TrainConfig) -> str:
    """The architecture of ``cfg.source`` (a run's model name, or ``tv:NAME``), checked before any data is
    loaded: the run exists and is not compressed, a torchvision source has a weights file."""
    src = cfg.source
    if src is None:
        raise ConfigError("no --from source given")
    if src.startswith(ZOO_PREFIX):
        model_entrypoint(src)  # an unknown name: the usual error listing the valid ones
        if cfg.weights is not None and cfg.pretrained is not None:
            raise ConfigError("--weights and --pretrained both give the weights of the --from source; use one")
        if cfg.pretrained is not None:
            return src
        if cfg.weights is None:
            raise ConfigError(f"--from {src} needs --pretrained [WEIGHTS] (torchvision's published weights, from torch "
                              "hub's cache or downloaded) or --weights PATH (a local .safetensors or .pth)")
        if not Path(cfg.weights).is_file():
            raise ConfigError(f"--weights {cfg.weights}: no such file")
        return src
    run = RunDir(Path(src))
    if not run.path.is_dir():
        raise ConfigError(f"--from {src}: not a run directory, nor tv:NAME (a torchvision model, with --weights)")
    if cfg.weights is not None or cfg.pretrained is not None:
        raise ConfigError(f"--weights and --pretrained apply to --from tv:NAME; the run {src} brings its own weights")
    spec = run.read_json("model.json")
    if "compression" in spec:
        raise ConfigError(f"--from {src}: a compressed run ({spec['compression'].get('method')}) cannot be a transfer "
                          "source; use the float run it came from")
    return spec["name"]


def build_transfer_model(cfg: TrainConfig, data: DataSplits, num_classes: int | None = None
                         ) -> tuple[nn.Module, DataSplits]:
    """``cfg.source`` with its weights, transferred (:func:`cnnlab.models.transfer`) to ``data``'s image size
    and ``num_classes`` (default: ``data``'s; 0: no new layer, the model outputs features), and ``data`` with
    the normalisation it is to be seen with (the source run's mean and std when the channels match)."""
    source_name(cfg)
    src_data: dict[str, Any] = {}
    if cfg.source.startswith(ZOO_PREFIX):
        model = create_model(cfg.source, weights=cfg.weights, pretrained=cfg.pretrained)
    else:
        loaded = load_run(cfg.source)
        model, src_data = loaded.model, loaded.data
    transfer(model, data.num_classes if num_classes is None else num_classes, (data.in_channels, *data.image_size),
             head=cfg.head, freeze=cfg.freeze, source=cfg.source,
             weights=cfg.weights if cfg.pretrained is None else getattr(model, "cnnlab_pretrained").name)
    known = getattr(model, "cnnlab_pretrained", None)
    if known is not None and data.in_channels == 3:  # --pretrained: the weights' own normalisation (ImageNet's)
        t = known.transforms()
        data = dataclasses.replace(data, mean=tuple(t.mean), std=tuple(t.std),
                                   info={**data.info, "normalization": f"the weights' ({known.name})"})
    elif src_data.get("in_channels") == data.in_channels and "mean" in src_data and "std" in src_data:
        data = dataclasses.replace(data.normalised_as(src_data),
                                   info={**data.info, "normalization": f"the source run's ({cfg.source})"})
    return model, data


def _is_features_file(path: Path) -> bool:
    """Whether ``path`` is an ``.npz`` that :func:`extract_features` wrote (a zip holding its arrays)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {"train_features.npy", "source.npy", "classes.npy"} <= set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def extract_features(cfg: TrainConfig, out: str | Path, *, overwrite: bool = False,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the pooled features of ``cfg.source``'s backbone for every split of ``cfg.dataset`` to ``out``
    (``.npz``): what its new head would see (:func:`cnnlab.models.replace_head` with no classes), in
    float32, in eval mode. Keys: ``train_features`` (N, D) float32 and ``train_labels`` (N,) int64, the same
    for ``val`` and ``test``, ``classes`` (names, by label), ``mean`` and ``std`` (the input normalisation
    used) and ``source``. Returns a summary (shapes, source, path)."""
    out = check_output_file(out, overwrite=overwrite, flag="--extract-features", suffixes=(".npz",),
                            ours=_is_features_file)
    cfg.validate()
    source_name(cfg)
    dev = resolve_device(cfg.device)
    data = cfg.load_data()
    model, data = build_transfer_model(cfg, data, num_classes=0)
    model = model.to(dev).eval()
    channels_last = cfg.channels_last and has_conv2d(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        loader = BatchLoader(x, y, cfg.eval_batch_size, mean=data.mean, std=data.std, device=dev,
                             channels_last=channels_last)
        with torch.inference_mode():
            feats = [model(xb).float().flatten(1).cpu() for xb, _ in loader]
        width = arrays["train_features"].shape[1] if split != "train" else 0  # the train split is never empty
        arrays[f"{split}_features"] = torch.cat(feats).numpy() if feats else np.zeros((0, width), np.float32)
        arrays[f"{split}_labels"] = y.numpy().astype(np.int64)
        n, width = arrays[f"{split}_features"].shape
        log(f"{split}: {n} images -> {width} features each")
    arrays.update(classes=np.array(data.classes), mean=np.array(data.mean, np.float32),
                  std=np.array(data.std, np.float32), source=np.array(cfg.source))
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return {"path": str(out), "source": cfg.source, "classes": list(data.classes),
            "features": int(arrays["train_features"].shape[1]),
            "sizes": {s: int(arrays[f"{s}_labels"].shape[0]) for s in ("train", "val", "test")}}
