"""Property-level label space: K-Means over description embeddings (ProLab, section 2).

A :class:`LabelSpace` holds the K cluster centres, every sentence's property, the class x property
matrix (multi-hot for built classes) and a readable name for every property. It is built from a
:class:`~prolab.descriptions.DescriptionSet` and a :class:`~prolab.encoder.TextEncoder`, can project
unseen categories onto its properties without changing them, can be edited (re-assign or
re-cluster), and is saved as a directory of JSON metadata plus safetensors arrays.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from prolab.descriptions import DescriptionSet, apply_umask, write_text_atomic
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError
from prolab.limits import read_json

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
META_FILE = "labelspace.json"
ARRAYS_FILE = "labelspace.safetensors"


@dataclass(frozen=True)
class PropertyInfo:
    """One property: its index, name (member sentence nearest the centre), size and classes."""

    index: int
    name: str
    size: int
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Projection:
    """Unseen categories expressed over an existing label space's properties."""

    class_names: list[str]
    multihot: np.ndarray  # (N, K) float32 in {0, 1}: each sentence -> nearest centre
    soft: np.ndarray  # (N, K) float32: max over the category's sentences of cos(sentence, centre), >= 0
    sentence_property: dict[str, list[int]]  # category -> property of each of its sentences


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """A property label space. Build with :meth:`build`, persist with :meth:`save` / :meth:`load`."""

    class_names: list[str]
    sentences: list[str]
    sentence_class: np.ndarray  # (S,) int64 index into class_names
    sentence_embeddings: np.ndarray  # (S, D) float32, unit rows
    sentence_property: np.ndarray  # (S,) int64 index into properties
    centers: np.ndarray  # (K, D) float32 K-Means centres (not normalised; scoring normalises)
    class_matrix: np.ndarray  # (C, K) float32: multi-hot rows (or soft weights for projected classes)
    property_names: list[str]
    encoder_id: str
    template: str
    k: int
    seed: int
    warnings: tuple[str, ...] = ()  # duplicate-row warnings, derived when the space is assembled

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, descriptions: Mapping[str, Iterable[str]], encoder: TextEncoder, k: int,
              seed: int = 0, show_progress: bool = False) -> "LabelSpace":
        """Encode every sentence and cluster them into ``k`` properties with K-Means."""
        ds = descriptions if isinstance(descriptions, DescriptionSet) else DescriptionSet(descriptions)
        if len(ds) == 0:
            raise ProLabError("No categories to build a label space from.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
            raise ProLabError(f"The K-Means seed must be an integer from 0 to {2 ** 32 - 1}, got {seed!r}.")
        sentences, owner = _flatten(ds)
        _check_k(k, len(sentences))
        emb = encoder.encode(sentences, show_progress=show_progress)
        n_distinct = len(np.unique(emb.round(6), axis=0))
        if k > n_distinct:
            raise ProLabError(
                f"K={k} is larger than the number of distinct sentences ({n_distinct}); lower K.")
        from sklearn.cluster import KMeans  # lazy: scikit-learn takes about a second to import

        km = KMeans(n_clusters=k, random_state=seed, n_init="auto").fit(emb)
        return cls._assemble(ds.categories, sentences, owner, emb, km.labels_,
                             km.cluster_centers_.astype(np.float32), encoder, k, seed)

    @classmethod
    def _assemble(cls, class_names, sentences, owner, emb, assign, centers, encoder_or_meta, k, seed,
                  names: list[str] | None = None) -> "LabelSpace":
        """``names``: the properties' names (None: named from these sentences, as when built)."""
        owner = np.asarray(owner, np.int64)
        assign = np.asarray(assign, np.int64)
        matrix = np.zeros((len(class_names), k), np.float32)
        matrix[owner, assign] = 1.0
        names = list(names) if names is not None else _property_names(sentences, emb, assign, centers)
        ls = cls(class_names=list(class_names), sentences=list(sentences), sentence_class=owner,
                 sentence_embeddings=emb.astype(np.float32), sentence_property=assign,
                 centers=centers, class_matrix=matrix, property_names=names,
                 encoder_id=encoder_or_meta.id, template=encoder_or_meta.template, k=k, seed=seed
                 )._with_fresh_warnings()
        for w in ls.warnings:
            log.warning(w)
        return ls

    # ------------------------------------------------------------------ views
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    @property
    def multihot(self) -> np.ndarray:
        """(C, K) bool: class c uses property k."""
        return self.class_matrix > 0

    @property
    def normalised_centers(self) -> np.ndarray:
        return self.centers / np.maximum(np.linalg.norm(self.centers, axis=1, keepdims=True), 1e-12)

    def descriptions(self) -> DescriptionSet:
        """The descriptions this space was built from, in class order."""
        per_class: list[list[str]] = [[] for _ in self.class_names]
        for s, o in zip(self.sentences, self.sentence_class.tolist()):  # one pass: the app calls this per edit
            per_class[o].append(s)
        return DescriptionSet(list(zip(self.class_names, per_class)))

    def class_index(self, name: str) -> int:
        key = " ".join(name.split()).casefold()
        for i, c in enumerate(self.class_names):
            if c.casefold() == key:
                return i
        raise ProLabError(f"Unknown class {name!r}.")

    def properties(self) -> list[PropertyInfo]:
        """Every property with its name, number of member sentences and the classes that use it."""
        sizes = np.bincount(self.sentence_property, minlength=self.k)
        mh = self.multihot
        return [PropertyInfo(k, self.property_names[k], int(sizes[k]),
                             tuple(self.class_names[c] for c in np.flatnonzero(mh[:, k])))
                for k in range(self.k)]

    def class_sentences(self, name: str, k: int | None = None) -> list[str]:
        """Class ``name``'s own sentences, in order; with ``k``, only those in property ``k`` (what the
        class says about a property whose name comes from the model's training sentences)."""
        c = self.class_index(name)
        if k is not None and not 0 <= k < self.k:
            raise ProLabError(f"Property {k} does not exist (K = {self.k}).")
        return [s for s, o, p in zip(self.sentences, self.sentence_class, self.sentence_property)
                if o == c and (k is None or p == k)]

    def class_properties(self, name: str) -> list[int]:
        """Indices of the properties a class uses."""
        return [int(k) for k in np.flatnonzero(self.multihot[self.class_index(name)])]

    def duplicate_groups(self) -> list[list[str]]:
        """Groups of classes whose multi-hot rows are identical (the model cannot tell them apart)."""
        groups: dict[bytes, list[str]] = {}
        for name, row in zip(self.class_names, self.multihot):
            groups.setdefault(np.packbits(row).tobytes(), []).append(name)
        return [g for g in groups.values() if len(g) > 1]

    def _duplicate_warnings(self, shown: int = 8) -> list[str]:
        # a few names per group: a 300-class set of near-identical classes made one 30 KB log line
        return [f"{len(g)} classes with identical property signatures (indistinguishable): "
                f"{', '.join(g[:shown])}{f' and {len(g) - shown} more' if len(g) > shown else ''}"
                for g in self.duplicate_groups()]

    # ------------------------------------------------------------------ projection and editing
    def project(self, descriptions: Mapping[str, Iterable[str]], encoder: TextEncoder) -> Projection:
        """Express categories over the existing properties; the space itself is not changed.

        Each sentence goes to its nearest centre (cosine) for the multi-hot vector; the soft vector
        is, per property, the best cosine between any of the category's sentences and the centre.
        """
        self.check_encoder(encoder)
        ds = descriptions if isinstance(descriptions, DescriptionSet) else DescriptionSet(descriptions)
        sentences, _ = _flatten(ds)
        return self._projection(ds, encoder.encode(sentences))

    def _projection(self, ds: DescriptionSet, emb: np.ndarray) -> Projection:
        """:meth:`project` for already encoded sentences (``emb``, in :func:`_flatten` order)."""
        _, owner = _flatten(ds)
        owner = np.asarray(owner, np.int64)
        cos = emb @ self.normalised_centers.T  # S K
        nearest = cos.argmax(1)
        n = len(ds)
        multihot = np.zeros((n, self.k), np.float32)
        multihot[owner, nearest] = 1.0
        soft = np.zeros((n, self.k), np.float32)
        for i in range(n):
            soft[i] = np.clip(cos[owner == i].max(0), 0.0, None)
        per_class = {c: [int(p) for p, o in zip(nearest, owner) if o == i]
                     for i, c in enumerate(ds.categories)}
        return Projection(ds.categories, multihot, soft, per_class)

    def extended(self, descriptions: Mapping[str, Iterable[str]], encoder: TextEncoder,
                 soft: bool = False) -> "LabelSpace":
        """A new space with extra categories projected onto the existing properties.

        Categories whose names already exist are replaced. Centres and property names are unchanged.
        """
        self.check_encoder(encoder)
        ds = descriptions if isinstance(descriptions, DescriptionSet) else DescriptionSet(descriptions)
        base = self.descriptions()
        replaced = [n for n in ds if base.find(n) is not None]
        space = self.edited(base.without(replaced), encoder) if replaced else self
        sentences, owner = _flatten(ds)
        emb = encoder.encode(sentences) if sentences else np.zeros((0, self.dim), np.float32)
        proj = space._projection(ds, emb)
        assign = np.concatenate([v for v in proj.sentence_property.values()]).astype(np.int64) \
            if sentences else np.zeros(0, np.int64)
        rows = proj.soft if soft else proj.multihot
        return replace(
            space,
            class_names=space.class_names + proj.class_names,
            sentences=space.sentences + sentences,
            sentence_class=np.concatenate([space.sentence_class, np.asarray(owner) + space.num_classes]),
            sentence_embeddings=np.concatenate([space.sentence_embeddings, emb]),
            sentence_property=np.concatenate([space.sentence_property, assign]),
            class_matrix=np.concatenate([space.class_matrix, rows]),
        )._with_fresh_warnings()

    def edited(self, descriptions: Mapping[str, Iterable[str]], encoder: TextEncoder,
               recluster: bool = False, k: int | None = None) -> "LabelSpace":
        """Re-derive the space for new descriptions (classes added, removed or edited).

        ``recluster=False`` keeps the centres and re-assigns sentences to them (instant) and keeps the
        property names: a property is named once, from the sentences the space was built from (for a
        model, its own training sentences), whatever label set is derived from it; a label set's own
        sentences in a property are :meth:`class_sentences`. ``recluster=True`` runs K-Means again
        (with ``k`` if given) and may change every property and name.
        """
        self.check_encoder(encoder)
        if recluster or (k is not None and k != self.k):
            return LabelSpace.build(descriptions, encoder, k or self.k, self.seed)
        ds = descriptions if isinstance(descriptions, DescriptionSet) else DescriptionSet(descriptions)
        sentences, owner = _flatten(ds)
        # Unchanged sentences keep their embedding and property; only new text is encoded and assigned.
        known = {s: i for i, s in reversed(list(enumerate(self.sentences)))}
        new = list(dict.fromkeys(s for s in sentences if s not in known))
        fresh = encoder.encode(new) if new else np.zeros((0, self.dim), np.float32)
        fresh_assign = (fresh @ self.normalised_centers.T).argmax(1) if new else np.zeros(0, np.int64)
        where = {s: j for j, s in enumerate(new)}
        emb = np.empty((len(sentences), self.dim), np.float32)
        assign = np.empty(len(sentences), np.int64)
        for i, s in enumerate(sentences):
            if s in known:
                emb[i], assign[i] = self.sentence_embeddings[known[s]], self.sentence_property[known[s]]
            else:
                emb[i], assign[i] = fresh[where[s]], fresh_assign[where[s]]
        return LabelSpace._assemble(ds.categories, sentences, owner, emb, assign, self.centers,
                                    self, self.k, self.seed, names=self.property_names)

    def select(self, indices: list[int | None], names: list[str]) -> "LabelSpace":
        """A space over the same properties with the classes ``indices`` (their rows and sentences), renamed
        ``names``; None gives a class with no sentences and an all-zero row (it is never predicted)."""
        if len(indices) != len(names):
            raise ProLabError(f"{len(indices)} class indices for {len(names)} names.")
        rows = np.zeros((len(names), self.k), np.float32)
        keep, owner = [], []
        for new, old in enumerate(indices):
            if old is None:
                continue
            rows[new] = self.class_matrix[old]
            mine = np.flatnonzero(self.sentence_class == old)
            keep.append(mine)
            owner.append(np.full(len(mine), new, np.int64))
        keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        return replace(self, class_names=list(names), sentences=[self.sentences[i] for i in keep],
                       sentence_class=np.concatenate(owner) if owner else np.zeros(0, np.int64),
                       sentence_embeddings=self.sentence_embeddings[keep],
                       sentence_property=self.sentence_property[keep], class_matrix=rows, warnings=())

    def _with_fresh_warnings(self) -> "LabelSpace":
        return replace(self, warnings=tuple(self._duplicate_warnings()))

    @property
    def id(self) -> str:  # lets a LabelSpace stand in for an encoder's (id, template) in _assemble
        return self.encoder_id

    def check_encoder(self, encoder: TextEncoder) -> None:
        """Raise if ``encoder`` is not the one (and template) this space was built with."""
        if encoder.id != self.encoder_id:
            raise ProLabError(
                f"This label space was built with encoder {self.encoder_id!r}, not {encoder.id!r}; "
                "use the same encoder or rebuild the space.")
        if encoder.template != self.template:
            raise ProLabError(
                f"This label space was built with template {self.template!r}, not {encoder.template!r}.")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``labelspace.json`` (metadata) and ``labelspace.safetensors`` (arrays)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "prolab-labelspace", "version": FORMAT_VERSION,
            "encoder_id": self.encoder_id, "template": self.template, "k": self.k, "seed": self.seed,
            "class_names": self.class_names, "property_names": self.property_names,
            "sentences": self.sentences, "dim": self.dim,
        }
        save_file({
            "centers": np.ascontiguousarray(self.centers, np.float32),
            "class_matrix": np.ascontiguousarray(self.class_matrix, np.float32),
            "sentence_embeddings": np.ascontiguousarray(self.sentence_embeddings, np.float32),
            "sentence_class": np.ascontiguousarray(self.sentence_class, np.int64),
            "sentence_property": np.ascontiguousarray(self.sentence_property, np.int64),
        }, str(directory / ARRAYS_FILE))
        apply_umask(directory / ARRAYS_FILE)
        write_text_atomic(directory / META_FILE, json.dumps(meta, indent=1, ensure_ascii=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path, encoder: TextEncoder | None = None) -> "LabelSpace":
        """Read a saved space; with ``encoder`` given, a different recorded encoder is an error."""
        directory = Path(directory)
        meta_path, arr_path = directory / META_FILE, directory / ARRAYS_FILE
        if not meta_path.is_file() or not arr_path.is_file():
            raise ProLabError(f"{directory} is not a label space (needs {META_FILE} and {ARRAYS_FILE}).")
        try:
            meta = read_json(meta_path, "The label space's metadata")
            arrays = load_file(str(arr_path))
            ls = cls(class_names=list(meta["class_names"]), sentences=list(meta["sentences"]),
                     sentence_class=arrays["sentence_class"], sentence_embeddings=arrays["sentence_embeddings"],
                     sentence_property=arrays["sentence_property"], centers=arrays["centers"],
                     class_matrix=arrays["class_matrix"], property_names=list(meta["property_names"]),
                     encoder_id=meta["encoder_id"], template=meta["template"], k=int(meta["k"]),
                     seed=int(meta["seed"]))
        except ProLabError:
            raise
        except Exception as exc:
            raise ProLabError(f"Corrupt label space in {directory}: {exc}") from None
        if meta.get("version", 0) > FORMAT_VERSION:
            raise ProLabError(f"{directory} was written by a newer ProLab (format {meta['version']}).")
        shapes_ok = (ls.centers.shape[0] == ls.k == ls.class_matrix.shape[1]
                     and ls.class_matrix.shape[0] == len(ls.class_names)
                     and len(ls.sentences) == len(ls.sentence_class) == len(ls.sentence_property)
                     == ls.sentence_embeddings.shape[0] and len(ls.property_names) == ls.k)
        if not shapes_ok:
            raise ProLabError(f"Corrupt label space in {directory}: array shapes do not match metadata.")
        if encoder is not None:
            ls.check_encoder(encoder)
        return ls._with_fresh_warnings()


def _flatten(ds: DescriptionSet) -> tuple[list[str], list[int]]:
    sentences, owner = [], []
    for i, name in enumerate(ds):
        for s in ds[name]:
            sentences.append(s)
            owner.append(i)
    return sentences, owner


def _check_k(k: int, n_sentences: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ProLabError(f"K must be an integer >= 2, got {k!r}.")
    if k > n_sentences:
        raise ProLabError(f"K={k} is larger than the number of sentences ({n_sentences}); lower K.")


def _property_names(sentences, emb, assign, centers) -> list[str]:
    """Each property's name: its member sentence nearest the centre ("property k" when it has none)."""
    cn = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
    sims = (emb * cn[assign]).sum(1)
    names = [f"property {k}" for k in range(len(centers))]
    # per property, the member with the highest similarity (first one on ties)
    order = np.lexsort((np.arange(len(sims)), -sims, assign))
    first = np.ones(len(order), bool)
    first[1:] = assign[order][1:] != assign[order][:-1]
    for i in order[first]:
        names[int(assign[i])] = sentences[i]
    return names


def suggested_k(num_sentences: int) -> int:
    """About one property per 7 descriptions (the paper's best ratio), between 2 and 256."""
    return int(min(256, max(2, round(num_sentences / 7))))
