"""One run, opened for exploring: every view of ``cnnlab explore`` as a function that takes plain values and
returns JSON-ready dicts (images as PNG bytes, base64 in the dict), so the web face only routes requests.

An :class:`ExploreSession` loads the run once. Images the user gives (a drawing, a file, a test image) are
decoded the run's way (:mod:`cnnlab.data.decode`), kept in a small cache under the hash of their pixels and
named by it: the same picture is the same ``image`` id in every tab. Every computation on the model holds
one lock and runs under :func:`cnnlab.viz.untouched` (mode, hooks, gradients and BatchNorm statistics left
as found), so concurrent requests give the answers sequential ones would.
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import io
import math
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from cnnlab.analysis import FieldError, field_report, summarize
from cnnlab.data import denormalize, input_range, load_drawing, load_run_image, normalize
from cnnlab.errors import CnnlabError
from cnnlab.ops import conv_output_size, conv_setup, pool_output_size, trace2d
from cnnlab.ops.examples import EXAMPLES
from cnnlab.ops.matrix import parse_matrix
from cnnlab.runs import load_run
from cnnlab.viz import (VizError, conv_layer, conv_layers, effective_receptive_field, filters, has_filters,
                        integrated_gradients, layer_outputs, maximize_activation, occlusion, saliency, untouched)
from cnnlab.viz.attribution import black
from cnnlab.viz.cam import CAM_METHODS, DEFAULT_CAM, cam
from cnnlab.viz.evaluate import faithfulness_scores, randomisation_check, randomised_model

__all__ = ["ATTRIBUTIONS", "ExploreError", "ExploreSession", "MAX_UPLOAD_BYTES", "NoGradientsError", "NotFoundError"]

#: The largest image a user may upload or draw (bytes of the encoded file).
MAX_UPLOAD_BYTES = 8 * 1024**2
#: Attribution methods of the "where it looks" view; all but occlusion need a float model (gradients).
ATTRIBUTIONS = (*CAM_METHODS, "saliency", "integrated-gradients", "occlusion")
_GRADIENT_VIEWS = {*CAM_METHODS, "saliency", "integrated-gradients", "unit"}
_IMAGES_KEPT = 64  # decoded inputs remembered per session (a few tabs' worth of strokes)
_LARGEST_TRACE = 4096  # output positions a live convolution shows step by step


class ExploreError(CnnlabError):
    """A request the run cannot answer (an unknown layer, class or unit; a view an int8 run lacks)."""


class NotFoundError(ExploreError):
    """An image id this session no longer (or never) had: send the image again."""


class NoGradientsError(ExploreError):
    """A gradient view asked of a run without gradients (int8 quantized)."""


def _png(a: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3) as a base64 PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _gray(a: torch.Tensor, lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, float, float]:
    """A float map as uint8 over [lo, hi] (default its own range), and that range."""
    a = a.detach().float()
    finite = a[torch.isfinite(a)]
    lo = float(finite.min()) if lo is None and len(finite) else (0.0 if lo is None else lo)
    hi = float(finite.max()) if hi is None and len(finite) else (1.0 if hi is None else hi)
    scaled = ((a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)).nan_to_num(0.0).clamp(0, 1)
    return (scaled * 255).round().to(torch.uint8).numpy(), lo, hi


def _sprite(maps: torch.Tensor) -> dict[str, Any]:
    """(C, H, W) activation maps tiled into one grayscale PNG (``cols`` per row, one layer-wide scale): one
    image per layer, which the page cuts into channels."""
    c, h, w = maps.shape
    cols = max(1, math.ceil(math.sqrt(c)))
    rows = math.ceil(c / cols)
    pixels, lo, hi = _gray(maps)
    sheet = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for i in range(c):
        r, q = divmod(i, cols)
        sheet[r * h:(r + 1) * h, q * w:(q + 1) * w] = pixels[i]
    peaks = maps.flatten(1).amax(1) if maps.numel() else maps.new_zeros(c)
    return {"png": _png(sheet), "channels": c, "height": h, "width": w, "cols": cols, "min": lo, "max": hi,
            "channel_max": [round(float(v), 4) for v in peaks]}


class ExploreSession:
    """A run directory (trained, transferred or compressed) opened for the explorer's views."""

    def __init__(self, run_path: str | os.PathLike, *, device: str = "cpu", data_dir: str | None = None) -> None:
        self.path = Path(run_path)
        self.loaded = load_run(self.path, map_location=device)
        self.model = self.loaded.model.eval()
        self.info = self.loaded.data
        self.spec = self.loaded.run.read_json("model.json")
        compression = self.spec.get("compression") or {}
        self.compression = compression.get("method")
        self.has_gradients = self.compression != "quantize"
        self.input_size = tuple(self.loaded.input_size)
        self.classes = list(self.info.get("classes") or [str(i) for i in range(10)])
        self.mean, self.std = list(self.info.get("mean", [0.0])), list(self.info.get("std", [1.0]))
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._images: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._data = None
        self._test_probs: torch.Tensor | None = None
        self._maximized: dict[tuple[str, int], dict[str, Any]] = {}  # background jobs, by (layer, channel)
        self._job_model: nn.Module | None = None  # their copy of the model
        self._randomised: nn.Module | None = None  # every layer re-initialised: the randomisation check's model
        self._job_lock = threading.Lock()  # one job computes at a time
        self._tmp = tempfile.TemporaryDirectory(prefix="cnnlab-explore-")
        with self._lock, untouched(self.model):
            try:
                self.summary = summarize(self.model, self.input_size, model_name=self.spec.get("name"))
            except (CnnlabError, RuntimeError, NotImplementedError):
                self.summary = None  # an int8 model the tracer cannot follow: no anatomy, the rest works
        self._convs = list(conv_layers(self.model)) if self.has_gradients else []

    # ------------------------------------------------------------------------------------ the run
    def describe(self) -> dict[str, Any]:
        """What the page needs first: names, sizes, classes, which views apply."""
        run = self.loaded.run
        return {
            "run": str(self.path), "name": self.path.name, "model": self.spec.get("name"),
            "kind": "compressed" if self.compression else "transfer" if self.spec.get("transfer") else "trained",
            "compression": self.compression, "has_gradients": self.has_gradients,
            "input_size": list(self.input_size), "classes": self.classes, "mean": self.mean, "std": self.std,
            "dataset": self.info.get("name"), "conv_layers": self._convs, "filters": has_filters(self.model),
            "default_layer": conv_layer(self.model, None)[0] if self._convs else None,
            "attributions": [m for m in ATTRIBUTIONS if self.has_gradients or m == "occlusion"],
            "default_attribution": DEFAULT_CAM if self.has_gradients else "occlusion",
            "history": (run.path / "history.csv").is_file(), "max_upload_bytes": MAX_UPLOAD_BYTES,
            "examples": {n: e.description for n, e in EXAMPLES.items()},
            "example_ops": {n: e.op for n, e in EXAMPLES.items()},
        }

    def anatomy(self) -> dict[str, Any]:
        """The summary table (``cnnlab summary``) and the graph: every layer with its inputs."""
        if self.summary is None:
            raise ExploreError(f"{self.spec.get('name')} ({self.compression}) cannot be traced for a summary")
        d = self.summary.to_dict()
        d["text"] = self.summary.table()
        return d

    # ------------------------------------------------------------------------------------ inputs
    def _remember(self, x: torch.Tensor) -> str:
        key = hashlib.sha1(x.numpy().tobytes() + str(tuple(x.shape)).encode()).hexdigest()[:16]
        with self._lock:
            self._images[key] = x
            self._images.move_to_end(key)
            while len(self._images) > _IMAGES_KEPT:
                self._images.popitem(last=False)
        return key

    def image(self, image_id: str) -> torch.Tensor:
        """The decoded uint8 (C, H, W) input an id names."""
        with self._lock:
            x = self._images.get(image_id)
            if x is not None:
                self._images.move_to_end(image_id)  # in use: the last to be forgotten
        if x is None:
            raise NotFoundError(f"image {image_id!r} is not (or no longer) held by the explorer; send it again")
        return x

    def _decoded(self, data: bytes, decode: Callable[[Path], torch.Tensor]) -> torch.Tensor:
        if len(data) > MAX_UPLOAD_BYTES:
            raise ExploreError(f"an image of {len(data):,} bytes is over the limit of {MAX_UPLOAD_BYTES:,}")
        fd, name = tempfile.mkstemp(dir=self._tmp.name, suffix=".img")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return decode(Path(name))
        finally:
            os.unlink(name)

    def add_image(self, data: bytes, *, kind: str = "file") -> dict[str, Any]:
        """Decode an uploaded file (``kind="file"``, as ``cnnlab predict`` does) or a canvas drawing (``"drawing"``:
        centred and scaled like the dataset) and predict it."""
        if kind == "drawing":
            x = self._decoded(data, lambda p: load_drawing(p, self.info))
        elif kind == "file":
            x = self._decoded(data, lambda p: load_run_image(p, self.info))
        else:
            raise ExploreError(f"kind must be drawing or file, got {kind!r}")
        return self._input(x, source=kind)

    def add_test_image(self, index: int) -> dict[str, Any]:
        data = self._test_split()
        if not 0 <= index < len(data.test_y):
            raise ExploreError(f"test image {index} does not exist; valid: 0-{len(data.test_y) - 1}")
        return self._input(data.test_x[index].clone(), source="test", index=index, label=int(data.test_y[index]))

    def _input(self, x: torch.Tensor, **about: Any) -> dict[str, Any]:
        image_id = self._remember(x)
        return {"image": image_id, "png": _png(self._picture(x)), **about, "prediction": self.predict(image_id)}

    @staticmethod
    def _picture(x: torch.Tensor) -> np.ndarray:
        return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()

    def _normalised(self, image_id: str) -> torch.Tensor:
        x = self.image(image_id)
        return normalize(x.unsqueeze(0), self.mean, self.std).to(self._device())

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # ------------------------------------------------------------------------------------ views
    def predict(self, image_id: str) -> list[dict[str, Any]]:
        """Class probabilities, in class order."""
        x = self._normalised(image_id)
        with self._lock, untouched(self.model), torch.no_grad():
            probs = F.softmax(self.model(x).float(), 1)[0]
        return [{"class": c, "index": i, "p": round(float(p), 5)} for i, (c, p) in enumerate(zip(self.classes, probs))]

    def activations(self, image_id: str) -> dict[str, Any]:
        """Every layer's output for the image, in the order they ran: a sprite of its maps (or a strip for a
        vector), with the summary row's type, shape, parameters and MACs, the graph's inputs, and its
        ``sources``: each input as ``{"name"}``, or, where it is a function node of the graph (add, cat: no
        module, so no maps of its own), ``{"name", "op", "inputs"}`` with that node's own inputs."""
        x = self._normalised(image_id)
        with self._lock:
            outputs = layer_outputs(self.model, x)
        rows = {r.name: r for r in self.summary.rows} if self.summary is not None else {}
        index = {r.name: i for i, r in enumerate(self.summary.rows)} if self.summary is not None else {}

        def source(name: str) -> dict[str, Any]:
            node = rows.get(name)
            if name not in outputs and node is not None and node.kind == "function" and node.inputs:
                return {"name": name, "op": node.type, "inputs": list(node.inputs)}
            return {"name": name}

        layers = []
        for name, out in outputs.items():
            row = rows.get(name)
            maps = out if out.dim() == 3 else out.reshape(1, 1, -1) if out.dim() == 1 else out.reshape(out.shape[0], 1, -1)
            layers.append({"name": name, "type": row.type if row else type(dict(self.model.named_modules())[name]).__name__,
                           "shape": list(out.shape), "params": row.params if row else None,
                           "macs": row.macs if row else None,
                           "inputs": list(row.inputs) if row else [], "row": index.get(name),
                           "sources": [source(n) for n in row.inputs] if row else [],
                           "spatial": out.dim() == 3, **_sprite(maps)})
        return {"image": image_id, "layers": layers}

    def unit(self, image_id: str, layer: str, channel: int, position: Sequence[int]) -> dict[str, Any]:
        """One unit: its theoretical receptive field (``cnnlab rf --unit``'s region), its effective one
        (|d unit / d input| as a map over the input) and the kernel weights that feed it (a conv layer's)."""
        self._needs_gradients("unit")
        x = self._normalised(image_id)
        if self.summary is None:
            raise ExploreError("this run cannot be traced for receptive fields")
        try:
            region = field_report(self.summary, layer=layer, unit=tuple(position)).unit
        except FieldError as e:
            raise ExploreError(str(e)) from None
        with self._lock:
            erf = effective_receptive_field(self.model, x, layer, channel=channel, position=position)
        pixels, lo, hi = _gray(erf)
        module = dict(self.model.named_modules())[layer]
        kernel = None
        if isinstance(module, nn.Conv2d) and 0 <= channel < module.out_channels:
            w = module.weight.detach()[channel].float().cpu()
            kernel = {"shape": list(w.shape), "weights": [[[round(float(v), 5) for v in r] for r in c] for c in w],
                      "bias": None if module.bias is None else round(float(module.bias.detach()[channel]), 5)}
        return {"image": image_id, "layer": layer, "channel": channel, "position": list(position),
                "regions": region["regions"], "erf": {"png": _png(pixels), "min": lo, "max": hi}, "kernel": kernel}

    def attribution(self, image_id: str, method: str, *, target: int | None = None, layer: str | None = None,
                    patch: int | None = None, stride: int | None = None, faithfulness: bool = False) -> dict[str, Any]:
        """A map of where the model looks for ``target`` (default: its prediction) by ``method``; with
        ``faithfulness``, the deletion and insertion areas of that map for this image, ROAD, and the randomisation
        check (Spearman correlation with the same method's map on the model with every layer re-initialised)."""
        if method not in ATTRIBUTIONS:
            raise ExploreError(f"unknown method {method!r}; valid: {', '.join(ATTRIBUTIONS)}")
        if method != "occlusion":
            self._needs_gradients(method)
        x = self._normalised(image_id)
        if target is not None and not 0 <= target < len(self.classes):
            raise ExploreError(f"target {target} is not a class; valid: 0-{len(self.classes) - 1}")
        dark = black(self.mean, self.std)
        with self._lock:
            if target is None:
                with untouched(self.model), torch.no_grad():
                    target = int(self.model(x).argmax(1)[0])
            t = torch.tensor([target])
            side = min(self.input_size[1:])
            size = patch or max(2, side // 4)
            if method == "occlusion" and (not 1 <= size <= side or (stride is not None and not 1 <= stride <= side)):
                raise ExploreError(f"patch and stride must be between 1 and {side}; got {patch}, {stride}")
            def maps_of(model: nn.Module):
                """(maps, layer, why blank) of ``method`` on ``model``: the run's, or its randomised copy."""
                if method in CAM_METHODS:
                    r = cam(model, x, t, method=method, layer=cam_layer)
                    return r.maps, r.layer, r.why_blank(0)
                if method == "saliency":
                    return saliency(model, x, t), None, None
                if method == "integrated-gradients":
                    return integrated_gradients(model, x, t, baseline=dark), None, None
                return occlusion(model, x, t, patch_sizes=(size,), stride=stride, baseline=dark)[size].clamp_min(0), \
                    None, None

            try:
                cam_layer = (layer or conv_layer(self.model, None)[0]) if method in CAM_METHODS else None
                maps, name, blank = maps_of(self.model)
            except VizError as e:
                raise ExploreError(str(e)) from None
            scores = None
            if faithfulness:  # the numbers of `cnnlab viz --evaluate`, for this one image
                f = faithfulness_scores(self.model, x, maps, t, baseline=dark, steps=10)
                scores = {"deletion_auc": round(f["black"]["deletion_auc"], 4),
                          "insertion_auc": round(f["black"]["insertion_auc"], 4),
                          "blur": {k: round(f["blur"][k], 4) for k in ("deletion_auc", "insertion_auc")},
                          "road": {"morf": round(f["road"]["morf"][50], 4), "lerf": round(f["road"]["lerf"][50], 4)},
                          "randomisation": self._randomisation(x, maps, lambda m: maps_of(m)[0])}
        pixels, lo, hi = _gray(maps[0])
        return {"image": image_id, "method": method, "target": target, "layer": name, "png": _png(pixels),
                "min": lo, "max": hi, "faithfulness": scores, "blank": blank}

    def _randomisation(self, x: torch.Tensor, maps: torch.Tensor, maps_of: Callable[[nn.Module], torch.Tensor]
                       ) -> dict[str, Any]:
        """The randomisation check of `viz --evaluate` for one image (:func:`cnnlab.viz.evaluate.randomisation_check`:
        the map against the same method's on the model with every layer re-initialised, made once per session)."""
        if not self.has_gradients:
            return {"rho": None, "passes": None, "why": "an int8 quantized run's layers cannot be re-initialised"}
        try:
            if self._randomised is None:
                self._randomised = randomised_model(self.model, x)
            r = randomisation_check(self.model, x, maps, maps_of, randomised=self._randomised)
        except VizError as e:
            return {"rho": None, "passes": None, "why": str(e)}
        return r | {"rho": None if r["rho"] is None else round(r["rho"], 4)}

    def _needs_gradients(self, view: str) -> None:
        if not self.has_gradients:
            raise NoGradientsError(f"{view} needs gradients, and this int8 quantized run has none (its integer kernels "
                               f"are not differentiable); the other views work")

    # ------------------------------------------------------------------------------------ what it learned
    def filters(self) -> dict[str, Any]:
        """The first conv layer's kernels (pictures for 1 or 3 input channels, else their norm; an int8 run's
        dequantized)."""
        if not has_filters(self.model):
            raise ExploreError(f"{self.spec.get('name')} has no conv layer")
        name, w = filters(self.model, None)
        m = float(w.abs().max()) or 1.0  # one symmetric scale: grey is 0
        out = []
        for f in w:
            a = ((f / m + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
            out.append(_png(a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()))
        return {"layer": name, "shape": list(w.shape), "range": [-m, m], "filters": out}

    def maximize(self, layer: str, channel: int, *, steps: int = 128, wait: bool = False) -> dict[str, Any]:
        """The input that maximises ``channel`` of conv ``layer`` (after its ReLU), computed once per run in a
        background thread on a copy of the model (the other views stay responsive): ``{"status": "running",
        "progress": 0.4}`` until it is ``{"status": "done", "png": ..., "gain": ...}``; ``wait``: block until done."""
        self._needs_gradients("maximize")
        convs = conv_layers(self.model)
        if layer not in convs:
            raise ExploreError(f"unknown conv layer {layer!r}; valid: {', '.join(convs)}")
        if not 0 <= channel < convs[layer].out_channels:
            raise ExploreError(f"channel {channel} is not in {layer!r} (0-{convs[layer].out_channels - 1})")
        key = (layer, channel)
        with self._lock:
            job = self._maximized.get(key)
            if job is None:
                job = self._maximized[key] = {"layer": layer, "channel": channel, "status": "running", "progress": 0.0}
                if self._job_model is None:
                    self._job_model = copy.deepcopy(self.model)
                thread = threading.Thread(target=self._maximize_job, args=(job, steps), daemon=True,
                                          name=f"maximize {layer} {channel}")
                job["thread"] = thread
                thread.start()
        if wait:
            job["thread"].join()
        return {k: v for k, v in job.items() if k != "thread"}

    def _maximize_job(self, job: dict[str, Any], steps: int) -> None:
        valid = input_range(self.mean, self.std)
        try:
            with self._job_lock:
                res = maximize_activation(self._job_model, job["layer"], [job["channel"]], self.input_size,
                                          input_range=valid, steps=steps,
                                          progress=lambda f: job.__setitem__("progress", round(f, 3)))
            a = (denormalize(res.images[0], self.mean, self.std) * 255).round().to(torch.uint8)
            gain = float(res.gain[0])
            job.update(png=_png(self._picture(a)), gain=gain if math.isfinite(gain) else None, progress=1.0)
            job["status"] = "done"
        except Exception as e:  # the job's own error, reported to whoever asks next
            job.update(status="failed", error=str(e) if isinstance(e, CnnlabError) else "internal error")

    def history(self) -> dict[str, Any]:
        """The run's training curves (``history.csv``: one row per epoch)."""
        path = self.loaded.run.path / "history.csv"
        if not path.is_file():
            raise ExploreError(f"{self.path} has no history.csv (compressed runs keep their source's)")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        columns = list(rows[0]) if rows else []
        series = {c: [float(r[c]) if r[c] not in ("", None) else None for r in rows] for c in columns}
        return {"columns": columns, "series": series}

    def _test_split(self):
        if self._data is None:
            self._data = self.loaded.config.load_data(data_dir=self.data_dir)
        return self._data

    def _test_predictions(self) -> torch.Tensor:
        if self._test_probs is None:
            data = self._test_split()
            with self._lock, untouched(self.model), torch.no_grad():
                self._test_probs = torch.cat([
                    F.softmax(self.model(normalize(data.test_x[i:i + 500], self.mean, self.std).to(self._device())).float(), 1).cpu()
                    for i in range(0, len(data.test_y), 500)])
        return self._test_probs

    def confusion(self) -> dict[str, Any]:
        """The test split's confusion matrix (rows: true class, columns: predicted)."""
        data = self._test_split()
        pred = self._test_predictions().argmax(1)
        k = len(self.classes)
        m = torch.bincount(data.test_y * k + pred, minlength=k * k).reshape(k, k)
        return {"classes": self.classes, "matrix": m.tolist(), "accuracy": round(float((pred == data.test_y).float().mean()), 5),
                "images": len(data.test_y)}

    def test_images(self, *, label: int | None = None, predicted: int | None = None, mistakes: bool = False,
                    offset: int = 0, limit: int = 48) -> dict[str, Any]:
        """Test images to pick from: by true class, by the confusion cell (``label``, ``predicted``), or the
        most confident mistakes; each with a thumbnail."""
        data = self._test_split()
        k = len(self.classes)
        for name, v in (("label", label), ("predicted", predicted)):
            if v is not None and not 0 <= v < k:
                raise ExploreError(f"{name} {v} is not a class; valid: 0-{k - 1}")
        if not 1 <= limit <= 256 or offset < 0:
            raise ExploreError(f"limit must be 1-256 and offset >= 0; got {limit}, {offset}")
        probs = self._test_predictions()
        conf, pred = probs.max(1)
        keep = torch.ones(len(data.test_y), dtype=torch.bool)
        if label is not None:
            keep &= data.test_y == label
        if predicted is not None:
            keep &= pred == predicted
        if mistakes:
            keep &= pred != data.test_y
        idx = keep.nonzero().flatten()
        if mistakes:
            idx = idx[conf[idx].argsort(descending=True)]
        total, idx = len(idx), idx[offset:offset + limit]
        return {"total": total, "offset": offset, "images": [
            {"index": int(i), "label": int(data.test_y[i]), "predicted": int(pred[i]), "p": round(float(conf[i]), 4),
             "png": _png(self._picture(data.test_x[i]))} for i in idx]}

    # ------------------------------------------------------------------------------------ the convolution
    def conv(self, *, op: str | None = None, input: str | None = None, image: str | None = None,
             kernel: str | None = None, filter: int | None = None, example: str | None = None,
             kernel_size: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
             padding: str | int | Sequence[int] | None = None, dilation: int | Sequence[int] | None = None,
             padding_mode: str | None = None, value: float | None = None, ceil_mode: bool = False,
             count_include_pad: bool = True) -> dict[str, Any]:
        """The lecture's convolution and pooling, step by step (:func:`cnnlab.ops.trace2d`), on a typed matrix
        (``input``), the current image (``image``: its first channel in [0, 1]) or a lecture ``example``, with
        a typed ``kernel``, the run's first-layer ``filter`` or the example's; plus the output-size formula."""
        x = None
        if input is not None:
            x = parse_matrix(input, "input")
        elif image is not None:
            x = self.image(image)[0].float().numpy() / 255.0
        k = None
        if kernel is not None:
            k = parse_matrix(kernel, "kernel")
        elif filter is not None:
            if not has_filters(self.model):
                raise ExploreError("this model has no conv layer to take a filter from")
            _, w = filters(self.model, None, mode="channels")
            if not 0 <= filter < w.shape[0]:
                raise ExploreError(f"filter {filter} does not exist; valid: 0-{w.shape[0] - 1}")
            k = w[filter, 0].numpy().astype(np.float64)
        setup = conv_setup(x, k, op if op is not None or example is not None else "correlate", example=example, kernel_size=kernel_size, stride=stride, padding=padding,
                           dilation=dilation, padding_mode=padding_mode, value=value, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad)
        trace = trace2d(setup.x, setup.kernel, setup.op, **setup.options)
        positions = int(np.prod(trace.output.shape))
        if positions > _LARGEST_TRACE:
            raise ExploreError(f"{positions:,} output positions are more than the {_LARGEST_TRACE:,} this view "
                               f"steps through; use a smaller input or a larger stride")
        d = trace.to_dict()
        d["formula"] = _size_formula(trace, setup.op, setup.options)
        if setup.example is not None:
            d["example"] = {"name": example, "description": setup.example.description,
                            "matches_lecture": not setup.example.check(trace.output)}
        return d

    def close(self) -> None:
        self._tmp.cleanup()


def _size_formula(trace, op: str, options: dict[str, Any]) -> list[str]:
    """``floor((n + p_before + p_after - d(k - 1) - 1) / s) + 1 = out`` per axis, with the numbers filled in."""
    lines = []
    pool = op in ("max", "avg")
    for axis, name in enumerate(("rows", "columns")):
        n, k = trace.input.shape[axis], trace.kernel_size[axis]
        s, d = trace.stride[axis], trace.dilation[axis]
        before, after = trace.pads[axis]
        rounding = "ceil" if pool and options.get("ceil_mode") else "floor"
        if pool:
            out = pool_output_size(n, k, stride=s, padding=0, dilation=d, ceil_mode=bool(options.get("ceil_mode"))) \
                if before == after == 0 else trace.output.shape[axis]
        else:
            out = conv_output_size(n, k, stride=s, padding=(before, after), dilation=d)
        lines.append(f"{name}: {rounding}(({n} + {before} + {after} - {d}*({k} - 1) - 1) / {s}) + 1 = {out}")
    return lines
