"""The README's picture of the editor: a real `sg2image serve` app (uvicorn, loopback), Debian's
headless Chromium driven by Playwright: build a graph by hand, generate 4 images, screenshot.

    python scripts/editor_screenshot.py                     # the shipped model
    python scripts/editor_screenshot.py --model tiny        # a tiny random model (noise images)
    python scripts/editor_screenshot.py --model DIR -o docs/images/editor.png
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from sg2image.serve.headless import CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder or 'tiny' (default: shipped)")
    p.add_argument("-o", "--out", type=Path, default=ROOT / "docs/images/editor.png")
    p.add_argument("--chromium", default=CHROMIUM)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)

    import uvicorn
    from playwright.sync_api import sync_playwright

    from sg2image.cli import default_model_path
    from sg2image.pipeline import load_pipeline
    from sg2image.serve import ServeSettings, create_app

    tmp = tempfile.TemporaryDirectory()
    if args.model == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from serve_fixtures import tiny_pipeline

        pipe, name = tiny_pipeline(Path(tmp.name)), "tiny random model"
    else:
        source = Path(args.model) if args.model else default_model_path()
        pipe, name = load_pipeline(source), source.name
    app = create_app(pipe, ServeSettings(), model_name=name)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        for label in ("red circle", "blue square", "yellow triangle"):
            page.select_option("#object-pick", label)
            page.click("#add-object")
        for s, pred, o in (("0", "left of", "1"), ("2", "above", "1")):
            page.select_option("#rel-subject", s)
            page.select_option("#rel-predicate", pred)
            page.select_option("#rel-object", o)
            page.click("#add-relationship")
        page.wait_for_function("document.getElementById('graph-drawing').naturalWidth > 0")
        page.fill("#seed", str(args.seed))
        page.fill("#num-images", "4")
        page.click("#generate")
        page.wait_for_selector("#results img.generated", timeout=300_000)
        page.wait_for_timeout(500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out} (model: {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
