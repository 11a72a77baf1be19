"""Which attribution map to trust on *this* model: every method measured on the same images.

- **Faithfulness** -- does removing what the map calls important change the prediction?
  Deletion and insertion areas (Petsiuk et al., BMVC 2018; :func:`cnnlab.viz.faithfulness.deletion_insertion`)
  with two replacements for a removed pixel, black and a blurred copy of the image (the ranking of methods is
  known to depend on that choice), and ROAD (Rong et al., ICML 2022: remove and debias, pixels replaced by a
  noisy linear imputation of their neighbours, so the model cannot recognise the mask's shape) through
  pytorch-grad-cam's ``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst``. Each replacement gives one score,
  higher is better: insertion minus deletion area; ROAD's change of the class probability when the least
  relevant pixels are removed minus when the most relevant are (``ROADCombined``'s score).
- **Randomisation** (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018, cascading test): the
  layers are re-initialised from the top (the output layer) down, one more at a time, and each method's maps
  are compared with the trained model's by Spearman rank correlation (after each conv or dense layer; a
  normalisation layer is compared together with the next one). A method whose maps survive the loss of
  everything the model learned shows the image, not the model: it *fails* when the mean correlation after
  the whole cascade is :data:`RANDOMISATION_PASS` or more. :func:`randomisation_check` is the cascade's last
  step alone, for maps already computed (the explorer's one image).
- **Localisation**, where the true evidence is known (a run trained on ``--dataset known-answer``, whose test
  images carry the object's box: :attr:`cnnlab.data.DataSplits.evidence`): the share of each map's non-negative
  mass inside the object's box grown by :data:`LOCALISATION_MARGIN` px (:func:`mass_inside`; 1 is all of it,
  a uniform map scores the region's share of the image, about 0.1), the mean over the images that have an
  object and whose explained class is their true one. A mass share rather than the pointing game: it also
  says how much of the map lies elsewhere, where the pointing game only asks for the peak.
- **Time**: seconds to compute the maps, per 256 images.

The verdict: the methods that pass the randomisation check, ranked by their mean rank over the three
replacements, with the spread of ranks; the others listed as not to be trusted on this model.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnlab.data.known_answer import box_masks
from cnnlab.viz._state import VizError, untouched
from cnnlab.viz.attribution import default_patch_sizes, grad_cam, integrated_gradients, occlusion, saliency
from cnnlab.viz.cam import CAM_METHODS, _library, cam, cam_target_module, layer_choices
from cnnlab.viz.faithfulness import deletion_insertion

__all__ = ["ATTRIBUTION_METHODS", "LOCALISATION_MARGIN", "RANDOMISATION_PASS", "ROAD_PERCENTILES", "attribution_maps",
           "blurred", "cascade", "evaluate_attributions", "evaluation_table", "evaluation_text", "evidence_masks",
           "faithfulness_scores",
           "mass_inside", "randomisation_check", "randomised_model", "spearman"]

#: Every attribution method the evaluation knows, CAM family first.
ATTRIBUTION_METHODS = (*CAM_METHODS, "guided", "occlusion", "saliency", "integrated-gradients")
#: A method fails the randomisation check when its maps' mean Spearman correlation with the trained model's,
#: after every layer is re-initialised, is at least this.
RANDOMISATION_PASS = 0.5
#: ROAD removes the most (or least) relevant 20%, 50% and 80% of the pixels.
ROAD_PERCENTILES = (20, 50, 80)
REPLACEMENTS = ("black", "blur", "road")
#: px: the true box is grown by this much before its share of a map is counted (CAMs are upsampled from a
#: coarser grid, so a map that is right spills about a pixel over the box's edge)
LOCALISATION_MARGIN = 1
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def attribution_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str, *,
                     layer: str | None = None, baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """(N, H, W) non-negative maps of one method, at the input's resolution. ``baseline``: what occlusion's
    patch and integrated gradients' starting image are (a value or one per channel); ``layer``: the CAM
    layer."""
    if method in CAM_METHODS:
        return cam(model, images, targets, method=method, layer=layer).maps
    if " @ " in method:  # a CAM method at another module than the default: "gradcam @ features.block2.bn2"
        base, module = method.split(" @ ", 1)
        if base in CAM_METHODS:
            return cam(model, images, targets, method=base, module=module).maps
    if method == "guided":
        return grad_cam(model, images, targets, layer=layer, variant="guided")
    if method == "occlusion":
        sizes = default_patch_sizes(min(images.shape[-2:]))
        p = sizes[len(sizes) // 2]  # the middle one, as the viz page's table (7 px on 28)
        return occlusion(model, images, targets, patch_sizes=(p,), baseline=baseline)[p].clamp_min(0)
    if method == "saliency":
        return saliency(model, images, targets)
    if method == "integrated-gradients":
        return integrated_gradients(model, images, targets, baseline=baseline)
    raise VizError(f"unknown attribution method {method!r}; valid: {', '.join(ATTRIBUTION_METHODS)}")


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) Spearman's rank correlation between maps ``a[i]`` and ``b[i]`` (scipy; ties share their average
    rank); NaN where either map is constant (a blank map has no order to compare)."""
    from scipy.stats import spearmanr

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ConstantInputWarning: the NaN says it
        for x, y in zip(a.flatten(1).double().numpy(), b.flatten(1).double().numpy()):
            out.append(float(spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


def mass_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) the share of each map's non-negative mass inside its mask (0 for a blank map)."""
    m = maps.clamp_min(0).flatten(1)
    return (m * masks.flatten(1).to(m)).sum(1) / m.sum(1).clamp_min(1e-12)


def evidence_masks(boxes: torch.Tensor, size: tuple[int, int], *, labels: torch.Tensor | None = None,
                   targets: torch.Tensor | None = None, margin: int = LOCALISATION_MARGIN) -> torch.Tensor:
    """(N, H, W) bool: each image's evidence box (N, 4: top, left, bottom, right, exclusive) grown by ``margin``
    px, the region the localisation score counts; empty for an image without evidence and, given ``labels``
    and ``targets``, for one whose explained class is not its true class (its map is of something else)."""
    masks = box_masks(boxes, size, margin)
    if labels is not None and targets is not None:
        masks &= (targets.cpu() == labels.cpu())[:, None, None]
    return masks


def blurred(images: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """A Gaussian-blurred copy of each image (sigma default: 1/14 of the shorter side, 2 px on 28), the
    replacement a removed pixel takes in the 'blur' variant of deletion and insertion."""
    from torchvision.transforms.functional import gaussian_blur

    side = min(images.shape[-2:])
    sigma = sigma or max(1.0, side / 14)
    k = 2 * int(3 * sigma) + 1
    k = min(k, side if side % 2 else side - 1)
    return gaussian_blur(images, [k, k], [sigma, sigma])


def _learned_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The modules with their own parameters, in the order the forward pass runs them (each once)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    own = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m) if m not in order else None) for m in own]
    try:
        with torch.no_grad(), untouched(model):
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return [(names[m], m) for m in order]


