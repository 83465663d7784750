"""Live frames and videos: frame dropping, per-frame scoring, video decode/segment/encode with limits
and clear errors, the CLI's `predict clip.mp4`, and the Live tab's handlers (no server)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from prolab.cli import main
from prolab.errors import ProLabError


@pytest.fixture(scope="module")
def tiny_dir(live_model_dir):
    return live_model_dir


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from prolab.model import PropertySegmenter

    return PropertySegmenter.from_pretrained(tiny_dir)


def _frames(n: int, h: int = 96, w: int = 128) -> list[np.ndarray]:
    """A moving split: the left part textured red, the right part blue, the boundary moving right."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        edge = 20 + 4 * i
        f[:, :edge] = (200, 40, 40)
        f[:, edge:] = (30, 60, 220)
        out.append(np.clip(f + rng.integers(0, 30, f.shape), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from prolab.video import make_test_video

    return make_test_video(tmp_path_factory.mktemp("video") / "clip.mp4", _frames(12), fps=6)


def test_live_stream_drops_frames_while_busy(tiny):
    from prolab.colorize import make_palette
    from prolab.live import LiveStream

    live = LiveStream()
    palette = make_palette(len(tiny.label_space.class_names))
    frame = _frames(1, 480, 640)[0]
    out = live.process(frame, tiny, None, {"size": 64}, palette)
    assert out is not None and out.image.shape == (320, 427, 3) and out.labels.shape == (320, 427)
    from prolab.live import shrink

    assert not np.array_equal(out.image, shrink(frame, 320))  # an overlay, not the frame
    live._busy.acquire()  # a frame in progress: the next one is dropped at once, not queued
    try:
        t = threading.Thread(target=lambda: live.process(frame, tiny, None, {"size": 64}, palette))
        t.start()
        t.join(timeout=5)
        assert not t.is_alive() and live.dropped == 1
    finally:
        live._busy.release()
    heat = live.process(frame, tiny, None, {"size": 64}, palette, property_index=0)
    assert heat is not None and live.frames == 2
    # the dial's guided upsampling reaches the frame: the labels are FrameSegmenter's with the frame as guide
    from prolab.frames import FrameSegmenter

    guided = live.process(frame, tiny, None, {"size": 64}, palette, guided=True)
    assert live.segmenter(tiny, None, {"size": 64}, guided=True).guided
    expect = FrameSegmenter(tiny, None, {"size": 64}, guided=True)(shrink(frame, 320)).labels
    bilinear = live.process(frame, tiny, None, {"size": 64}, palette, guided=False)
    assert not live.segmenter(tiny, None, {"size": 64}, guided=False).guided
    assert np.array_equal(guided.labels, expect) and not np.array_equal(guided.labels, bilinear.labels)
    assert np.array_equal(out.labels, guided.labels)  # not told: the default step's, guided
    with pytest.raises(ProLabError, match="does not exist"):
        live.process(frame, tiny, None, {"size": 64}, palette, property_index=10_000)


def test_segment_video_writes_overlay_and_shares(tiny, clip, tmp_path):
    from prolab.colorize import make_palette
    from prolab.frames import FrameSegmenter
    from prolab.video import probe, segment_video

    seg = FrameSegmenter(tiny, None, {"size": 64})
    calls = []
    result = segment_video(seg, clip, tmp_path / "out.mp4", make_palette(len(seg.class_names)),
                           progress=lambda done, total: calls.append((done, total)))
    assert result.frames == 12 and calls[-1][0] == 12 and len(calls) == 12
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height) == (128, 96) and info.frames == 12
    shares = np.stack(result.shares)
    assert np.allclose(shares.sum(1), 1.0)
    assert result.times == sorted(result.times) and result.times[-1] > result.times[0]
    assert set(result.share_table()) <= set(seg.class_names) | {"unknown"}


def test_video_limits_and_bad_files(tiny, clip, tmp_path):
    from prolab.colorize import make_palette
    from prolab.frames import FrameSegmenter
    from prolab.video import VideoLimits, segment_video

    seg = FrameSegmenter(tiny, None, {"size": 64})
    palette = make_palette(len(seg.class_names))
    with pytest.raises(ProLabError, match="limit is 1 s"):
        segment_video(seg, clip, tmp_path / "a.mp4", palette, limits=VideoLimits(max_seconds=1))
    with pytest.raises(ProLabError, match="limit is 100 x 80"):
        segment_video(seg, clip, tmp_path / "a.mp4", palette, limits=VideoLimits(max_long_side=100, max_short_side=80))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ProLabError, match="Cannot read bad.mp4 as a video"):
        segment_video(seg, bad, tmp_path / "b.mp4", palette)
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()


