"""The explorer's page in a real browser: Debian's chromium (never Playwright's own download) driven by
Playwright over a tiny run served in-process. The page loads without console errors and asks only its own
server; a stroke on the canvas changes the probability bars to the server's prediction of the drawing; a
test image picked from the grid becomes the input; a clicked unit's receptive-field rectangle is drawn
where ``/api/unit`` says; every view renders (screenshots in the test's tmp_path); a server error shows in
the convolution's message line; a residual add names its two sources; an int8 run says which views need
gradients instead of asking for them."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.explore import ExploreSession
from cnnlab.explore.app import create_app
from tests.helpers import one_thread, write_fake_fmnist

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"no chromium at {CHROMIUM} (Debian's chromium package; make test installs it)")

IDLE = 'body[data-busy="0"]'
VIEWS = ("overview", "pick", "conv", "attribution", "learned", "anatomy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(model: str, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run of `model` on generated Fashion-MNIST-like data: (run, data folder)."""
    data = write_fake_fmnist(tmp_path_factory.mktemp("browser-data"), 800, 160)
    run = tmp_path_factory.mktemp("browser-runs") / model
    with one_thread():
        assert main(["train", "--model", model, "--epochs", "1", "--subset", "512", "--val-size", "64",
                     "--batch-size", "128", "--data-dir", str(data), "--out", str(run), "--device", "cpu",
                     "--no-progress", "--precision", "fp32"]) == 0
    return run, data


@contextmanager
def _served(run: Path, data: Path):
    """The run served by uvicorn in a background thread: (base URL, session)."""
    uvicorn = pytest.importorskip("uvicorn")
    with one_thread():
        session = ExploreSession(run, data_dir=str(data))
        port = _free_port()
        srv = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True, name="explore-server")
        thread.start()
        deadline = time.monotonic() + 20
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the explorer server did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", session
        finally:
            srv.should_exit = True
            thread.join(10)
            session.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _served(*_train("fmnist-cnn", tmp_path_factory)) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Tab:
    """A page on the explorer, with what it logged and asked for."""

    def __init__(self, page, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def get(self, path: str, method: str = "GET"):
        """The API's own answer, asked directly (not through the page)."""
        with urllib.request.urlopen(urllib.request.Request(self.base + path, method=method), timeout=60) as r:
            return json.loads(r.read())

    def idle(self, timeout: float = 60_000) -> None:
        self.page.wait_for_timeout(150)  # let a request that an event just started begin
        self.page.wait_for_selector(IDLE, state="attached", timeout=timeout)

    def bars(self) -> list[float]:
        rows = self.page.locator("[data-testid=pred-row]")
        return [float(v) for v in rows.evaluate_all("rs => rs.map(r => r.dataset.p)")]

    def image(self) -> str:
        return self.page.get_attribute("#pred-bars", "data-image")

    def offsite(self) -> list[str]:
        """Requests that left the explorer (data: and blob: URLs are the page's own pictures, not the network)."""
        return [u for u in self.requests if not u.startswith((self.base + "/", "data:", "blob:"))]

    def show(self, view: str) -> None:
        self.page.click(f"[data-testid=tab-{view}]")
        assert self.page.is_visible(f"#view-{view}")
        self.idle()


@contextmanager
def _opened(browser, base: str):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    t = Tab(context.new_page(), base)
    t.page.set_default_timeout(30_000)
    t.page.goto(base + "/")
    t.page.wait_for_selector("body[data-ready=true]", state="attached")
    t.page.wait_for_selector("#layers[data-image]", state="attached")  # the first input's maps are drawn
    t.idle()
    try:
        yield t
    finally:
        context.close()


@pytest.fixture
def tab(browser, server):
    with _opened(browser, server[0]) as t:
        yield t


def _stroke(page, points) -> None:
    box = page.locator("#draw-canvas").bounding_box()
    x, y = points[0]
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=3)
    page.mouse.up()


