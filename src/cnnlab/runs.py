"""``load_run``: a run directory of any kind (trained, transferred, compressed) back to its model; and
``pretrained_run``: a torchvision model with its published weights as a run directory, so that every command
that takes a run takes ``tv:NAME --pretrained [WEIGHTS]``.

It sits above ``train`` and ``compress``: a compressed run is rebuilt by its method's code
(:func:`cnnlab.compress.run.load_compressed`), a trained one by :func:`cnnlab.train.load_run`. The commands
that take any run (``eval``, ``predict``, ``viz``, ``compare``) load it through here; ``train`` (resume,
transfer) and ``compress`` (its float source) take float runs only and use ``train.load_run``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from cnnlab._outdir import RUN, claim_output
from cnnlab.compress.run import load_compressed
from cnnlab.data import ImageTransform
from cnnlab.data.datasets import IMAGENET
from cnnlab.errors import CnnlabError
from cnnlab.models import ZOO_PREFIX, create_model
from cnnlab.train.checkpoint import save_weights
from cnnlab.train.config import TrainConfig
from cnnlab.train.rundir import LoadedRun, RunDir, machine_info
from cnnlab.train.rundir import load_run as _load_run

__all__ = ["load_run", "LoadedRun", "pretrained_run", "PRETRAINED_RUNS", "PRETRAINED_DATASET"]

#: Where ``tv:NAME --pretrained WEIGHTS`` becomes a run directory: ``runs/pretrained/tv-NAME-WEIGHTS``.
PRETRAINED_RUNS = Path("runs") / "pretrained"
#: The dataset a pretrained run records: the weights' (ImageNet for torchvision's classification weights),
#: which cnnlab cannot download; commands that need its test images say to give image files instead.
PRETRAINED_DATASET = IMAGENET


def load_run(path: str | os.PathLike, *, weights: str = "final", map_location: str = "cpu") -> LoadedRun:
    """Rebuild any run's model (see :func:`cnnlab.train.load_run`; compressed runs from ``model.cnnz``)."""
    return _load_run(path, weights=weights, map_location=map_location, compressed=load_compressed)


def pretrained_run(name: str, weights: str | None = "DEFAULT", *, out: str | os.PathLike | None = None,
                   progress: bool | None = None, log: Callable[[str], None] = print) -> Path:
    """torchvision's ``name`` (``tv:NAME``) with its published ``weights`` as a run directory (made once,
    reused): ``out`` or ``runs/pretrained/tv-NAME-WEIGHTS``. The weights come from torch hub's cache (downloaded
    when missing: :mod:`cnnlab.models.pretrained`); ``model.json`` records them (``"pretrained"``); ``config.json``'s
    data record names the weights' categories, their crop and their normalisation, and the transform
    (:class:`~cnnlab.data.ImageTransform` with ``resize``: the shorter side to the weights' resize size, the
    centre crop), so ``predict``, ``viz --image`` and ``explore`` see an image as the weights expect. There is no
    test set (``dataset`` is :data:`PRETRAINED_DATASET`): a command that needs one says to give image files."""
    if not name.startswith(ZOO_PREFIX):
        raise CnnlabError(f"--pretrained applies to torchvision models (tv:NAME), not {name!r}; a run directory "
                          "brings its own weights")
    model = create_model(name, pretrained=weights, progress=progress)
    info = model.cnnlab_pretrained
    short = info.name.split(".", 1)[1]
    path = Path(out) if out is not None else PRETRAINED_RUNS / f"{name.replace(':', '-')}-{short}"
    run = RunDir(path)
    try:
        if run.read_json("model.json").get("pretrained") == info.name and run.weights.is_file():
            return path  # made before from the same weights
    except (CnnlabError, AttributeError):
        pass
    d = info.describe()
    data = {"name": PRETRAINED_DATASET, "source": f"{info.name} ({info.weights.url})",
            "classes": info.categories, "in_channels": 3, "image_size": [d["crop_size"]] * 2,
            "mean": d["mean"], "std": d["std"],
            "transform": ImageTransform((d["crop_size"],) * 2, False, d["resize_size"]).to_dict(),
            "sizes": {"train": 0, "val": 0, "test": 0}, "pretrained": d}
    cfg = TrainConfig(model=name, dataset=PRETRAINED_DATASET)
    with claim_output(path, RUN, flag=f"{name} --pretrained") as output:
        if output.entries():
            output.clear()  # another weights' files, all cnnlab's (clear refuses anything else)
        save_weights(model, run.weights, metadata={"pretrained": info.name})
        run.write_json("config.json", {"train": cfg.to_dict(), "data": data, "pretrained": d,
                                       "machine": machine_info()})
        run.write_json("model.json", model.cnnlab_spec)  # last: a folder with it is complete
    log(f"{name} with {info.name} as a run directory: {path}")
    return path
