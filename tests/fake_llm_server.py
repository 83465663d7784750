"""A real HTTP server speaking the chat-completions API, answering from a script (for tests).

It runs on 127.0.0.1 on a free port in a background thread, records every request, and answers
each one with the next scripted :class:`Reply` for the requested category (the ``Category: X``
line of the last user message), else from the shared script, else with ``default(category)``.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_CATEGORY = re.compile(r"^Category: (.+)$", re.M)


@dataclass
class Reply:
    """One scripted answer: HTTP status, body (a dict is sent as JSON), headers, delay; ``content_type``
    overrides the Content-Type (e.g. a string body labelled application/json)."""

    status: int = 200
    body: dict | str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str | None = None


def completion(content: str | None, model: str = "fake-model") -> Reply:
    """A successful chat completion whose message content is ``content``."""
    return Reply(200, {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    })


def json_list(sentences: list[str]) -> Reply:
    return completion(json.dumps(sentences))


def error(status: int, message: str = "scripted error", headers: dict | None = None) -> Reply:
    """An OpenAI-style error body with the given status."""
    return Reply(status, {"error": {"message": message, "type": "test", "code": None}},
                 headers or {})


def default_sentences(category: str) -> list[str]:
    """A plausible, category-specific answer (distinct sentences per category)."""
    return [f"A kind of {category}", f"Shape typical of a {category}",
            f"Made of the usual {category} material", f"Colours seen on a {category}",
            f"Parts of a {category}", f"Found where a {category} is found"]


class FakeLLMServer:
    """Context manager: ``with FakeLLMServer() as srv: ... srv.url ... srv.requests``."""

    def __init__(self, default: Callable[[str], Reply] | None = None):
        self.default = default or (lambda cat: json_list(default_sentences(cat)))
        self.script: list[Reply] = []
        self.per_category: dict[str, list[Reply]] = {}
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------------------------
    def add(self, *replies: Reply) -> "FakeLLMServer":
        """Queue replies for the next requests, whatever their category."""
        with self._lock:
            self.script.extend(replies)
        return self

    def add_for(self, category: str, *replies: Reply) -> "FakeLLMServer":
        """Queue replies for the next requests about ``category``."""
        with self._lock:
            self.per_category.setdefault(category, []).extend(replies)
        return self

    def categories_requested(self) -> list[str]:
        return [r["category"] for r in self.requests]

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "FakeLLMServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- serving -----------------------------------------------------------------------------
    def _next_reply(self, category: str) -> Reply:
        with self._lock:
            queue = self.per_category.get(category)
            if queue:
                return queue.pop(0)
            if self.script:
                return self.script.pop(0)
        return self.default(category)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {}
        messages = body.get("messages") or [{}]
        match = _CATEGORY.search(str(messages[-1].get("content", "")))
        category = match.group(1).strip() if match else ""
        with self._lock:
            self.requests.append({"path": h.path, "body": body, "category": category,
                                  "authorization": h.headers.get("Authorization")})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        counted = True
        try:
            if h.path.rstrip("/") != "/v1/chat/completions":
                reply = error(404, f"no route {h.path}")
            else:
                reply = self._next_reply(category)
            if reply.delay:
                self._stop.wait(reply.delay)
            data = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            payload = data.encode("utf-8")
            # The request stops counting as in flight before its answer leaves: once the client has the
            # answer it may send its next request, which this thread's late decrement would count as a third.
            with self._lock:
                self.in_flight -= 1
            counted = False
            h.send_response(reply.status)
            h.send_header("Content-Type", reply.content_type or (
                "application/json" if isinstance(reply.body, dict) else "text/plain"))
            h.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)
        finally:
            if counted:  # an error before the answer was sent
                with self._lock:
                    self.in_flight -= 1