def _click_unit(tab: Tab, selector: str, row: int, col: int, size: tuple[int, int]) -> None:
    """Clicks the middle of pixel (row, col) of the map `selector` (an h x w map shown enlarged)."""
    m = tab.page.locator(selector)
    m.scroll_into_view_if_needed()
    box = m.bounding_box()
    h, w = size
    tab.page.mouse.click(box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h)


def test_the_page_loads_quietly_and_only_from_its_server(tab, server):
    _, session = server
    assert tab.errors == []
    assert tab.requests and tab.offsite() == []
    assert any(u.startswith(tab.base + "/api/activations") for u in tab.requests)
    assert session.path.name in tab.page.inner_text("#run-info")
    bars = tab.bars()
    assert len(bars) == len(session.classes) and sum(bars) == pytest.approx(1.0, abs=2e-3)
    assert tab.page.locator("#layers [data-testid=layer-row]").count() == len(tab.get(
        f"/api/activations?image={tab.image()}")["layers"]) + 1  # the input's row first


def test_a_stroke_changes_the_bars_to_the_drawings_prediction(tab):
    before, first = tab.bars(), tab.image()
    _stroke(tab.page, [(140, 30), (142, 90), (140, 160), (138, 250)])
    tab.page.wait_for_selector(f'#pred-bars:not([data-image="{first}"])', state="attached")
    tab.idle()
    after = tab.bars()
    assert after != before
    assert tab.page.inner_text("#input-source") == "your drawing"
    served = [p["p"] for p in tab.get(f"/api/predict?image={tab.image()}")["prediction"]]
    assert after == pytest.approx(served, abs=1e-9)  # the bars show the server's answer for the drawing
    tab.page.wait_for_selector(f'#layers[data-image="{tab.image()}"]', state="attached")  # the maps follow
    _stroke(tab.page, [(60, 200), (220, 200)])  # a second stroke: another picture, another answer
    tab.page.wait_for_selector(f'#pred-bars:not([data-image="{tab.image()}"])', state="attached")
    tab.idle()
    assert tab.bars() != after
    assert tab.errors == [] and tab.offsite() == []


def test_picking_a_test_image(tab):
    tab.show("pick")
    tab.page.select_option("#pick-class", "3")
    tab.page.wait_for_selector("#pick-count:has-text('image')")
    tab.idle()
    thumbs = tab.page.locator("#pick-grid [data-testid=test-thumb]")
    labels = thumbs.evaluate_all("ts => ts.map(t => t.dataset.label)")
    assert labels and set(labels) == {"3"}
    index = int(thumbs.nth(1).get_attribute("data-index"))
    before = tab.image()
    thumbs.nth(1).click()
    tab.page.wait_for_selector(f'#pred-bars:not([data-image="{before}"])', state="attached")
    tab.idle()
    assert f"#{index}" in tab.page.inner_text("#input-source")
    served = tab.get(f"/api/images/test/{index}", method="POST")
    assert tab.image() == served["image"]  # the same pixels: the same id
    assert tab.bars() == pytest.approx([p["p"] for p in served["prediction"]], abs=1e-9)
    # the most confident mistakes of the class the model gets wrong most often
    m = tab.get("/api/confusion")["matrix"]
    worst = max(range(len(m)), key=lambda i: sum(m[i]) - m[i][i])
    tab.page.select_option("#pick-class", str(worst))
    tab.page.check("#pick-mistakes")
    tab.page.wait_for_selector("#pick-count:has-text('mistakes')")
    tab.idle()
    wrong = tab.page.locator("#pick-grid [data-testid=test-thumb]").evaluate_all(
        "ts => ts.map(t => [t.dataset.label, t.dataset.predicted])")
    assert len(wrong) == min(48, sum(m[worst]) - m[worst][worst]) > 0
    assert all(label == str(worst) and predicted != str(worst) for label, predicted in wrong)
    assert tab.errors == [] and tab.offsite() == []


