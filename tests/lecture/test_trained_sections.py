"""The lecture's trained sections (Fashion-MNIST, visualization with a --catsdogs folder, reduced complexity)
assembled on a tiny budget with generated data: every section there, every check with a verdict, none failed,
every figure written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.lecture import reduced, report, visualization
from cnnlab.lecture.report import run_lecture
from cnnlab.viz import maximize_activation
from tests.helpers import write_fake_fmnist, write_folder
from tests.lecture.helpers import assert_sections_sound

KEYS = ["fashion-mnist", "visualization", "reduced"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The quick budget shrunk to seconds: 1 epoch on 1,000 images, the compact models on 500, compression
    fine-tuned on 300, the dogs-vs-cats CNN on 24 images a class with a short maximisation and one patch size."""
    mp = pytest.MonkeyPatch()
    mp.setattr(report, "FMNIST_QUICK", {"epochs": 1, "subset": 1000})
    mp.setitem(reduced.COMPARE_BUDGET, "quick", (1, 500))
    mp.setitem(reduced.COMPRESS_SUBSET, "quick", 300)
    mp.setitem(visualization.CATSDOGS_BUDGET, "quick", (1, 24))
    mp.setattr(visualization, "LECTURE_PATCHES", (90,))
    mp.setattr(visualization, "maximize_activation", lambda *a, **k: maximize_activation(*a, **k, steps=4))
    root = tmp_path_factory.mktemp("lecture-trained")
    folder = write_folder(root / "catsdogs", per_class=24)
    fmnist = write_fake_fmnist(root / "fmnist", 6000, 400)  # the recipes hold out 5,000 for validation
    try:
        return run_lecture(root / "report", budget="quick", sections=KEYS, data_dir=str(fmnist),
                           catsdogs=str(folder), log=lambda s: None)
    finally:
        mp.undo()


def test_every_trained_section_every_verdict_none_failed(tiny):
    checks = assert_sections_sound(tiny, KEYS)
    page = Path(tiny["index"])
    for s in tiny["sections"]:
        assert s["figures"], s["key"]
        assert all((page.parent / f["file"]).is_file() for f in s["figures"]), s["key"]
    # every number a quick budget affects says so (a latency does not depend on how long a model trained)
    trained = [c for c in checks if c["command"] and ("experiment fmnist" in c["command"] or "compress" in
                                                      c["command"] or (c["command"].startswith("cnnlab compare fmnist")
                                                                       and "accuracy" in c["statement"]))]
    assert trained and all(c["budget"] for c in trained), [c["statement"] for c in trained if not c["budget"]]


def test_the_catsdogs_folder_gets_the_same_views(tiny):
    vis = next(s for s in tiny["sections"] if s["key"] == "visualization")
    files = {f["file"] for f in vis["figures"]}
    for view in ("feature-maps", "maximize", "gradcam", "occlusion"):
        assert f"figures/visualization-catsdogs-{view}.png" in files, view
    assert not any(c["verdict"] == "cited" and "dogs-vs-cats" in c["statement"] for c in vis["checks"])
    record = json.loads((Path(tiny["index"]).parent / "catsdogs" / "config.json").read_text())
    assert record["train"]["model"] == "catsdogs-cnn" and record["train"]["per_class"] == 24