def test_cli_predict_video(tiny_dir, clip, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(clip), "--model", str(tiny_dir), "--out", str(out), "--size", "64"]) == 0
    summary = json.loads((out / "clip_video.json").read_text())
    assert summary["frames"] == 12 and summary["fps"] > 0 and summary["class_shares"]
    assert (out / "clip_segmented.mp4").stat().st_size > 0
    rows = (out / "clip_shares.csv").read_text().splitlines()
    assert rows[0].startswith("time_s,") and len(rows) == 13
    assert main(["predict", str(clip), "--model", str(tiny_dir), "--out", str(out),
                 "--video-max-seconds", "0.5"]) == 2
    assert "the limit is 0 s" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the Live tab's handlers
@pytest.fixture(scope="module")
def demo(tiny_dir, encoder):
    from app.config import AppConfig
    from app.main import build_demo
    from app.services import Services

    return build_demo(services=Services(AppConfig(model=str(tiny_dir), label_set="camvid_11",
                                                  cache_dir=str(encoder.cache.path.parent))))


def handler(demo, name: str):
    """The function gradio calls for handler ``name`` (session, lock and errors supplied)."""
    return next(fn.fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == name)


NO_PROGRESS = {"progress": lambda *a, **k: None}


def test_live_frame_handler(demo):
    ui = demo.prolab_ui
    live_frame = handler(demo, "live_frame")
    frame = _frames(1, 240, 320)[0]
    out = live_frame(None, frame, "default", "classes", 0.6)
    s = out[ui.state]
    assert out[ui.live.live_image].shape == (240, 320, 3)
    assert "frames/s" in out[ui.live.live_status]
    out = live_frame(s, frame, "default", "0", 0.6)  # property 0's heatmap
    assert "showing: property 0" in out[ui.live.live_status] and s.live.frames == 2


def test_segment_video_handler(demo, clip):
    ui, segment_video = demo.prolab_ui, handler(demo, "segment_video")
    out = segment_video(None, str(clip), "default", "classes", 0.5, **NO_PROGRESS)
    assert out[ui.live.video_out].endswith("_segmented.mp4")
    assert "12 frames" in out[ui.live.video_status]
    assert len(out[ui.live.shares].data) >= 1
    with pytest.raises(Exception, match="Upload a video first"):
        segment_video(None, None, "default", "classes", 0.5, **NO_PROGRESS)


def test_show_choices_list_the_properties(demo):
    ui = demo.prolab_ui
    out = handler(demo, "show_choices")(None, None)
    choices = out[ui.live.show]["choices"]
    k = out[ui.state].edit.space().k
    assert choices[0] == ("classes", "classes") and len(choices) == k + 1 and choices[1][1] == "0"


