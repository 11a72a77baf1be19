"""The lecture's fast sections, run once: every section is there, every check has a verdict and none failed, the
numbers the lecture prints come out exactly, and the page loads in a real browser with every image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cnnlab.lecture.report import run_lecture
from tests.helpers import one_thread
from tests.lecture.helpers import assert_sections_sound

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEYS = ["convolution", "conv-layer", "pooling", "structures", "backprop", "dims"]


@pytest.fixture(scope="module")
def lecture(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lecture") / "report"
    with one_thread():
        return run_lecture(out, sections=KEYS, log=lambda s: None)


def _check(lecture: dict, key: str, statement: str) -> dict:
    section = next(s for s in lecture["sections"] if s["key"] == key)
    found = [c for c in section["checks"] if c["statement"].startswith(statement)]
    assert len(found) == 1, (statement, [c["statement"] for c in section["checks"]])
    return found[0]


def _measured(lecture: dict, key: str, statement: str):
    return _check(lecture, key, statement)["measured"]


def test_every_section_every_verdict_none_failed(lecture):
    assert_sections_sound(lecture, KEYS)
    for s in lecture["sections"]:
        assert s["checks"], s["key"]
        assert s["figures"], s["key"]
        assert all(c["command"] for c in s["checks"] if c["verdict"] != "cited"), s["key"]


def test_the_first_sections_numbers(lecture):
    assert _measured(lecture, "convolution", "the 3x3 kernel over the 5x5 input") == [[12, 12, 17], [10, 17, 19],
                                                                                       [9, 6, 14]]
    assert _measured(lecture, "convolution", "the sharpening kernel") == 114
    assert _measured(lecture, "conv-layer", "total trainable parameters") == 4_640
    assert _measured(lecture, "conv-layer", "a dense layer with the same") == 8_590_065_664


def test_structures_numbers(lecture):
    m = lambda statement: _measured(lecture, "structures", statement)  # noqa: E731
    zoo = {"resnet18": 11_689_512, "alexnet": 61_100_840, "squeezenet1_0": 1_248_424, "vgg16": 138_357_544,
           "densenet161": 28_681_000, "inception_v3": 27_161_264, "googlenet": 6_624_904,
           "shufflenet_v2_x1_0": 2_278_604, "mobilenet_v2": 3_504_872, "resnext50_32x4d": 25_028_904,
           "wide_resnet50_2": 68_883_240, "mnasnet1_0": 4_383_312}
    assert {n: m(f"models.{n}(pretrained=True)") for n in zoo} == zoo
    assert m("2015: ResNet, ~60M") == 60_192_808
    assert _check(lecture, "structures", "2015: Inception")["verdict"] == "explained"
    # the Keras table: equal, equal counted Keras' way, or explained to the parameter
    for name, verdict in (("VGG16", "reproduced"), ("DenseNet121", "reproduced"), ("MobileNetV2", "reproduced"),
                          ("ResNet50", "explained"), ("InceptionV3", "explained"), ("Xception", "cited")):
        c = next(c for c in next(s for s in lecture["sections"] if s["key"] == "structures")["checks"]
                 if c["statement"].startswith(f"Keras {name}: ") and "parameters" in c["statement"])
        assert c["verdict"] == verdict, (name, c)
        if verdict == "explained":
            assert "the lecture's number exactly" in c["explanation"]
    assert m("Keras' sizes are its HDF5") == 528
    # the lecture's Net (rf-demo)
    assert m("map size, layers 0-4") == [[256, 256], [128, 128], [128, 128], [128, 128], [64, 64]]
    assert m("jump, layers 0-4") == [1, 2, 2, 2, 4]
    assert m("receptive field, layers 0-4") == [1, 7, 7, 7, 11]
    assert m("receptive field of layer 2, unit (1, 1)") == [[0, 6], [0, 6]]
    assert m("... the input pixels it covers") == [[0, 5], [0, 5]]
    assert list(m("fmnist-cnn: the receptive field grows").values()) == [1, 3, 5, 6, 10, 14, 16]
    assert m("inverse image of unit (3, 3)") == [[6, 21], [6, 21]]
    assert m("the Inception module with dimensionality reduction")[3] == ["3x3 max pool", "1x1 conv"]
    assert len(m("resnet-small (ResNet-14)")) == 6


def test_backprop_and_dims_numbers(lecture):
    b = lambda statement: _check(lecture, "backprop", statement)  # noqa: E731
    assert b("the standard Conv2D (many channels)")["verdict"] == "within"
    assert b("the standard Conv2D (many channels)")["measured"] < 1e-9
    assert b("max pooling back-prop")["measured"] == [[0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 4], [3, 0, 0, 0]]
    assert b("average pooling back-prop")["measured"][0] == [0.25, 0.25, 0.5, 0.5]
    d = lambda statement: _measured(lecture, "dims", statement)  # noqa: E731
    assert d("dilated causal convolutions") == [2, 4, 8, 16]
    assert d("the lecture's figure (WaveNet, figure 2)") == 5
    assert d("3D CNN ~ video") == [8, 14, 30, 30] and d("... its parameters: 8 x (3 x 3 x 3 x 3)") == 656


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs Debian's chromium)")
def test_headless_chromium_loads_every_image(lecture):
    page = Path(lecture["index"])
    text = page.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs and all((page.parent / src).is_file() for src in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    # the page has no script of its own: a copy beside it counts the images the browser decoded
    probe = page.with_name("_probe.html")
    script = ("<script>window.addEventListener('load',function(){var i=document.images,ok=0;"
              "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)ok++;}"
              "document.body.setAttribute('data-images',i.length);document.body.setAttribute('data-loaded',ok);});"
              "</script>")
    probe.write_text(text.replace("</body>", script + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-loaded="(\d+)"', body.group(0)).group(1))
    assert images == len(srcs) and loaded == images
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
