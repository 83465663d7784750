"""Live frames (a webcam stream) through the model: one user's stream state.

:class:`LiveStream` drops a frame that arrives while the previous one is still being processed (a
non-blocking lock: frames are never queued), shrinks each frame to a fixed short side, segments it with a
:class:`prolab.frames.FrameSegmenter` built once per (network, label space, options), draws the classes
or one property's heatmap, and measures the frames per second it returns. No UI code: the app's webcam
tab and ``bench.webcam_fps`` call it.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from prolab.colorize import blend, colorize, heatmap, resize_map
from prolab.errors import ProLabError
from prolab.frames import FrameSegmenter
from prolab.images import load_image

LIVE_SHORT_SIDE = 320  # the webcam frame's short side after shrinking (the 8 fps goal is set here)


@dataclass
class LiveFrame:
    image: np.ndarray  # (h, w, 3) uint8: the overlay or heatmap to show
    labels: np.ndarray  # (h, w) class indices (-1 unknown)
    class_names: list[str]
    seconds: float  # processing time of this frame
    fps: float  # frames returned per second over the recent window
    dropped: int  # frames dropped so far because one was in progress


def shrink(frame: np.ndarray, short_side: int) -> np.ndarray:
    """``frame`` resized (area filter) so that its short side is at most ``short_side``."""
    h, w = frame.shape[:2]
    if min(h, w) <= short_side:
        return frame
    s = short_side / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.array(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


class LiveStream:
    """One user's live stream (thread-safe; ``process`` never blocks on a busy stream)."""

    def __init__(self, window_seconds: float = 3.0):
        self._busy = threading.Lock()
        self._times: deque[float] = deque(maxlen=240)
        self.window = window_seconds
        self.frames = 0
        self.dropped = 0
        self._segmenter: tuple | None = None  # (key, FrameSegmenter)

    @property
    def fps(self) -> float:
        """Frames returned per second over the last ``window`` seconds."""
        now = time.perf_counter()
        recent = [t for t in self._times if now - t <= self.window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def reset(self) -> None:
        self._times.clear()
        self.frames = self.dropped = 0

    def segmenter(self, model, label_space, options: dict, prior=None, encoder=None, guided: bool | None = None):
        """The :class:`FrameSegmenter` for these inputs, rebuilt only when one of them changes."""
        key = (model, label_space, tuple(sorted((k, str(v)) for k, v in options.items())), prior, guided)
        if self._segmenter is None or self._segmenter[0] != key:
            self._segmenter = (key, FrameSegmenter(model, label_space, options, prior=prior, encoder=encoder,
                                                   guided=guided))
        return self._segmenter[1]

    def process(self, frame, model, label_space, options: dict, palette: np.ndarray, opacity: float = 0.55,
                property_index: int | None = None, short_side: int = LIVE_SHORT_SIDE, prior=None,
                encoder=None, guided: bool | None = None) -> LiveFrame | None:
        """Segment one frame and draw it; None when the previous frame is still in progress (dropped).
        ``guided``: :class:`FrameSegmenter`'s (the dial step's guided upsampling; None: the default step's)."""
        if not self._busy.acquire(blocking=False):
            self.dropped += 1
            return None
        try:
            t0 = time.perf_counter()
            image = shrink(load_image(frame), short_side)
            seg = self.segmenter(model, label_space, options, prior, encoder, guided)
            result = seg(image)
            if property_index is not None:
                if result.activations is None:
                    raise ProLabError("Property heatmaps need a property model.")
                if not 0 <= property_index < result.activations.shape[0]:
                    raise ProLabError(f"Property {property_index} does not exist (K = {result.activations.shape[0]}).")
                heat = heatmap(resize_map(result.activations[property_index].numpy(), image.shape[:2]), 0.0, 1.0)
                shown = blend(image, heat, opacity)
            else:
                shown = blend(image, colorize(result.labels, palette), opacity)
            now = time.perf_counter()
            self._times.append(now)
            self.frames += 1
            return LiveFrame(shown, result.labels, seg.class_names, now - t0, self.fps, self.dropped)
        finally:
            self._busy.release()
