"""``cnnlab viz RUN``: every method on a trained run, as PNG files and one offline ``index.html``."""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from cnnlab._outdir import VIZ, claim_output
from cnnlab._plot import figure, save_figure
from cnnlab.data import denormalize, input_range, load_run_image, normalize
from cnnlab.runs import load_run
from cnnlab.viz._state import VizError
from cnnlab.viz.attribution import black, integrated_gradients, occlusion, saliency, targets_for
from cnnlab.viz.cam import CAM_METHODS, cam, cam_target_module
from cnnlab.viz.evaluate import (ATTRIBUTION_METHODS, LOCALISATION_MARGIN, attribution_maps, evaluate_attributions,
                                 evaluation_table, evidence_masks)
from cnnlab.viz.faithfulness import deletion_insertion
from cnnlab.viz.inside import feature_maps, filters
from cnnlab.viz.layers import activation_after, conv_layer, conv_layers
from cnnlab.viz.maximize import maximize_activation
from cnnlab.viz.targets import class_index

__all__ = ["METHODS", "Figure", "visualize_run"]

METHODS = ("filters", "feature-maps", "maximize", *CAM_METHODS, "occlusion", "saliency", "mistakes")
#: Images a figure shows, and images ``--evaluate`` measures, unless ``--images`` says otherwise.
FIGURE_IMAGES, EVALUATE_IMAGES = 8, 256


@dataclass
class Figure:
    section: str
    file: str
    caption: str


@dataclass
class _Page:
    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


def _save_grid(path: Path, panels: Sequence[np.ndarray], titles: Sequence[str], ncols: int, *,
               overlays: Sequence[np.ndarray] | None = None, cmap: str = "gray", suptitle: str = "",
               cell: float = 1.6, symmetric: bool = False) -> None:
    """Panels (H, W) or (H, W, 3) in a grid; with ``overlays``, a heat map over each (jet, alpha 0.5)."""
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    if suptitle:  # wrapped to the figure's width, and room kept above the panels for every line
        suptitle = "\n".join(textwrap.wrap(suptitle, max(30, int(cell * ncols * 13))))
    head = 0.2 + 0.16 * (suptitle.count("\n") + 1) if suptitle else 0.0
    height = (cell + 0.3) * nrows + head
    fig = figure(figsize=(cell * ncols, height), dpi=100)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_axis_off()
        if symmetric:
            v = float(np.abs(panel).max()) or 1.0
            ax.imshow(panel, cmap="bwr", vmin=-v, vmax=v, interpolation="nearest")
        else:
            ax.imshow(panel, cmap=cmap, interpolation="nearest")
        if overlays is not None:
            ax.imshow(overlays[i], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        if i < len(titles) and titles[i]:
            ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 1 - head / height))
    else:
        fig.tight_layout()
    save_figure(fig, path)