def cascade(model: nn.Module, example: torch.Tensor, seed: int = 0):
    """Yield (name of the layer just re-initialised, model) for Adebayo et al.'s cascading randomisation: a
    copy of ``model`` whose learned layers are re-initialised (``reset_parameters``, as freshly built) one
    more at a time, from the output layer down to the first. The user's model is not touched."""
    layers = _learned_layers(model, example)
    other = copy.deepcopy(model).eval()
    modules = dict(other.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, _ in reversed(layers):
            m = modules[name]
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
            yield name, other


def randomised_model(model: nn.Module, example: torch.Tensor, seed: int = 0) -> nn.Module:
    """A copy of ``model`` (eval mode) with every learned layer re-initialised: the last step of
    :func:`cascade`, the model the randomisation check compares against. ``model`` is not touched."""
    other = None
    for _, other in cascade(model, example, seed=seed):
        pass
    if other is None:
        raise VizError(f"{type(model).__name__} has no layer with parameters to re-initialise")
    return other


def randomisation_check(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                        maps_of: Callable[[nn.Module], torch.Tensor], *, randomised: nn.Module | None = None,
                        seed: int = 0) -> dict:
    """The randomisation check for maps already computed (e.g. one image in the explorer): ``maps_of`` computes
    the same method, with the same settings, on another model; it runs once, on :func:`randomised_model`
    (``randomised``, if given: one made earlier). Returns ``{"rho", "passes", "threshold", "layers"}``: the mean
    Spearman correlation between ``maps`` and the randomised model's maps (as the evaluation's last cascade
    step; a map that went blank counts as changed), whether it is below :data:`RANDOMISATION_PASS`, and how many
    layers were re-initialised; ``rho`` and ``passes`` are None, with ``why``, when every map is blank."""
    other = randomised_model(model, images, seed=seed) if randomised is None else randomised
    n_layers = len(_learned_layers(model, images))
    rho = _cascade_rho(maps.detach().cpu(), maps_of(other).detach().cpu())
    if math.isnan(rho):
        return {"rho": None, "passes": None, "threshold": RANDOMISATION_PASS, "layers": n_layers,
                "why": "the map is blank: it has no order to compare"}
    return {"rho": rho, "passes": bool(rho < RANDOMISATION_PASS), "threshold": RANDOMISATION_PASS,
            "layers": n_layers}


def _road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor) -> dict:
    """ROAD through pytorch-grad-cam: the mean change of the target probability when the most relevant
    (MoRF) or least relevant (LeRF) pixels are imputed, per percentile, and LeRF - MoRF averaged."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    calls = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    cams = maps.detach().float().cpu().numpy()
    morf, lerf = {}, {}
    with torch.random.fork_rng(devices=[]), untouched(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)  # the imputation's noise
        for p in ROAD_PERCENTILES:
            # MostRelevantFirst(q) keeps the pixels below the q-th percentile: q = 100 - p removes the top p%
            morf[p] = float(np.mean(ROADMostRelevantFirst(100 - p)(images, cams, calls, model)))
            lerf[p] = float(np.mean(ROADLeastRelevantFirst(100 - p)(images, cams, calls, model)))
    return {"morf": morf, "lerf": lerf, "score": statistics.mean(lerf[p] - morf[p] for p in ROAD_PERCENTILES) / 2}


def faithfulness_scores(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                        baseline: float | torch.Tensor = 0.0, blur: torch.Tensor | None = None,
                        road_images: int | None = None, steps: int = 20) -> dict:
    """The faithfulness of ``maps`` under each replacement: ``{"black": {deletion_auc, insertion_auc, score},
    "blur": {...}, "road": {morf, lerf, score, images}}`` (ROAD on the first ``road_images``). One function
    for the evaluation table and the explorer's numbers for one image."""
    blur = blurred(images) if blur is None else blur
    out: dict = {}
    for name, fill in (("black", baseline), ("blur", blur)):
        r = deletion_insertion(model, images, maps, targets, baseline=fill, steps=steps)
        out[name] = {"deletion_auc": r["deletion_auc"], "insertion_auc": r["insertion_auc"],
                     "score": r["insertion_auc"] - r["deletion_auc"]}
    k = len(images) if road_images is None else min(len(images), road_images)
    out["road"] = _road(model, images[:k], maps[:k], targets[:k]) | {"images": k}
    return out


