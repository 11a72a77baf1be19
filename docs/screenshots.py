"""Screenshots of ``cnnlab explore`` for the README: serves a run in-process and drives Debian's chromium over it
(Playwright; its own browser download is never used), saving one 1200x800 PNG per view.

    python docs/screenshots.py RUN [--data-dir D] [--out docs/img] [--test-image N]

Writes ``explore-overview.png`` (a test image's maps, a unit's receptive fields), ``explore-pick.png``,
``explore-conv.png`` (the lecture's sharpen example, a few steps in), ``explore-attribution.png`` (Grad-CAM
with its faithfulness), ``explore-learned.png`` (filters, a maximal response, curves, the confusion matrix)
and ``explore-anatomy.png``. The input is the test image given, else the most confidently right one of the
first 256.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

VIEWPORT = {"width": 1200, "height": 800}
IDLE = 'body[data-busy="0"]'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(run: str, data_dir: str | None):
    """The explorer on a free loopback port in a daemon thread: (base URL, uvicorn server, session)."""
    import uvicorn

    from cnnlab.explore import ExploreSession
    from cnnlab.explore.app import create_app

    session = ExploreSession(run, data_dir=data_dir)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("screenshots: the explorer server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, session


def _get(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=120) as r:
        return json.loads(r.read())


def _best_test_image(base: str) -> tuple[int, int]:
    """The most confidently right prediction among the first 256 test images (else the first): index, label."""
    images = _get(base, "/api/test-images?limit=256")["images"]
    right = [t for t in images if t["label"] == t["predicted"]] or images[:1]
    best = max(right, key=lambda t: t["p"])
    return best["index"], best["label"]


def _label(base: str, index: int, classes: int) -> int:
    """A test image's class, found by listing the test split class by class."""
    for label in range(classes):
        offset = 0
        while True:
            page = _get(base, f"/api/test-images?label={label}&offset={offset}&limit=256")
            if any(t["index"] == index for t in page["images"]):
                return label
            offset += len(page["images"])
            if not page["images"] or offset >= page["total"]:
                break
    raise SystemExit(f"screenshots: test image {index} is not in the test split")


def _idle(page) -> None:
    page.wait_for_timeout(200)
    page.wait_for_selector(IDLE, state="attached", timeout=120_000)


def _click_unit(page, selector: str, row: int, col: int, h: int, w: int) -> None:
    m = page.locator(selector)
    m.scroll_into_view_if_needed()
    box = m.bounding_box()
    page.mouse.click(box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h)


def shoot(base: str, out: Path, chromium: str, test_image: int | None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    run = _get(base, "/api/run")
    index, label = (_best_test_image(base) if test_image is None
                    else (test_image, _label(base, test_image, len(run["classes"]))))
    written: list[Path] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))

        def save(name: str) -> None:
            page.mouse.move(0, 0)  # no hover effects
            path = out / f"explore-{name}.png"
            page.screenshot(path=str(path))
            written.append(path)

        def show(view: str) -> None:
            page.click(f"[data-testid=tab-{view}]")
            _idle(page)
            page.evaluate("window.scrollTo(0, 0)")

        page.goto(base + "/")
        page.wait_for_selector("body[data-ready=true]", state="attached", timeout=120_000)
        _idle(page)
        # the input: a test image, clicked in the grid (filtered to its class, paged until it shows)
        page.click("[data-testid=tab-pick]")
        _idle(page)
        page.select_option("#pick-class", str(label))
        _idle(page)
        thumb = page.locator(f'#pick-grid [data-testid=test-thumb][data-index="{index}"]')
        while not thumb.count() and page.is_visible("#pick-more"):
            page.click("#pick-more")
            _idle(page)
        if not thumb.count():
            raise SystemExit(f"screenshots: test image {index} is not in the test split")
        thumb.click()
        page.wait_for_selector(f'#input-source:has-text("test image #{index} (")')
        _idle(page)
        save("pick")
        # the network, with a unit of the default conv layer inspected
        show("overview")
        page.wait_for_selector("#layers[data-image]", state="attached")
        image = page.get_attribute("#pred-bars", "data-image")
        layers = {layer["name"]: layer for layer in _get(base, f"/api/activations?image={image}")["layers"]}
        layer = run.get("default_layer") or next((n for n, info in layers.items() if info["spatial"]), None)
        if layer and run["has_gradients"]:
            h, w = layers[layer]["height"], layers[layer]["width"]
            _click_unit(page, f'#layers canvas.map[data-layer="{layer}"][data-channel="0"]', h // 2, w // 2, h, w)
            page.wait_for_selector("#rf-rect[data-rows]", state="attached")
            _idle(page)
        page.evaluate("window.scrollTo(0, 0)")
        save("overview")
        # the convolution: the lecture's sharpen example, a few steps in
        show("conv")
        if "sharpen" in run["examples"]:
            page.select_option("#conv-input-src", "ex:sharpen")
            page.wait_for_selector("#conv-example:has-text('sharpen')")
            _idle(page)
        for _ in range(6):
            page.click("#conv-next")
        save("conv")
        # where it looks: the first method, with faithfulness
        show("attribution")
        page.wait_for_selector("#view-attribution[data-method]", state="attached", timeout=120_000)
        save("attribution")
        # what it learned: a maximal response computed first
        show("learned")
        if run["has_gradients"] and run["conv_layers"]:
            page.click("#max-go")
            page.wait_for_selector("#max-image:not([hidden])", timeout=300_000)
        page.evaluate("window.scrollTo(0, 0)")
        save("learned")
        show("anatomy")
        save("anatomy")
        browser.close()
    if problems:
        print("screenshots: the page reported errors:\n  " + "\n  ".join(problems), file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory")
    p.add_argument("--data-dir", help="where the run's dataset is (default: as recorded)")
    p.add_argument("--out", default="docs/img", help="folder for the PNGs (docs/img)")
    p.add_argument("--test-image", type=int, help="the test image to show (default: the most confidently right)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                   help="the chromium to drive (Debian's; default: chromium on PATH)")
    a = p.parse_args(argv)
    if not Path(a.chromium).is_file():
        raise SystemExit(f"screenshots: no chromium at {a.chromium} (apt-get install chromium)")
    base, server, session = _serve(a.run, a.data_dir)
    try:
        for path in shoot(base, Path(a.out), a.chromium, a.test_image):
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    finally:
        server.should_exit = True
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
