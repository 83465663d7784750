"""The words-to-trained-classes bridge: how each class of a label set relates to a model's training classes.

A class given by sentences (another label set, an edited class, a category typed as text) is scored
through the properties its sentences fall into. That alone loses much of what the model learnt: a
CamVid "pedestrian" described as "a person walking on foot" lands on other properties than the
trained "person", and its property score on pedestrians is beaten by trained classes nearby (CamVid val:
pedestrian 34.1 IoU as the trained class, 0.03 from its sentences). The model's *trained* class scores
are far more reliable, so each label-set class also receives the scores of the trained classes its
sentences mean:

- ``similarity[c, t]``: how well the sentence sets of class ``c`` and trained class ``t`` match, the F1 of
  greedy sentence matching (BERTScore-style: each sentence's best cosine in the other set, averaged both
  ways). Identical sentence sets give 1. Only sentences are compared, never class names, so renaming a
  class to an opaque id changes nothing.
- ``weight[c, t]``: the share of trained class ``t``'s score that class ``c`` receives. Every trained class
  goes to the label-set class that matches it best (weight 1) and, softly, to near-ties:
  ``exp(-(best - similarity[c, t]) / temperature)``. A label set that lacks a trained class so receives
  its pixels through its nearest class (a cat under ADE20K-150 is an "animal"). "Best" is read twice, by
  the F1 and by the size-matched F1 below, and a class keeps the larger of the two weights: the F1 alone
  hands a trained class to whichever label-set class has the most sentences to recall it with (plain
  CamVid: the trained "fence" went to no class of three sentences, and its pixels to "sign symbol"), the
  size-matched F1 alone to whichever class echoes a few of its sentences best (plain MSRC: the trained
  "water" went to "boat", "a boat floating on water").
- ``novelty[c]``: how little of class ``c`` the trained classes explain, from its best *size-matched*
  similarity (:func:`sentence_set_scores`: the F1 above, but recall counts only as many of the trained
  class's sentences as ``c`` has, at least 3, so three plain sentences of a trained class are not novel); it
  scales the open-set credit (:mod:`prolab.novel_prior`) that lets truly new classes win pixels the
  trained classes leave unexplained.

The class score that uses these weights is :class:`prolab.class_scorer.ClassScorer`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cachetools import LRUCache

from prolab.caches import CACHE_SIZES
from prolab.errors import ProLabError


@dataclass(frozen=True)
class AlignmentSettings:
    """How label-set classes borrow trained classes' scores (see the module docstring)."""

    temperature: float = 0.01  # decay of a trained class's weight with its similarity gap to the best class
    min_weight: float = 0.01  # weights below this are dropped (keeps the transport sparse)
    weak_power: float = 8.0  # a trained class lends score ** weak_power to a class it is not a mutual best match of
    novel_below: float = 0.50  # best similarity at or below which a class is fully novel (novelty 1)
    known_above: float = 0.56  # best similarity at or above which a class is fully known (novelty 0)
    property_scores: bool = True  # also let a class win by its own property score (max of the two)

    def __post_init__(self):
        if not (self.temperature > 0 and 0 <= self.min_weight < 1 and self.novel_below < self.known_above):
            raise ProLabError(f"Invalid alignment settings: {self}.")