def test_a_units_receptive_field_is_drawn_where_the_api_says(tab):
    layer, channel, row, col = "features.block2.conv1", 2, 8, 4
    _click_unit(tab, f'#layers canvas.map[data-layer="{layer}"][data-channel="{channel}"]', row, col, (14, 14))
    tab.page.wait_for_selector(f'#unit-body[data-layer="{layer}"][data-position="{row},{col}"]', state="attached")
    tab.idle()
    unit = tab.get(f"/api/unit?image={tab.image()}&layer={layer}&channel={channel}&position={row},{col}")
    rows, cols = unit["regions"]
    rect = tab.page.locator("#rf-rect")
    assert rect.get_attribute("data-rows") == f"{rows['pixels'][0]},{rows['pixels'][1]}"
    assert rect.get_attribute("data-cols") == f"{cols['pixels'][0]},{cols['pixels'][1]}"
    # the rectangle on screen covers exactly those pixels of the enlarged input
    picture = tab.page.locator("#unit-input").bounding_box()
    scale = picture["width"] / 28
    box = rect.bounding_box()
    assert box["y"] - picture["y"] == pytest.approx(rows["bounds"][0] * scale, abs=1.0)
    assert box["x"] - picture["x"] == pytest.approx(cols["bounds"][0] * scale, abs=1.0)
    assert box["height"] == pytest.approx((rows["bounds"][1] - rows["bounds"][0]) * scale, abs=1.0)
    assert box["width"] == pytest.approx((cols["bounds"][1] - cols["bounds"][0]) * scale, abs=1.0)
    kh, kw = unit["kernel"]["shape"][1:]
    assert tab.page.locator("#unit-kernel [data-testid=kernel-table] tr").count() == kh
    assert tab.page.locator("#unit-kernel [data-testid=kernel-table] tr").first.locator("td").count() == kw
    # a pooling unit in the corner: its field is clipped by the image's edge, and it has no kernel
    tab.page.click('[data-testid=layer-head][data-layer="features.block1.pool"]')
    tab.page.wait_for_selector('#layer-detail[data-layer="features.block1.pool"]')
    tab.page.wait_for_timeout(600)  # the detail scrolls into view
    _click_unit(tab, '#layer-detail canvas.map[data-channel="5"]', 0, 0, (14, 14))
    tab.page.wait_for_selector('#unit-body[data-layer="features.block1.pool"][data-position="0,0"]', state="attached")
    tab.idle()
    pool = tab.get(f"/api/unit?image={tab.image()}&layer=features.block1.pool&channel=5&position=0,0")["regions"]
    assert rect.get_attribute("data-rows") == ",".join(map(str, pool[0]["pixels"])) == "0,3"
    assert rect.get_attribute("data-cols") == ",".join(map(str, pool[1]["pixels"]))
    assert tab.page.is_visible("#rf-unclipped")  # the whole field reaches over the padding
    assert tab.page.locator("#unit-kernel [data-testid=kernel-table]").count() == 0
    assert tab.errors == [] and tab.offsite() == []


