"""Re-score an evaluation set after an edit of a few classes, without re-scoring the classes that did not change.

:meth:`prolab.eval_cache.EvalCache.rescore` scores every class at every pixel of every image: right for one
evaluation, slow for a search that tries hundreds of one-class edits (:mod:`prolab.description_search`).
:class:`IncrementalRescorer` keeps, per cached image, what a label set's scores are made of
(:class:`~prolab.class_scorer.ClassScorer`'s sequence: each class's ``max(property score, aligned trained
scores)``, then the open-set credit) and, for new descriptions, recomputes only

- the rows of the classes whose property row or alignment row (weights, mutual best matches) changed,
  from the activations of just the properties those rows read;
- the open-set credit's share maps when a class's text changed (a softmax over all classes: cheap from the
  kept cosine maps; the ImageNet sentence map's norm at the scores' size is computed once per image, and a
  class's cosine map is its dot product with the low-resolution map, interpolated: bilinear interpolation
  is linear, so this is the library's cosine up to float rounding).

The metrics are :meth:`~prolab.eval_cache.EvalCache.rescore`'s (same ``segment`` and confusion counting):
``tests/test_description_search.py`` checks them against it. An edit is tried with :meth:`trial` and kept
with :meth:`commit`, so a rejected edit costs nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prolab.alignment import Alignment, AlignmentSettings
from prolab.class_scorer import transport_scores
from prolab.descriptions import DescriptionSet
from prolab.errors import ProLabError
from prolab.eval_cache import EvalCache
from prolab.evaluate import ConfusionMatrix
from prolab.inference import inverse_norms, segment
from prolab.novel_prior import class_text_embeddings


@dataclass(frozen=True, eq=False)
class _SpaceFacts:
    """What the scores of one label space over the dataset's classes depend on."""

    space: object  # LabelSpace over the dataset's classes
    rows: torch.Tensor  # (C, K) normalised class rows
    alignment: Alignment
    pairs: tuple[torch.Tensor, ...]  # Alignment.pairs()
    novelty: np.ndarray  # (C,)
    text: torch.Tensor  # (C, D) class texts (the credit's)

    @property
    def credited(self) -> bool:
        return bool((self.novelty > 0).any())


@dataclass(frozen=True, eq=False)
class Trial:
    """Scores of new descriptions on every image (keep them with :meth:`IncrementalRescorer.commit`)."""

    descriptions: DescriptionSet
    facts: _SpaceFacts
    base: list[torch.Tensor]  # per image (C, hw) scores before the credit
    cos: list[torch.Tensor | None]  # per image (C, hw) credit cosines (None: no credit)
    metrics: dict


