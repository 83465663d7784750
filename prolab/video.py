"""Video files through the model: decode, segment every frame, encode the overlay video, and record
each class's share of every frame over time.

Decoding and encoding use PyAV (``av`` on PyPI): its wheels bundle the FFmpeg libraries (H.264 through
libx264 included), so no system ffmpeg is needed, and it hands frames over as numpy arrays in-process
instead of piping raw bytes through a subprocess as imageio-ffmpeg does. It is maintained by the
PyAV-Org project with wheels for Linux, macOS and Windows.

Limits (:class:`VideoLimits`) are checked from the container's header before any frame is decoded, so a
too-long or too-large upload fails at once with a one-line message.

``av`` is imported inside the functions that decode or encode (lazy: it loads the FFmpeg libraries, and
:func:`is_video` and the limits need none of it).
"""
from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from prolab.colorize import blend, colorize
from prolab.errors import ProLabError
from prolab.frames import class_shares
from prolab.limits import LIMITS

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv"}


@dataclass(frozen=True)
class VideoLimits:
    """The longest and largest video accepted (seconds; pixels of the longer and the shorter side, of the
    header and of every decoded frame; frames)."""

    max_seconds: float = 120.0
    max_long_side: int = 1920
    max_short_side: int = 1080
    max_frames: int = LIMITS.max_video_frames  # the work is per frame: 20 s at 240 fps is 4,800 frames


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    seconds: float
    frames: int  # from the header, or duration x fps when the container does not say


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _open(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.is_file():
        raise ProLabError(f"Video not found: {p}")
    try:
        container = av.open(str(p))
    except Exception as exc:  # FFmpeg's reason is the useful part ("Invalid data found ...")
        raise ProLabError(f"Cannot read {p.name} as a video ({exc.__class__.__name__}: {exc}).") from None
    if not container.streams.video:
        container.close()
        raise ProLabError(f"{p.name} has no video stream.")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, duration and frame count of a video file (header only, nothing decoded)."""
    container = _open(path)
    try:
        return _info(container)
    finally:
        container.close()


def _info(container) -> VideoInfo:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000
    else:
        seconds = (stream.frames or 0) / fps
    frames = int(stream.frames or round(seconds * fps))
    return VideoInfo(int(stream.codec_context.width), int(stream.codec_context.height), fps, seconds, frames)


def check_limits(info: VideoInfo, limits: VideoLimits, name: str = "The video") -> None:
    """:class:`ProLabError` with the limit and the video's value when ``info`` exceeds ``limits``."""
    if info.width < 1 or info.height < 1 or info.frames < 1:
        raise ProLabError(f"{name} has no frames.")
    if info.seconds > limits.max_seconds + 0.5:
        raise ProLabError(f"{name} is {info.seconds:.0f} s long; the limit is {limits.max_seconds:.0f} s "
                          "(cut it shorter).")
    if info.frames > limits.max_frames:
        raise ProLabError(f"{name} has {info.frames:,} frames ({info.seconds:.0f} s at {info.fps:g} fps); the limit "
                          f"is {limits.max_frames:,} frames (cut it shorter or lower its frame rate).")
    check_frame_size(info.width, info.height, limits, name)


def check_frame_size(width: int, height: int, limits: VideoLimits, name: str = "The video",
                     frame: int | None = None) -> None:
    """:class:`ProLabError` when a frame (the header's size, or decoded frame ``frame``) is too large."""
    long_side, short_side = max(width, height), min(width, height)
    if long_side > limits.max_long_side or short_side > limits.max_short_side:
        which = name if frame is None else f"Frame {frame} of {name}"
        raise ProLabError(f"{which} is {width} x {height}; the limit is {limits.max_long_side} x "
                          f"{limits.max_short_side} (scale it down).")


@dataclass
class VideoResult:
    output: Path
    info: VideoInfo
    class_names: list[str]
    times: list[float] = field(default_factory=list)  # seconds, one per processed frame
    shares: list[np.ndarray] = field(default_factory=list)  # per frame (C + 1,), last = unknown
    seconds: float = 0.0  # wall time of decode + segment + encode

    @property
    def frames(self) -> int:
        return len(self.times)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def share_table(self) -> dict[str, list[float]]:
        """Class -> share of each frame (classes that never appear dropped; "unknown" when present)."""
        if not self.shares:
            return {}
        m = np.stack(self.shares)
        names = self.class_names + ["unknown"]
        return {names[j]: [round(float(v), 5) for v in m[:, j]] for j in range(m.shape[1]) if m[:, j].any()}

    def summary(self) -> dict:
        return {"video": self.output.name, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 2), "width": self.info.width, "height": self.info.height,
                "source_fps": round(self.info.fps, 3), "times": [round(t, 3) for t in self.times],
                "class_shares": self.share_table()}