def test_every_view_renders(tab, server, tmp_path):
    _, session = server
    shot = lambda name: tab.page.screenshot(path=str(tmp_path / f"{name}.png"))  # noqa: E731
    for view in VIEWS:
        tab.show(view)
        hidden = [v for v in VIEWS if v != view and tab.page.is_visible(f"#view-{v}")]
        assert hidden == [], f"{view}: {hidden} shown too"
        shot(view)
    image = tab.image()
    # the convolution: the lecture's nine steps, stepped and played
    tab.show("conv")
    stage = tab.page.locator("#conv-stage")
    assert stage.get_attribute("data-steps") == "9" and stage.get_attribute("data-step") == "0"
    assert tab.page.inner_text("#conv-size").count("= 3") == 2
    first = tab.page.inner_text("#conv-step-formula")
    tab.page.click("#conv-next")
    assert stage.get_attribute("data-step") == "1" and tab.page.inner_text("#conv-step-formula") != first
    tab.page.click("#conv-play")
    tab.page.wait_for_selector('#conv-stage[data-step="8"]', state="attached", timeout=10_000)
    assert tab.page.locator("#conv-output .cell.empty").count() == 0  # the output filled in
    tab.page.select_option("#conv-input-src", "image")
    tab.page.select_option("#conv-kernel-src", "filter")
    tab.page.fill("#conv-padding", "same")
    tab.page.wait_for_selector('#conv-stage[data-steps="784"]', state="attached")
    shot("conv-image")
    # where it looks: every method the run has, with faithfulness
    tab.show("attribution")
    for method in session.describe()["attributions"]:
        tab.page.select_option("#attr-method", method)
        tab.page.wait_for_selector(f'#view-attribution[data-method="{method}"]', state="attached")
        tab.idle()
        assert tab.page.get_attribute("#view-attribution", "data-image") == image
        f = tab.page.locator("#attr-faithfulness")
        assert 0 <= float(f.get_attribute("data-deletion")) <= 1 and 0 <= float(f.get_attribute("data-insertion")) <= 1
        # the randomisation check for this image and method: the page says what the API measured
        check = tab.page.inner_text('[data-testid="attr-randomisation"]')
        assert check.startswith("randomisation check: ")
        if method == "saliency":
            r = session.attribution(image, method, faithfulness=True)["faithfulness"]["randomisation"]
            assert f.get_attribute("data-randomisation") == ("pass" if r["passes"] else "fail")
            assert ("passes" if r["passes"] else "FAILS") in check and f"all {r['layers']} layers" in check
    shot("attribution-occlusion")
    # what it learned: filters, curves, the confusion matrix and its cells, the maximal response
    tab.show("learned")
    assert tab.page.locator("#filters [data-testid=filter]").count() == 32
    assert tab.page.get_attribute("#history-chart", "data-epochs") == "1"
    confusion = tab.get("/api/confusion")
    counts = tab.page.locator("[data-testid=confusion-cell]").evaluate_all("cs => cs.map(c => +c.dataset.count)")
    assert counts == [n for row in confusion["matrix"] for n in row]
    t, p = max(((i, j) for i in range(10) for j in range(10)), key=lambda c: confusion["matrix"][c[0]][c[1]])
    tab.page.click(f'[data-testid=confusion-cell][data-label="{t}"][data-predicted="{p}"]')
    tab.page.wait_for_selector(f'#cell-images[data-label="{t}"][data-predicted="{p}"]', state="attached")
    cell = tab.page.locator("#cell-images [data-testid=test-thumb]")
    assert cell.count() == min(96, confusion["matrix"][t][p])
    assert set(cell.evaluate_all("ts => ts.map(t => t.dataset.label + '/' + t.dataset.predicted)")) == {f"{t}/{p}"}
    index = cell.first.get_attribute("data-index")
    cell.first.click()
    tab.page.wait_for_selector(f'#pred-bars:not([data-image="{image}"])', state="attached")
    assert f"#{index}" in tab.page.inner_text("#input-source")
    tab.page.select_option("#max-layer", "features.block1.conv1")
    tab.page.fill("#max-channel", "3")
    tab.page.click("#max-go")
    tab.page.wait_for_selector('#max-image[data-channel="3"]', timeout=60_000)
    shot("learned")
    # anatomy: one row per traced layer
    tab.show("anatomy")
    assert tab.page.locator("[data-testid=anatomy-row]").count() == len(tab.get("/api/anatomy")["layers"])
    shot("anatomy")
    assert tab.errors == [] and tab.offsite() == [] and tab.dialogs == []
    assert {f"{v}.png" for v in VIEWS} <= {p.name for p in tmp_path.iterdir()}


