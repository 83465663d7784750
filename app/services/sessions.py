"""Users' sessions: one per browser tab (kept in a ``gr.State``), created on the first action, released
when idle for ``--session-ttl`` or when more than ``--max-sessions`` (or ``--session-memory``) are held."""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app.config import AppConfig
from app.services.eval_history import EvalState
from app.services.models import ModelEntry, ModelService
from app.services.text import TextService
from app.services.workspace import WorkspaceService
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
    folder: str | None = None  # this session's exports (deleted with the session, see :meth:`scratch`)
    busy: int = 0  # long jobs running outside the lock (a video): the sweeper and the cap leave it alone
    last_used: float = field(default_factory=time.monotonic)
    released: bool = False
    evicted: bool = False  # released to make room for other users; told on the next action
    opacity: float = 0.55  # the overlay's, as last shown
    last_warning: tuple[str, float] = ("", 0.0)  # the last toast and when (app.handlers.Ctx.warn)
    ttl: float = float("inf")  # --session-ttl: gradio's expiry of the tab's state waits for this much idleness
    workspace: str | None = None  # the browser's saved work (app.services.workspace); None: not kept
    saved: tuple | None = None  # the revisions last written to (or read from) the workspace
    notice: str | None = None  # a sentence for the user beside the result of this action (then cleared)
    # The Edit tab's sentences box: which (label set key, class) it shows, and the sentences typed there
    # and not applied when the user moved to another class (shown again when they come back to it).
    edit_box: tuple[str, str] | None = None
    edit_drafts: dict[tuple[str, str], str] = field(default_factory=dict)

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
            for folder in (self.video_dir, self.folder):
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
            self.video_dir = self.folder = None
        return held

    def scratch(self, kind: str) -> Path:
        """A new folder for files this session hands out (``kind``: "export", ...), inside the session's own
        folder, which is deleted with the session (files a user downloads live as long as their session)."""
        if self.folder is None or not Path(self.folder).is_dir():
            self.folder = tempfile.mkdtemp(prefix="prolab-session-", dir=scratch_root())
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.folder))

    @property
    def disk_bytes(self) -> int:
        """Bytes of the files this session's folders hold."""
        return sum(folder_bytes(f) for f in (self.video_dir, self.folder) if f)


