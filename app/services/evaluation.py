"""Evaluation for the app, what users share: the labelled sets on offer, their model outputs cached once
for every user (:class:`EvalCachePool`), and the evaluation itself (:class:`EvaluationService`), which keeps
an uploaded set's cache and the result in the user's own state (:mod:`app.services.eval_history`)."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from app.config import AppConfig
from app.inputs import user_file
from app.services.eval_history import EvalHistory, EvalRecord
from app.services.models import ModelEntry
from app.services.sessions import Session
from prolab.caches import CACHE_SIZES
from prolab.data.readers import find_data_root, labelled_sets, read_folder, read_shared
from prolab.edit_session import LabelSetChoice
from prolab.errors import ProLabError
from prolab.eval_cache import EvalCache
from prolab.eval_report import ClassIoU, Comparison, ConfusedPair, class_ious, compare, confused_pairs
from prolab.evaluate import load_mapping

UPLOAD = "upload"


class NothingToEvaluate(ProLabError):
    """No labelled set was chosen: nothing was run (the tab says so once, without an error on its panels)."""

ProgressFn = Callable[[float, str], None]


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


@dataclass(frozen=True)
class Evaluation:
    """One evaluation, with what the Evaluate tab shows beside it."""

    record: EvalRecord
    previous: EvalRecord | None
    comparison: Comparison | None  # against ``previous``
    scores: list[ClassIoU]
    pairs: list[ConfusedPair]  # the most confused, with the properties both classes use
    cache: EvalCache
    built: bool  # whether the cache was built for this evaluation (a forward pass per image)
    seconds: float  # re-scoring alone
    unscored: list[str]  # classes of the set the label set lacks
    untrained: list[str]  # scored classes that get the open-set credit
    history: EvalHistory


def no_sets_hint() -> str:
    """Where the shared labelled sets come from, said when none was found."""
    return ("No shared labelled set was found on this server: their val splits are read from the folder that "
            "`PROLAB_DATA` names, or `--data-root DIR` when the app starts (e.g. `python app.py --data-root "
            "/path/to/datasets`), each dataset in its own folder with `images/`, `labels/`, `classes.txt` and "
            "`val.txt`. Meanwhile, upload your own labelled set below.")


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
            if not eval_set and not self.eval_sets():
                raise NothingToEvaluate(no_sets_hint())
            cache, built = self.shared_cache(entry, eval_set or "", progress)
            return (entry.source, "shared", eval_set, size), cache, built
        folder = (folder or "").strip()
        if not upload and not folder:
            where = "" if self.config.is_shared else " (or type a folder)"
            raise NothingToEvaluate(f"Nothing to evaluate yet: upload a .zip of images/, masks/ and classes.txt"
                                    f"{where} first, or pick a shared set.")
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
        scores = class_ious(metrics, restricted, previous.metrics if previous else None)
        pairs = confused_pairs(metrics, restricted, top=5)
        seconds = time.perf_counter() - t0
        unscored = [c.name for c in scores if not c.scored]
        untrained = [c for c in scorer.novel_classes() if c not in unscored] if scorer.credit is not None else []
        return Evaluation(record, previous, comparison, scores, pairs, cache, built, seconds, unscored, untrained,
                          history)