def test_a_server_error_shows_in_the_message_line(tab):
    tab.show("conv")
    tab.page.select_option("#conv-input-src", "typed")
    tab.page.fill("#conv-input", "1 2 3; 4 5 6; 7 8 9")
    tab.page.fill("#conv-kernel", "1 2; 3")
    tab.page.wait_for_selector("#conv-message:has-text('ragged')")
    assert tab.dialogs == []
    assert [e for e in tab.errors if "status of 400" not in e] == []  # only the browser's note of the 400
    tab.page.fill("#conv-kernel", "1 0; 0 1")
    tab.page.wait_for_selector("#conv-message:empty", state="attached")
    assert tab.page.get_attribute("#conv-stage", "data-steps") == "4"


def test_a_merge_names_where_it_comes_from(browser, tmp_path_factory):
    """resnet-small: the ReLU after each residual add shows the add's two sources; a click finds one."""
    with _served(*_train("resnet-small", tmp_path_factory)) as (base, _), _opened(browser, base) as t:
        graph = {layer["name"]: layer for layer in t.get("/api/anatomy")["layers"]}
        layers = t.get(f"/api/activations?image={t.image()}")["layers"]
        adds = {layer["name"]: graph[layer["inputs"][0]]["inputs"] for layer in layers
                if len(layer["inputs"]) == 1 and graph[layer["inputs"][0]]["kind"] == "function"}
        assert adds  # the residual blocks' adds
        for layer in layers:  # the server resolves a function node to its own inputs; the page only draws them
            if layer["name"] in adds:
                node = graph[layer["inputs"][0]]
                assert layer["sources"] == [{"name": node["name"], "op": node["type"], "inputs": adds[layer["name"]]}]
            else:
                assert layer["sources"] == [{"name": n} for n in layer["inputs"]]
        merged = t.page.locator("#layers .layer-row.merge").evaluate_all("rs => rs.map(r => r.dataset.layer)")
        assert set(merged) == set(adds)
        name, sources = next(iter(adds.items()))
        row = t.page.locator(f'.layer-row[data-layer="{name}"]')
        shown = row.locator("[data-testid=layer-inputs] [data-source]")
        assert shown.evaluate_all("ss => ss.map(s => s.dataset.source)") == sources
        shown.first.click()
        t.page.wait_for_selector(f'.layer-row.flash[data-layer="{sources[0]}"]')
        assert t.errors == [] and t.offsite() == []


def test_an_int8_run_says_which_views_need_gradients(browser, server, tmp_path_factory):
    _, session = server
    out = tmp_path_factory.mktemp("browser-int8") / "int8"
    with one_thread():
        assert main(["compress", str(session.path), "--method", "quantize", "--subset", "256", "--no-latency",
                     "--threads", "1", "--out", str(out)]) == 0
    with _served(out, Path(session.data_dir)) as (base, _), _opened(browser, base) as t:
        _click_unit(t, "#layers canvas.map[data-layer] >> nth=0", 1, 1, (28, 28))
        assert t.page.inner_text("[data-testid=unit-no-gradients]") == \
            "Inspecting a unit needs gradients: this int8 run has none."
        t.show("attribution")
        assert t.page.locator("#attr-method option").evaluate_all("os => os.map(o => o.value)") == ["occlusion"]
        assert "needs gradients: this int8 run has none" in t.page.inner_text("#attr-note")
        t.page.wait_for_selector('#view-attribution[data-method="occlusion"]', state="attached")
        t.show("learned")
        assert "needs gradients: this int8 run has none" in t.page.inner_text("[data-testid=max-no-gradients]")
        t.page.wait_for_selector("#filters [data-testid=filter]")  # its int8 kernels, dequantized, are shown
        assert "int8 kernels, dequantized" in t.page.inner_text("#filters-layer")
        assert not t.page.is_visible("#max-go")
        t.show("anatomy")
        assert not any("/api/unit" in u or "/api/maximize" in u or "method=gradcam" in u for u in t.requests)
        assert t.errors == [] and t.offsite() == []
