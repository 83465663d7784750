"""Users' sessions: one per browser tab (kept in a ``gr.State``), created on the first action, released
when idle for ``--session-ttl`` or when more than ``--max-sessions`` (or ``--session-memory``) are held."""
from __future__ import annotations

import ctypes
import gc
import logging
import shutil
import threading
import time
import weakref
from dataclasses import dataclass, field

from app.config import AppConfig
from app.services.eval_history import EvalState
from app.services.models import ModelEntry, ModelService
from app.services.text import TextService
from prolab.edit_session import EditSession
from prolab.errors import ProLabError
from prolab.live import LiveStream
from prolab.onnx_backend import OnnxPool

log = logging.getLogger("prolab.app")


@dataclass(eq=False)  # compared and hashed by identity (kept in a WeakSet)
class Session:
    """One user's state: their :class:`~prolab.edit_session.EditSession` (label set, edits, image, results)
    plus what the app keeps beside it."""

    edit: EditSession
    model_entry: ModelEntry
    evaluation: EvalState = field(default_factory=EvalState)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    live: LiveStream = field(default_factory=LiveStream, repr=False)  # the webcam (its own lock: frames never wait)
    video_dir: str | None = None  # this session's segmented videos (deleted with the session)
    last_used: float = field(default_factory=time.monotonic)
    released: bool = False
    evicted: bool = False  # released to make room for other users; told on the next action
    opacity: float = 0.55  # the overlay's, as last shown
    last_warning: tuple[str, float] = ("", 0.0)  # the last toast and when (app.handlers.Ctx.warn)

    def __deepcopy__(self, memo):  # gr.State may copy values; a session is shared by reference
        return self

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this session holds (image, network output, results, an uploaded set's cache)."""
        return 0 if self.released else self.edit.nbytes() + self.evaluation.nbytes

    def release(self) -> int:
        """Drop the image, everything computed from it and the edits (when the session expires); returns
        the bytes that were held."""
        with self.lock:
            held = self.nbytes
            self.edit.release()
            self.evaluation.clear()
            self.released = True
            if self.video_dir:
                shutil.rmtree(self.video_dir, ignore_errors=True)
                self.video_dir = None
        return held


class SessionService:
    """Creates sessions and bounds what they hold (a background sweeper releases idle ones)."""

    def __init__(self, config: AppConfig, models: ModelService, text: TextService, backends: OnnxPool | None = None):
        self.config, self.models, self.text, self.backends = config, models, text, backends
        self._lock = threading.RLock()
        self._sessions: weakref.WeakSet = weakref.WeakSet()
        self._sweeper: threading.Thread | None = None

    def new(self, entry: ModelEntry | None = None) -> Session:
        """A session on ``entry`` (default: the start-up model) and the start-up label set."""
        entry = entry or self.models.default()
        edit = EditSession(entry.model, self.text.encoder_for(entry.model), self.config.label_set,
                           label_sets=self.text.label_set, model_dir=entry.directory,
                           inference_size=self.config.inference_size, shared_spaces=self.text.shared_spaces,
                           backends=self.backends)
        return Session(edit, entry, evaluation=EvalState(self.config.caches))

    def ensure(self, state: Session | None, entry: ModelEntry | None = None) -> Session:
        """The user's session (created on their first action, on ``entry`` when given), noted as in use."""
        session = state if state is not None else self.new(entry)  # a model that cannot load: a ProLabError
        self.track(session)
        if session.evicted:  # said once; the session goes on afresh from the next action
            session.evicted = False
            raise ProLabError(evicted_message(self.config.max_sessions))
        return session

    def track(self, session: "Session") -> None:
        """Note a user action on ``session``. Sessions idle for ``session_ttl`` are released by a
        background sweeper: gr.State's own expiry does it for open tabs, but gradio keeps the state
        of a closed tab (or a finished API client) for an hour whatever the TTL."""
        session.last_used, session.released = time.monotonic(), False
        with self._lock:
            self._sessions.add(session)
            if self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep_forever, name="prolab-sessions", daemon=True)
                self._sweeper.start()
        self.evict_beyond_cap(keep=session)

    def evict_beyond_cap(self, keep: "Session | None" = None) -> int:
        """Release the least recently used sessions while more than ``max_sessions`` hold state (a bound
        on memory however fast new sessions arrive); ``keep`` (the one acting now) never goes, nor does a
        session that is busy. Each released one is marked ``evicted``: its user is told on their next
        action. Returns how many were released."""
        with self._lock:
            live = sorted((s for s in self._sessions if not s.released), key=lambda s: s.last_used)
        excess, done = len(live) - self.config.max_sessions, 0
        held = sum(s.nbytes for s in live)
        budget = self.config.session_memory_mb * 2 ** 20
        for s in live:
            if done >= excess and held <= budget:
                break
            if s is keep or not s.lock.acquire(blocking=False):
                continue
            try:
                if not s.released:
                    held -= s.nbytes
                    release_session(s, reason="evicted (too many sessions)")
                    s.evicted = True
                    done += 1
            finally:
                s.lock.release()
        return done

    def sweep(self) -> int:
        """Release every session idle for longer than ``session_ttl``, and the least recently used beyond
        the session cap or memory budget (a session grows after its action: an upload, a result); returns
        how many."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions
                    if not s.released and now - s.last_used > self.config.session_ttl]
        done = 0
        for s in idle:
            if s.lock.acquire(blocking=False):  # busy means in use: not idle after all
                try:
                    if time.monotonic() - s.last_used > self.config.session_ttl:  # not touched meanwhile
                        release_session(s)
                        done += 1
                finally:
                    s.lock.release()
        return done + self.evict_beyond_cap()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(max(0.5, min(30.0, self.config.session_ttl / 4)))
            try:
                self.sweep()
            except Exception:  # the sweeper must never die
                log.exception("session sweep failed")


def release_session(state, reason: str = "expired") -> None:
    """``gr.State``'s delete callback: free an expired session's arrays now, and hand the freed memory
    back to the operating system (glibc keeps freed heap memory otherwise, so RSS would not drop)."""
    if not isinstance(state, Session) or state.released:
        return
    held = state.release()
    gc.collect()
    _trim_heap()
    log.info("session %s: released %.1f MB", reason, held / 1e6)


def evicted_message(max_sessions: int) -> str:
    """What a user whose session was released for others reads on their next action."""
    return (f"Your session was closed to make room for other users (this server keeps up to {max_sessions} "
            "recently active ones, within a memory budget), so your image, results and edits were freed. Upload "
            "or pick the image again and press Segment; text you typed in the boxes is still there.")


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
