"""Smoke tests of the live/ONNX benches on a tiny model: each runs end to end and writes its JSON
(keys and types checked; the timings themselves are the bench's output, not asserted)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_dir(live_model_dir):
    return live_model_dir


def test_onnx_speed_smoke(tiny_dir, tmp_path, monkeypatch, onnx_cache_dir):
    from bench import onnx_speed

    monkeypatch.setenv("PROLAB_CACHE_DIR", str(onnx_cache_dir))  # the graph exported once for these tests
    out = onnx_speed.main(["--model", str(tiny_dir), "--sizes", "64", "96", "--runs", "1",
                           "--json", str(tmp_path / "o.json")])
    saved = json.loads((tmp_path / "o.json").read_text())
    assert [r["size"] for r in saved["rows"]] == [64, 96] == [r["size"] for r in out["rows"]]
    for r in saved["rows"]:
        assert r["eager_ms"] > 0 and r["onnx_ms"] > 0 and r["speedup"] > 0 and r["max_abs_diff"] < 1e-3


def test_video_fps_smoke(tiny_dir, tmp_path):
    from bench import video_fps

    video_fps.main(["--model", str(tiny_dir), "--seconds", "0.4", "--quality", "default",
                    "--json", str(tmp_path / "v.json")])
    saved = json.loads((tmp_path / "v.json").read_text())
    assert (saved["width"], saved["height"]) == (640, 480)
    row = saved["rows"][0]
    assert row["quality"] == "default" and row["frames"] == 12 and row["fps"] > 0
