"""Memory held per user by the app, and whether it is given back when sessions expire; the bound that
``--max-sessions`` puts on it; and the peak of one hostile Evaluate upload.

    python -m bench.app_memory [--users 50] [--ttl 20] [--model DIR] [--concurrency 4]
    python -m bench.app_memory --users 300 --rounds 1 --ttl 3600 --no-expiry --bound-mb 3072   # the cap
    python -m bench.app_memory --upload-peak [--bound-mb 1536]     # 255 classes, 4096 x 4096 masks, one upload

Starts ``python app.py`` with ``--session-ttl TTL``, lets one user segment (warm-up: model, encoder and
label space loaded), then ``--users`` more gradio_client users each segment one of the example images
(``--concurrency`` at a time), ``--rounds`` times. Prints the server's resident memory (RSS, from /proc)
after the warm-up, after each round's users have segmented and after their sessions have expired (the
server logs each release), and the bytes held per user: the RSS growth of the first round divided by
the number of users, and the arrays each session released (image, network output, last result), as the
server reports them. RSS does not fall all the way back (the allocator keeps some freed memory), but
a second round reuses it instead of growing.
Without ``--model`` the shipped default model is used when present, else a small untrained one.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.app_server import free_port, stop_server, wait_for_http
from bench.common import ROOT, write_json
from prolab.assets import EXAMPLES_DIR

EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))
RELEASED = re.compile(r"session (?:expired|evicted \(too many sessions\)): released ([0-9.]+) MB")
EVICTED = re.compile(r"session evicted \(too many sessions\)")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


def segment_once(url: str, image: Path, label_set: str) -> None:
    """One new user (a new gradio_client session) segments ``image``."""
    from gradio_client import Client, handle_file

    # the outputs are not needed here; a busy machine can take minutes to answer a burst
    client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 600})
    client.predict(handle_file(str(image)), label_set, None, 0.0, 0.55, api_name="/segment")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--ttl", type=float, default=20.0, help="--session-ttl of the app, seconds (default 20)")
    ap.add_argument("--model", default=None, help="model directory (default: the app's default)")
    ap.add_argument("--label-set", default="ade20k_150")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2,
                    help="bursts of --users users, each followed by their expiry (default 2: memory is reused)")
    ap.add_argument("--timeout", type=float, default=300.0, help="start-up and expiry wait limit, seconds")
    ap.add_argument("--max-sessions", type=int, default=None, help="the app's --max-sessions (default: its own)")
    ap.add_argument("--no-expiry", action="store_true",
                    help="measure right after the users (with a long --ttl: only --max-sessions bounds memory)")
    ap.add_argument("--bound-mb", type=float, default=None,
                    help="fail (exit 1) when the RSS after the users (or the upload's peak) exceeds this")
    ap.add_argument("--upload-peak", action="store_true",
                    help="instead: the peak memory of one hostile Evaluate upload (255 classes, 4096 x 4096 masks)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    if args.upload_peak:
        return upload_peak(args)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "app.py", "--no-browser", "--port", str(port), "--session-ttl", str(args.ttl),
           "--label-set", args.label_set] + (["--model", args.model] if args.model else []) + \
          (["--max-sessions", str(args.max_sessions)] if args.max_sessions else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(url, proc, args.timeout, interval=0.5)
            segment_once(url, EXAMPLES[0], args.label_set)  # warm-up: loads the model, encoder, spaces
            time.sleep(1)
            warm = rss_mb(proc.pid)
            rounds = []  # (seconds, RSS loaded, RSS expired, MB released per session) per round
            for r in range(args.rounds):
                t = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    list(pool.map(lambda i: segment_once(url, EXAMPLES[i % len(EXAMPLES)], args.label_set),
                                  range(args.users)))
                seconds = time.perf_counter() - t
                loaded = rss_mb(proc.pid)
                want = 1 + args.users * (r + 1)  # the warm-up session too
                deadline = time.monotonic() + (0 if args.no_expiry else args.ttl + args.timeout)
                released: list[float] = []
                while True:
                    log.seek(0)
                    text = log.read()
                    released = [float(m) for m in RELEASED.findall(text)]
                    if len(released) >= want or time.monotonic() >= deadline:
                        break
                    time.sleep(1)
                evicted = len(EVICTED.findall(text))
                if not args.no_expiry:
                    time.sleep(2)
                rounds.append((seconds, loaded, rss_mb(proc.pid), released[-args.users:], len(released), want,
                               evicted))
        finally:
            stop_server(proc)
    print(f"app: {' '.join(cmd[1:])}")
    print(f"{args.users} new users per round, {args.concurrency} at a time, {len(EXAMPLES)} example images, "
          f"label set {args.label_set}")
    print(f"RSS after warm-up (1 user)                  {warm:8.1f} MB")
    for r, (seconds, loaded, expired, released, n, want, evicted) in enumerate(rounds, 1):
        print(f"round {r}: RSS after {args.users} users have segmented {loaded:8.1f} MB   ({seconds:.1f} s; "
              f"{evicted} sessions released by --max-sessions)")
        if not args.no_expiry:
            print(f"round {r}: RSS after their sessions expired   {expired:8.1f} MB   "
                  f"({n} of {want} sessions released)")
    first_loaded = rounds[0][1]
    print(f"held per user (RSS growth in round 1 / users) {(first_loaded - warm) / args.users:8.2f} MB")
    released = [m for rnd in rounds for m in rnd[3]]
    if released:
        print(f"arrays released per session (mean)          {sum(released) / len(released):8.2f} MB")
    peak = max(rnd[1] for rnd in rounds)
    _report(args, {"command": " ".join(["python -m bench.app_memory", *sys.argv[1:]]), "users": args.users,
                   "rounds": len(rounds), "max_sessions": args.max_sessions, "rss_warm_mb": round(warm, 1),
                   "rss_after_users_mb": [round(r[1], 1) for r in rounds],
                   "sessions_evicted": [r[6] for r in rounds], "bound_mb": args.bound_mb}, peak)


def _report(args, result: dict, measured_mb: float) -> None:
    """Write ``--json`` and check ``--bound-mb`` (exit status 1 when exceeded)."""
    ok = args.bound_mb is None or measured_mb <= args.bound_mb
    result["within_bound"] = ok
    if args.json:
        write_json(args.json, result)
    if args.bound_mb is not None:
        print(f"bound {args.bound_mb:.0f} MB: {'met' if ok else 'EXCEEDED'} ({measured_mb:.1f} MB)")
        if not ok:
            sys.exit(1)


def write_hostile_upload(folder: Path, images: int = 2, side: int = 4096, classes: int = 255) -> Path:
    """A zip an attacker might upload to the Evaluate tab, at the limits the app accepts: ``classes``
    classes, ``images`` image/mask pairs of ``side`` x ``side`` (16.8 MP: the mask limit), every class present."""
    import shutil

    import numpy as np
    from PIL import Image

    root = folder / "hostile"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    from prolab.data.readers import ade_classes

    names = (ade_classes() + [f"class {i}" for i in range(classes)])[:classes]  # most of them scored
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    rng = np.random.default_rng(0)
    for i in range(images):
        mask = (np.arange(side * side, dtype=np.int64).reshape(side, side) // 97 % classes).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
        small = rng.integers(0, 255, (side // 64, side // 64, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side)).save(root / "images" / f"im{i}.jpg", quality=80)
    return Path(shutil.make_archive(str(folder / "hostile"), "zip", root))


def upload_peak(args) -> None:
    """Peak resident memory of the app process while one session evaluates a hostile upload, over the
    app's memory just before (model, encoder and label set loaded): what one upload can cost."""
    import resource
    import threading

    from app.main import build_demo
    from app.config import AppConfig
    from app.services import Services

    demo = build_demo(services=Services(AppConfig(model=args.model, label_set=args.label_set)))
    fn = next(f for f in demo.fns.values() if f.api_name == "evaluate")
    with tempfile.TemporaryDirectory() as tmp:
        upload = write_hostile_upload(Path(tmp))
        state = next(f for f in demo.fns.values() if f.api_name == "segment").fn(
            None, str(EXAMPLES[0]), args.label_set, None, 0.0, 0.55)[demo.prolab_ui.state]  # warm: all loaded
        before, peak = rss_mb(os.getpid()), [0.0]
        done = threading.Event()

        def sample():  # ru_maxrss is the process's lifetime peak; sampling VmRSS gives this call's
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(os.getpid()))
                time.sleep(0.02)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        t = time.perf_counter()
        out = fn.fn(state, args.label_set, None, "upload", str(upload), "")
        seconds = time.perf_counter() - t
        done.set()
        watcher.join()
    summary = out[demo.prolab_ui.evaluate.summary]
    growth = peak[0] - before
    print(f"hostile upload: 255 classes, 2 images with 4096 x 4096 masks ({Path(upload).name})")
    print(f"evaluated in {seconds:.1f} s: {summary.splitlines()[1] if len(summary.splitlines()) > 1 else summary}")
    print(f"RSS before {before:8.1f} MB, peak during {peak[0]:8.1f} MB: +{growth:.1f} MB "
          f"(process lifetime max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB)")
    _report(args, {"command": " ".join(["python -m bench.app_memory", *sys.argv[1:]]), "classes": 255,
                   "images": 2, "mask_side": 4096, "rss_before_mb": round(before, 1), "rss_peak_mb": round(peak[0], 1),
                   "peak_growth_mb": round(growth, 1), "seconds": round(seconds, 1), "bound_mb": args.bound_mb},
            growth)


if __name__ == "__main__":
    main()
