"""Webcam frames per second end to end: headless Chromium with a fake camera streams into the app's Live
tab and we count the segmented frames the page shows.

    python -m bench.webcam_fps [--seconds 20] [--quality fast] [--model DIR] [--label-set ade20k_150]
                               [--json docs/results/webcam_fps.json]

Starts ``python app.py`` on a free port (the shipped default model unless ``--model``), opens it in
Debian's Chromium with ``--use-fake-device-for-media-stream --use-fake-ui-for-media-stream`` (a synthetic
camera; the tab asks for 427 x 320), picks the dial step, starts the camera stream and counts, in the page, every new
image the "Segmented (live)" panel shows during ``--seconds`` (after a warm-up). The server shrinks each
frame to a 320 px short side (:data:`prolab.live.LIVE_SHORT_SIDE`). The frame rate the app itself
reports is recorded too. Results depend on the machine's load, which is recorded: compare rows of one run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from bench.app_server import running_app
from bench.common import machine, write_json

CHROMIUM = os.environ.get("PROLAB_CHROMIUM", "/usr/bin/chromium")
FAKE_CAMERA_ARGS = ["--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
GOAL_FPS = 8.0

# Records each new src of the live result image (gradio swaps it for every segmented frame).
_WATCH = """() => {
  window.__plFrames = [];
  const root = document.querySelector('#pl-live-image');
  const seen = () => { const img = root.querySelector('img');
    const last = window.__plFrames[window.__plFrames.length - 1];
    if (img && img.src && (!last || img.src !== last.src)) window.__plFrames.push({src: img.src, t: performance.now()}); };
  new MutationObserver(seen).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""

# Mean colour of the last shown result and of the camera's current video frame (same 32 x 24 canvas).
_COLOURS = """async () => {
  const mean = (src) => { const c = document.createElement('canvas'); c.width = 32; c.height = 24;
    const g = c.getContext('2d'); g.drawImage(src, 0, 0, 32, 24); const d = g.getImageData(0, 0, 32, 24).data;
    const m = [0, 0, 0]; for (let i = 0; i < d.length; i += 4) { m[0] += d[i]; m[1] += d[i+1]; m[2] += d[i+2]; }
    return m.map(v => v / (d.length / 4)); };
  for (let i = 0; i < 50; i++) {  // the shown image is swapped for every frame: retry until one decodes
    const img = document.querySelector('#pl-live-image img');
    try { await img.decode(); return {result: mean(img), camera: mean(document.querySelector('#pl-camera video'))}; }
    catch (e) { await new Promise(r => setTimeout(r, 100)); }
  }
  throw new Error('no segmented frame could be decoded');
}"""


def launch_browser(playwright):
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not exe:
        raise SystemExit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=exe, headless=True, args=FAKE_CAMERA_ARGS)


def stream_webcam(browser, url: str, seconds: float, quality: str = "fast", warmup: float = 4.0) -> dict:
    """Open the Live tab at ``url``, stream the fake camera for ``warmup + seconds`` and return the frames
    the page showed in the measured window, the frame rate, the app's status line and mean colours of the
    camera frame and of the segmented result (they differ when frames come back segmented)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Live: webcam & video").click(timeout=60_000)
        page.locator("#pl-quality").get_by_text(f"{quality}:", exact=False).click()
        page.locator("#pl-camera").get_by_text("Click to Access Webcam").click(timeout=30_000)
        page.locator("#pl-camera button[aria-label='capture photo']").click(timeout=30_000)
        page.evaluate(_WATCH)
        page.wait_for_function("window.__plFrames.length >= 2", timeout=240_000)  # first frames (warm-up)
        time.sleep(warmup)
        start = page.evaluate("[window.__plFrames.length, performance.now()]")
        time.sleep(seconds)
        end = page.evaluate("[window.__plFrames.length, performance.now()]")
        frames = end[0] - start[0]
        colours = page.evaluate(_COLOURS)
        status = page.locator("#pl-live-status").inner_text()
        camera = page.evaluate("(() => { const v = document.querySelector('#pl-camera video'); "
                               "return [v.videoWidth, v.videoHeight]; })()")
        return {"camera_size": camera, "frames": frames, "seconds": (end[1] - start[1]) / 1000, "fps": frames / ((end[1] - start[1]) / 1000),
                "status": status, "colours": colours, "total_frames": end[0]}
    finally:
        context.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--quality", default="fast", choices=("fast", "default", "accurate"))
    ap.add_argument("--model", help="model directory (default: the app's default model)")
    ap.add_argument("--label-set", default="ade20k_150")
    ap.add_argument("--json", type=Path, default=Path("docs/results/webcam_fps.json"))
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    app_args = ["--label-set", args.label_set] + (["--model", args.model] if args.model else [])
    with running_app(app_args, timeout=300) as url, sync_playwright() as p:
        browser = launch_browser(p)
        try:
            # the app's warm-up exports the fast step's ONNX graph once; wait for it before timing
            res = stream_webcam(browser, url, args.seconds, args.quality)
        finally:
            browser.close()
    out = {"quality": args.quality, "label_set": args.label_set, "model": args.model or "default",
           "short_side": 320, **res, "goal_fps": GOAL_FPS, "machine": machine(), "load_average": list(os.getloadavg()),
           "note": "headless Chromium, fake camera, app and browser on the same shared 2-core machine"}
    print(f"webcam ({args.quality}, {args.label_set}): {res['frames']} frames shown in {res['seconds']:.1f} s = "
          f"{res['fps']:.2f} frames/s (goal {GOAL_FPS}); app says: {res['status']}")
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