def test_quality_dial_in_the_segment_tab(demo, monkeypatch, onnx_cache_dir):
    """One setting for both tabs: fast puts the workbench on the ONNX graph at a smaller input, accurate on
    multi-scale + flip with the scores upsampled by the image-guided filter; each change re-segments the
    image with a new forward pass."""
    import torch

    from prolab.inference import segment

    from tests.test_app_handlers import ASTRONAUT

    monkeypatch.setenv("PROLAB_CACHE_DIR", str(onnx_cache_dir))  # the tiny model's graph, exported once
    ui, set_quality = demo.prolab_ui, handler(demo, "set_quality")
    out = handler(demo, "segment")(None, ASTRONAUT, "camvid_11", None, 0.0, 0.5, **NO_PROGRESS)
    s = out[ui.state]
    edit = s.edit
    assert edit.network_in_use.options == () and getattr(edit.network_in_use.model, "backend", "torch") == "torch"
    out = set_quality(s, "accurate", 0.0, 0.5, **NO_PROGRESS)
    assert out[ui.controls.quality] == out[ui.live.quality] == "accurate"
    net = edit.network_in_use
    assert dict(net.options) == {"scales": (0.75, 1.0, 1.25, 1.5), "flip": True}
    assert edit.last is not None and edit.workbench.is_current(net, edit.space(), edit.threshold, guided=True)
    assert not edit.workbench.is_current(net, edit.space(), edit.threshold, guided=False)  # bilinear would differ
    scores, shape = torch.from_numpy(edit.class_scores()), edit.image.shape[:2]
    guided = segment(scores, shape, edit.threshold, guide=edit.image)
    assert np.array_equal(edit.last.labels, guided)
    assert not np.array_equal(guided, segment(scores, shape, edit.threshold))  # the guide changed something
    set_quality(s, "fast", 0.0, 0.5, **NO_PROGRESS)
    net = edit.network_in_use
    assert net.model.backend == "onnx" and net.size < s.model_entry.model.config.input_size
    assert edit.last.labels.shape == edit.image.shape[:2]
    scores = torch.from_numpy(edit.class_scores())
    assert np.array_equal(edit.last.labels, segment(scores, shape, edit.threshold))  # fast: bilinear
    with pytest.raises(Exception, match="quality must be one of"):
        set_quality(s, "turbo", 0.0, 0.5, **NO_PROGRESS)
    assert s.edit.quality == "fast"  # a bad value changes nothing
    from prolab.quality import get_quality

    # a step given by its object or its name is the same network (the live tab resolves the step once)
    (m1, o1), (m2, o2) = edit.network(get_quality("accurate")), edit.network("accurate")
    assert m1 is m2 and o1 == o2 and o1["flip"] is True


def test_a_video_finishes_while_other_users_fill_the_session_cap(demo, clip, monkeypatch):
    """Issue 31: a long video job keeps its session (and its files) alive; the sweeper, the session cap
    and gradio's expiry skip it until it returns, then it is an ordinary session again."""
    import threading
    import time

    import app.tabs.live as live_tab
    from app.services.sessions import expire_session

    ui, segment_video, live_frame = demo.prolab_ui, handler(demo, "segment_video"), handler(demo, "live_frame")
    sessions = demo.prolab_services.sessions
    for s in list(sessions._sessions):
        s.release()
    monkeypatch.setattr(sessions.config, "max_sessions", 1)
    monkeypatch.setattr(sessions.config, "session_ttl", 0.2)
    real, started = live_tab.run_video, threading.Event()

    def slow(seg, video, out, palette, alpha, limits, report, render):  # ~0.25 s a frame: a long job
        def step(done, total):
            started.set()
            time.sleep(0.25)
            report(done, total)
        return real(seg, video, out, palette, alpha, limits, step, render)

    monkeypatch.setattr(live_tab, "run_video", slow)
    first = live_frame(None, _frames(1, 48, 64)[0], "default", "classes", 0.6)[ui.state]
    result: dict = {}

    def run():  # what gradio does next (copy the file for download) right after the handler returns
        result["out"] = out = segment_video(first, str(clip), "default", "classes", 0.5, **NO_PROGRESS)
        result["there"] = Path(out[ui.live.video_out]).is_file()

    job = threading.Thread(target=run)
    job.start()
    assert started.wait(60)
    for _ in range(4):  # other users arrive (cap 1) while the TTL passes and the sweeper runs
        live_frame(None, _frames(1, 48, 64)[0], "default", "classes", 0.6)
        time.sleep(0.3)
        sessions.sweep()
        expire_session(first)  # gradio's own expiry of the tab's state
        assert not first.released and first.busy
    job.join(120)
    out = result["out"]
    assert result["there"] and "12 frames" in out[ui.live.video_status]
    assert first.busy == 0
    time.sleep(0.3)
    sessions.sweep()  # idle now: it goes like any other, with its files
    assert first.released and not Path(out[ui.live.video_out]).exists()