def class_sentence_sets(embeddings: np.ndarray, owner: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Per class, the indices of its sentences (``owner``: each sentence's class)."""
    owner = np.asarray(owner, np.int64)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(num_classes + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(num_classes)]


def _segment_mean(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of ``values`` (S, X) over the rows of each of ``n`` groups (``owner``: (S,) group ids) -> (n, X);
    an empty group gives 0."""
    sums = torch.zeros(n, values.shape[1], dtype=values.dtype).index_add_(0, owner, values)
    counts = torch.bincount(owner, minlength=n).clamp(min=1).to(values.dtype)
    return sums / counts[:, None]


def _segment_max(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Max of ``values`` (S, X) over the rows of each of ``n`` groups -> (n, X) (empty group: -1)."""
    out = torch.full((n, values.shape[1]), -1.0, dtype=values.dtype)
    return out.scatter_reduce_(0, owner[:, None].expand_as(values), values, "amax")


#: The size-matched recall averages at least this many of the other class's best sentences: one sentence
#: that happens to echo one trained sentence ("A photo of a sheep." and a trained "hill" sentence about
#: sheep grazing) must not make a class known (the unseen-animals model's one-sentence animals stay novel).
MIN_RECALL_SENTENCES = 3


def _top_k_means(values: torch.Tensor, owner: torch.Tensor, n: int, k: torch.Tensor) -> torch.Tensor:
    """Per row of ``values`` (R, S) and group ``j`` of its columns (``owner``: (S,) group ids), the mean of the
    ``k[r, j]`` largest values of the group -> (R, n); 0 where ``k`` is 0."""
    counts = torch.bincount(owner, minlength=n)
    width = max(int(counts.max()), 1) if owner.numel() else 1
    order = torch.argsort(owner, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(owner.numel()) - starts[owner[order]]
    padded = values.new_full((values.shape[0], n, width), -2.0)  # below any cosine: sorts last
    padded[:, owner[order], slot] = values[:, order]
    top = padded.sort(dim=2, descending=True).values.cumsum(2)
    k = k.clamp(max=counts[None, :])
    sums = top.gather(2, (k - 1).clamp(min=0)[..., None])[..., 0]
    return torch.where(k > 0, sums / k.clamp(min=1), torch.zeros_like(sums))


def sentence_set_scores(emb_a: np.ndarray, owner_a: np.ndarray, n_a: int,
                        emb_b: np.ndarray, owner_b: np.ndarray, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (n_a, n_b) matches between the classes of two sets of unit sentence embeddings (``owner``: each
    sentence's class), both harmonic means of a precision and a recall:

    - the F1 of greedy sentence matching (:func:`sentence_set_similarity`): precision, the mean over a class's
      sentences of the best cosine with any sentence of the other class; recall the same the other way;
    - the *size-matched* F1: the same precision, and as recall the mean of only the ``min(max(n, 3), m)``
      best of the other class's sentences (``n``, ``m``: the two classes' sentence counts; at least
      :data:`MIN_RECALL_SENTENCES`). A class of 3 sentences
      cannot cover all 15 of a trained class, so its plain F1 stays low however well its sentences match;
      this one does not depend on the sizes. It is what novelty reads (:class:`Alignment`)."""
    a = torch.as_tensor(np.ascontiguousarray(emb_a, np.float32))
    b = torch.as_tensor(np.ascontiguousarray(emb_b, np.float32))
    oa = torch.as_tensor(np.ascontiguousarray(owner_a, np.int64))
    ob = torch.as_tensor(np.ascontiguousarray(owner_b, np.int64))
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((n_a, n_b), np.float32), np.zeros((n_a, n_b), np.float32)
    with torch.no_grad():
        cos = a @ b.T  # (Sa, Sb)
        best_in_b = _segment_max(cos.T, ob, n_b).T  # (Sa, n_b): each a-sentence's best match in class j
        best_in_a = _segment_max(cos, oa, n_a)  # (n_a, Sb): each b-sentence's best match in class i
        # A mean best cosine below 0 matches nothing: clamped, or two negatives would make a huge positive F1
        # (their sum, the denominator, is clamped near 0).
        precision = _segment_mean(best_in_b, oa, n_a).clamp(min=0.0)  # (n_a, n_b)
        recall = _segment_mean(best_in_a.T, ob, n_b).T.clamp(min=0.0)  # (n_a, n_b)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-6)
        size_a = torch.bincount(oa, minlength=n_a)
        k = size_a.clamp(min=MIN_RECALL_SENTENCES)[:, None].expand(n_a, n_b)
        recall_k = _top_k_means(best_in_a, ob, n_b, torch.where(size_a[:, None] > 0, k, 0)).clamp(min=0.0)
        matched = 2 * precision * recall_k / (precision + recall_k).clamp(min=1e-6)
    return (f1.clamp(min=0.0).numpy().astype(np.float32), matched.clamp(min=0.0).numpy().astype(np.float32))


def sentence_set_similarity(emb_a: np.ndarray, owner_a: np.ndarray, n_a: int,
                            emb_b: np.ndarray, owner_b: np.ndarray, n_b: int) -> np.ndarray:
    """(n_a, n_b) F1 of greedy sentence matching between the classes of two sets of unit sentence
    embeddings (``owner``: each sentence's class). Precision: mean over a class's sentences of the best
    cosine with any sentence of the other class; recall the same the other way; F1 their harmonic mean."""
    return sentence_set_scores(emb_a, owner_a, n_a, emb_b, owner_b, n_b)[0]


class SimilarityMemo:
    """Each class's :func:`sentence_set_scores` rows against one trained space, remembered by the class's
    sentences (at most ``max_items`` rows, least recently used dropped; default
    :attr:`CacheSizes.similarity_rows <prolab.caches.CacheSizes>`). Not thread-safe: one per user (the
    app's workbench keeps one)."""

    def __init__(self, trained, max_items: int = CACHE_SIZES.similarity_rows):
        self.trained = trained
        self.max_items = max_items
        self._rows: LRUCache[tuple[str, ...], np.ndarray] = LRUCache(maxsize=max_items)

    def rows(self, space) -> tuple[np.ndarray, np.ndarray]:
        """(C, T) similarities and size-matched similarities (:func:`sentence_set_scores`) of the classes of
        ``space`` with the trained classes."""
        emb = np.ascontiguousarray(space.sentence_embeddings, np.float32)
        groups = class_sentence_sets(emb, space.sentence_class, space.num_classes)
        # a class's sentences stand for their embeddings: every space scored against ``trained`` was
        # built with its encoder and template (LabelSpace.check_encoder)
        keys = [tuple(space.sentences[i] for i in g) for g in groups]
        out = np.empty((space.num_classes, 2, self.trained.num_classes), np.float32)
        missing = []
        for i, k in enumerate(keys):
            row = self._rows.get(k)  # a hit becomes the most recently used
            if row is None:
                missing.append(i)
            else:
                out[i] = row
        if missing:
            take = np.concatenate([groups[i] for i in missing])
            owner = np.concatenate([np.full(len(groups[i]), j, np.int64) for j, i in enumerate(missing)])
            t = self.trained
            fresh = np.stack(sentence_set_scores(emb[take], owner, len(missing), t.sentence_embeddings,
                                                 t.sentence_class, t.num_classes), 1)
            for j, i in enumerate(missing):
                out[i] = self._rows[keys[i]] = fresh[j]
        return out[:, 0], out[:, 1]


def _transport(sim: np.ndarray, settings: AlignmentSettings) -> tuple[np.ndarray, np.ndarray]:
    """(C, T) weights and mutual best matches from one (C, T) similarity: each trained class goes to its
    best label-set class (weight 1) and softly to near-ties; ``mutual``: each is the other's best match."""
    best = sim.max(0, keepdims=True)  # per trained class: its best-matching label-set class
    weight = np.exp(-(best - sim) / settings.temperature).astype(np.float32)
    weight[weight < settings.min_weight] = 0.0
    mutual = np.zeros(sim.shape, bool)
    mutual[np.arange(sim.shape[0]), sim.argmax(1)] = True
    mutual &= sim == best
    return weight, mutual


@dataclass(frozen=True, eq=False)
class Alignment:
    """Each label-set class against each trained class (see the module docstring)."""

    class_names: list[str]
    trained_names: list[str]
    similarity: np.ndarray  # (C, T) float32 sentence-set F1
    weight: np.ndarray  # (C, T) float32 transport weights in [0, 1] (the larger of the F1's and the size-matched's)
    novelty: np.ndarray  # (C,) float32 in [0, 1]
    settings: AlignmentSettings
    mutual: np.ndarray | None = None  # (C, T) bool: each is the other's best match (by either similarity)
    matched: np.ndarray | None = None  # (C, T) float32 size-matched F1, which novelty reads

    @classmethod
    def between(cls, space, trained, settings: AlignmentSettings = AlignmentSettings(),
                memo: "SimilarityMemo | None" = None) -> "Alignment":
        """The alignment of the classes of ``space`` (a :class:`~prolab.labelspace.LabelSpace` whose classes
        have sentences) with the classes of ``trained`` (the model's training label space). ``memo`` (for
        ``trained``) keeps each class's similarities, so that after an edit only the edited classes are
        compared again."""
        if space.dim != trained.dim:
            raise ProLabError(f"The label space is {space.dim}-dimensional but the model's is {trained.dim}-d.")
        if memo is not None and memo.trained is trained:
            sim, matched = memo.rows(space)
        else:
            sim, matched = sentence_set_scores(space.sentence_embeddings, space.sentence_class, space.num_classes,
                                               trained.sentence_embeddings, trained.sentence_class,
                                               trained.num_classes)
        empty = np.bincount(np.asarray(space.sentence_class, np.int64), minlength=space.num_classes) == 0
        return cls.from_similarity(list(space.class_names), list(trained.class_names), sim, settings, empty,
                                   matched)

    @classmethod
    def from_similarity(cls, class_names: list[str], trained_names: list[str], similarity: np.ndarray,
                        settings: AlignmentSettings = AlignmentSettings(),
                        empty: np.ndarray | None = None, matched: np.ndarray | None = None) -> "Alignment":
        """The alignment from a (C, T) ``similarity``; ``empty`` (C,) bool marks classes without sentences:
        they receive nothing and are not novel (they are never predicted). ``matched``: the size-matched
        similarity (:func:`sentence_set_scores`) that novelty reads (default ``similarity``)."""
        sim = np.asarray(similarity, np.float32)
        if sim.shape != (len(class_names), len(trained_names)):
            raise ProLabError(f"Similarity of shape {sim.shape} for {len(class_names)} classes and "
                              f"{len(trained_names)} trained classes.")
        matched = sim if matched is None else np.asarray(matched, np.float32)
        if matched.shape != sim.shape:
            raise ProLabError(f"Size-matched similarity of shape {matched.shape} for similarity of shape {sim.shape}.")
        if sim.size == 0:
            return cls(class_names, trained_names, sim, sim.copy(), np.ones(len(class_names), np.float32), settings,
                       np.zeros(sim.shape, bool), matched)
        weight, mutual = _transport(sim, settings)
        if matched is not sim:  # a trained class is also lent to its best class by the size-matched F1
            weight_matched, mutual_matched = _transport(matched, settings)
            weight = np.maximum(weight, weight_matched)
            mutual |= mutual_matched
        top = matched.max(1)  # size-robust: 3 plain sentences of a trained class are not novel
        novelty = np.clip((settings.known_above - top) / (settings.known_above - settings.novel_below), 0.0, 1.0)
        if empty is not None and np.any(empty):
            weight[np.asarray(empty, bool)] = 0.0
            novelty[np.asarray(empty, bool)] = 0.0
            mutual[np.asarray(empty, bool)] = False
        return cls(class_names, trained_names, sim, weight, novelty.astype(np.float32), settings, mutual, matched)

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The non-zero weights as (label-class index, trained-class index, weight, power) tensors: class
        ``c`` receives ``weight * score_t ** power`` (power 1 for mutual best matches, else
        ``settings.weak_power``)."""
        c, t = np.nonzero(self.weight)
        power = np.where(self.mutual[c, t], 1.0, self.settings.weak_power)
        return (torch.as_tensor(c, dtype=torch.int64), torch.as_tensor(t, dtype=torch.int64),
                torch.as_tensor(self.weight[c, t], dtype=torch.float32), torch.as_tensor(power, dtype=torch.float32))

    def aligned(self, index: int, top: int = 3) -> list[tuple[str, float, float]]:
        """The ``top`` trained classes most similar to class ``index``: (name, similarity, weight)."""
        row = self.similarity[index]
        order = np.argsort(-row, kind="stable")[:top]
        return [(self.trained_names[t], float(row[t]), float(self.weight[index, t])) for t in order]

    def receives(self, index: int) -> list[tuple[str, float]]:
        """The trained classes whose scores class ``index`` receives: (name, weight), largest first."""
        row = self.weight[index]
        order = [t for t in np.argsort(-row, kind="stable") if row[t] > 0]
        return [(self.trained_names[t], float(row[t])) for t in order]


@dataclass(frozen=True)
class ClassExplanation:
    """Why a class scores as it does: the trained classes it aligns to and the properties its sentences
    map to, each with its similarity (for the app's label-set and novel-category panels)."""

    name: str
    trained: list[tuple[str, float, float]]  # (trained class, sentence-set similarity, weight received)
    properties: list[tuple[int, str, float, int]]  # (property, its name, best cosine of a sentence, sentences)
    novelty: float  # 0: fully explained by trained classes, 1: fully novel (open-set credit)


def explain_class(space, alignment: Alignment | None, index: int, top: int = 3) -> ClassExplanation:
    """The :class:`ClassExplanation` of class ``index`` of ``space`` (``alignment``: its
    :class:`Alignment` with the model's trained classes, None when there is none)."""
    mine = np.flatnonzero(np.asarray(space.sentence_class) == index)
    props: dict[int, list[float]] = {}
    if len(mine):
        cos = np.asarray(space.sentence_embeddings)[mine] @ space.normalised_centers.T
        for row, k in zip(cos, np.asarray(space.sentence_property)[mine]):
            props.setdefault(int(k), []).append(float(row[k]))
    properties = sorted(((k, space.property_names[k], max(v), len(v)) for k, v in props.items()),
                        key=lambda t: (-t[3], -t[2]))
    if alignment is None:
        return ClassExplanation(space.class_names[index], [], properties, 1.0)
    return ClassExplanation(space.class_names[index], alignment.aligned(index, top), properties,
                            float(alignment.novelty[index]))
