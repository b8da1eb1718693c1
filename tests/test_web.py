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

from digitformer.data.grids import make_grids
from digitformer.data.mnist import load_split
from digitformer.inference.checkpoint import load_model
from helpers import read_files

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

    from digitformer.apps.serve.app import create_app, load_models

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


def _wait_for_answer(page, after: int) -> str:
    """The digits shown once every request after the `after`th has been answered."""
    page.wait_for_function(
        f"Number(document.body.dataset.count) > {after} && document.body.dataset.state == 'done'",
        timeout=20_000,
    )
    page.wait_for_timeout(500)  # a pause, then no request may be in flight
    page.wait_for_selector("body[data-state='done']", timeout=20_000)
    assert page.inner_text("#error") == ""
    return page.inner_text("#digits").strip()


def _count(page) -> int:
    return int(page.evaluate("document.body.dataset.count"))


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
    readings = read_files(model, [upload])
    (expected,), _ = readings.results, readings.errors

    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.getElementById('models').textContent.includes('encoder')")
    assert page.is_checked("input[value=digit]")  # a newcomer's first drawing is one digit
    page.check("input[value=grid]")  # nothing drawn yet: switching asks nothing

    # 1. an MNIST grid through the upload control: the page shows predict's answer, the ten
    # probabilities of every digit, and the picture in the pad
    page.set_input_files("#upload", str(upload))
    assert _wait_for_answer(page, 0) == expected.digits
    assert page.locator("#details canvas.attn").count() == 4  # an attention overlay per digit
    assert page.locator("#details .probs").count() == 4
    assert page.locator("#details .probs > div").count() == 40
    assert np.asarray(Image.open(io.BytesIO(_canvas_png(page)))).max() > 0  # shown in the pad

    # 2. strokes drawn with the mouse, one figure per quadrant, read as they are drawn (no
    # button): the page shows what the API answers for the same drawing exported as PNG
    page.click("#clear")
    assert page.input_value("#upload") == ""  # Clear forgets the uploaded file too
    before = _count(page)
    _draw(
        page,
        [
            [(70, 30), (70, 110)],  # a 1 top-left
            [(180, 40), (240, 40), (200, 110)],  # a 7 top-right
            [(40, 180), (100, 180), (100, 250), (40, 250), (40, 180)],  # a 0 bottom-left
            [(180, 170), (240, 170), (180, 250), (240, 250)],  # a Z-ish 2 bottom-right
        ],
    )
    shown = _wait_for_answer(page, before)
    drawing = _canvas_png(page)
    assert np.asarray(Image.open(io.BytesIO(drawing))).max() > 0  # ink was drawn
    api = httpx.post(f"{server}/predict?kind=grid", files={"file": ("d.png", drawing)}).json()
    assert len(shown) == 4 and shown == api["digits"]

    # 3. Undo takes the last stroke back: the bottom-right quadrant is empty again, and the
    # page says so rather than guessing
    before = _count(page)
    page.click("#undo")
    _wait_for_answer(page, before)
    assert page.inner_text("#digits").strip() == ""
    assert "no digit found in the bottom-right quadrant" in page.inner_text("#status")

    # 4. switching mode would erase the drawing: the page asks first; single-digit mode reads
    # one digit the same way; an empty pad is not sent at all
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.check("input[value=digit]")
    assert asked and "clears the pad" in asked[0]
    before = _count(page)
    page.click("#predict")
    assert "draw a digit first" in page.inner_text("#status") and _count(page) == before
    _draw(page, [[(140, 40), (140, 240)]])
    shown = _wait_for_answer(page, before)
    api = httpx.post(
        f"{server}/predict?kind=digit", files={"file": ("d.png", _canvas_png(page))}
    ).json()
    assert len(shown) == 1 and shown == api["digits"]
    page.close()


def test_number_mode_has_a_wide_pad_and_reads_a_number(browser, server):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(server)
    page.wait_for_function("document.getElementById('models').textContent.includes('numbers')")
    page.check("input[value=number]")
    assert page.evaluate("[pad.width, pad.height]") == [700, 140]
    box = page.locator("#pad").bounding_box()
    assert box["width"] > 4 * box["height"]
    scale = box["width"] / 700
    before = _count(page)
    _draw(
        page,
        [
            [(x * scale, y * scale) for x, y in s]
            for s in (
                (
                    [(150, 20), (150, 120)],
                    [(300, 30), (360, 30), (300, 120), (370, 120)],
                )
            )
        ],
    )
    shown = _wait_for_answer(page, before)
    api = httpx.post(f"{server}/predict?kind=number", files={"file": ("n.png", _canvas_png(page))})
    answer = api.json()
    assert shown == (answer["digits"] or "")
    if answer["digits"]:  # one panel per digit read, each the whole (wide) number
        assert page.locator("canvas.attn.wide").count() == len(answer["digits"])
    else:
        assert "no number read" in page.inner_text("#status")
    page.close()


def test_a_photo_on_a_phone(browser, server, trained_runs, tmp_path):
    """A phone-sized viewport: the results sit under the pad; a photo of a digit on paper,
    unevenly lit, is read as predict reads the same file."""
    from pathlib import Path

    data = Path(trained_runs["encoder-only"]).parents[1] / "data"
    digit = load_split(data, "test").images[4]
    big = np.kron(digit.astype(np.float32) / 255, np.ones((8, 8), np.float32))
    sheet = np.full((300, 260), 0.9, np.float32)
    sheet[38:262, 18:242] -= 0.7 * big
    sheet *= np.linspace(0.55, 1.0, 260)[None, :]  # light from one side
    photo = tmp_path / "photo.jpg"
    Image.fromarray((sheet * 255).astype(np.uint8)).convert("RGB").save(photo, quality=70)
    model, _ = load_model(trained_runs["encoder-only"])
    readings = read_files(model, [photo])
    (expected,), _ = readings.results, readings.errors

    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(server)
    page.wait_for_function("document.getElementById('models').textContent.includes('encoder')")
    page.check("input[value=digit]")
    page.set_input_files("#upload", str(photo))
    assert _wait_for_answer(page, 0) == expected.digits
    pad, results = page.locator("#pad").bounding_box(), page.locator("#results").bounding_box()
    assert pad["x"] + pad["width"] <= 390 and results["y"] >= pad["y"] + pad["height"]
    page.close()
