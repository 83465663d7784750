"""Array summaries behind the explorer views: sentence maps, image/pixel rankings, class areas.

Pure NumPy helpers (plus UMAP / PCA for the 2-D sentence map); no plotting, no UI.
Activations are ``(K, h, w)`` property maps and class scores ``(C, h, w)``, as produced by
:mod:`prolab.scoring` for one image.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prolab.assets import LAYOUTS_DIR
from prolab.caches import CACHE_SIZES, default_cache_dir
from prolab.errors import ProLabError

log = logging.getLogger(__name__)
LAYOUT_METHODS = ("umap", "pca")


# ---------------------------------------------------------------------------- sentence map
#: UMAP settings of the sentence map (``n_neighbors`` shrinks for tiny sets); part of every layout's key.
UMAP_SETTINGS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"}
#: Shipped layouts are matched to embeddings by a per-sentence fingerprint (4 sums of interleaved
#: dimensions) within this tolerance: the same sentences encoded on another machine differ by ~1e-6,
#: an edited sentence by ~0.1, so an edited label set never gets a stale layout.
FINGERPRINT_DIMS, FINGERPRINT_TOLERANCE = 4, 1e-3
SHIPPED_INDEX = "index.json"


def sentence_layout(embeddings: np.ndarray, method: str = "umap", seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """2-D coordinates ``(S, 2)`` for sentence embeddings ``(S, D)``.

    ``"umap"`` (cosine metric, fixed ``seed``) is the readable map; it costs tens of seconds the
    first time in a process (numba compilation). The shipped label sets' maps are precomputed
    (:func:`shipped_layout`); others are computed once and cached on disk under ``cache_dir/layouts``
    (default: the ProLab cache folder) keyed by the exact embeddings and UMAP settings.
    ``"pca"`` is instant. Fewer than 6 sentences always use PCA (UMAP needs neighbours).
    """
    emb = np.ascontiguousarray(embeddings, np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        raise ProLabError(f"Need a non-empty (S, D) array of sentence embeddings, got shape {emb.shape}.")
    if method not in LAYOUT_METHODS:
        raise ProLabError(f"Unknown layout method {method!r}; use one of {', '.join(LAYOUT_METHODS)}.")
    if method == "pca" or len(emb) < 6:
        return _pca_2d(emb)
    xy = cached_layout(emb, method, seed, cache_dir)
    if xy is not None:
        return xy
    path = _layout_cache_path(emb, method, seed, cache_dir)
    xy = umap_2d(emb, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, xy)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache must not break the view
        log.warning("cannot cache layout in %s: %s", path, exc)
    return xy


def cached_layout(embeddings: np.ndarray, method: str = "umap", seed: int = 0,
                  cache_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """The shipped or cached :func:`sentence_layout` result if there is one (never computes), else None."""
    emb = np.ascontiguousarray(embeddings, np.float32)
    if method == "pca" or emb.ndim != 2 or len(emb) < 6:
        return None
    xy = shipped_layout(emb, method, seed)
    if xy is not None:
        return xy
    path = _layout_cache_path(emb, method, seed, cache_dir)
    try:
        xy = np.load(path) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return xy if xy is not None and xy.shape == (len(emb), 2) else None


def layout_settings(num_sentences: int, method: str = "umap", seed: int = 0) -> dict:
    """Everything besides the embeddings that a layout depends on."""
    return {"method": method, "seed": int(seed), **UMAP_SETTINGS,
            "n_neighbors": min(UMAP_SETTINGS["n_neighbors"], num_sentences - 1)}


def layout_fingerprint(embeddings: np.ndarray) -> np.ndarray:
    """``(S, 4)`` per-sentence sums of interleaved embedding dimensions (see ``FINGERPRINT_TOLERANCE``)."""
    emb = np.asarray(embeddings, np.float64)
    return np.stack([emb[:, j::FINGERPRINT_DIMS].sum(1) for j in range(FINGERPRINT_DIMS)], 1).astype(np.float32)


def layout_key(texts: list[str], encoder_id: str, settings: dict) -> str:
    """Content hash of a layout: the encoder's input texts (template applied), encoder and settings."""
    blob = json.dumps({"encoder": encoder_id, "texts": list(texts), "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def shipped_layout(embeddings: np.ndarray, method: str = "umap", seed: int = 0,
                   layouts_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """The precomputed layout shipped for exactly these embeddings (``assets/layouts``), else None.

    A layout is used only when its settings (:func:`layout_settings`) and every sentence's
    :func:`layout_fingerprint` match, so edited or custom label sets are never given a stale map.
    ``python -m tools.make_layouts`` writes them for the shipped label sets and models.
    """
    emb = np.ascontiguousarray(embeddings, np.float32)
    if emb.ndim != 2 or len(emb) < 6:
        return None
    settings = layout_settings(len(emb), method, seed)
    fingerprint = layout_fingerprint(emb)
    for entry, stored in _shipped_layouts(layouts_dir):
        if entry.get("settings") == settings and stored["fingerprint"].shape == fingerprint.shape and \
                float(np.abs(stored["fingerprint"] - fingerprint).max()) <= FINGERPRINT_TOLERANCE:
            return stored["xy"].astype(np.float32)
    return None


def _shipped_layouts(layouts_dir) -> list[tuple[dict, dict]]:
    """``[(index entry, {"xy", "fingerprint"})]`` of ``layouts_dir`` (default ``assets/layouts``), read
    once per process (again if the index changes); unreadable entries are skipped with a warning."""
    if layouts_dir is None:
        layouts_dir = LAYOUTS_DIR
    index = Path(layouts_dir) / SHIPPED_INDEX
    try:
        stamp = index.stat().st_mtime_ns
    except OSError:
        return []
    return _read_shipped_layouts(str(layouts_dir), stamp)


@functools.lru_cache(maxsize=CACHE_SIZES.shipped_layouts)
def _read_shipped_layouts(layouts_dir: str, stamp: int) -> list[tuple[dict, dict]]:
    """The layouts of ``layouts_dir`` as its index was at modification time ``stamp`` (the cache key)."""
    found = []
    try:
        entries = json.loads((Path(layouts_dir) / SHIPPED_INDEX).read_text(encoding="utf-8"))["layouts"]
        for entry in entries:
            with np.load(Path(layouts_dir) / entry["file"]) as z:
                found.append((entry, {"xy": z["xy"], "fingerprint": z["fingerprint"]}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring (some of) the shipped layouts in %s: %s", layouts_dir, exc)
    return found


def _layout_cache_path(emb: np.ndarray, method: str, seed: int, cache_dir) -> Path:
    if cache_dir is None:
        cache_dir = default_cache_dir()
    settings = layout_settings(len(emb), method, seed)
    h = hashlib.sha256(np.round(emb, 5).tobytes() + f"{emb.shape}{sorted(settings.items())}".encode()).hexdigest()
    return Path(cache_dir) / "layouts" / f"{h[:32]}.npy"


def _pca_2d(emb: np.ndarray) -> np.ndarray:
    x = emb - emb.mean(0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), 2), np.float32)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy.astype(np.float32)


def umap_2d(emb: np.ndarray, seed: int) -> np.ndarray:
    import umap  # lazy: umap-learn pulls in numba and scikit-learn (seconds to import)

    s = layout_settings(len(emb), "umap", seed)
    reducer = umap.UMAP(n_components=2, n_neighbors=s["n_neighbors"], min_dist=s["min_dist"],
                        metric=s["metric"], random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(emb), np.float32)


# ---------------------------------------------------------------------------- image summaries
@dataclass(frozen=True)
class Ranked:
    """Indices with their values, best first."""

    indices: list[int]
    values: list[float]


def _top(values: np.ndarray, k: int) -> Ranked:
    k = max(0, min(int(k), len(values)))
    order = np.argsort(-values, kind="stable")[:k]
    return Ranked([int(i) for i in order], [float(values[i]) for i in order])


def image_top_properties(activations: np.ndarray, k: int = 10) -> Ranked:
    """The ``k`` properties with the highest mean activation over the image."""
    a = _check_maps(activations, "activations")
    return _top(a.reshape(a.shape[0], -1).mean(1), k)


def pixel_top(maps: np.ndarray, row: int, col: int, k: int = 5) -> Ranked:
    """The ``k`` channels of ``maps`` ``(N, h, w)`` with the highest value at ``(row, col)``."""
    m = _check_maps(maps, "maps")
    if not (0 <= row < m.shape[1] and 0 <= col < m.shape[2]):
        raise ProLabError(f"Pixel ({row}, {col}) is outside the {m.shape[1]} x {m.shape[2]} map.")
    return _top(np.asarray(m[:, row, col], np.float64), k)


def image_to_grid(x: float, y: float, image_size: tuple[int, int],
                  grid_size: tuple[int, int]) -> tuple[int, int]:
    """Map a click at ``(x, y)`` on an ``(H, W)`` image to ``(row, col)`` of an ``(h, w)`` map."""
    H, W = image_size
    h, w = grid_size
    if not (0 <= x < W and 0 <= y < H):
        raise ProLabError(f"Point (x={x}, y={y}) is outside the {W} x {H} image.")
    return min(int(y * h / H), h - 1), min(int(x * w / W), w - 1)


def class_areas(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """Fraction of pixels per class ``(C,)`` and the fraction marked unknown (``-1``)."""
    lab = np.asarray(labels).ravel()
    if lab.size == 0:
        return np.zeros(num_classes), 0.0
    known = lab[lab >= 0]
    counts = np.bincount(known, minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / lab.size, float((lab < 0).sum() / lab.size)


def changed_fraction(before: np.ndarray, after: np.ndarray) -> float:
    """Share of pixels whose label differs between two maps of the same size."""
    a, b = np.asarray(before), np.asarray(after)
    if a.shape != b.shape:
        raise ProLabError(f"Label maps differ in size: {a.shape} vs {b.shape}.")
    return float((a != b).mean()) if a.size else 0.0


def _check_maps(maps: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(maps)
    if m.ndim != 3:
        raise ProLabError(f"{name} must be (N, h, w), got shape {m.shape}.")
    return m
