"""The one class scorer: a model's pixel output plus a label set -> class scores.

``prolab predict``, ``prolab evaluate``, :class:`~prolab.eval_cache.EvalCache` and the app's
:class:`~prolab.workbench.Workbench` all score through :class:`ClassScorer`, so the same model, image and
descriptions give the same mask everywhere.

For a property model and a label space over its properties (every class given by sentences: the model's
own training classes, another label set, edited or novel classes), a class ``c`` scores at pixel ``x``

    s_c(x) = max(property_c(x), aligned_c(x))          then the open-set credit

- ``property_c``: ProLab's ``cos(property activations, multi-hot of c)`` (:mod:`prolab.scoring`);
- ``aligned_c``: ``max_t weight[c, t] * score_t(x)`` over the model's *trained* classes ``t``, where the
  weights come from how well the sentences of ``c`` match those of ``t``
  (:class:`~prolab.alignment.Alignment`): a class that means a trained class under another name scores
  like it, and a trained class missing from the label set lends its pixels to its nearest class;
- the open-set credit (:mod:`prolab.novel_prior`) raises classes in proportion to their *novelty* (how
  little the trained classes explain their sentences) where no trained class explains the pixel.

What counts as trained is decided once, here, from sentences alone (never from class names). A category
model scores a fixed list of its logits (softmax over the kept rows).
"""
from __future__ import annotations

import numpy as np
import torch

from prolab.alignment import Alignment, AlignmentSettings, SimilarityMemo, transport_scores
from prolab.errors import ProLabError
from prolab.inference import embedding_activations, inverse_norms, rescore_activations
from prolab.novel_prior import ImageCredit, OpenSetCredit, PriorSettings, class_text_embeddings


class ClassScorer:
    """Class scores of one label set for one model (read-only after construction; thread-safe).

    Property model: ``space`` is a :class:`~prolab.labelspace.LabelSpace` whose classes have their
    sentences (``model.label_space.edited(descriptions, encoder)`` or ``.extended(...)``; default the
    model's own). Category model: ``rows`` are the logit indices of the classes kept, ``class_names`` their
    names. ``prior``: open-set credit settings (None: off); ``alignment``: how classes borrow trained
    classes' scores (None: plain ProLab property scores); ``memo``: a
    :class:`~prolab.alignment.SimilarityMemo` of the model's space, for callers that score many edited
    versions of one label set.
    """

    def __init__(self, model, space=None, *, rows: list[int] | None = None, class_names: list[str] | None = None,
                 prior: PriorSettings | None = PriorSettings(),
                 alignment: AlignmentSettings | None = AlignmentSettings(), encoder=None,
                 memo: SimilarityMemo | None = None):
        self.model = model
        self.category = model.config.supervision == "category"
        self.temperature = float(model.config.temperature)
        self.rows = self.space = self.trained = self.alignment = self.credit = None
        self._pairs = None
        self._same_centres = True
        if self.category:
            if space is not None:
                raise ProLabError("A category model has a fixed set of classes; it cannot use a label space.")
            self.rows = list(range(len(model.class_names))) if rows is None else list(rows)
            self.class_names = list(model.class_names) if class_names is None else list(class_names)
            if len(self.rows) != len(self.class_names):
                raise ProLabError(f"{len(self.rows)} logit rows for {len(self.class_names)} classes.")
            return
        space = model.label_space if space is None else space
        if space is None:
            raise ProLabError("This property model has no label space; pass one to score its embeddings.")
        self.space = space
        self.class_names = list(space.class_names)
        self.trained = model.label_space
        if alignment is not None and self.trained is not None and self.trained.dim == space.dim:
            self.alignment = Alignment.between(space, self.trained, alignment, memo)
            self._pairs = self.alignment.pairs()
            self._same_centres = (space.centers is self.trained.centers
                                  or np.array_equal(space.centers, self.trained.centers))
            if prior is not None:
                self.credit = OpenSetCredit.for_novelty(model, self.alignment.novelty,
                                                        lambda: class_text_embeddings(space), prior, encoder)

    # ------------------------------------------------------------------ facts
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def needs_prior_map(self) -> bool:
        """Whether scoring an image needs its ImageNet sentence map (:meth:`prior_map`)."""
        return self.credit is not None

    def novel_classes(self) -> list[str]:
        """The classes the trained classes do not fully explain (novelty > 0): they get the open-set credit
        when it is on."""
        if self.alignment is None:
            return []
        return [c for c, n in zip(self.class_names, self.alignment.novelty) if n > 0]

    def prior_map(self, image: np.ndarray) -> torch.Tensor | None:
        """The image's ImageNet sentence map for the open-set credit (None when no class needs it)."""
        return None if self.credit is None else self.credit.sentence_map(image)

    # ------------------------------------------------------------------ scoring
    def activations(self, output) -> torch.Tensor:
        """Property activations (K, h, w) of an output map or its low-rank factors over ``space``'s centres."""
        return embedding_activations(output, self.space, self.temperature)

    def trained_scores(self, output, activations: torch.Tensor,
                       inv_norm: torch.Tensor | None = None) -> torch.Tensor | None:
        """(T, h, w) scores of the model's trained classes (None without an alignment); ``inv_norm``:
        :func:`~prolab.inference.inverse_norms` of ``activations``, when the caller has it."""
        if self.alignment is None:
            return None
        if self._same_centres:
            return rescore_activations(activations, self.trained, inv_norm)
        return rescore_activations(embedding_activations(output, self.trained, self.temperature), self.trained)

    def score_activations(self, activations: torch.Tensor, trained: torch.Tensor | None = None,
                          inv_norm: torch.Tensor | None = None, credit: ImageCredit | None = None) -> torch.Tensor:
        """Class scores (C, h, w) from cached ``activations`` (and ``inv_norm``, see
        :func:`~prolab.inference.inverse_norms`), the :meth:`trained_scores` and one image's ``credit``
        (:meth:`image_credit`)."""
        scores = rescore_activations(activations, self.space, inv_norm)
        if self.alignment is None or trained is None:
            return scores
        c, h, w = scores.shape
        with torch.no_grad():
            aligned = transport_scores(trained.reshape(trained.shape[0], -1), c, self._pairs).reshape(c, h, w)
            scores = torch.maximum(scores, aligned) if self.alignment.settings.property_scores else aligned
            if credit is not None:
                scores = credit.apply(scores, trained.max(0).values)
        return scores

    def image_credit(self, prior_map: torch.Tensor | None, size: tuple[int, int]) -> ImageCredit | None:
        """The open-set credit's shares for one image at the scores' ``size`` (None when off)."""
        if self.credit is None or prior_map is None:
            return None
        return ImageCredit(self.credit, self.credit.shares(prior_map, size))

    def score(self, output, prior_map: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class scores (C, h, w) of an :func:`~prolab.inference.embed_image` output map (or its
        :class:`~prolab.inference.LowRankFactors`) and, for a property model, the property activations
        (K, h, w) they came from (None for a category model); ``prior_map`` (:meth:`prior_map` of the
        image) adds the open-set credit."""
        if self.category:
            return torch.softmax(output[self.rows], dim=0), None
        act = self.activations(output)
        inv = inverse_norms(act)  # once, for the trained classes' scores and the label set's
        scores = self.score_activations(act, self.trained_scores(output, act, inv), inv,
                                        self.image_credit(prior_map, tuple(act.shape[-2:])))
        return scores, act

    def __call__(self, output, prior_map: torch.Tensor | None = None) -> torch.Tensor:
        """The class scores of :meth:`score`."""
        return self.score(output, prior_map)[0]