class SessionService:
    """Creates sessions and bounds what they hold (a background sweeper releases idle ones)."""

    def __init__(self, config: AppConfig, models: ModelService, text: TextService, backends: OnnxPool | None = None,
                 workspaces: WorkspaceService | None = None):
        self.config, self.models, self.text, self.backends = config, models, text, backends
        self.workspaces = workspaces or WorkspaceService(None)
        self._lock = threading.RLock()
        self._sessions: weakref.WeakSet = weakref.WeakSet()
        self._sweeper: threading.Thread | None = None
        # label sets built from users' text (encoding, clustering, alignment) one at a time: the transient
        # memory of a large set is then counted once, not once per user (four at once: see bench.input_limits)
        self._building = threading.BoundedSemaphore(1)

    def new(self, entry: ModelEntry | None = None) -> Session:
        """A session on ``entry`` (default: the start-up model) and the start-up label set."""
        entry = entry or self.models.default()
        edit = EditSession(entry.model, self.text.encoder_for(entry.model), self.config.label_set,
                           label_sets=self.text.label_set, model_dir=entry.directory,
                           inference_size=self.config.inference_size, shared_spaces=self.text.shared_spaces,
                           backends=self.backends, cache_sizes=self.config.caches)
        return Session(edit, entry, evaluation=EvalState(self.config.caches), ttl=self.config.session_ttl)

    def ensure(self, state: Session | None, entry: ModelEntry | None = None, workspace: str | None = None) -> Session:
        """The user's session (created on their first action, on ``entry`` when given), noted as in use. A
        new or freed session of a page with a ``workspace`` gets that workspace's saved work back first."""
        session = state if state is not None else self.new(entry)  # a model that cannot load: a ProLabError
        restore = workspace is not None and (state is None or session.released or session.workspace != workspace)
        self.track(session)
        problem = None
        if restore:
            session.workspace = workspace
            problem = self.workspaces.restore(session)
        if session.evicted:  # said once; the session goes on afresh from the next action
            session.evicted = False
            raise ProLabError(evicted_message(self.config.max_sessions, kept=restore and problem is None))
        session.notice = problem  # told beside this action's result (the action itself goes on)
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
        live = self._least_recently_used()
        excess, done = len(live) - self.config.max_sessions, 0
        held = sum(s.nbytes for s in live)
        budget = self.config.session_memory_mb * 2 ** 20
        for s in live:
            if done >= excess and held <= budget:
                break
            freed = self._evict(s, keep, "evicted (too many sessions)", lambda s: s.nbytes)
            if freed is not None:
                held -= freed
                done += 1
        return done

    def _least_recently_used(self) -> list["Session"]:
        with self._lock:
            return sorted((s for s in self._sessions if not s.released), key=lambda s: s.last_used)

    @staticmethod
    def _evict(s: "Session", keep: "Session | None", reason: str, size) -> int | None:
        """Release ``s`` to make room (marked ``evicted``: its user is told on their next action) unless it
        is ``keep``, busy or in use; returns ``size(s)`` as it was, or None when it stays."""
        if s is keep or s.busy or not s.lock.acquire(blocking=False):
            return None
        try:
            if s.released:
                return None
            freed = size(s)
            release_session(s, reason=reason)
            s.evicted = True
            return freed
        finally:
            s.lock.release()

    def sweep(self) -> int:
        """Release every session idle for longer than ``session_ttl``, and the least recently used beyond
        the session cap or memory budget (a session grows after its action: an upload, a result); returns
        how many."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions
                    if not s.released and not s.busy and now - s.last_used > self.config.session_ttl]
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

    @contextmanager
    def working(self, session: "Session"):
        """Keep ``session`` alive while a long job (a video) runs outside its lock: neither the sweeper, the
        session cap nor gradio's expiry releases it (or deletes its files) until the job returns."""
        with session.lock:
            session.busy += 1
        try:
            yield session
        finally:
            with session.lock:
                session.busy -= 1
                session.last_used = time.monotonic()  # its result was just handed out: counts as an action

    @contextmanager
    def building(self):
        """Hold while building a label set from a user's descriptions (at most one at a time); the heap
        is trimmed after each: a build's transient arrays are freed in the worker thread's own malloc arena,
        which glibc keeps otherwise (resident memory far above what the sessions hold; bench.input_limits)."""
        with self._building:
            try:
                yield
            finally:
                _trim_heap()

    def disk_used(self) -> int:
        """Bytes of the files all sessions' folders hold (exports, segmented videos)."""
        with self._lock:
            live = [s for s in self._sessions if not s.released]
        return sum(s.disk_bytes for s in live)

    def reserve_disk(self, keep: "Session | None" = None, need: int = 0) -> None:
        """Make room for ``need`` more bytes within ``--disk-budget``: the least recently used idle sessions'
        files go first (the sessions are released and told, as beyond the session cap); when the files of
        sessions in use fill it, a :class:`ProLabError` says so before anything is written."""
        budget = self.config.disk_budget_mb * 2 ** 20
        used = self.disk_used()
        if used + need <= budget:
            return
        for s in self._least_recently_used():
            if used + need <= budget:
                break
            if s.disk_bytes:
                used -= self._evict(s, keep, "evicted (disk budget)", lambda s: s.disk_bytes) or 0
        if used + need > budget:
            raise ProLabError(f"This server's space for files to download ({self.config.disk_budget_mb:.0f} MB) "
                              "is full with other users' files in use; try again in a few minutes.")

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
    if not isinstance(state, Session) or state.released or state.busy:
        return  # a busy one: its job is running; the sweeper releases it once idle
    held = state.release()
    gc.collect()
    _trim_heap()
    log.info("session %s: released %.1f MB", reason, held / 1e6)


def scratch_root() -> str:
    """Where sessions' folders are made: the system's temporary folder."""
    return tempfile.gettempdir()


def folder_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the files under ``folder`` (0 when it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def expire_session(state) -> None:
    """``gr.State``'s delete callback: gradio's clock for a tab's state starts when a call returns it, so
    it can run out while a long call (an export, a video) is still working or just finished, and the
    files it returns would be deleted before gradio copies them. A session in use or used within its TTL
    is therefore left to the sweeper (which releases it once idle); others are released now."""
    if not isinstance(state, Session) or state.released or state.busy:
        return
    if not state.lock.acquire(blocking=False):
        return
    try:
        if time.monotonic() - state.last_used >= state.ttl:
            release_session(state)
    finally:
        state.lock.release()


def evicted_message(max_sessions: int, kept: bool = False) -> str:
    """What a user whose session was released for others reads on their next action (``kept``: their
    saved work was put back)."""
    freed = "image and results were freed; your saved edits, novel categories and evaluations are back" if kept \
        else "image, results and edits were freed"
    return (f"Your session was closed to make room for other users (this server keeps up to {max_sessions} "
            f"recently active ones, within a memory budget), so your {freed}. Upload "
            "or pick the image again and press Segment; text you typed in the boxes is still there.")


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
