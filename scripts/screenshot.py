"""Screenshot of the demo page with a prediction, for the README.

    python -m scripts.screenshot [CHECKPOINT ...] --out docs/demo.png

Serves the checkpoints (default: the bundled models) on a free local port, draws four digits on
the page's canvas with the mouse in headless Chromium (Debian's, through Playwright), waits
for the page to read them (it reads as the pen stops) and saves the page.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time

import uvicorn
from playwright.sync_api import sync_playwright

from digitformer.apps.serve.app import create_app, load_models

# Four digits as mouse strokes on the 280x280 canvas, one per quadrant: 3, 8, 4, 1.
STROKES = [
    [(35, 35), (60, 25), (95, 35), (100, 55), (75, 70), (100, 85), (95, 110), (60, 118), (35, 105)],
    [
        (210, 25),
        (180, 35),
        (185, 60),
        (210, 70),
        (240, 85),
        (240, 110),
        (210, 120),
        (180, 110),
        (180, 85),
        (210, 70),
        (235, 60),
        (240, 35),
        (210, 25),
    ],
    [(90, 160), (40, 220), (110, 220)],
    [(85, 175), (85, 260)],
    [(210, 160), (210, 260)],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", default=["pretrained:grid", "pretrained:digit"])
    parser.add_argument("--out", default="docs/demo.png")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(load_models(args.checkpoints, "cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1000, "height": 560})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('models').textContent.includes('(')")
        box = page.locator("#pad").bounding_box()
        for stroke in STROKES:
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
            page.mouse.up()
        page.click("#predict")
        page.wait_for_timeout(1000)
        page.wait_for_selector("body[data-state='done']")
        print("the page reads", page.inner_text("#digits"))
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main()
