"""Which map to trust: faithfulness with three replacements, ROAD, the cascading randomisation check and the
verdict, on the known-answer task (where the right answer is known)."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.viz.evaluate import (RANDOMISATION_PASS, attribution_maps, blurred, cascade, evaluate_attributions,
                                 evaluation_table, evaluation_text, evidence_masks, mass_inside, spearman)
from tests.viz.helpers import Snapshot

METHODS = ("gradcam", "layercam", "eigencam", "saliency", "occlusion")


@pytest.fixture(scope="module")
def evaluation(request):
    ka = request.getfixturevalue("known_answer")
    x, y, masks = ka.images[:24], ka.labels[:24], ka.masks[:24]
    return evaluate_attributions(ka.model, x, y, methods=METHODS, masks=masks, road_images=12,
                                 randomisation_images=12)


def test_every_method_and_the_random_reference_get_every_number(evaluation):
    rows = evaluation["methods"]
    # Grad-CAM also on the conv's raw output: the other module that could stand for the layer
    assert list(rows) == [*METHODS, "gradcam @ features.conv2", "random (reference)"]
    for name, r in rows.items():
        for rep in ("black", "blur"):
            assert 0 <= r[rep]["deletion_auc"] <= 1 and 0 <= r[rep]["insertion_auc"] <= 1
            assert r[rep]["score"] == pytest.approx(r[rep]["insertion_auc"] - r[rep]["deletion_auc"])
        assert set(r["road"]["morf"]) == {20, 50, 80} and r["road"]["images"] == 12
        assert 0 <= r["localisation"] <= 1 and r["images"] == 24
        if name != "random (reference)":
            rnd = r["randomisation"]
            assert rnd["layers"] == ["classifier.fc", "features.conv2", "features.conv1"]
            assert len(rnd["rho"]) == 3 and rnd["passes"] == (rnd["rho_all"] < RANDOMISATION_PASS)
            assert r["seconds_per_256"] > 0


def test_the_right_answer_wins(evaluation):
    """The object is the answer: Grad-CAM puts its mass there, removes what matters (ROAD and deletion) and
    passes the randomisation check; the random map does none of it."""
    rows = evaluation["methods"]
    rand = rows["random (reference)"]
    g = rows["gradcam"]
    assert g["localisation"] >= 0.6 > 0.2 > rand["localisation"]
    assert g["road"]["morf"][50] < rand["road"]["morf"][50]  # the class probability falls further
    assert g["black"]["deletion_auc"] < rand["black"]["deletion_auc"]
    assert g["randomisation"]["passes"] and g["randomisation"]["rho_all"] < 0.5
    assert "gradcam" in evaluation["ranking"] and "random (reference)" not in evaluation["ranking"]


def test_eigencam_ignores_the_class_layer(evaluation):
    """Class-agnostic: re-initialising only the output layer leaves its maps exactly as they were."""
    assert evaluation["methods"]["eigencam"]["randomisation"]["rho_top"] == pytest.approx(1.0)


def test_the_table_and_the_verdict(evaluation):
    head, rows = evaluation_table(evaluation)
    assert head[0] == "method" and "mass inside the object" in head
    assert [r[0] for r in rows][-1] == "random (reference)" and len(rows) == len(METHODS) + 2
    trusted = evaluation["ranking"]
    assert [r[0] for r in rows][:len(trusted)] == trusted
    assert all(r[1].startswith(f"{i} (ranks") for i, r in enumerate(rows[:len(trusted)], 1))
    assert all(r[1] == "untrusted" for r in rows[len(trusted):-1])
    assert set(evaluation["most_faithful"]) == {"black", "blur", "road"}
    assert all(m in trusted for m in evaluation["most_faithful"].values())
    lines = evaluation_text(evaluation).splitlines()  # the terminal's table: the same cells, aligned
    assert len(lines) == len(rows) + 2 and set(lines[1]) <= {"-", " "}
    starts = [lines[0].index(h) for h in head]
    for line, row in zip(lines[2:], rows):
        assert [line[a:].startswith(c) for a, c in zip(starts, row)] == [True] * len(row), line


def test_the_cascade_goes_from_the_top_and_leaves_the_model_alone(known_answer):
    model = known_answer.model
    snap = Snapshot(model)
    x = known_answer.images[:2]
    seen = []
    for name, other in cascade(model, x):
        seen.append(name)
        changed = {n for n, p in other.named_parameters() if not torch.equal(p, dict(model.named_parameters())[n])}
        assert {n.rsplit(".", 1)[0] for n in changed} == set(seen)
    assert seen == ["classifier.fc", "features.conv2", "features.conv1"]
    snap.assert_unchanged()


def test_spearman_counts_ties_and_order_and_says_when_it_cannot():
    a = torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    assert spearman(a, a * 3).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([[0.0, 1.0, 1.0, 2.0]])).item() == pytest.approx(5 / 6)  # average ranks of ties: 3.75 / 4.5
    assert math.isnan(spearman(a, torch.zeros(1, 4)).item())  # a blank map has no order


def test_blur_and_mass():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 14, 14] = 1
    b = blurred(x)
    assert b.shape == x.shape and b.max() < 0.1 and b.sum() == pytest.approx(1.0, abs=1e-3)
    m = torch.zeros(1, 28, 28)
    m[0, :14] = 1
    assert mass_inside(m, m.bool()).item() == pytest.approx(1.0)
    assert mass_inside(torch.zeros(1, 28, 28), m.bool()).item() == 0


def test_the_verdict_names_the_best_localised_method(evaluation):
    from cnnlab.viz.report import verdict_text

    local = evaluation["localisation"]
    assert local["images"] == 24 and local["best"] in evaluation["ranking"]
    rows = evaluation["methods"]
    assert rows[local["best"]]["localisation"] == max(rows[m]["localisation"] for m in evaluation["ranking"])
    text = verdict_text(evaluation)
    assert "Localisation (the share of each map's mass inside the true object" in text
    assert f"{local['best']} puts the most on the evidence" in text
    assert f"random (reference) {rows['random (reference)']['localisation']:.2f}" in text


def test_localisation_only_where_the_evidence_is_known(known_answer):
    """Images without an object (or explained as another class) are left out of the score, not counted as 0;
    without masks there is no localisation at all: no key, no column, no sentence."""
    from cnnlab.data.known_answer import masks_to_boxes
    from cnnlab.viz.report import verdict_text

    ka = known_answer
    x, y = ka.images[:6], ka.labels[:6]
    boxes = masks_to_boxes(ka.boxes[:6])
    boxes[:2] = 0  # as if the first two had no object
    wrong = y.clone()
    wrong[2] = 1 - wrong[2]  # the third explained as the other class
    masks = evidence_masks(boxes, (28, 28), labels=wrong, targets=y)
    assert not masks[:3].flatten(1).any(1).any() and masks[3:].flatten(1).any(1).all()
    assert torch.equal(masks[3:], ka.masks[3:6])
    kw = dict(methods=("saliency",), compare_layers=False, road_images=2, randomisation_images=2, steps=4)
    with_masks = evaluate_attributions(ka.model, x, y, masks=masks, **kw)
    row = with_masks["methods"]["saliency"]
    maps = attribution_maps(ka.model, x, y, "saliency")
    assert row["localisation"] == pytest.approx(float(mass_inside(maps[3:], masks[3:]).mean()), rel=1e-5)
    assert with_masks["localisation"]["images"] == 3
    none = evaluate_attributions(ka.model, x, y, masks=torch.zeros(6, 28, 28, dtype=torch.bool), **kw)
    assert none["methods"]["saliency"]["localisation"] is None and none["localisation"]["best"] is None
    assert evaluation_table(none)[1][0][evaluation_table(none)[0].index("mass inside the object")] == "n/a"
    assert "nothing to score" in verdict_text(none)
    plain = evaluate_attributions(ka.model, x, y, **kw)
    assert all("localisation" not in r for r in plain["methods"].values()) and "localisation" not in plain
    assert "mass inside the object" not in evaluation_table(plain)[0]
    assert "Localisation" not in verdict_text(plain)


def test_randomisation_check_for_one_image(known_answer):
    """The explorer's check: a map that depends on the weights changes on the randomised model (passes), a map
    of the image alone does not (fails), a blank map cannot be compared; the user's model is left alone."""
    from cnnlab.viz.evaluate import randomisation_check, randomised_model

    model, x, y = known_answer.model, known_answer.images[:1], known_answer.labels[:1]
    snap = Snapshot(model)
    other = randomised_model(model, x)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    maps = attribution_maps(model, x, y, "gradcam")
    r = randomisation_check(model, x, maps, lambda m: attribution_maps(m, x, y, "gradcam"), randomised=other)
    assert r["layers"] == 3 and r["passes"] and r["rho"] < RANDOMISATION_PASS
    image = x[:, 0].abs()
    assert randomisation_check(model, x, image, lambda m: image)["passes"] is False
    blank = randomisation_check(model, x, torch.zeros(1, 28, 28), lambda m: torch.zeros(1, 28, 28))
    assert blank["rho"] is None and blank["passes"] is None and "blank" in blank["why"]
    snap.assert_unchanged()