def evaluate_attributions(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                          methods: Sequence[str] = ATTRIBUTION_METHODS, layer: str | None = None,
                          baseline: float | torch.Tensor = 0.0, masks: torch.Tensor | None = None,
                          road_images: int = 64, randomisation_images: int = 32, compare_layers: bool = True,
                          steps: int = 10,
                          log: Callable[[str], None] = lambda s: None) -> dict:
    """Evaluate each of ``methods`` on ``images`` (normalised) for class ``targets``; ``baseline`` is black in
    normalised units (:func:`cnnlab.viz.attribution.black`); ``masks`` (N, H, W) bool: the true evidence
    (:func:`evidence_masks`), for the localisation score, over the images whose mask is not empty. ROAD (a sparse solve per image and percentile) runs on the first
    ``road_images``, the cascade on the first ``randomisation_images``. Returns
    ``{"methods": {name: row}, "ranking": [...], "untrusted": [...], ...}``; every number is in the rows."""
    unknown = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if unknown:
        raise VizError(f"unknown attribution method {unknown[0]!r}; valid: {', '.join(ATTRIBUTION_METHODS)}")
    if compare_layers and "gradcam" in methods:
        _, default, _ = cam_target_module(model, layer, images)
        methods = [*methods, *(f"gradcam @ {m}" for m in layer_choices(model, layer, images) if m != default)]
    _library()  # its imports (scikit-learn, OpenCV: seconds) are not the first method's time
    n = len(images)
    blur = blurred(images)
    gen = torch.Generator().manual_seed(0)
    reference = torch.rand(n, *images.shape[-2:], generator=gen)
    rows: dict[str, dict] = {}
    trained: dict[str, torch.Tensor] = {}
    located = None if masks is None else masks.flatten(1).any(1)
    for method in [*methods, "random (reference)"]:
        t0 = time.perf_counter()
        if method == "random (reference)":
            maps, seconds = reference, None
        else:
            maps = attribution_maps(model, images, targets, method, layer=layer, baseline=baseline)
            seconds = (time.perf_counter() - t0) * 256 / n
            trained[method] = maps[:randomisation_images]
        row: dict = {"seconds_per_256": seconds, "blank": int((maps.flatten(1).amax(1) <= 0).sum()), "images": n}
        row.update(faithfulness_scores(model, images, maps, targets, baseline=baseline, blur=blur,
                                       road_images=road_images, steps=steps))
        if located is not None:
            row["localisation"] = (float(mass_inside(maps[located], masks[located].to(maps.device)).mean())
                                   if located.any() else None)
        rows[method] = row
        log(f"{method}: maps and faithfulness in {time.perf_counter() - t0:.1f} s")
    # the cascade once, every method at every step: one randomised copy of the model in memory
    t0 = time.perf_counter()
    r_images, r_targets = images[:randomisation_images], targets[:randomisation_images]
    curves: dict[str, list[float]] = {m: [] for m in methods}
    names = []

    def compare(name: str, other: nn.Module) -> None:
        names.append(name)
        for m in methods:
            maps = attribution_maps(other, r_images, r_targets, m, layer=layer, baseline=baseline)
            curves[m].append(_cascade_rho(trained[m], maps))

    steps, pending = 0, None
    for name, other in cascade(model, images, seed=0):
        steps += 1
        # maps after each conv or dense layer; a normalisation layer goes with the next one (or the end)
        pending = (name, other) if isinstance(dict(other.named_modules())[name], _NORMS) else None
        if pending is None:
            compare(name, other)
    if pending is not None:
        compare(*pending)
    for m in methods:
        rho = curves[m]
        rows[m]["randomisation"] = {"layers": names, "rho": rho, "rho_top": rho[0], "rho_all": rho[-1],
                                    "images": len(r_images), "passes": bool(rho[-1] < RANDOMISATION_PASS)}
    log(f"randomisation cascade ({steps} layers, maps after {len(names)} of them, {len(r_images)} images): "
        f"{time.perf_counter() - t0:.1f} s")
    result = _verdict(rows)
    if located is not None:
        result["localisation"] = {"measure": "share of the map's mass inside the true object's region",
                                  "images": int(located.sum()), "best": _most_localised(result)}
    return result


