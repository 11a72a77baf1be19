"""The explorer's API on tiny runs made here: every endpoint with good and bad input, what the views agree
with (``cnnlab rf``'s region, the summary, the confusion counts), the security rules (no path from a request,
upload limits, JSON errors, no traceback), concurrent requests, and the other run kinds (an RGB image-folder
run, an int8 quantized run)."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.analysis import field_report
from cnnlab.cli import main
from cnnlab.explore import MAX_UPLOAD_BYTES, ExploreSession
from cnnlab.explore.app import create_app
from cnnlab.explore.server import ServeError, check_address
from cnnlab.viz.evaluate import RANDOMISATION_PASS, randomisation_check
from tests.cli.helpers import one_line_error, run_cli
from tests.helpers import write_fake_fmnist, write_folder

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")]


def _client(session):
    from fastapi.testclient import TestClient

    return TestClient(create_app(session), raise_server_exceptions=False)


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fake_fmnist(tmp_path_factory.mktemp("explore-data"), 800, 160)


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("explore-runs") / "cnn"
    assert main(["train", "--model", "fmnist-cnn", "--epochs", "1", "--subset", "512", "--val-size", "64",
                 "--batch-size", "128", "--data-dir", str(data_dir), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--precision", "fp32"]) == 0
    return out


@pytest.fixture(scope="module")
def session(run_dir, data_dir):
    s = ExploreSession(run_dir, data_dir=str(data_dir))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(session):
    return _client(session)


@pytest.fixture(scope="module")
def image(client):
    r = client.post("/api/images/test/3")
    assert r.status_code == 200, r.text
    return r.json()


def _drawing(size: int = 280) -> np.ndarray:
    a = np.zeros((size, size), dtype=np.uint8)
    a[60:200, 110:170] = 255  # a bright bar: trousers-like
    return a


# ------------------------------------------------------------------------------------------ the run
def test_describe(client):
    d = client.get("/api/run").json()
    assert d["model"] == "fmnist-cnn" and d["input_size"] == [1, 28, 28] and len(d["classes"]) == 10
    assert d["has_gradients"] and d["kind"] == "trained" and d["history"]
    assert d["conv_layers"][0] == "features.block1.conv1" and d["default_layer"] == "features.block2.conv2"
    assert d["attributions"] == ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam",
                                 "ablationcam", "saliency", "integrated-gradients", "occlusion"]
    assert d["default_attribution"] == "hirescam"
    assert "sharpen" in d["examples"]


def test_anatomy_is_the_summary(client, session):
    d = client.get("/api/anatomy").json()
    assert d["total_params"] == 1_677_674 and d["text"] == session.summary.table()
    assert [r["name"] for r in d["layers"]][:2] == ["input", "features.block1.conv1"]


# ------------------------------------------------------------------------------------------ inputs
def test_a_drawing_is_centred_and_predicted(client):
    r = client.post("/api/images?kind=drawing", content=_png_bytes(_drawing()), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    d = r.json()
    x = _decode(d["png"])
    assert x.shape == (28, 28)
    rows, cols = np.nonzero(x > 64)
    assert rows.min() <= 2 and rows.max() >= 25  # the bar's height fills the frame, as Fashion-MNIST's objects
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1.5  # centred
    assert sum(p["p"] for p in d["prediction"]) == pytest.approx(1.0, abs=1e-3)
    again = client.post("/api/images?kind=drawing", content=_png_bytes(_drawing()),
                        headers={"content-type": "image/png"}).json()
    assert again["image"] == d["image"]  # the same picture is the same id


def test_an_empty_canvas_is_black(client):
    d = client.post("/api/images?kind=drawing", content=_png_bytes(np.zeros((50, 50), np.uint8)),
                    headers={"content-type": "image/png"}).json()
    assert _decode(d["png"]).max() == 0


def test_a_file_is_decoded_as_predict_does(client, session, tmp_path):
    a = np.full((40, 60, 3), 255, np.uint8)
    a[10:30, 20:40] = 0  # a dark object on white: auto-inverted, as `cnnlab predict` does
    path = tmp_path / "photo.png"
    Image.fromarray(a).save(path)
    d = client.post("/api/images", content=path.read_bytes(), headers={"content-type": "image/png"}).json()
    from cnnlab.data import load_run_image

    assert np.array_equal(_decode(d["png"]), load_run_image(path, session.info)[0].numpy())


@pytest.mark.parametrize("body,headers,status,needle", [
    (b"", {"content-type": "image/png"}, 400, "no image"),
    (b"not an image at all", {"content-type": "image/png"}, 400, "not a readable image"),
    (b"{}", {"content-type": "application/json"}, 415, "not an image"),
    (b"x", {"content-type": "image/png", "content-length": str(MAX_UPLOAD_BYTES + 1)}, 413, "over the limit"),
])
def test_bad_uploads(client, body, headers, status, needle):
    r = client.post("/api/images", content=body, headers=headers)
    assert r.status_code == status and needle in r.json()["error"]


def test_an_upload_over_the_limit_without_a_length_is_refused(client):
    def chunks():
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 2):
            yield b"\0" * 65536

    r = client.post("/api/images", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413


@pytest.mark.parametrize("url,status,needle", [
    ("/api/images/test/999999", 400, "valid: 0-159"),
    ("/api/images?kind=photo", 400, "kind"),
])
def test_bad_input_names_the_value(client, url, status, needle):
    r = client.post(url, content=b"x", headers={"content-type": "image/png"})
    assert r.status_code == status and needle in r.json()["error"]


def test_test_images_follow_the_confusion_matrix(client):
    conf = client.get("/api/confusion").json()
    m = np.array(conf["matrix"])
    assert m.sum() == conf["images"] == 160
    assert conf["accuracy"] == pytest.approx(np.trace(m) / m.sum(), abs=1e-4)
    t, p = np.unravel_index(np.argmax(m - np.diag(np.diag(m))), m.shape)  # the largest off-diagonal cell
    cell = client.get(f"/api/test-images?label={t}&predicted={p}&limit=256").json()
    assert cell["total"] == m[t, p] and all(i["label"] == t and i["predicted"] == p for i in cell["images"])
    mistakes = client.get("/api/test-images?mistakes=true&limit=256").json()
    assert mistakes["total"] == m.sum() - np.trace(m)
    ps = [i["p"] for i in mistakes["images"]]
    assert ps == sorted(ps, reverse=True)  # the most confident first
    assert client.get("/api/test-images?label=10").status_code == 400


# ------------------------------------------------------------------------------------------ views
def test_activations_are_every_layers_output(client, session, image):
    d = client.get(f"/api/activations?image={image['image']}").json()
    names = [layer["name"] for layer in d["layers"]]
    leaves = [n for n, m in session.model.named_modules() if n and not list(m.children())]
    assert names == leaves
    first = d["layers"][0]
    assert first["shape"] == [32, 28, 28] and first["type"] == "Conv2d" and first["params"] == 320
    sheet = _decode(first["png"])
    assert sheet.shape == (first["height"] * -(-32 // first["cols"]), first["width"] * first["cols"])
    fc = next(layer for layer in d["layers"] if layer["name"] == "classifier.fc2")
    assert fc["shape"] == [10] and not fc["spatial"]


def test_a_unit_has_the_rf_commands_region(client, session, image):
    r = client.get(f"/api/unit?image={image['image']}&layer=features.block2.conv1&channel=2&position=3,4")
    assert r.status_code == 200, r.text
    d = r.json()
    expected = field_report(session.summary, layer="features.block2.conv1", unit=(3, 4)).unit["regions"]
    assert d["regions"] == expected
    erf = _decode(d["erf"]["png"])
    assert erf.shape == (28, 28)
    rows, cols = np.nonzero(erf)
    (r0, r1), (c0, c1) = expected[0]["pixels"], expected[1]["pixels"]
    assert r0 <= rows.min() and rows.max() <= r1 and c0 <= cols.min() and cols.max() <= c1  # inside the theory
    assert d["kernel"]["shape"] == [32, 3, 3]


@pytest.mark.parametrize("query,status,needle", [
    ("layer=features.block2.conv1&channel=2&position=30,4", 400, "outside"),
    ("layer=features.block2.conv1&channel=99&position=3,4", 400, "outside"),
    ("layer=nope&channel=0&position=1,1", 400, "unknown layer 'nope'"),
    ("layer=features.block2.conv1&channel=0&position=a,b", 400, "position"),
    ("layer=features.block2.conv1&channel=-1&position=1,1", 400, "channel"),
])
def test_bad_units(client, image, query, status, needle):
    r = client.get(f"/api/unit?image={image['image']}&{query}")
    assert r.status_code == status and needle in r.json()["error"], r.text


def test_an_unknown_image_is_404(client):
    r = client.get("/api/unit?image=0123456789abcdef&layer=features.block1.conv1&channel=0&position=1,1")
    assert r.status_code == 404 and "send it again" in r.json()["error"]


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam",
                                    "ablationcam", "saliency", "integrated-gradients", "occlusion"])
def test_attributions(client, image, method):
    r = client.get("/api/attribution", params={"image": image["image"], "method": method, "target": 2,
                                               "faithfulness": "true"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["target"] == 2 and _decode(d["png"]).shape == (28, 28)
    assert 0 <= d["faithfulness"]["deletion_auc"] <= 1 and 0 <= d["faithfulness"]["insertion_auc"] <= 1
    f = d["faithfulness"]
    assert 0 <= f["blur"]["deletion_auc"] <= 1 and 0 <= f["blur"]["insertion_auc"] <= 1
    assert -1 <= f["road"]["morf"] <= 1 and -1 <= f["road"]["lerf"] <= 1
    r = f["randomisation"]  # the cascade's last step for this image: every layer re-initialised
    assert r["threshold"] == RANDOMISATION_PASS and r["layers"] == 11  # fmnist-cnn's convs, BatchNorms, dense layers
    if r["rho"] is None:
        assert r["passes"] is None and "blank" in r["why"] and d["blank"]
    else:
        assert -1 <= r["rho"] <= 1 and r["passes"] == (r["rho"] < RANDOMISATION_PASS)
    assert (d["layer"] is not None) == method.endswith(("cam", "cam++"))
    assert d["blank"] is None or d["blank"].startswith("blank: ")


def test_the_randomisation_check_is_the_evaluations(session, image):
    """The explorer's number for one image is :func:`randomisation_check` on the same map, and the check fails
    a map that the weights do not change."""
    from cnnlab.data import normalize
    from cnnlab.viz import saliency

    d = session.attribution(image["image"], "saliency", target=2, faithfulness=True)
    x = normalize(session.image(image["image"]).unsqueeze(0), session.mean, session.std)
    t = torch.tensor([2])
    maps = saliency(session.model, x, t)
    direct = randomisation_check(session.model, x, maps, lambda m: saliency(m, x, t))
    assert d["faithfulness"]["randomisation"]["rho"] == pytest.approx(direct["rho"], abs=1e-4)
    assert d["faithfulness"]["randomisation"]["passes"] == direct["passes"]
    same = randomisation_check(session.model, x, maps, lambda m: maps)  # a map the weights do not change
    assert same["rho"] == pytest.approx(1.0) and same["passes"] is False


@pytest.mark.parametrize("query,needle", [
    ("method=bogus", "unknown method 'bogus'"), ("method=gradcam&target=10", "target 10"),
    ("method=gradcam&layer=classifier.fc1", "classifier.fc1"), ("method=occlusion&patch=99", "patch"),
])
def test_bad_attributions(client, image, query, needle):
    r = client.get(f"/api/attribution?image={image['image']}&{query}")
    assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_the_convolution_step_by_step(client, image):
    d = client.get("/api/conv?example=sharpen").json()
    assert d["example"]["matches_lecture"] and d["kernel"] == [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    assert len(d["steps"]) == np.prod(d["output_shape"]) and "formula" in d["steps"][0]
    d = client.get("/api/conv?input=1 2 3 4;5 6 7 8;9 10 11 12;13 14 15 16&kernel=1 0;0 1&stride=2").json()
    assert d["output"] == [[7, 11], [23, 27]]
    assert d["formula"][0] == "rows: floor((4 + 0 + 0 - 1*(2 - 1) - 1) / 2) + 1 = 2"
    d = client.get(f"/api/conv?image={image['image']}&filter=0&padding=same").json()
    assert d["output_shape"] == [28, 28]
    d = client.get("/api/conv?input=1 2 3;4 5 6;7 8 9&op=max&kernel_size=2&stride=1").json()
    assert d["output"] == [[5, 6], [8, 9]]
    assert client.get("/api/conv?example=maxpool-3x3").json()["op"] == "max"  # the example's own op
    assert client.get("/api/conv?example=sharpen&padding=0").json()["pads"] == [[0, 0], [0, 0]]  # 0 is a padding
    assert client.get("/api/run").json()["example_ops"]["avgpool-3x3"] == "avg"


@pytest.mark.parametrize("query,needle", [
    ("input=1 2;3&kernel=1", "ragged"), ("input=1 2;3 4&kernel=1&padding=huge", "padding"),
    ("input=1 2;3 4", "kernel"), ("example=nope", "nope"),
    ("input=1 2;3 4&kernel=1&stride=x", "stride"), ("filter=999&input=1 2;3 4", "filter 999"),
])
def test_bad_convolutions(client, query, needle):
    r = client.get(f"/api/conv?{query}")
    assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_what_it_learned(client, session):
    f = client.get("/api/filters").json()
    assert f["layer"] == "features.block1.conv1" and len(f["filters"]) == 32 and _decode(f["filters"][0]).shape == (3, 3)
    h = client.get("/api/history").json()
    assert h["series"]["epoch"] == [1.0] and "train_loss" in h["columns"]
    r = client.post("/api/maximize?layer=features.block1.conv2&channel=1")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("running", "done") and 0 <= r.json()["progress"] <= 1
    done = session.maximize("features.block1.conv2", 1, wait=True)  # the same job, waited for
    assert done["status"] == "done" and done["progress"] == 1.0 and _decode(done["png"]).shape == (28, 28)
    assert client.post("/api/maximize?layer=features.block1.conv2&channel=1").json() == done  # cached
    assert client.post("/api/maximize?layer=features.block1.conv2&channel=99").status_code == 400


# ------------------------------------------------------------------------------------------ security
@pytest.mark.parametrize("path", ["/static/../../etc/passwd", "/static/%2e%2e%2fapp.py", "/static/..%2f..%2fsession.py",
                                  "/static/%2e%2e/%2e%2e/etc/passwd", "/static/app.py", "/etc/passwd", "/api/nope"])
def test_only_its_own_files(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.json() == {"error": "not found"}


def test_the_page_and_its_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/docs").status_code == 404  # its scripts would come from a CDN
    schema = client.get("/openapi.json").json()
    assert {"/api/run", "/api/images", "/api/unit", "/api/conv", "/api/attribution"} <= set(schema["paths"])


def test_no_traceback_reaches_a_response(session, monkeypatch, image):
    c = _client(session)
    monkeypatch.setattr(session, "predict", lambda image_id: 1 / 0)
    r = c.get(f"/api/predict?image={image['image']}")
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "Traceback" not in r.text and "ZeroDivision" not in r.text


def test_validation_errors_are_one_json_line(client):
    r = client.get("/api/unit?image=x&layer=y&channel=zero")
    assert r.status_code == 400 and r.json()["error"].startswith("channel:")


# ------------------------------------------------------------------------------------------ concurrency
def test_parallel_requests_answer_as_sequential_ones(client, session, image):
    urls = [f"/api/activations?image={image['image']}",
            f"/api/unit?image={image['image']}&layer=features.block1.conv2&channel=3&position=5,6",
            f"/api/attribution?image={image['image']}&method=gradcam",
            f"/api/attribution?image={image['image']}&method=saliency",
            f"/api/predict?image={image['image']}"] * 3
    sequential = [client.get(u).json() for u in urls]
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda u: client.get(u).json(), urls))
    assert parallel == sequential
    model = session.model  # left as found: eval mode, no hooks, no gradients
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------ other run kinds
@pytest.fixture(scope="module")
def quantized(run_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("explore-q") / "int8"
    assert main(["compress", str(run_dir), "--method", "quantize", "--subset", "256", "--no-latency", "--threads", "1",
                 "--out", str(out)]) == 0
    s = ExploreSession(out, data_dir=str(data_dir))
    yield _client(s)
    s.close()


def test_an_int8_run_has_no_gradient_views(quantized):
    d = quantized.get("/api/run").json()
    assert d["kind"] == "compressed" and not d["has_gradients"] and d["attributions"] == ["occlusion"]
    image = quantized.post("/api/images/test/0").json()["image"]
    for url in (f"/api/attribution?image={image}&method=gradcam",
                f"/api/unit?image={image}&layer=features.block1.conv1&channel=0&position=1,1"):
        r = quantized.get(url)
        assert r.status_code == 409 and "needs gradients" in r.json()["error"]
    occ = quantized.get(f"/api/attribution?image={image}&method=occlusion&faithfulness=true")
    assert occ.status_code == 200
    assert occ.json()["faithfulness"]["randomisation"] == {  # nothing to re-initialise: said, not a wrong rho of 1
        "rho": None, "passes": None, "why": "an int8 quantized run's layers cannot be re-initialised"}
    acts = quantized.get(f"/api/activations?image={image}")
    assert acts.status_code == 200 and len(acts.json()["layers"]) > 3
    assert quantized.get(f"/api/predict?image={image}").status_code == 200


def test_an_int8_run_shows_its_dequantized_first_layer_filters(quantized, client):
    assert quantized.get("/api/run").json()["filters"] is True
    q, f = quantized.get("/api/filters").json(), client.get("/api/filters").json()
    assert f["layer"] == "features.block1.conv1" and q["layer"].endswith(f["layer"])  # inside the int8 wrapper
    assert q["shape"] == f["shape"] == [32, 1, 3, 3]
    assert 0 < q["range"][1] <= f["range"][1] * 1.05  # per-channel int8: the float kernels' scale, rounded
    step = quantized.get("/api/conv?image=" + quantized.post("/api/images/test/0").json()["image"] + "&filter=3")
    assert step.status_code == 200 and step.json()["kernel"] != [[0.0] * 3] * 3


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("explore-shapes") / "shapes", per_class=16)
    out = tmp_path_factory.mktemp("explore-rgb") / "shapes-run"
    assert main(["train", "--dataset", f"folder:{folder}", "--image-size", "16", "--model", "gap-cnn", "--epochs", "1",
                 "--batch-size", "16", "--device", "cpu", "--precision", "fp32", "--no-progress", "--out", str(out)]) == 0
    s = ExploreSession(out)
    yield _client(s), folder
    s.close()


def test_an_rgb_folder_run(rgb):
    client, folder = rgb
    assert client.get("/api/run").json()["input_size"] == [3, 16, 16]
    d = client.post("/api/images", content=(folder / "disc" / "00.png").read_bytes(),
                    headers={"content-type": "image/png"}).json()
    assert _decode(d["png"]).shape == (16, 16, 3) and len(d["prediction"]) == 2
    r = client.get(f"/api/attribution?image={d['image']}&method=integrated-gradients")
    assert r.status_code == 200 and _decode(r.json()["png"]).shape == (16, 16)
    assert client.get(f"/api/activations?image={d['image']}").status_code == 200


# ------------------------------------------------------------------------------------------ the command
def test_a_port_in_use_is_one_line(capsys, run_dir):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out, err = run_cli(capsys, "explore", str(run_dir), "--port", str(port))
    assert code == 2
    one_line_error(err, f"port {port}", "in use", "--port")


def test_not_a_run_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "explore", str(tmp_path / "nothing"), "--port", "8542")
    assert code == 2
    one_line_error(err, "nothing", "no such run directory")


def test_check_address():
    with pytest.raises(ServeError, match="not a TCP port"):
        check_address("127.0.0.1", 70000)
    with pytest.raises(ServeError, match="cannot be resolved"):
        check_address("no-such-host.invalid", 8541)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    check_address("127.0.0.1", free)  # a free port: fine