def _display(x: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised (C, H, W) back to a [0, 1] picture, (H, W) or (H, W, 3)."""
    img = denormalize(x.cpu(), mean, std).numpy()
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def _norm01(a: torch.Tensor) -> np.ndarray:
    a = a.detach().cpu().float()
    peak = float(a.max())
    return (a / peak).numpy() if peak > 0 else a.numpy()


def visualize_run(run_path: str | Path, out: str | Path | None = None, *, methods: Sequence[str] | str | None = None,
                  layer: str | None = None, n_images: int | None = None, image_files: Sequence[str] | None = None,
                  target: int | str | None = None, data_dir: str | None = None, faithfulness: bool = False,
                  evaluate: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the chosen methods on a run directory's model; write PNGs and ``index.html`` into ``out``
    (default ``RUN/viz``). Returns what was written and, with ``faithfulness``, the deletion/insertion
    table. ``methods``: default all (none with ``evaluate``, whose page shows every attribution method on
    the first images instead). ``evaluate``: every attribution method measured on ``n_images`` (default
    256) test images (:func:`cnnlab.viz.evaluate.evaluate_attributions`), ``evaluation.json`` and
    ``evaluation.md``; figures use the first 8. ``target``: the class every map explains, as an index or a
    class name of the run (``"boxer"`` on an ImageNet model); default each image's prediction."""
    methods = _methods(methods if methods is not None else ([] if evaluate else "all"))
    if n_images is None:
        n_images = EVALUATE_IMAGES if evaluate else FIGURE_IMAGES
    loaded = load_run(run_path)  # any run: trained, transferred or compressed
    model, info = loaded.model, loaded.data
    target = class_index(target, info.get("classes"))
    spec = loaded.run.read_json("model.json")
    if (spec.get("compression") or {}).get("method") == "quantize":
        raise VizError(f"{run_path} is an int8 quantized run: its integer kernels have no gradients and no float "
                       f"conv layers to look inside; visualise the float run it came from "
                       f"({spec['compression'].get('source')}) or a pruned, shared or binarized run")
    model_name = spec.get("name", "model")
    out = Path(out) if out is not None else loaded.run.path / "viz"
    if not conv_layers(model):
        raise VizError(f"{model_name} has no conv layer to look inside")
    gc_name, _ = conv_layer(model, layer)  # checks --layer: a conv layer or a clear error
    if not image_files and n_images < 1:
        raise VizError(f"--images must be a positive integer; got {n_images}")

    with claim_output(out, VIZ):  # one writer; never into a folder of someone else's files
        if image_files:
            raw, labels, data = torch.stack([load_run_image(p, info) for p in image_files]), None, None
            names = [Path(p).name for p in image_files]
        else:
            data = loaded.config.load_data(data_dir=data_dir)
            raw, labels = data.test_x[:n_images], data.test_y[:n_images]
            names = [f"test #{i}" for i in range(len(raw))]
        page = _Page(f"cnnlab viz: {model_name} ({loaded.run.path.name})")
        all_raw, all_labels = raw, labels
        if evaluate:
            raw = raw[:FIGURE_IMAGES]
            labels = None if labels is None else labels[:FIGURE_IMAGES]
            names = names[:FIGURE_IMAGES]
        v = _Context(model, model_name, info, out, raw, labels, names, data, layer, gc_name, target, page, log)
        for method in (m for m in METHODS if m in methods):  # the page's order, whatever order they were asked in
            _SECTIONS[method](v)
        conf = loaded.run.path / "confusion.png"
        if "mistakes" in methods and data is not None and conf.is_file():
            atomic_write_bytes(out / "confusion.png", conf.read_bytes())
            v.add("Mistakes", "confusion.png", f"{model_name}: confusion matrix on the test set")
        result = {"out": str(out), "figures": [f.__dict__ for f in page.figures]}
        if v.blank:
            result["blank_maps"] = v.blank
        if faithfulness:
            result["faithfulness"] = _faithfulness(v)
        if evaluate:
            result["evaluation"] = _evaluate(v, normalize(all_raw, v.mean, v.std), all_labels)
        atomic_write_text(out / "index.html", _html(page))
        atomic_write_json(out / "viz.json", result)
        result["index"] = str(out / "index.html")
        return result


def _methods(methods: Sequence[str] | str) -> list[str]:
    """``"all"``, ``"gradcam,occlusion"`` or a list, as known method names (in the order given)."""
    names = list(METHODS) if methods in ("all", ["all"], ("all",)) else \
        [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise VizError(f"unknown method {bad[0]!r}; valid: all, {', '.join(METHODS)}")
    return names


class _Context:
    """What every section of the report shares: the model, the images (normalised as the run's, and as
    pictures), their targets and probabilities, the black baseline, the page and the attributions made."""

    def __init__(self, model, model_name: str, info: dict, out: Path, raw: torch.Tensor, labels, names: list[str],
                 data, layer: str | None, gc_name: str, target: int | None, page: _Page,
                 log: Callable[[str], None]) -> None:
        self.model, self.model_name, self.out, self.data, self.page, self.log = model, model_name, out, data, page, log
        self.layer, self.gc_name, self.target, self.labels, self.names = layer, gc_name, target, labels, names
        self.classes = info.get("classes") or [str(i) for i in range(10)]
        self.mean, self.std = info.get("mean", [0.0]), info.get("std", [1.0])
        self.images = normalize(raw, self.mean, self.std)
        self.dark = black(self.mean, self.std)  # occlusion's patch, IG's start, the removed pixels: black everywhere
        self.targets = targets_for(model, self.images, target)
        with torch.no_grad():
            self.probs = F.softmax(model(self.images), 1)
        self.pics = [_display(x, self.mean, self.std) for x in self.images]
        self.attributions: dict[str, torch.Tensor] = {}
        self.blank: dict[str, list[dict]] = {}  # method -> the images whose map is empty, and why

    def caption(self, i: int) -> str:
        t = int(self.targets[i])
        truth = f", true {self.classes[int(self.labels[i])]}" if self.labels is not None else ""
        return f"{self.names[i]}: {self.classes[t]} {100 * float(self.probs[i, t]):.0f}%{truth}"

    def captions(self) -> list[str]:
        return [self.caption(i) for i in range(len(self.pics))]

    def add(self, section: str, file: str, text: str) -> None:
        self.page.figures.append(Figure(section, file, text))
        self.log(f"wrote {self.out / file}")


def _filters(v: _Context) -> None:
    name, w = filters(v.model, None)
    panels = [f[0].numpy() if f.shape[0] == 1 else f.permute(1, 2, 0).numpy() for f in w]
    _save_grid(v.out / "filters.png", panels, [str(i) for i in range(len(panels))], 8, symmetric=w.shape[1] == 1,
               cell=0.9, suptitle=f"{name}: {len(panels)} learned kernels (blue < 0 < red)")
    v.add("Filters", "filters.png", f"{v.model_name}, layer {name}: the first layer's kernels")


def _feature_maps(v: _Context) -> None:
    for lname, fmap in feature_maps(v.model, v.images[0]).items():
        file = f"feature_maps_{lname.replace('.', '_')}.png"
        k = min(32, fmap.shape[0])
        _save_grid(v.out / file, [fmap[c].numpy() for c in range(k)], [str(c) for c in range(k)], 8, cmap="viridis",
                   cell=1.0, suptitle=f"{lname}: {k} of {fmap.shape[0]} feature maps for {v.caption(0)}")
        v.add("Feature maps", file, f"{v.model_name}, layer {lname}, {v.caption(0)}")


def _maximize(v: _Context) -> None:
    lname = v.layer or v.gc_name
    k = min(16, conv_layers(v.model)[lname].out_channels)
    valid = input_range(v.mean, v.std)
    # the conv's activation (its ReLU, as Keras' Conv2D(activation="relu") outputs), not the raw linear
    # map: a linear map's spatial mean only sees the image's mean, so nothing but a flat image maximises it
    act = activation_after(v.model, lname, v.images[:1])
    res = maximize_activation(v.model, act or lname, list(range(k)), tuple(v.images.shape[1:]), input_range=valid)
    lname = f"{lname} -> {act}" if act else lname
    titles = [f"ch {c}: x{float(g):.0f}" if np.isfinite(float(g)) else f"ch {c}: noise-silent"
              for c, g in zip(res.channels, res.gain)]
    _save_grid(v.out / "maximize.png", [_display(x, v.mean, v.std) for x in res.images], titles, 8,
               suptitle=f"{lname}: inputs that maximise each channel (gain: rise / the starting noise's effect)")
    v.add("Maximal filter response", "maximize.png",
          f"{v.model_name}, layer {lname}: median gain x{float(res.gain.median()):.0f} over the starting noise")


def _cam(v: _Context, method: str) -> None:
    """One CAM method's maps over the images; a blank map says why on its panel and in ``viz.json``."""
    r = cam(v.model, v.images, v.targets, method=method, layer=v.gc_name)
    v.attributions[method] = r.maps
    titles = v.captions()
    for i in range(len(titles)):
        why = r.why_blank(i)
        if why:
            titles[i] += "\nBLANK: " + ("layer all zero" if "every activation" in why else "weighted sum < 0 everywhere")
            v.blank.setdefault(method, []).append({"image": v.names[i], "why": why})
    file = {"gradcam++": "gradcam_plus_plus"}.get(method, method) + ".png"
    _save_grid(v.out / file, v.pics, titles, 4, overlays=[_norm01(a) for a in r.maps], cell=2.0,
               suptitle=f"{method}, layer {r.module}")
    blanks = v.blank.get(method, [])
    note = f"; {len(blanks)} of {len(titles)} maps blank: {blanks[0]['why']}" if blanks else ""
    v.add("Class activation maps", file, f"{v.model_name}, {method} at {r.module} (conv layer {r.layer}), target: "
          + ("predicted class" if v.target is None else v.classes[v.target]) + note)


def _occlusion(v: _Context) -> None:
    occ = occlusion(v.model, v.images, v.targets, baseline=v.dark)
    panels, overlays, titles = [], [], []
    for i in range(len(v.pics)):
        for p, maps in occ.items():
            panels.append(v.pics[i])
            overlays.append(_norm01(maps[i].clamp_min(0)))
            titles.append(f"{p}x{p}: {v.caption(i)}" if p == min(occ) else f"{p}x{p}")
    v.attributions["occlusion"] = occ[sorted(occ)[len(occ) // 2]].clamp_min(0)
    _save_grid(v.out / "occlusion.png", panels, titles, len(occ), overlays=overlays, cell=2.0,
               suptitle="occlusion: drop of the target probability, per patch size")
    v.add("Occlusion", "occlusion.png", f"{v.model_name}, patches {', '.join(map(str, occ))} px, black patch")


def _saliency(v: _Context) -> None:
    v.attributions["saliency"] = saliency(v.model, v.images, v.targets)
    v.attributions["integrated gradients"] = integrated_gradients(v.model, v.images, v.targets, baseline=v.dark)
    for key, file in (("saliency", "saliency.png"), ("integrated gradients", "integrated_gradients.png")):
        _save_grid(v.out / file, v.pics, v.captions(), 4, overlays=[_norm01(a) for a in v.attributions[key]],
                   cell=2.0, suptitle=key)
        v.add("Saliency", file, f"{v.model_name}, {key}")


def _faithfulness(v: _Context) -> dict[str, dict[str, float]]:
    """Deletion and insertion areas of every attribution made, against a random map; ``faithfulness.json``."""
    if not v.attributions:
        raise VizError(f"--faithfulness needs an attribution method: {', '.join(CAM_METHODS)}, occlusion or saliency")
    gen = torch.Generator().manual_seed(0)
    maps = v.attributions | {"random (reference)": torch.rand(v.images.shape[0], *v.images.shape[2:], generator=gen)}
    rows = {}
    for key, m in maps.items():
        r = deletion_insertion(v.model, v.images, m, v.targets, baseline=v.dark)
        rows[key] = {"deletion_auc": r["deletion_auc"], "insertion_auc": r["insertion_auc"]}
    atomic_write_json(v.out / "faithfulness.json", rows)
    v.page.tables.append(("Faithfulness: deletion (lower is better) and insertion (higher is better) areas",
                          ["method", "deletion AUC", "insertion AUC"],
                          [[k, f"{r['deletion_auc']:.3f}", f"{r['insertion_auc']:.3f}"] for k, r in rows.items()]))
    return rows


def _evaluate(v: _Context, images: torch.Tensor, labels) -> dict:
    """Every attribution method measured on ``images`` (:func:`evaluate_attributions`), written as
    ``evaluation.json`` and ``evaluation.md``, shown as a table, and every method's maps for the first images
    as one figure."""
    targets = targets_for(v.model, images, v.target)
    masks = None
    if v.data is not None and v.data.evidence is not None:  # a known-answer run: the localisation column too
        masks = evidence_masks(v.data.evidence["test"][:len(images)], tuple(images.shape[-2:]), labels=labels,
                               targets=targets)
    v.log(f"evaluating {len(ATTRIBUTION_METHODS)} attribution methods on {len(images)} images ...")
    result = evaluate_attributions(v.model, images, targets, layer=v.gc_name, baseline=v.dark, masks=masks,
                                   log=v.log)
    module = cam_target_module(v.model, v.gc_name, v.images)[1]
    result.update({"model": v.model_name, "layer": v.gc_name, "module": module, "images": len(images),
                   "target": "predicted class" if v.target is None else v.classes[v.target]})
    head, rows = evaluation_table(result)
    title = (f"Which map to trust: {len(ATTRIBUTION_METHODS)} methods on {len(images)} images "
             f"(randomisation passes below rho {result['randomisation_pass']}; del lower and ins higher is better; "
             f"ROAD: change of the class probability)")
    v.page.tables.append((title, head, rows))
    atomic_write_json(v.out / "evaluation.json", result)
    atomic_write_text(v.out / "evaluation.md", _markdown(title, head, rows, result))
    k = min(4, len(v.images))
    panels, overlays, titles = [], [], []
    for method in ATTRIBUTION_METHODS:
        maps = attribution_maps(v.model, v.images[:k], v.targets[:k], method, layer=v.gc_name, baseline=v.dark)
        for i in range(k):
            panels.append(v.pics[i])
            overlays.append(_norm01(maps[i]))
            titles.append(method)
    shown = "; ".join(f"{v.classes[int(v.targets[i])]} {100 * float(v.probs[i, int(v.targets[i])]):.0f}%"
                      for i in range(k))
    _save_grid(v.out / "methods.png", panels, titles, k, overlays=overlays, cell=1.8,
               suptitle=f"every method, one row each, on the same {k} images ({shown}); CAMs at {module}")
    v.add("Which map to trust", "methods.png", f"{v.model_name}: every attribution method on the first {k} images")
    return result


def _markdown(title: str, head: list[str], rows: list[list[str]], result: dict) -> str:
    """``evaluation.md``: the table and the verdict in words."""
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", verdict_text(result), ""]
    return "\n".join(lines)


def verdict_text(result: dict) -> str:
    """The evaluation's conclusion in two sentences (three where the true evidence is known)."""
    best = result["most_faithful"]
    trusted = ", ".join(result["ranking"]) or "none"
    untrusted = ", ".join(result["untrusted"]) or "none"
    text = (f"Pass the randomisation check (trust, best first): {trusted}. Fail it (their maps survive "
            f"re-initialising every layer: they show the image more than the model): {untrusted}. Most faithful "
            f"with black replacement: {best.get('black')}; with blurred: {best.get('blur')}; under ROAD: "
            f"{best.get('road')}.")
    local = result.get("localisation")
    if local:
        rows = result["methods"]
        scored = sorted((m for m in rows if rows[m].get("localisation") is not None),
                        key=lambda m: -rows[m]["localisation"])
        if not scored:
            return text + (" Localisation: no evaluated image contains an object of the class explained, so "
                           "nothing to score.")
        order = ", ".join(f"{m} {rows[m]['localisation']:.2f}" for m in scored)
        among = "of the methods that pass the randomisation check" if result["ranking"] else "of all methods"
        text += (f" Localisation (the share of each map's mass inside the true object, its box grown by "
                 f"{LOCALISATION_MARGIN} px, on {local['images']} images): {order}; {among}, {local['best']} puts "
                 f"the most on the evidence.")
    return text


def _mistakes(v: _Context, k: int = 16) -> None:
    """The test images the model gets wrong with the highest confidence (test images only)."""
    data = v.data
    if data is None:
        return
    with torch.no_grad():
        probs = torch.cat([F.softmax(v.model(normalize(data.test_x[i:i + 1000], v.mean, v.std)), 1)
                           for i in range(0, len(data.test_x), 1000)])
    conf, pred = probs.max(1)
    wrong = (pred != data.test_y).nonzero().flatten()
    if not len(wrong):
        return
    top = wrong[conf[wrong].argsort(descending=True)[:k]]
    pics = [_display(normalize(data.test_x[i:i + 1], v.mean, v.std)[0], v.mean, v.std) for i in top]
    titles = [f"{v.classes[int(pred[i])]} {100 * float(conf[i]):.0f}%\n(true {v.classes[int(data.test_y[i])]})"
              for i in top]
    _save_grid(v.out / "mistakes.png", pics, titles, 8, cell=1.5,
               suptitle=f"the {len(top)} most confident mistakes of {len(wrong)} on the test set")
    v.add("Mistakes", "mistakes.png",
          f"{v.model_name}: most confident mistakes ({len(wrong)} of {len(data.test_x)} wrong)")


#: One section of the page per method, in :data:`METHODS` order.
_SECTIONS: dict[str, Callable[[_Context], None]] = {
    "filters": _filters, "feature-maps": _feature_maps, "maximize": _maximize,
    **{m: (lambda v, m=m: _cam(v, m)) for m in CAM_METHODS},
    "occlusion": _occlusion, "saliency": _saliency, "mistakes": _mistakes}


def _html(page: _Page) -> str:
    """One self-contained page: inline CSS, relative image paths, no remote scripts or fonts. The inline
    script marks on ``<body>`` how many images loaded (used by the headless-browser test)."""
    e = html.escape
    parts = [f"<h1>{e(page.title)}</h1>"]
    section = None
    for f in page.figures:
        if f.section != section:
            section = f.section
            parts.append(f"<h2>{e(section)}</h2>")
        parts.append(f'<figure><img src="{e(f.file)}" alt="{e(f.caption)}"><figcaption>{e(f.caption)}</figcaption></figure>')
    for title, head, rows in page.tables:
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    script = ("window.addEventListener('load',function(){var i=document.images,ok=0;"
              "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)ok++;}"
              "document.body.setAttribute('data-images',i.length);document.body.setAttribute('data-loaded',ok);});")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + e(page.title) + "</title>"
            "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px}figure{margin:1em 0}"
            "img{max-width:100%;border:1px solid #ddd}figcaption{color:#444;font-size:90%}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "</style></head><body>" + "".join(parts) + f"<script>{script}</script></body></html>\n")