def _most_localised(result: dict) -> str | None:
    """The trusted method (any method, if none is trusted) with the highest localisation score."""
    rows = result["methods"]
    pool = [m for m in (result["ranking"] or [m for m in rows if "randomisation" in rows[m]])
            if rows[m].get("localisation") is not None]
    return max(pool, key=lambda m: rows[m]["localisation"]) if pool else None


def _cascade_rho(trained: torch.Tensor, randomised: torch.Tensor) -> float:
    """Mean Spearman correlation over the images whose trained map has an order to compare (a blank trained
    map is left out); a map that went blank under randomisation counts as changed (0)."""
    keep = trained.flatten(1).amax(1) > trained.flatten(1).amin(1)
    if not keep.any():
        return float("nan")
    rho = torch.nan_to_num(spearman(trained[keep], randomised[keep]), nan=0.0)
    return float(rho.mean())


def _verdict(rows: dict[str, dict]) -> dict:
    """Rank the methods that pass the randomisation check by their mean rank over the replacements."""
    methods = [m for m in rows if "randomisation" in rows[m]]
    ranks: dict[str, list[int]] = {m: [] for m in methods}
    for rep in REPLACEMENTS:
        order = sorted(methods, key=lambda m: -rows[m][rep]["score"])
        for i, m in enumerate(order, 1):
            ranks[m].append(i)
    for m in methods:
        rows[m]["ranks"] = dict(zip(REPLACEMENTS, ranks[m]))
        rows[m]["mean_rank"] = statistics.mean(ranks[m])
    trusted = sorted((m for m in methods if rows[m]["randomisation"]["passes"]), key=lambda m: rows[m]["mean_rank"])
    untrusted = [m for m in methods if not rows[m]["randomisation"]["passes"]]
    best = {rep: max(trusted or methods, key=lambda m: rows[m][rep]["score"]) for rep in REPLACEMENTS} if methods else {}
    return {"methods": rows, "ranking": trusted, "untrusted": untrusted, "most_faithful": best,
            "randomisation_pass": RANDOMISATION_PASS, "road_percentiles": list(ROAD_PERCENTILES)}


