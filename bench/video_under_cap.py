"""A long video finishes while other users fill the session cap (issue 31).

    python -m bench.video_under_cap [--seconds 60] [--fps 10] [--users 6] [--max-sessions 3] [--ttl 20]
                                    [--json docs/results/video_under_cap.json]

The app runs as a server (``python app.py``) with a small ``--max-sessions`` and ``--session-ttl``. One user
uploads a ``--seconds`` clip (a pan across an example photo, 640 x 480, H.264) to ``/segment_video``; while it
runs (after a 1 s clip that warms the server up), ``--users`` other users (one gradio_client session each) segment an example image over and over, so the
server must release the least recently used sessions to stay within the cap and the video's session idles far
beyond the TTL. It passes when the video's result comes back, its file downloads complete and decodes to every
frame, and the others' refusals (if any) are sentences ("... released ...") rather than errors.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from bench.app_server import client, fetch, running_app, urls
from bench.common import pan_clip, write_json
from prolab.assets import EXAMPLES_DIR
from prolab.video import probe

IMAGE = EXAMPLES_DIR / "astronaut.png"


def others(url: str, users: int, stop: threading.Event) -> dict:
    """``users`` sessions segmenting an image until ``stop``; counts of results and of refusals by message."""
    from gradio_client import handle_file

    counts = {"results": 0, "messages": {}}
    lock = threading.Lock()

    def user() -> None:
        c = client(url)
        while not stop.is_set():
            try:
                c.predict(handle_file(str(IMAGE)), "camvid_11", None, 0.0, 0.55, api_name="/segment")
                key = None
            except Exception as exc:  # noqa: BLE001 - gradio's AppError: the user's message
                key = str(exc)[:160]
            with lock:
                if key is None:
                    counts["results"] += 1
                else:
                    counts["messages"][key] = counts["messages"].get(key, 0) + 1

    threads = [threading.Thread(target=user, daemon=True) for _ in range(users)]
    for t in threads:
        t.start()
    counts["threads"] = threads
    return counts


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--users", type=int, default=6)
    ap.add_argument("--max-sessions", type=int, default=3)
    ap.add_argument("--ttl", type=float, default=20.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from gradio_client import handle_file

    folder = Path(tempfile.mkdtemp(prefix="prolab-bench-video-"))
    clip = pan_clip(folder / "clip_60s.mp4", args.seconds, fps=args.fps)
    frames = probe(clip).frames
    server_args = ["--max-sessions", str(args.max_sessions), "--session-ttl", str(args.ttl), "--no-state"]
    with running_app(server_args) as url:
        video_user = client(url)
        # warm-up (the server builds the fast step's ONNX backend on first use): a 1 s clip before the crowd
        warm = pan_clip(folder / "warm.mp4", 1.0, fps=args.fps)
        video_user.predict(handle_file(str(warm)), "fast", "classes", 0.55, api_name="/segment_video")
        stop = threading.Event()
        crowd = others(url, args.users, stop)
        t = time.perf_counter()
        try:
            out = video_user.predict(handle_file(str(clip)), "fast", "classes", 0.55, api_name="/segment_video")
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - reported
            out, outcome = None, f"failed: {str(exc)[:300]}"
        seconds = time.perf_counter() - t
        stop.set()
        for th in crowd.pop("threads"):
            th.join(timeout=120)
        video = {"outcome": outcome, "seconds": round(seconds, 1)}
        if out is not None:
            found = urls(out[0])
            ok, size = fetch(found[0]) if found else (False, 0)
            local = folder / "out.mp4"
            if ok:
                import httpx

                local.write_bytes(httpx.get(found[0], timeout=600).content)
            video.update(download_complete=ok, mb=round(size / 2 ** 20, 2),
                         frames_out=probe(local).frames if ok else None, status=str(out[2])[:200])
    result = {"command": "python -m bench.video_under_cap " + " ".join(argv or []),
              "clip": {"seconds": args.seconds, "fps": args.fps, "frames": frames, "size": "640x480"},
              "server": server_args, "users": args.users, "video": video, "others": crowd,
              "passed": video["outcome"] == "ok" and bool(video.get("download_complete"))
              and video.get("frames_out") == frames}
    print(result)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
