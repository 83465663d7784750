"""Downloads and disk of a running app (issue 31): concurrent users segmenting the same image get complete
files, and the files users export go away with their sessions.

    python -m bench.downloads_and_disk [--clients 8] [--rounds 20] [--sessions 50] [--ttl 20] [--json out.json]

1. ``--clients`` users (one gradio_client session each) segment the same example ``--rounds`` times at once;
   every image the result names is downloaded and must be complete (as long as its Content-Length and
   decodable): gradio used to rewrite a content-hashed cache file while another user downloaded it.
2. ``--sessions`` users segment an image and export everything (mask, overlay, property maps, label space,
   descriptions), downloading each file; the server's temporary folder (its own ``TMPDIR``, gradio's cache
   inside) is measured before, right after, and once the sessions' TTL and gradio's cache sweep have passed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.services.sessions import folder_bytes
from bench.app_server import client, fetch, running_app, urls
from bench.common import write_json
from prolab.assets import EXAMPLES_DIR

IMAGE = EXAMPLES_DIR / "astronaut.png"
EXPORTS = ("/export_mask", "/export_overlay", "/export_property_maps", "/export_label_space",
           "/export_descriptions_file")


def folder_mb(folder: Path) -> float:
    return folder_bytes(folder) / 2 ** 20


def same_image(url: str, clients: int, rounds: int) -> dict:
    from gradio_client import handle_file

    def user(_i: int) -> list[bool]:
        c, results = client(url), []
        for _ in range(rounds):
            out = c.predict(handle_file(str(IMAGE)), "camvid_11", None, 0.0, 0.55, api_name="/segment")
            images = [u for u in urls(out) if u.rsplit(".", 1)[-1].lower() in ("webp", "png")]
            results.append(bool(images) and all(fetch(u)[0] for u in images))
        return results

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [ok for rows in pool.map(user, range(clients)) for ok in rows]
    return {"clients": clients, "rounds": rounds, "results": len(done), "complete": sum(done),
            "seconds": round(time.perf_counter() - t, 1)}


def exports(url: str, sessions: int, tmp: Path, ttl: float, concurrency: int = 4) -> dict:
    from gradio_client import handle_file

    def user(_i: int) -> tuple[int, int]:
        c = client(url)
        c.predict(handle_file(str(IMAGE)), "camvid_11", None, 0.0, 0.55, api_name="/segment")
        files = ok = 0
        for api in EXPORTS:
            args = {"/export_overlay": (0.55,), "/export_property_maps": (6,)}.get(api, ())
            for u in urls(c.predict(*args, api_name=api)):
                files += 1
                ok += fetch(u)[0]
        return files, ok

    start = folder_mb(tmp)
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(user, range(sessions)))
    after = folder_mb(tmp)
    seconds = time.perf_counter() - t
    # the sessions expire after the TTL; gradio's cache sweep runs every max(60, ttl/4) s for files older
    # than ttl + 60 s: wait for both (polling), at most 4 sweep periods
    deadline = time.monotonic() + ttl + 60 + 4 * max(60, ttl / 4)
    expired = after
    while time.monotonic() < deadline:
        time.sleep(10)
        expired = folder_mb(tmp)
        if expired <= start * 1.10:
            break
    left = {child.name: round(folder_mb(child) if child.is_dir() else child.stat().st_size / 2 ** 20, 2)
            for child in tmp.iterdir()} if tmp.is_dir() else {}
    return {"sessions": sessions, "files": sum(f for f, _ in rows), "complete": sum(o for _, o in rows),
            "left_after_ttl_mb": dict(sorted(left.items(), key=lambda kv: -kv[1])[:8]),
            "seconds": round(seconds, 1), "tmp_mb_start": round(start, 2), "tmp_mb_after": round(after, 2),
            "tmp_mb_after_ttl": round(expired, 2), "within_10_percent": expired <= start * 1.10}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--ttl", type=float, default=20.0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--skip", choices=("downloads", "disk"), default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="prolab-bench-tmp-"))  # the server's TMPDIR: all its files
    env = {"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    extra = ["--label-set", "camvid_11", "--session-ttl", str(args.ttl)] + (["--model", args.model] if args.model else [])
    command = "python -m bench.downloads_and_disk " + " ".join(sys.argv[1:] if argv is None else argv)
    result: dict = {"command": command.strip()}
    try:
        with running_app(extra, env=env) as url:
            client(url).predict(__import__("gradio_client").handle_file(str(IMAGE)), "camvid_11", None, 0.0, 0.55,
                                api_name="/segment")  # warm-up
            if args.skip != "downloads":
                result["same_image"] = same_image(url, args.clients, args.rounds)
                print(json.dumps(result["same_image"]), flush=True)
            if args.skip != "disk":
                result["exports"] = exports(url, args.sessions, tmp, args.ttl)
                print(json.dumps(result["exports"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
