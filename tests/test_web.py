"""The demo page in a real browser: Debian's Chromium, driven headless through Playwright."""

import base64
import io
import os
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from digitformer.checkpoint import load_model
from digitformer.data.grids import make_grids
from digitformer.data.mnist import load_split
from digitformer.predict import predict_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        if os.environ.get("DIGITFORMER_CI"):
            pytest.fail("Chromium is not installed: .ci/run should have installed it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(trained_runs):
    """The app on a free local port, served by uvicorn in a thread."""
    import uvicorn

    from digitformer.serve.app import create_app, load_models

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(load_models(list(trained_runs.values()), "cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _wait_for_answer(page, count: int) -> str:
    page.wait_for_selector(f"body[data-count='{count}'][data-state='done']", timeout=20_000)
    assert page.inner_text("#error") == ""
    return page.inner_text("#digits").strip()


def _draw(page, strokes):
    """Strokes in canvas coordinates (0-280), drawn with the mouse."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
        page.mouse.up()


def _canvas_png(page) -> bytes:
    url = page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def test_the_page_reads_uploads_and_drawings(browser, server, trained_runs, tmp_path):
    from pathlib import Path

    data = Path(trained_runs["encoder-only"]).parents[1] / "data"
    test = load_split(data, "test")
    grid = make_grids(test.images, test.labels, 1, seed=11).images[0]
    upload = tmp_path / "grid.png"
    Image.fromarray(grid).save(upload)
    model, _ = load_model(trained_runs["encoder-decoder"])
    (expected,), _, _ = predict_files(model, "encoder-decoder", [upload])

    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.getElementById('models').textContent.includes('encoder')")

    # 1. an MNIST grid through the upload control: the page shows predict's answer
    page.set_input_files("#upload", str(upload))
    assert _wait_for_answer(page, 1) == expected.digits
    assert page.locator("#details canvas.attn").count() == 4  # an attention overlay per digit

    # 2. strokes drawn with the mouse, one figure per quadrant: the page shows what the API
    # answers for the same drawing exported from the canvas
    page.click("#clear")
    _draw(
        page,
        [
            [(70, 30), (70, 110)],  # a 1 top-left
            [(180, 40), (240, 40), (200, 110)],  # a 7 top-right
            [(40, 180), (100, 180), (100, 250), (40, 250), (40, 180)],  # a 0 bottom-left
            [(180, 170), (240, 170), (180, 250), (240, 250)],  # a Z-ish 2 bottom-right
        ],
    )
    page.click("#predict")
    shown = _wait_for_answer(page, 2)
    drawing = _canvas_png(page)
    assert np.asarray(Image.open(io.BytesIO(drawing))).max() > 0  # ink was drawn
    api = httpx.post(f"{server}/predict?kind=grid", files={"file": ("d.png", drawing)}).json()
    assert len(shown) == 4 and shown == api["digits"]

    # 3. single-digit mode reads one digit the same way
    page.check("input[value=digit]")
    _draw(page, [[(140, 40), (140, 240)]])
    page.click("#predict")
    shown = _wait_for_answer(page, 3)
    api = httpx.post(
        f"{server}/predict?kind=digit", files={"file": ("d.png", _canvas_png(page))}
    ).json()
    assert len(shown) == 1 and shown == api["digits"]
    page.close()
