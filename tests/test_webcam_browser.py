"""Browser test of the Live tab: headless Chromium with a fake camera streams into the app and the
segmented frames come back (several distinct results shown, coloured unlike the raw camera frame, and
the app's status counts them). Same Chromium rules as tests/test_app_browser.py."""
from __future__ import annotations

import pytest

from tests.app_server import running_app, save_tiny_model
from tests.test_app_browser import CHROMIUM, _require


@pytest.fixture(scope="module")
def camera_browser():
    from pathlib import Path
    import shutil

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install playwright)")
    _require(Path(CHROMIUM).exists() or bool(shutil.which("chromium")),
             f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from bench.webcam_fps import launch_browser

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


def test_webcam_frames_come_back_segmented(camera_browser, tmp_path_factory, encoder):
    from bench.webcam_fps import stream_webcam

    model = save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder, output_scale=40.0)
    cache = encoder.cache.path.parent
    with running_app(["--model", str(model), "--label-set", "camvid_11", "--cache-dir", str(cache)],
                     env={"PROLAB_CACHE_DIR": str(cache)}) as url:
        res = stream_webcam(camera_browser, url, seconds=4.0, quality="default", warmup=1.0)
    assert res["total_frames"] >= 3, res  # several frames segmented and shown, not one
    assert "frames/s" in res["status"] and "segmented" in res["status"]
    segmented = int(res["status"].split(" segmented")[0].rsplit("·", 1)[1].strip())
    assert segmented >= res["total_frames"] - 1
    # the fake camera's frame is mostly green; the overlay blends class colours over it
    diff = sum(abs(a - b) for a, b in zip(res["colours"]["result"], res["colours"]["camera"]))
    assert diff > 20, res["colours"]
