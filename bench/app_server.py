"""The app as a server process, for benches and tests: a free port, waiting until the server answers
HTTP, stopping it, and :func:`running_app` for all three (one implementation for bench.speed,
bench.app_memory, bench.webcam_fps and tests/app_server.py)."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT


class NotServing(RuntimeError):
    """The server exited, or did not answer within the time limit; ``exit_code`` is None unless it exited."""

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 240.0,
                  interval: float = 0.1, request_timeout: float = 5.0) -> float:
    """Poll ``GET url`` until it answers 200; return the seconds waited.

    Raises :class:`NotServing` as soon as ``proc`` (the server process, if given) has exited, or once
    ``timeout`` seconds have passed without an answer.
    """
    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise NotServing(f"the server exited with code {proc.returncode} before {url} answered",
                             proc.returncode)
        try:
            with urllib.request.urlopen(url, timeout=request_timeout) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:  # refused, reset, timed out, HTTP errors (URLError and HTTPError are OSErrors)
            pass
        if time.monotonic() - start > timeout:
            raise NotServing(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(interval)


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Terminate the server process, and kill it if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_app(args: list[str], env: dict[str, str] | None = None, timeout: float = 240.0,
                port: int | None = None):
    """Yield the base URL of ``python app.py --no-browser --host 127.0.0.1 --port P *args`` (started from
    the repository root, output in ``$TMPDIR/prolab-app-P.log``); stop it afterwards. ``port``: P (default
    a free one; a restarted server keeps its pages' origin with the same P)."""
    port = port or free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"prolab-app-{port}.log", "w+")
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen([sys.executable, "app.py", "--no-browser", "--host", "127.0.0.1",
                             "--port", str(port), *args], cwd=ROOT, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_for_http(url, proc, timeout, interval=0.5)
        except NotServing as exc:
            log.seek(0)
            raise RuntimeError(f"app.py did not start: {exc}:\n{log.read()[-4000:]}") from None
        yield url
    finally:
        stop_server(proc)
        log.close()


# ---------------------------------------------------------------------------- talking to it
def urls(value) -> list[str]:
    """Every file URL in an output of gradio_client (download_files=False)."""
    if isinstance(value, dict):
        found = [value["url"]] if isinstance(value.get("url"), str) else []
        return found + [u for v in value.values() if isinstance(v, (dict, list, tuple)) for u in urls(v)]
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in urls(v)]
    return []


def fetch(url: str) -> tuple[bool, int]:
    """(complete, bytes): the body is as long as its Content-Length and, for an image, decodes."""
    import httpx
    from PIL import Image

    try:
        r = httpx.get(url, timeout=120)
    except httpx.HTTPError:
        return False, 0
    body = r.content
    declared = r.headers.get("content-length")  # of the bytes sent: compressed when gzip-encoded
    ok = r.status_code == 200 and (declared is None or int(declared) == r.num_bytes_downloaded)
    if ok and url.rsplit(".", 1)[-1].lower() in ("webp", "png", "jpg", "jpeg"):
        try:
            Image.open(io.BytesIO(body)).load()
        except Exception:  # noqa: BLE001 - a truncated image
            ok = False
    return ok, len(body)


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 600})
