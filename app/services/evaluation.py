"""Evaluation for the app: the labelled sets on offer, their model outputs cached once for every user
(:class:`EvalCachePool`), an uploaded set's cached for its user alone, and each user's history of
evaluations to compare and restore (:class:`EvalHistory`)."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cachetools import LRUCache

from app.config import AppConfig
from app.inputs import user_file
from app.services.models import ModelEntry
from prolab.caches import CACHE_SIZES, CacheSizes
from prolab.data.readers import find_data_root, labelled_sets, read_folder, read_shared
from prolab.descriptions import DescriptionSet
from prolab.edit_session import LabelSetChoice
from prolab.errors import ProLabError
from prolab.eval_cache import (ClassScore, Comparison, ConfusedPair, EvalCache, class_scores, compare,
                               confused_pairs)
from prolab.evaluate import load_mapping

if TYPE_CHECKING:
    from app.services.sessions import Session

UPLOAD = "upload"
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class EvalRecord:
    """One kept evaluation: its metrics and the descriptions (None: the model's own) it scored."""

    version: int
    metrics: dict
    descriptions: DescriptionSet | None = None
    note: str = ""
    created: float = field(default_factory=time.time)
    meta: dict = field(default_factory=dict)  # anything the caller needs to restore it (e.g. the label set)


class EvalHistory:
    """Evaluations of one user, oldest first, numbered from 1; the oldest are dropped beyond
    ``max_records``. Compare any two (default: the last against the one before) and restore the
    descriptions of any kept version."""

    def __init__(self, max_records: int = CACHE_SIZES.eval_records):
        if max_records < 2:
            raise ProLabError("An evaluation history keeps at least 2 records.")
        self.max_records = int(max_records)
        self.records: list[EvalRecord] = []
        self._next = 1

    def add(self, metrics: dict, descriptions=None, note: str = "", meta: dict | None = None) -> EvalRecord:
        record = EvalRecord(self._next, metrics, descriptions, note, meta=dict(meta or {}))
        self._next += 1
        self.records.append(record)
        del self.records[:-self.max_records]
        return record

    def get(self, version: int) -> EvalRecord:
        for r in self.records:
            if r.version == version:
                return r
        kept = ", ".join(str(r.version) for r in self.records) or "none"
        raise ProLabError(f"No evaluation version {version} (kept: {kept}).")

    def restore(self, version: int):
        """The descriptions evaluated as ``version`` (None: the model's own classes)."""
        return self.get(version).descriptions

    def compare(self, a: int | None = None, b: int | None = None) -> Comparison | None:
        """Version ``b`` (default the latest) against ``a`` (default the one before ``b``); None while
        fewer than two evaluations are kept."""
        if len(self.records) < 2 and (a is None or b is None):
            return None
        rb = self.records[-1] if b is None else self.get(b)
        if a is None:
            earlier = [r for r in self.records if r.version < rb.version]
            if not earlier:
                return None
            ra = earlier[-1]
        else:
            ra = self.get(a)
        return compare(ra.metrics, rb.metrics)


class EvalCachePool:
    """Caches shared by several users (a server's), at most ``size`` of them: the least recently used
    is dropped when another one is added. Two threads asking for the same key at once build it once.

    A key may name the model by ``id(model)``: the cache holds its model, so that id cannot be reused
    while the entry lives."""

    def __init__(self, size: int = CACHE_SIZES.shared_eval_caches):
        if size < 1:
            raise ProLabError("An evaluation cache pool keeps at least one cache.")
        self.size = int(size)
        self._items: LRUCache = LRUCache(maxsize=self.size)
        self._building: dict = {}  # key -> the lock its (one) builder holds
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(c.nbytes for c in self._items.values())

    def peek(self, key) -> EvalCache | None:
        """The cache kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            return self._items.get(key)  # a hit becomes the most recently used

    def get(self, key, build: Callable[[], EvalCache]) -> EvalCache:
        """The cache kept under ``key``, else ``build()``'s, kept (dropping the least recently used
        beyond ``size``)."""
        cache = self.peek(key)
        if cache is not None:
            return cache
        with self._lock:
            gate = self._building.setdefault(key, threading.Lock())
        try:
            with gate:  # one build per key; the others wait for it and take its result
                cache = self.peek(key)
                if cache is None:
                    cache = build()
                    with self._lock:
                        self._items[key] = cache  # the least recently used beyond ``size`` is dropped
        finally:
            with self._lock:
                if self._building.get(key) is gate:
                    del self._building[key]
        return cache

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(eq=False)
class EvalState:
    """One user's Evaluate panel: an evaluation history per labelled set (model, set, size), the set
    shown (``target``), and the cache of an uploaded set, this user's own: ``(key, EvalCache)``. ``sizes``:
    how many sets have a history (``eval_targets``) and evaluations each keeps (``eval_records``)."""

    sizes: CacheSizes = CACHE_SIZES
    histories: LRUCache = field(init=False)  # target -> EvalHistory, least recently evaluated dropped
    target: tuple | None = None
    upload: tuple[tuple, EvalCache] | None = None

    def __post_init__(self):
        self.histories = LRUCache(maxsize=self.sizes.eval_targets)

    def history(self, target: tuple) -> EvalHistory:
        """The history of ``target`` (created on first use; the least recently evaluated set's is dropped
        beyond ``sizes.eval_targets``), which becomes the one shown."""
        history = self.histories.get(target)  # a hit becomes the most recently used
        if history is None:
            history = self.histories[target] = EvalHistory(self.sizes.eval_records)
        self.target = target
        return history

    def current(self) -> EvalHistory:
        """The history of the set evaluated last."""
        if self.target not in self.histories:
            raise ProLabError("Nothing evaluated yet: press Evaluate first.")
        return self.histories[self.target]

    @property
    def nbytes(self) -> int:
        """Bytes of the uploaded set's cache (the histories hold metrics only)."""
        return self.upload[1].nbytes if self.upload is not None else 0

    def clear(self) -> None:
        self.histories.clear()
        self.target = self.upload = None