def evaluation_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """The table a user reads (header, rows): trusted methods by rank, then the untrusted, then the random
    reference; one place for the CLI, the Markdown file and the page."""
    rows = result["methods"]
    local = any("localisation" in r for r in rows.values())
    head = ["method", "rank", "randomisation rho (top / all layers)", "black: del / ins", "blur: del / ins",
            "ROAD MoRF / LeRF (50%)", *(["mass inside the object"] if local else []), "blank maps",
            "s / 256 images"]
    out = []
    order = [*result["ranking"], *result["untrusted"], *[m for m in rows if "randomisation" not in rows[m]]]
    for m in order:
        r = rows[m]
        if "randomisation" in r:
            rnd = r["randomisation"]
            verdict = "pass" if rnd["passes"] else "FAILS"
            rank = (f"{result['ranking'].index(m) + 1} (ranks {min(r['ranks'].values())}-{max(r['ranks'].values())})"
                    if m in result["ranking"] else "untrusted")
            rho = f"{rnd['rho_top']:.2f} / {rnd['rho_all']:.2f} {verdict}"
        else:
            rank, rho = "reference", ""
        road = r["road"]
        out.append([m, rank, rho, f"{r['black']['deletion_auc']:.3f} / {r['black']['insertion_auc']:.3f}",
                    f"{r['blur']['deletion_auc']:.3f} / {r['blur']['insertion_auc']:.3f}",
                    f"{road['morf'][50]:+.3f} / {road['lerf'][50]:+.3f}",
                    *([_share(r.get("localisation"))] if local else []), f"{r['blank']}/{r['images']}",
                    "" if r["seconds_per_256"] is None else f"{r['seconds_per_256']:.2f}"])
    return head, out


def evaluation_text(result: dict) -> str:
    """:func:`evaluation_table` as aligned plain-text columns, for a terminal (``cnnlab viz --evaluate``)."""
    head, rows = evaluation_table(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in (head, ["-" * w for w in widths], *rows))


def _share(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
