"""Memory held per user by the app, and whether it is given back when sessions expire.

    python -m bench.app_memory [--users 50] [--ttl 20] [--model DIR] [--concurrency 4]

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

from bench import ROOT
from bench._http import free_port, stop_server, wait_for_http
from prolab.assets import EXAMPLES_DIR

EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))
RELEASED = re.compile(r"session expired: released ([0-9.]+) MB")


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
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "app.py", "--no-browser", "--port", str(port), "--session-ttl", str(args.ttl),
           "--label-set", args.label_set] + (["--model", args.model] if args.model else [])
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
                deadline = time.monotonic() + args.ttl + args.timeout
                released: list[float] = []
                while time.monotonic() < deadline:
                    log.seek(0)
                    released = [float(m) for m in RELEASED.findall(log.read())]
                    if len(released) >= want:
                        break
                    time.sleep(1)
                time.sleep(2)
                rounds.append((seconds, loaded, rss_mb(proc.pid), released[-args.users:], len(released), want))
        finally:
            stop_server(proc)
    print(f"app: {' '.join(cmd[1:])}")
    print(f"{args.users} new users per round, {args.concurrency} at a time, {len(EXAMPLES)} example images, "
          f"label set {args.label_set}")
    print(f"RSS after warm-up (1 user)                  {warm:8.1f} MB")
    for r, (seconds, loaded, expired, released, n, want) in enumerate(rounds, 1):
        print(f"round {r}: RSS after {args.users} users have segmented {loaded:8.1f} MB   ({seconds:.1f} s)")
        print(f"round {r}: RSS after their sessions expired   {expired:8.1f} MB   "
              f"({n} of {want} sessions released)")
    first_loaded = rounds[0][1]
    print(f"held per user (RSS growth in round 1 / users) {(first_loaded - warm) / args.users:8.2f} MB")
    released = [m for rnd in rounds for m in rnd[3]]
    if released:
        print(f"arrays released per session (mean)          {sum(released) / len(released):8.2f} MB")


if __name__ == "__main__":
    main()