def segment_video(segmenter, path: str | os.PathLike, out_path: str | os.PathLike, palette: np.ndarray,
                  alpha: float = 0.5, limits: VideoLimits = VideoLimits(),
                  progress: Callable[[int, int], None] | None = None,
                  render: Callable[[np.ndarray, object], np.ndarray] | None = None) -> VideoResult:
    """Segment every frame of ``path`` with ``segmenter`` (:class:`prolab.frames.FrameSegmenter`) and
    write the overlays as an H.264 MP4 to ``out_path`` at the source frame rate.

    ``progress(done, total)`` is called after each frame (``total`` from the header: an estimate).
    ``render(frame, result)`` replaces the default class-colour overlay (e.g. a property heatmap).
    The output is written to a temporary name and renamed at the end: an error leaves no partial file.
    """
    import av

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    container = _open(path)
    fd, name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=out_path.suffix)
    os.close(fd)  # a unique name: two jobs writing the same output never share a temporary file
    tmp = Path(name)
    t0 = time.perf_counter()
    try:
        info = _info(container)
        check_limits(info, limits, Path(path).name)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decode with FFmpeg's own threads, alongside the model
        result = VideoResult(out_path, info, list(segmenter.class_names))
        # H.264 in yuv420p needs even sides; the rate as a fraction keeps 29.97 fps exact
        width, height = info.width // 2 * 2, info.height // 2 * 2
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25).limit_denominator(1001)
        with av.open(str(tmp), mode="w", format="mp4") as out:
            enc = out.add_stream("libx264", rate=rate)
            enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
            enc.options = {"preset": "veryfast", "crf": "23"}
            draw = render or (lambda image, seg: blend(image, colorize(seg.labels, palette), alpha))
            # Drawing and H.264 encoding run in a second thread (PyAV releases the GIL while encoding)
            # while this one decodes and runs the model; the queue is bounded, so memory is too.
            writer = _Writer(out, enc, draw)
            try:
                for frame in container.decode(stream):
                    # every frame, not only the header: a stream may change size (checked before converting)
                    check_frame_size(frame.width, frame.height, limits, Path(path).name, result.frames + 1)
                    if result.frames >= limits.max_frames:
                        raise ProLabError(f"{Path(path).name} has more than {limits.max_frames:,} frames (its "
                                          "header says fewer); cut it shorter or lower its frame rate.")
                    image = frame.to_ndarray(format="rgb24")[:height, :width]
                    if image.shape[:2] != (height, width):  # a smaller frame than the header's: padded
                        image = _fit(image, height, width)
                    seg = segmenter(image)
                    writer.put(image, seg)
                    t = float(frame.time) if frame.time is not None else result.frames / info.fps
                    result.times.append(t)
                    result.shares.append(class_shares(seg.labels, len(result.class_names)))
                    if progress is not None:
                        progress(result.frames, max(info.frames, result.frames))
                    if t > limits.max_seconds + 1:  # a header that understated the length
                        raise ProLabError(f"{Path(path).name} is longer than the {limits.max_seconds:.0f} s limit.")
            except av.error.FFmpegError as exc:
                raise ProLabError(f"Cannot decode {Path(path).name} ({exc}).") from None
            finally:
                writer.close()
            if not result.frames:
                raise ProLabError(f"{Path(path).name} has no frames that could be decoded.")
        os.replace(tmp, out_path)
    finally:
        container.close()
        tmp.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - t0
    return result


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` cropped or zero-padded to ``height`` x ``width`` (the encoder's fixed size)."""
    out = np.zeros((height, width, 3), np.uint8)
    h, w = min(height, image.shape[0]), min(width, image.shape[1])
    out[:h, :w] = image[:h, :w]
    return out


class _Writer:
    """Draws and encodes frames in a background thread, fed through a bounded queue."""

    def __init__(self, out, enc, draw, depth: int = 4):
        self.out, self.enc, self.draw = out, enc, draw
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="prolab-video-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import av

        while True:
            item = self.queue.get()
            if item is None:
                break
            if self.error is not None:
                continue  # drain: the producer learns of the error on its next put
            try:
                shown = self.draw(*item)
                for packet in self.enc.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(shown), format="rgb24")):
                    self.out.mux(packet)
            except BaseException as exc:  # re-raised in the producer's thread
                self.error = exc

    def put(self, image: np.ndarray, seg) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((image, seg))

    def close(self) -> None:
        """Finish the queued frames and flush the encoder (also after an error, so the thread ends)."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        for packet in self.enc.encode():
            self.out.mux(packet)


def write_shares(result: VideoResult, path: str | os.PathLike) -> Path:
    """The per-frame class shares as CSV: ``time`` then one column per class that appears."""
    table = result.share_table()
    names = list(table)
    lines = [",".join(["time_s"] + [json.dumps(n, ensure_ascii=False) for n in names])]
    for i, t in enumerate(result.times):
        lines.append(",".join([f"{t:.3f}"] + [f"{table[n][i]:.5f}" for n in names]))
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def make_test_video(path: str | os.PathLike, frames: np.ndarray | list[np.ndarray], fps: int = 10) -> Path:
    """Encode RGB frames (all the same even size) as an H.264 MP4 (tests and benchmarks)."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f, np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return Path(path)
