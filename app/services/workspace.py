"""Each browser's workspace, kept across page reloads, freed sessions and server restarts: its label-set
edits, novel categories, custom sets and evaluation history, as JSON text in one SQLite file
(``--state-dir``; ``--no-state``: nothing is kept). Images and cached network outputs are never stored.

A workspace is named by a random 128-bit id the server issues (:func:`secrets.token_hex`), kept in the
browser's local storage; every query is keyed by that id, so nothing of one workspace is readable from
another. A workspace over ``max_bytes_each`` is not saved (the user is told in a sentence); beyond
``max_bytes_total`` for the whole file, the least recently used workspaces are deleted.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from cachetools import LRUCache

from prolab.caches import CACHE_SIZES
from prolab.errors import ProLabError

log = logging.getLogger("prolab.app")
#: The version of the file's tables and of the JSON in them; another one is never read.
SCHEMA_VERSION = 1
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
DB_NAME = "workspaces.sqlite3"


def is_workspace_id(value) -> bool:
    """Whether ``value`` has the form of an id this server issues (32 lowercase hex digits)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


class WorkspaceStore:
    """The SQLite file: ``meta`` (schema version, the browser-storage secret) and ``workspaces`` (id, JSON
    data, its size, last use). One connection per thread; WAL mode, so readers never wait for a writer."""

    def __init__(self, folder: str | Path, max_bytes_each: int, max_bytes_total: int):
        self.path = Path(folder).expanduser() / DB_NAME
        self.max_bytes_each, self.max_bytes_total = int(max_bytes_each), int(max_bytes_total)
        self._local = threading.local()
        self._write = threading.RLock()  # one writer at a time (evictions read then delete)
        self._ready = False

    # ------------------------------------------------------------------ the file
    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit
            # the write-ahead log is checkpointed and cut back at an eighth of the cap (the rest is the data)
            log_pages = max(16, self.max_bytes_total // 8 // 4096)
            conn.execute(f"PRAGMA wal_autocheckpoint={log_pages}")
            conn.execute(f"PRAGMA journal_size_limit={log_pages * 4096}")
            self._local.conn = conn
            if not self._ready:
                with self._write:
                    self._create(conn)
                self._ready = True
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before the first table: freed pages can be returned
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS workspaces (id TEXT PRIMARY KEY, data TEXT, bytes INTEGER NOT NULL,"
                     " created REAL NOT NULL, last_used REAL NOT NULL)")
        conn.execute("CREATE INDEX IF NOT EXISTS workspaces_last_used ON workspaces(last_used)")
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise ProLabError(f"The saved workspaces in {self.path.name} were written by another version (schema "
                              f"{row[0]}, this one reads {SCHEMA_VERSION}); start with --state-dir pointing "
                              "elsewhere, or --no-state.")

    def secret(self) -> str:
        """The key the browsers' stored workspace ids are scrambled with, the same after a restart (a new
        one would make every browser's id unreadable)."""
        conn = self._db()
        with self._write:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('browser_secret', ?)", (secrets.token_urlsafe(24),))
            return conn.execute("SELECT value FROM meta WHERE key='browser_secret'").fetchone()[0]

    def file_bytes(self) -> int:
        """The database's size on disk (the file and its write-ahead log)."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(p.stat().st_size for p in (self.path, wal) if p.exists())

    # ------------------------------------------------------------------ workspaces
    def issue(self) -> str:
        """A new workspace's id: 128 random bits, never derived from anything shared."""
        wid, now = secrets.token_hex(16), time.time()
        with self._write:
            self._db().execute("INSERT INTO workspaces VALUES (?, NULL, 0, ?, ?)", (wid, now, now))
        return wid

    def exists(self, wid: str) -> bool:
        return is_workspace_id(wid) and self._db().execute(
            "SELECT 1 FROM workspaces WHERE id=?", (wid,)).fetchone() is not None

    def load(self, wid: str) -> dict | None:
        """The workspace's data (None: nothing saved yet). Data that is not this version's JSON is a
        :class:`ProLabError` (a sentence), never a crash."""
        if not is_workspace_id(wid):
            return None
        row = self._db().execute("SELECT data FROM workspaces WHERE id=?", (wid,)).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            data = json.loads(row[0])
        except (TypeError, ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise ProLabError("Your saved work could not be read (it was written by another version or is "
                              "damaged), so this session starts afresh; it is overwritten by your next change.")
        return data

    def save(self, wid: str, data: dict) -> None:
        """Write the workspace's data (JSON text) and note its use; over ``max_bytes_each`` it is refused
        with a :class:`ProLabError`; beyond ``max_bytes_total`` the least recently used others go."""
        if not is_workspace_id(wid):
            raise ProLabError("This page has no workspace id; reload the page to get one.")
        text = json.dumps({**data, "schema": SCHEMA_VERSION}, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode())
        if size > self.max_bytes_each:
            raise ProLabError(f"Your work is not saved any more: it would take {size / 2**20:.1f} MB, more than "
                              f"the {self.max_bytes_each / 2**20:.1f} MB this server keeps per browser. It stays "
                              "in this session; press \"Forget my work\" or undo edits to save again.")
        now = time.time()
        with self._write:
            conn = self._db()
            conn.execute("INSERT INTO workspaces VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                         "data=excluded.data, bytes=excluded.bytes, last_used=excluded.last_used",
                         (wid, text, size, now, now))
            self._evict(conn, keep=wid)

    def touch(self, wid: str) -> None:
        """Note a use (the least recently used workspaces are the first to go)."""
        with self._write:
            self._db().execute("UPDATE workspaces SET last_used=? WHERE id=?", (time.time(), wid))

    def forget(self, wid: str) -> bool:
        """Delete the workspace; returns whether there was one."""
        with self._write:
            conn = self._db()
            gone = conn.execute("DELETE FROM workspaces WHERE id=?", (wid,)).rowcount > 0
            conn.execute("PRAGMA incremental_vacuum")
        return gone

    def count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM workspaces").fetchone()[0]

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * conn.execute("PRAGMA page_size").fetchone()[0]

    def _evict(self, conn: sqlite3.Connection, keep: str) -> None:
        """Delete the least recently used workspaces (never ``keep``) while the data takes more than 7/8 of
        ``max_bytes_total`` (the log may take the rest), then hand the freed pages back and cut the log."""
        evicted = 0
        while self._used_bytes(conn) > self.max_bytes_total * 7 // 8:
            victims = conn.execute("SELECT id FROM workspaces WHERE id != ? ORDER BY last_used LIMIT 8",
                                   (keep,)).fetchall()
            if not victims:
                break
            conn.executemany("DELETE FROM workspaces WHERE id=?", victims)
            evicted += len(victims)
        if evicted:
            conn.execute("PRAGMA incremental_vacuum")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info("workspaces: %d least recently used deleted (the file's cap is %.0f MB)", evicted,
                     self.max_bytes_total / 2**20)


class WorkspaceService:
    """Which page holds which workspace, and the save/restore of a user's :class:`Session` (its
    :class:`~prolab.edit_session.EditSession` label state and its evaluation history) in the store.
    ``store=None`` (``--no-state``): nothing is kept, every call is a no-op."""

    def __init__(self, store: WorkspaceStore | None, pages: int = CACHE_SIZES.workspace_pages):
        self.store = store
        self._pages: LRUCache = LRUCache(pages)  # gradio's page (session hash) -> workspace id
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def browser_secret(self) -> str | None:
        """The key browsers scramble their stored id with (None: nothing is kept)."""
        return self.store.secret() if self.store is not None else None

    def open_page(self, page: str | None, stored) -> str | None:
        """The workspace of a page that just loaded, given what its browser had stored: that id when this
        server issued it (a forgotten, evicted or made-up one is replaced), else a new one."""
        if self.store is None:
            return None
        wid = stored if self.store.exists(stored) else self.store.issue()
        if page:
            with self._lock:
                self._pages[page] = wid
        return wid

    def of_page(self, page: str | None) -> str | None:
        if self.store is None or not page:
            return None
        with self._lock:
            return self._pages.get(page)

    def restore(self, session) -> str | None:
        """Put the workspace's saved work into ``session`` (a new or a freed one); returns a sentence when it
        could not be (the session then goes on afresh and the next change overwrites it)."""
        if self.store is None or session.workspace is None:
            return None
        try:
            data = self.store.load(session.workspace)
            if data is not None:
                session.edit.restore_state(data.get("edit"))
                session.evaluation.restore_data(data.get("evaluation"))
        except ProLabError as exc:
            log.warning("workspace not restored: %s", exc)
            session.saved = None
            return str(exc)
        session.saved = self.revision(session)
        return None

    @staticmethod
    def revision(session) -> tuple[int, int]:
        return session.edit.revision, session.evaluation.revision

    def save(self, session) -> None:
        """Write ``session``'s work when it changed since it was last written or restored (a
        :class:`ProLabError` sentence beyond the per-workspace cap)."""
        if self.store is None or session.workspace is None:
            return
        with session.lock:
            revision = self.revision(session)
            if revision == session.saved:
                return
            data = {"edit": session.edit.export_state(), "evaluation": session.evaluation.export_data()}
        self.store.save(session.workspace, data)
        session.saved = revision

    def forget(self, page: str | None) -> str | None:
        """Delete the page's workspace and give the page a new, empty one (returned)."""
        if self.store is None:
            return None
        old = self.of_page(page)
        if old is not None:
            self.store.forget(old)
        return self.open_page(page, None)

    def label_set_of(self, wid: str | None) -> str | None:
        """The key of the label set the workspace used last (None: nothing saved, or unreadable)."""
        if self.store is None or wid is None:
            return None
        try:
            data = self.store.load(wid)
            key = ((data or {}).get("edit") or {}).get("choice", {}).get("key")
        except (ProLabError, AttributeError):
            return None
        return key if isinstance(key, str) else None


def open_store(folder: str | Path, max_mb_each: float, max_mb_total: float) -> WorkspaceStore:
    """The store under ``folder``, opened now (a file it cannot write or another version's is refused at
    start-up, in a sentence)."""
    store = WorkspaceStore(folder, int(max_mb_each * 2**20), int(max_mb_total * 2**20))
    try:
        store.secret()
    except sqlite3.DatabaseError as exc:
        raise ProLabError(f"--state-dir: {store.path.name} cannot be used as the workspace database ({exc}).") from None
    return store


__all__ = ["SCHEMA_VERSION", "WorkspaceService", "WorkspaceStore", "is_workspace_id", "open_store"]
