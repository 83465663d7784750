"""What the library and the app cache, and where: the cache folder on disk (:func:`default_cache_dir`) and
the size of every in-memory cache (:class:`CacheSizes`), in one place.

The in-memory caches themselves are ``cachetools`` or ``functools`` ones, owned by whoever asked for them:
a notebook's objects keep their own (a :class:`~prolab.alignment.SimilarityMemo` per workbench), the app's
services keep the ones every user shares (models, ONNX backends, evaluation caches), and nothing in
:mod:`prolab` keeps a process-wide pool of its own. The few process-wide ``functools.lru_cache`` functions
hold read-only files a caller loaded (the ImageNet prior's weights, the shipped layouts).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_cache_dir() -> Path:
    """The on-disk cache folder (sentence embeddings, ONNX exports, layouts, LLM answers):
    ``$PROLAB_CACHE_DIR``, else ``~/.cache/prolab``."""
    return Path(os.environ.get("PROLAB_CACHE_DIR") or Path.home() / ".cache" / "prolab")


def save_tensors_atomic(obj, path: Path) -> None:
    """``torch.save`` to ``path`` through a per-process temporary name, so that two processes filling the
    same cache never read or rename each other's half-written file."""
    import torch  # here: the module's other users need no torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


@dataclass(frozen=True)
class CacheSizes:
    """How many entries each in-memory cache keeps (the least recently used is dropped beyond it)."""

    # the library's (per object unless said otherwise)
    similarity_rows: int = 2048  # a SimilarityMemo's class rows (one memo per workbench)
    recent_spaces: int = 4  # a session's recent label spaces (switching back to one is instant)
    encoder_sentences: int = 50_000  # a TextEncoder's sentence vectors kept in memory before its disk cache
    custom_sets: int = 8  # custom label sets a session keeps by content (a restored session has no files)
    onnx_backends: int = 4  # an OnnxPool's ONNX Runtime sessions (one per model; the app switches models)
    imagenet_priors: int = 2  # process-wide: the ImageNet prior networks loaded (one per variant)
    shipped_layouts: int = 1  # process-wide: the shipped layouts index read (again when it changes)
    embedding_cache_mb: int = 200  # on disk: the sentence-embedding cache (about 95,000 sentences; least
    #                                recently used pruned beyond it; $PROLAB_CACHE_MAX_MB overrides)
    # the app's, shared by every user
    models: int = 3  # loaded models (the untrained placeholder counts as one)
    shared_spaces: int = 8  # label spaces of unedited label sets, per (model, label set)
    shared_eval_caches: int = 2  # evaluation caches of the shared datasets (model outputs of a val split)
    # the app's, per user
    eval_targets: int = 4  # labelled sets (model, set, size) a session keeps an evaluation history of
    eval_records: int = 50  # evaluations kept per labelled set (a history, oldest dropped)
    workspace_pages: int = 10000  # open pages whose workspace id the app remembers (page -> id)

    def __post_init__(self):
        small = [name for name, value in vars(self).items() if not (isinstance(value, int) and value >= 1)]
        if small:
            raise ValueError(f"Cache sizes must be whole numbers >= 1: {', '.join(small)}.")


#: The sizes the library uses unless a caller passes its own (the app reads them through its config).
CACHE_SIZES = CacheSizes()