@dataclass(frozen=True)
class Evaluation:
    """One evaluation, with what the Evaluate tab shows beside it."""

    record: EvalRecord
    previous: EvalRecord | None
    comparison: Comparison | None  # against ``previous``
    scores: list[ClassScore]
    pairs: list[ConfusedPair]  # the most confused, with the properties both classes use
    cache: EvalCache
    built: bool  # whether the cache was built for this evaluation (a forward pass per image)
    seconds: float  # re-scoring alone
    unscored: list[str]  # classes of the set the label set lacks
    untrained: list[str]  # scored classes that get the open-set credit
    history: EvalHistory


class EvaluationService:
    """The labelled sets on offer (the shared datasets' val splits) and their cached model outputs."""

    def __init__(self, config: AppConfig, size: Callable[[ModelEntry], int]):
        self.config = config
        self.size = size  # the network input size a model runs at
        # the shared datasets' model outputs, for every user (the last config.caches.shared_eval_caches)
        self.caches = EvalCachePool(config.caches.shared_eval_caches)

    def data_root(self) -> Path | None:
        return find_data_root(self.config.data_root)

    def eval_sets(self) -> list[tuple[str, int]]:
        """``(dataset, images)`` of the shared datasets' val splits with ground truth."""
        root = self.data_root()
        return labelled_sets(root, "val") if root is not None else []

    def shared_cache(self, entry: ModelEntry, name: str, progress: ProgressFn | None = None) -> tuple[EvalCache, bool]:
        """``(EvalCache, built now)`` of ``entry``'s model on shared dataset ``name``'s val split, built once
        for every user (:attr:`caches` keeps the last ``config.caches.shared_eval_caches``)."""
        if name not in dict(self.eval_sets()):
            raise ProLabError(f"No labelled set {name!r} on this server; pick one of the list or upload a zip.")
        size, built = self.size(entry), []

        def build():
            built.append(True)
            source = read_shared(self.data_root(), name, "val", teacher=False)
            return EvalCache.build(entry.model, source, size=size, mapping=load_mapping(entry.directory),
                                   progress=progress)

        return self.caches.get((id(entry.model), name, "val", size), build), bool(built)

    def uploaded_cache(self, session: Session, path: str, progress: ProgressFn | None) -> tuple[EvalCache, bool]:
        """``(EvalCache, built now)`` of an uploaded zip or a folder: the session's own, one at a time."""
        entry, ev = session.model_entry, session.evaluation
        key = (id(entry.model), path, self.size(entry))
        if ev.upload is not None and ev.upload[0] == key:
            return ev.upload[1], False
        unpacked = tempfile.mkdtemp(prefix="prolab-eval-")
        try:
            with user_file(path):
                source = read_folder(path, extract_to=unpacked)
                ev.upload = None  # a readable set: the previous one's cache is freed before this one is built
                cache = EvalCache.build(entry.model, source, size=key[2], mapping=load_mapping(entry.directory),
                                        progress=progress)
        except ProLabError as exc:  # never show the server's temporary folder
            raise ProLabError(str(exc).replace(unpacked, Path(path).name)) from None
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)  # the cache keeps what it needs
        ev.upload = (key, cache)
        return cache, True

    def labelled_set(self, session: Session, eval_set: str | None, upload: str | None, folder: str | None,
                     progress: ProgressFn | None) -> tuple[tuple, EvalCache, bool]:
        """``(history key, EvalCache, built now)`` of the chosen set: a shared one, or ``upload`` / ``folder``
        when ``eval_set`` is :data:`UPLOAD`."""
        entry, size = session.model_entry, self.size(session.model_entry)
        if eval_set != UPLOAD:
            cache, built = self.shared_cache(entry, eval_set or "", progress)
            return (entry.source, "shared", eval_set, size), cache, built
        folder = (folder or "").strip()
        if not upload and not folder:
            raise ProLabError("Upload a .zip of images/, masks/ and classes.txt (or type a folder) first.")
        if not upload and self.config.is_shared:
            raise ProLabError("This server evaluates uploaded zips only, not folders on the server.")
        path = str(upload or Path(folder).expanduser())
        cache, built = self.uploaded_cache(session, path, progress)
        return (entry.source, UPLOAD, path, size), cache, built

    def evaluate(self, session: Session, choice: LabelSetChoice | None, eval_set: str | None, upload: str | None,
                 folder: str | None, progress: ProgressFn | None = None) -> Evaluation:
        """Score the session's label set (edits included, novel categories not) on a labelled set and keep
        the result in the session's history of that set."""
        edit = session.edit
        edit.select(choice)
        space = edit.base_space()
        target, cache, built = self.labelled_set(session, eval_set, upload, folder, progress)
        t0 = time.perf_counter()
        scorer = cache.scorer(space, allow_missing=True)
        metrics = cache.score(scorer)
        restricted = scorer.space
        history = session.evaluation.history(target)
        previous = history.records[-1] if history.records else None
        kept = {k: v for k, v in metrics.items() if k != "confusion"}  # the C x C counts are not kept
        record = history.add(kept, edit.descriptions, note=edit.name, meta={"choice": edit.choice})
        comparison = compare(previous.metrics, record.metrics) if previous else None
        scores = class_scores(metrics, restricted, previous.metrics if previous else None)
        pairs = confused_pairs(metrics, restricted, top=5)
        seconds = time.perf_counter() - t0
        unscored = [c.name for c in scores if not c.scored]
        untrained = [c for c in scorer.novel_classes() if c not in unscored] if scorer.credit is not None else []
        return Evaluation(record, previous, comparison, scores, pairs, cache, built, seconds, unscored, untrained,
                          history)