class IncrementalRescorer:
    """Metrics of edited descriptions on an :class:`~prolab.eval_cache.EvalCache`, re-scoring only what an edit
    changes (see the module docstring). ``alignment``: the :class:`~prolab.alignment.AlignmentSettings` of the
    scorer (the library's default). Not thread-safe."""

    def __init__(self, cache: EvalCache, encoder, descriptions: DescriptionSet,
                 alignment: AlignmentSettings = AlignmentSettings()):
        model = cache.model
        if model.label_space is None:
            raise ProLabError("Incremental re-scoring needs a property model with a label space.")
        self.cache, self.encoder, self.settings = cache, encoder, alignment
        self.trained = model.label_space
        self.temperature = float(model.config.temperature)
        self.prior = cache.prior
        if self.prior is not None and any(im.sentence_map is None for im in cache.images):
            raise ProLabError("This cache was built without the open-set credit's ImageNet maps (prior=None).")
        centres = F.normalize(torch.as_tensor(self.trained.centers, dtype=torch.float32), dim=1)
        self._centre_weight = centres @ cache.weight  # (K, F): activations = sigmoid((this @ f + cb) / T)
        self._centre_bias = centres @ cache.bias  # (K,)
        trained_rows = F.normalize(torch.as_tensor(self.trained.class_matrix, dtype=torch.float32), dim=1)
        self._trained_rows = trained_rows
        self._inv, self._explained, self._sm_norm, self._shape = [], [], [], []
        for im in cache.images:
            act = self._activations(im.features, None)
            inv = inverse_norms(act.reshape(act.shape[0], *im.features.shape[1:]))
            self._inv.append(inv)
            self._explained.append(((trained_rows @ act) * inv).max(0).values)
            self._shape.append(tuple(im.features.shape[1:]))
            if self.prior is not None:
                sm = F.interpolate(im.sentence_map[None].float(), size=self._shape[-1], mode="bilinear",
                                   align_corners=False)[0]
                self._sm_norm.append(sm.norm(dim=0).clamp_(min=1e-12).reshape(-1))
            del act
        self.evaluations = 0
        first = self._score_all(descriptions)
        self.current = first

    # ------------------------------------------------------------------ pieces of ClassScorer's sequence
    def _activations(self, features: torch.Tensor, props: torch.Tensor | None) -> torch.Tensor:
        """(P, hw) property activations of the properties ``props`` (None: all)."""
        f = features.float().reshape(features.shape[0], -1)
        w, b = (self._centre_weight, self._centre_bias) if props is None else \
            (self._centre_weight[props], self._centre_bias[props])
        return torch.sigmoid_((w @ f + b[:, None]).div_(self.temperature))

    def _facts(self, descriptions: DescriptionSet) -> _SpaceFacts:
        ds = descriptions.subset(self.cache.classes)
        space = self.trained.edited(ds, self.encoder)
        al = Alignment.between(space, self.trained, self.settings)
        rows = F.normalize(torch.as_tensor(space.class_matrix, dtype=torch.float32), dim=1)
        return _SpaceFacts(space, rows, al, al.pairs(), np.asarray(al.novelty, np.float32),
                           class_text_embeddings(space))

    def _base_rows(self, i: int, facts: _SpaceFacts, classes: list[int]) -> torch.Tensor:
        """(len(classes), hw) scores before the credit of some classes on image ``i``: ClassScorer's
        ``max(property score, max_t weight * trained score_t ** power)``, reading only the properties and
        trained classes those rows use."""
        c_idx, t_idx, w, p = facts.pairs
        n_cls = len(self.cache.classes)
        want = torch.as_tensor(classes, dtype=torch.int64)
        slot = torch.full((n_cls,), -1, dtype=torch.int64)
        slot[want] = torch.arange(len(want))
        sel = slot[c_idx] >= 0
        pc, pt, pw, pp = slot[c_idx[sel]], t_idx[sel], w[sel], p[sel]
        trained_needed = torch.unique(pt)
        rows = facts.rows[want]
        trows = self._trained_rows[trained_needed]
        used = (rows != 0).any(0) | (trows != 0).any(0)
        props = torch.nonzero(used).flatten()
        act = self._activations(self.cache.images[i].features, props)  # (P, hw)
        inv = self._inv[i]
        prop_scores = _sparse_rows(rows[:, props], act).mul_(inv)  # (n, hw)
        if self.settings.property_scores:
            out = prop_scores
        else:
            out = torch.zeros_like(prop_scores)
        if len(pc):
            tslot = torch.full((self._trained_rows.shape[0],), -1, dtype=torch.int64)
            tslot[trained_needed] = torch.arange(len(trained_needed))
            tscores = _sparse_rows(trows[:, props], act).mul_(inv)  # (T', hw)
            aligned = transport_scores(tscores, len(classes), (pc, tslot[pt], pw, pp))
            out = torch.maximum(out, aligned)
        return out

    def _cos_rows(self, i: int, text: torch.Tensor) -> torch.Tensor:
        """(n, hw) cosine of class texts with the image's sentence map at the scores' size."""
        sm = self.cache.images[i].sentence_map.float()
        low = torch.einsum("cd,dhw->chw", text, sm)
        up = F.interpolate(low[None], size=self._shape[i], mode="bilinear", align_corners=False)[0]
        return up.reshape(len(text), -1) / self._sm_norm[i]

    def _final(self, i: int, facts: _SpaceFacts, base: torch.Tensor, cos: torch.Tensor | None) -> torch.Tensor:
        if cos is None or not facts.credited or self.prior is None or self.prior.weight == 0:
            return base
        novel = facts.novelty > 0
        rows = torch.as_tensor(np.flatnonzero(novel), dtype=torch.int64)
        shares = (cos / self.prior.temperature).softmax(0)[rows]
        unexplained = 1.0 - self._explained[i].clamp(0.0, 1.0)
        nu = torch.as_tensor(facts.novelty[novel], dtype=base.dtype)[:, None]
        gain = -torch.expm1(-self.prior.weight * nu * unexplained * shares)
        out = base.clone()
        s = out.index_select(0, rows)
        out[rows] = s + (1.0 - s).clamp(min=0.0) * gain
        return out

    def _metrics(self, facts: _SpaceFacts, base: list[torch.Tensor], cos: list) -> dict:
        classes = self.cache.classes
        cm = ConfusionMatrix(len(classes))
        for i, im in enumerate(self.cache.images):
            scores = self._final(i, facts, base[i], cos[i]).reshape(len(classes), *self._shape[i])
            cm.update(segment(scores, im.label.shape), im.label)
        self.evaluations += 1
        return {"dataset": self.cache.name, "split": self.cache.split, "images": len(self.cache),
                **cm.metrics(classes), "classes": list(classes), "confusion": cm.matrix.tolist()}

    def _needs_cos(self, facts: _SpaceFacts) -> bool:
        return self.prior is not None and self.prior.weight > 0 and facts.credited

    def _score_all(self, descriptions: DescriptionSet) -> Trial:
        facts = self._facts(descriptions)
        every = list(range(len(self.cache.classes)))
        base = [self._base_rows(i, facts, every) for i in range(len(self.cache))]
        cos = [self._cos_rows(i, facts.text) if self.prior is not None else None for i in range(len(self.cache))]
        return Trial(descriptions, facts, base, cos, self._metrics(facts, base, cos))

    # ------------------------------------------------------------------ public
    @property
    def metrics(self) -> dict:
        """The metrics of the descriptions kept (the last :meth:`commit`, else the first ones)."""
        return self.current.metrics

    def trial(self, descriptions: DescriptionSet) -> Trial:
        """Metrics of ``descriptions`` (the kept ones edited), re-scoring only the classes that changed."""
        old, new = self.current.facts, self._facts(descriptions)
        changed = [c for c in range(len(self.cache.classes))
                   if not (torch.equal(old.rows[c], new.rows[c])
                           and np.array_equal(old.alignment.weight[c], new.alignment.weight[c])
                           and np.array_equal(old.alignment.mutual[c], new.alignment.mutual[c]))]
        text_changed = [c for c in range(len(self.cache.classes)) if not torch.equal(old.text[c], new.text[c])]
        base, cos = [], []
        for i in range(len(self.cache)):
            b = self.current.base[i]
            if changed:
                b = b.clone()
                b[changed] = self._base_rows(i, new, changed)
            base.append(b)
            k = self.current.cos[i]
            if k is not None and text_changed:
                k = k.clone()
                k[text_changed] = self._cos_rows(i, new.text[text_changed])
            cos.append(k)
        return Trial(descriptions, new, base, cos, self._metrics(new, base, cos))

    def commit(self, trial: Trial) -> None:
        """Keep a :meth:`trial`'s descriptions: the next trials edit them."""
        self.current = trial


def _sparse_rows(rows: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``rows @ act`` for sparse (n, P) class rows: a weighted gather-sum, as
    :func:`prolab.inference.rescore_activations` computes it."""
    nz = torch.nonzero(rows)
    if len(nz) >= 0.25 * rows.numel():
        return rows @ act
    offsets = torch.searchsorted(nz[:, 0].contiguous(), torch.arange(rows.shape[0]))
    return F.embedding_bag(nz[:, 1], act, offsets, mode="sum", per_sample_weights=rows[nz[:, 0], nz[:, 1]])
