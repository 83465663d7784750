"""Descriptions that improve themselves: a search over a label set's sentences guided by live mIoU.

The labelled images are split in two halves (:func:`split_halves`): the *search* half decides, the *guard*
half checks. Starting from any label set (shipped, custom, edited, with novel classes), the search tries
one-class edits (:class:`Proposal`: add, replace or remove sentences) for the classes that lose most
(lowest IoU on the search half first; each with the class it is most confused with) and keeps an edit when
the search half's mIoU rises by at least ``margin`` and the guard half's does not fall. Every proposal is
scored from an :class:`~prolab.eval_cache.EvalCache` (the network ran once per image when the cache was
built; a proposal re-scores the cached outputs of the search half, and of the guard half only when the
search half gained).

Proposals come from :class:`ProposalSource` objects, tried in a fixed order of tiers (whole sentence sets
first, then single sentences in a seeded random order):

- :class:`TrainedClassSource`: the sentences of the model's trained classes the class aligns to
  (:class:`~prolab.alignment.Alignment`, from sentences alone);
- :class:`ShippedSetSource`: the same class (by name) and the best-aligned class in every shipped
  description set (:mod:`prolab.labelsets`);
- :class:`PropertySource`: the member sentences of the properties that separate the class from the class
  it is confused with, and the removal of its sentences in the properties the two share;
- :class:`NameSource`: for a class the trained classes do not fully explain, its name as one sentence
  ("A photo of a cow."), alone or added (what the open-set credit of such a class reads best);
- :class:`LLMSource`, when an OpenAI-compatible endpoint is configured (:mod:`prolab.llm`): sentences that
  separate the class from the class it is confused with; an error, a timeout or a malformed answer is
  skipped (recorded in :attr:`SearchResult.skipped`) and never changes the descriptions.

    search = DescriptionSearch(model, search_half, guard_half, encoder, SearchSettings(budget=200, seed=0))
    result = search.run(descriptions, progress=print_progress, cancel=stop_event)
    result.descriptions          # the improved DescriptionSet (classes outside the dataset unchanged)
    result.kept                  # KeptChange rows: class, sentences in/out, source, delta on each half
    result.trajectory            # mIoU of both halves after each proposal tried

Deterministic for a seed with a ``budget`` of proposals (a ``seconds`` budget stops wherever the clock
says); cancellable between proposals (``cancel.set()``: the result so far, :attr:`SearchResult.cancelled`).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from prolab.alignment import Alignment, sentence_set_similarity
from prolab.descriptions import DescriptionSet
from prolab.errors import ProLabError, name_list
from prolab.eval_cache import EvalCache, cache_subset
from prolab.eval_report import json_ready

log = logging.getLogger(__name__)

#: ``progress(fraction, message)``, as :meth:`prolab.eval_cache.EvalCache.build` reports.
ProgressFn = Callable[[float, str], None]
#: A guard half whose mIoU moves less than this has not fallen (float rounding of equal predictions).
GUARD_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------- halves
@dataclass(frozen=True)
class Trial:
    """The metrics of one candidate set of descriptions on one half (kept with :meth:`HalfScorer.commit`)."""

    descriptions: DescriptionSet
    metrics: dict


class HalfScorer:
    """Scores descriptions on one half of the labelled set through the library's one scoring sequence
    (:meth:`~prolab.eval_cache.EvalCache.rescore`, i.e. :class:`~prolab.class_scorer.ClassScorer` on the
    cached network outputs): what the search measures is exactly what Evaluate reports."""

    def __init__(self, cache: EvalCache, encoder, descriptions: DescriptionSet):
        self.cache, self.encoder = cache, encoder
        self.metrics = self.trial(descriptions).metrics

    def trial(self, descriptions: DescriptionSet) -> Trial:
        return Trial(descriptions, self.cache.rescore(descriptions=descriptions, encoder=self.encoder))

    def commit(self, trial: Trial) -> None:
        self.metrics = trial.metrics


def split_halves(cache: EvalCache, seed: int = 0) -> tuple[EvalCache, EvalCache]:
    """The (search, guard) halves of ``cache``'s images: a seeded shuffle of the images (by name, so the split
    does not depend on the order they were read in), the first half (rounded up) to search."""
    if len(cache) < 2:
        raise ProLabError("The search needs at least two labelled images: one half to search on and one to "
                          "check the changes on.")
    order = sorted(range(len(cache)), key=lambda i: cache.images[i].stem)
    perm = np.random.default_rng(_seed(seed)).permutation(len(order))
    shuffled = [order[i] for i in perm]
    half = (len(shuffled) + 1) // 2
    return cache_subset(cache, sorted(shuffled[:half])), cache_subset(cache, sorted(shuffled[half:]))


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ProLabError(f"The seed must be an integer from 0 to {2 ** 32 - 1}, got {seed!r}.")
    return int(seed)


# ---------------------------------------------------------------------------- proposals
@dataclass(frozen=True)
class Proposal:
    """One edit of one class: sentences ``remove``-d from it and ``add``-ed to it, and where they came from."""

    class_name: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    source: str = ""
    kind: str = field(default="", compare=False)  # groups the classes' proposals of one kind into a joint one

    def sentences_after(self, current: Sequence[str]) -> list[str]:
        """The class's sentences after the edit (order kept, added ones last, no duplicates)."""
        gone = set(self.remove)
        kept = [s for s in current if s not in gone]
        return kept + [s for s in dict.fromkeys(self.add) if s not in kept]

    def apply_to(self, descriptions: DescriptionSet) -> DescriptionSet | None:
        """``descriptions`` with the edit made; None when it changes nothing or would empty the class."""
        name = descriptions.find(self.class_name)
        if name is None:
            return None
        current = descriptions[name]
        after = self.sentences_after(current)
        if not after or after == current:
            return None
        return descriptions.with_category(name, after)


@dataclass(frozen=True)
class JointProposal:
    """Proposals of one kind for several classes, tried as one edit: a label set whose classes are all novel
    to the model cannot improve one class at a time (a class that becomes known loses the open-set credit the
    others keep), but it can all at once."""

    parts: tuple[Proposal, ...]
    source: str

    @property
    def class_name(self) -> str:
        return ", ".join(p.class_name for p in self.parts)

    def apply_to(self, descriptions: DescriptionSet) -> DescriptionSet | None:
        out = descriptions
        for part in self.parts:
            out = part.apply_to(out) or out
        return None if out is descriptions else out


@dataclass(frozen=True)
class ClassContext:
    """What a :class:`ProposalSource` proposes from: one class of the current label set, its IoU on the search
    half and the class it is most confused with there."""

    name: str
    sentences: list[str]
    iou: float | None
    confused_with: str | None  # the dataset class it exchanges most pixels with (None: none)
    separating: list[int]  # properties (of the model's space) it uses and the confused class does not
    shared: list[int]  # properties both use
    sentence_property: dict[str, int]  # each of its sentences -> its property
    property_names: list[str]
    novelty: float = 0.0  # how little the model's trained classes explain it (Alignment.novelty): 0 known, 1 new
    aligned: tuple[str, ...] = ()  # the model's trained classes by sentence-set similarity to it, best first


class ProposalSource:
    """Proposes edits of one class. ``tiers()`` returns ``(bundles, singles)``: whole sentence sets tried first
    in the given order, then single-sentence edits, which the search shuffles with its seed."""

    name = "source"

    def proposals(self, ctx: ClassContext) -> tuple[list[Proposal], list[Proposal]]:  # pragma: no cover
        raise NotImplementedError


def _add_and_replace(ctx: ClassContext, sentences: Sequence[str], source: str, limit: int = 12) -> list[Proposal]:
    """Single-sentence proposals: add each new sentence, and replace with it the class's sentence that sits in
    a property the confused class shares (else its last sentence), when the class has more than one."""
    new = [s for s in dict.fromkeys(sentences) if s not in ctx.sentences][:limit]
    out = [Proposal(ctx.name, (s,), (), source) for s in new]
    victims = [s for s in ctx.sentences if ctx.sentence_property.get(s) in set(ctx.shared)] or ctx.sentences[-1:]
    if len(ctx.sentences) > 1:
        out += [Proposal(ctx.name, (s,), (victims[0],), source) for s in new]
    return out


class TrainedClassSource(ProposalSource):
    """The sentences of the model's trained classes the class aligns to (its ``top`` best by sentence-set
    similarity, :attr:`ClassContext.aligned`): all of them at once (a bundle), or one at a time."""

    name = "trained"

    def __init__(self, trained_space, encoder, top: int = 2):
        self.trained, self.encoder, self.top = trained_space, encoder, top

    def proposals(self, ctx: ClassContext) -> tuple[list[Proposal], list[Proposal]]:
        bundles, singles = [], []
        descriptions = self.trained.descriptions()
        for rank, t in enumerate(ctx.aligned[:self.top], 1):
            sentences = descriptions[t]
            bundles.append(Proposal(ctx.name, tuple(s for s in sentences if s not in ctx.sentences), (),
                                    f"trained class {t}", f"aligned trained class {rank}"))
            bundles.append(Proposal(ctx.name, tuple(sentences), tuple(ctx.sentences),
                                    f"trained class {t} (replace all)", f"aligned trained class {rank}, replace"))
            singles += _add_and_replace(ctx, sentences, f"trained class {t}")
        return bundles, singles


class ShippedSetSource(ProposalSource):
    """The same class (by name, ignoring case) and the best-aligned class in every shipped description set."""

    name = "shipped"

    def __init__(self, encoder, keys: Sequence[str] | None = None, known=None):
        from prolab import labelsets

        self.encoder = encoder
        keys = [k for k, _ in labelsets.available()] if keys is None else list(keys)
        self.sets = {k: labelsets.load(k).descriptions for k in keys}
        self._emb: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        # sentences already embedded with this encoder (the model's training space): not encoded again
        self._known = {} if known is None else dict(zip(known.sentences, known.sentence_embeddings))

    def _embedded(self, key: str):
        if key not in self._emb:
            ds = self.sets[key]
            sentences = [s for c in ds for s in ds[c]]
            owner = np.array([i for i, c in enumerate(ds) for _ in ds[c]], np.int64)
            new = [s for s in dict.fromkeys(sentences) if s not in self._known]
            if new:
                self._known.update(zip(new, self.encoder.encode(new)))
            emb = np.stack([self._known[s] for s in sentences]).astype(np.float32)
            self._emb[key] = (emb, owner, ds.categories)
        return self._emb[key]

    def matches(self, ctx: ClassContext, own: np.ndarray) -> list[tuple[str, str, str]]:
        """(set key, class, kind) of the same-named class and of the best-aligned class of every set."""
        same_name, aligned = [], []
        for key, ds in self.sets.items():
            same = ds.find(ctx.name)
            if same is not None:
                same_name.append((key, same, f"{key}, same name"))
            emb, owner, names = self._embedded(key)
            sim = sentence_set_similarity(own, np.zeros(len(own), np.int64), 1, emb, owner, len(names))[0]
            best = names[int(np.argmax(sim))]
            if best != same:
                aligned.append((key, best, f"{key}, aligned"))
        return same_name + aligned  # a class of the same name is the likelier meaning

    def proposals_for(self, ctx: ClassContext, own: np.ndarray) -> tuple[list[Proposal], list[Proposal]]:
        bundles, singles = [], []
        for key, c, kind in self.matches(ctx, own):
            sentences = self.sets[key][c]
            source = f"{key}: {c}"
            bundles.append(Proposal(ctx.name, tuple(s for s in sentences if s not in ctx.sentences), (), source, kind))
            singles += _add_and_replace(ctx, sentences, source, limit=6)
        return bundles, singles


class NameSource(ProposalSource):
    """For a class the trained classes do not fully explain (novelty > 0): its own name as one sentence
    (:data:`NAME_SENTENCE`), alone first, then added to its sentences.

    Why: such a class wins pixels mostly through the open-set credit (:mod:`prolab.novel_prior`), which
    reads the cosine of the class's *mean* sentence with the names of the ImageNet classes the backbone's
    classifier sees at a pixel. Long descriptions of a new class drift to what its kind shares ("four legs",
    "fur"); a short naming sentence sits near those names (the ``unseen_animals`` model, MSRC-v2 val: the
    six animals each by their name alone raise their mean IoU by about 6 points on either half; the name
    added to their sentences, by about 1.5). Classes the trained classes explain score through those
    (:mod:`prolab.alignment`) and get nothing from here, nor does a class already given by its name alone."""

    name = "name"

    def proposals(self, ctx: ClassContext) -> tuple[list[Proposal], list[Proposal]]:
        if ctx.novelty <= 0:
            return [], []
        sentence = NAME_SENTENCE.format(name=ctx.name)
        bundles = []
        if ctx.sentences != [sentence]:
            bundles.append(Proposal(ctx.name, (sentence,), tuple(ctx.sentences), "class name (replace all)",
                                    "class name, replace"))
        if sentence not in ctx.sentences:
            bundles.append(Proposal(ctx.name, (sentence,), (), "class name", "class name"))
        return bundles, []


#: The one sentence a class is given by its name (what a label set typed by hand starts with).
NAME_SENTENCE = "A photo of a {name}."


class PropertySource(ProposalSource):
    """Against the class it is confused with: the member sentences (nearest the centre first) of the
    properties that separate the two, and the removal of its sentences that sit in properties both use."""

    name = "properties"

    def __init__(self, trained_space, per_property: int = 2):
        self.trained, self.per_property = trained_space, per_property
        centres = trained_space.normalised_centers
        cos = np.einsum("sd,sd->s", trained_space.sentence_embeddings, centres[trained_space.sentence_property])
        self.members: dict[int, list[str]] = {}
        for i in np.argsort(-cos, kind="stable"):
            self.members.setdefault(int(trained_space.sentence_property[i]), []).append(trained_space.sentences[i])

    def proposals(self, ctx: ClassContext) -> tuple[list[Proposal], list[Proposal]]:
        if ctx.confused_with is None:
            return [], []
        singles = []
        for k in ctx.separating:
            source = f"property '{ctx.property_names[k]}' (not used by {ctx.confused_with})"
            singles += [Proposal(ctx.name, (s,), (), source) for s in self.members.get(k, [])[:self.per_property]
                        if s not in ctx.sentences]
        if len(ctx.sentences) > 1:
            singles += [Proposal(ctx.name, (), (s,), f"shared property '{ctx.property_names[p]}' with "
                                                    f"{ctx.confused_with}")
                        for s, p in ctx.sentence_property.items() if p in set(ctx.shared)]
        return [], singles


LLM_SYSTEM_PROMPT = """\
You improve the visual descriptions a semantic segmentation model uses to recognise a class in photos.
You are given the class's current sentences, the class the model confuses it with and the visual
properties the two share. Write 4 to 8 short sentences (3 to 12 words each) that describe what can be
SEEN of the class and that separate it from the confused class: shape, parts, material, texture,
colour, where it is found. Do not describe the confused class. Answer with a JSON list of strings only."""


def llm_messages(ctx: ClassContext, shared_names: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking an LLM for sentences that separate ``ctx``'s class from its confused class."""
    lines = [f"Class: {ctx.name}", "Current sentences:"] + [f"- {s}" for s in ctx.sentences]
    if ctx.confused_with:
        lines.append(f"Confused with: {ctx.confused_with}")
    if shared_names:
        lines.append("Properties they share:")
        lines += [f"- {p}" for p in shared_names]
    return [{"role": "system", "content": LLM_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


class LLMSource(ProposalSource):
    """Sentences from an OpenAI-compatible chat endpoint (:class:`prolab.llm.LLMConfig`), asked once per class
    and confused class. Any failure (no answer in time, an HTTP or connection error, an answer with no usable
    sentence) gives no proposal and is recorded in :attr:`skipped`."""

    name = "llm"

    def __init__(self, config, max_sentences: int = 8):
        if not config.is_configured:
            raise ProLabError(config.how_to_configure)
        self.config, self.max_sentences = config, max_sentences
        self._client = None
        self._answers: dict[tuple, list[str]] = {}
        self.skipped: list[str] = []
        self.requests = 0

    def ask(self, ctx: ClassContext) -> list[str]:
        """The LLM's sentences for ``ctx`` ([] on any failure, recorded in :attr:`skipped`)."""
        from prolab.llm_parse import parse_sentences

        shared = [ctx.property_names[p] for p in ctx.shared]
        key = (ctx.name, tuple(ctx.sentences), ctx.confused_with)
        if key in self._answers:
            return self._answers[key]
        sentences: list[str] = []
        try:
            import openai

            if self._client is None:
                self._client = self.config.make_client()
            self.requests += 1
            resp = self._client.chat.completions.create(
                model=self.config.model, messages=llm_messages(ctx, shared), temperature=self.config.temperature,
                **({"max_tokens": self.config.max_tokens} if self.config.max_tokens else {}))
            content = resp.choices[0].message.content if not isinstance(resp, str) else None
            sentences = parse_sentences(content) if isinstance(content, str) else []
            if not sentences:
                self.skipped.append(f"{ctx.name}: the LLM answer had no usable sentence")
        except openai.APITimeoutError:
            self.skipped.append(f"{ctx.name}: no LLM answer within {self.config.timeout:g} s")
        except (openai.OpenAIError, ProLabError, ValueError, AttributeError, IndexError, TypeError) as exc:
            # any other failure of the request or of the answer's shape: skipped, never fatal
            self.skipped.append(f"{ctx.name}: the LLM request failed ({_one_line(exc)})")
        sentences = sentences[:self.max_sentences]
        self._answers[key] = sentences
        return sentences

    def proposals(self, ctx: ClassContext) -> tuple[list[Proposal], list[Proposal]]:
        sentences = [s for s in self.ask(ctx) if s not in ctx.sentences]
        if not sentences:
            return [], []
        source = f"LLM ({self.config.model})"
        return [Proposal(ctx.name, tuple(sentences), (), source)], _add_and_replace(ctx, sentences, source)


def _one_line(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class KeptChange:
    """One kept edit: the class, the sentences in and out, the proposal's source and the mIoU change on each
    half (fractions, like :meth:`~prolab.eval_cache.EvalCache.rescore`'s)."""

    step: int  # the proposal's number (1 = the first tried)
    class_name: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    source: str
    search_delta: float
    guard_delta: float
    class_search_delta: float | None  # the edited class's own IoU change on the search half
    joint: int = 1  # classes edited together in this step (the deltas are the whole step's)

    def to_dict(self) -> dict:
        return {"step": self.step, "class": self.class_name, "added": list(self.added),
                "removed": list(self.removed), "source": self.source, "search_delta": self.search_delta,
                "guard_delta": self.guard_delta, "class_search_delta": self.class_search_delta,
                "joint": self.joint}


@dataclass(frozen=True)
class TrajectoryPoint:
    """The state after ``proposals`` proposals tried: both halves' mIoU of the descriptions kept so far."""

    proposals: int
    seconds: float
    search_miou: float
    guard_miou: float
    accepted: bool

    def to_dict(self) -> dict:
        return {"proposals": self.proposals, "seconds": round(self.seconds, 3), "search_miou": self.search_miou,
                "guard_miou": self.guard_miou, "accepted": self.accepted}


@dataclass
class SearchResult:
    """What :meth:`DescriptionSearch.run` found (see the module docstring)."""

    start: DescriptionSet
    descriptions: DescriptionSet
    kept: list[KeptChange]
    trajectory: list[TrajectoryPoint]
    search_before: dict
    search_after: dict
    guard_before: dict
    guard_after: dict
    proposals: int = 0
    seconds: float = 0.0
    evaluation_seconds: float = 0.0  # re-scoring the halves, all proposals together
    stop_reason: str = ""
    cancelled: bool = False
    skipped: list[str] = field(default_factory=list)  # LLM requests that gave nothing
    guard_rejected: list[int] = field(default_factory=list)  # proposals the guard half turned down

    @property
    def seconds_per_proposal(self) -> float:
        """Mean wall time of one proposal (proposing, re-scoring the search half and, when it gained, the
        guard half)."""
        return self.seconds / self.proposals if self.proposals else 0.0

    def rows(self) -> list[dict]:
        """The report: one dict per kept change (:meth:`KeptChange.to_dict`)."""
        return [k.to_dict() for k in self.kept]

    def per_class(self) -> list[dict]:
        """Each dataset class's IoU before and after on both halves (None: no IoU there)."""
        out = []
        for c in self.search_before["per_class_iou"]:
            out.append({"class": c, **{f"{half}_{when}": getattr(self, f"{half}_{when}")["per_class_iou"].get(c)
                                       for half in ("search", "guard") for when in ("before", "after")}})
        return out

    def to_dict(self) -> dict:
        """JSON-ready report: summary, kept changes, per-class IoU, trajectory and the improved descriptions."""
        return {"search_miou": {"before": self.search_before["miou"], "after": self.search_after["miou"]},
                "guard_miou": {"before": self.guard_before["miou"], "after": self.guard_after["miou"]},
                "images": {"search": self.search_before["images"], "guard": self.guard_before["images"]},
                "proposals": self.proposals, "seconds": round(self.seconds, 3),
                "seconds_per_proposal": round(self.seconds_per_proposal, 4),
                "evaluation_seconds": round(self.evaluation_seconds, 3),
                "stop_reason": self.stop_reason, "cancelled": self.cancelled, "skipped": list(self.skipped),
                "guard_rejected": list(self.guard_rejected),
                "kept": self.rows(), "per_class": self.per_class(),
                "trajectory": [p.to_dict() for p in self.trajectory],
                "descriptions": self.descriptions.to_dict()}


def format_report(result: SearchResult) -> str:
    """The kept changes as a text table (one row per kept proposal; mIoU deltas in points), then both halves
    before and after."""
    steps: dict[int, list[KeptChange]] = {}
    for k in result.kept:
        steps.setdefault(k.step, []).append(k)
    rows = [("#", "class", "change", "source", "search", "guard")]
    for step, ks in steps.items():
        k = ks[0]
        if len(ks) > 1:
            names = ", ".join(x.class_name for x in ks)
            name = names if len(names) <= 30 else f"{len(ks)} classes"
            change = f"+{sum(len(x.added) for x in ks)} / -{sum(len(x.removed) for x in ks)} sentences"
        else:
            name = k.class_name
            change = "; ".join([f"+ {s}" for s in k.added][:2] + [f"- {s}" for s in k.removed][:2])
            extra = len(k.added) + len(k.removed) - min(2, len(k.added)) - min(2, len(k.removed))
            change = change + (f" (+{extra} more)" if extra > 0 else "")
        change = change if len(change) <= 70 else change[:67] + "..."
        rows.append((str(step), name, change, k.source[:40], f"{100 * k.search_delta:+.2f}",
                     f"{100 * k.guard_delta:+.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if not result.kept:
        lines.append("(no change kept)")
    sb, sa = 100 * result.search_before["miou"], 100 * result.search_after["miou"]
    gb, ga = 100 * result.guard_before["miou"], 100 * result.guard_after["miou"]
    lines.append(f"search half ({result.search_before['images']} images): mIoU {sb:.2f} -> {sa:.2f} ({sa - sb:+.2f}); "
                 f"guard half ({result.guard_before['images']} images): {gb:.2f} -> {ga:.2f} ({ga - gb:+.2f})")
    lines.append(f"{result.proposals} proposals in {result.seconds:.1f} s ({1000 * result.seconds_per_proposal:.0f} ms "
                 f"each); stopped: {result.stop_reason}")
    for s in result.skipped:
        lines.append(f"skipped: {s}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the search
@dataclass(frozen=True)
class SearchSettings:
    """How long and how strictly to search. ``budget``: proposals to try (None: no bound); ``seconds``: wall
    time (None: no bound); at least one of the two. ``margin``: the least rise of the search half's mIoU (a
    fraction: 0.001 = 0.1 point) for a change to be kept. ``classes``: the only classes edited (None: all of the
    dataset's). ``per_visit``: proposals tried for a class before the search moves to the next."""

    budget: int | None = 200
    seconds: float | None = None
    seed: int = 0
    margin: float = 0.001
    classes: tuple[str, ...] | None = None
    per_visit: int = 6

    def __post_init__(self):
        if self.budget is None and self.seconds is None:
            raise ProLabError("Give the search a budget: a number of proposals or of seconds.")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise ProLabError(f"The budget must be a whole number of proposals, at least 1, got {self.budget!r}.")
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds)
                                             and self.seconds > 0):
            raise ProLabError(f"The time budget must be a positive number of seconds, got {self.seconds!r}.")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and 0 <= self.margin < 1):
            raise ProLabError(f"The margin must be a fraction of mIoU from 0 to 1, got {self.margin!r}.")
        if self.per_visit < 1:
            raise ProLabError(f"per_visit must be at least 1, got {self.per_visit}.")
        _seed(self.seed)


class DescriptionSearch:
    """The search over one model and one labelled set split in two (see the module docstring).

    ``search_half`` and ``guard_half``: :class:`~prolab.eval_cache.EvalCache` over disjoint images of one
    dataset (:func:`split_halves`); ``encoder``: the model's text encoder; ``sources``: proposal sources (default:
    trained classes, shipped sets, properties; add an :class:`LLMSource` for the LLM).
    """

    def __init__(self, model, search_half: EvalCache, guard_half: EvalCache, encoder,
                 settings: SearchSettings = SearchSettings(), sources: Sequence[ProposalSource] | None = None,
                 llm=None):
        if search_half.classes != guard_half.classes:
            raise ProLabError("The search and guard halves must be of one dataset (the same classes).")
        if model.label_space is None:
            raise ProLabError("The description search needs a property model with a label space.")
        self.model, self.search_half, self.guard_half = model, search_half, guard_half
        self.encoder, self.settings = encoder, settings
        self.trained = model.label_space
        if sources is None:
            sources = [ShippedSetSource(encoder, known=self.trained), TrainedClassSource(self.trained, encoder),
                       PropertySource(self.trained), NameSource()]
            if llm is not None and llm.is_configured:
                sources.append(LLMSource(llm))
        self.sources = list(sources)
        self.evaluation_seconds = 0.0
        self._aligned: tuple | None = None

    # ------------------------------------------------------------------ evaluation
    def _dataset_part(self, descriptions: DescriptionSet) -> DescriptionSet:
        return descriptions.subset(self.search_half.classes)

    def _trial(self, rescorer: HalfScorer, descriptions: DescriptionSet):
        t0 = time.perf_counter()
        try:
            return rescorer.trial(self._dataset_part(descriptions))
        finally:
            self.evaluation_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ proposals
    def _context(self, descriptions: DescriptionSet, space, metrics: dict, name: str) -> ClassContext:
        classes = list(metrics["classes"])
        m = np.asarray(metrics["confusion"], np.int64)
        i = classes.index(name)
        both = m[i] + m[:, i]
        both[i] = 0
        partner = classes[int(np.argmax(both))] if both.max() > 0 else None
        mh = space.multihot
        ci = space.class_index(name)
        mine = set(np.flatnonzero(mh[ci]).tolist())
        theirs = set(np.flatnonzero(mh[space.class_index(partner)]).tolist()) if partner else set()
        props = {s: int(p) for s, p, o in zip(space.sentences, space.sentence_property, space.sentence_class)
                 if o == ci}
        al = self._alignment(space)
        return ClassContext(name, descriptions[descriptions.find(name)], metrics["per_class_iou"].get(name), partner,
                            sorted(mine - theirs), sorted(mine & theirs), props, list(space.property_names),
                            float(al.novelty[ci]), tuple(t for t, _, _ in al.aligned(ci, len(al.trained_names))))

    def _alignment(self, space) -> Alignment:
        """The :class:`~prolab.alignment.Alignment` of ``space`` with the trained classes, computed once per
        space (every class of one state of the search is proposed for from one space)."""
        if self._aligned is None or self._aligned[0] is not space:
            self._aligned = (space, Alignment.between(space, self.trained))
        return self._aligned[1]

    def proposals(self, descriptions: DescriptionSet, space, metrics: dict, name: str,
                  rng: np.random.Generator, singles: bool = True) -> list[Proposal]:
        """Every proposal for class ``name`` in the order tried: the sources' bundles, then (with ``singles``)
        their single edits shuffled with ``rng``."""
        ctx = self._context(descriptions, space, metrics, name)
        own = space.sentence_embeddings[np.asarray(space.sentence_class) == space.class_index(name)]
        per_source, single = [], []
        for source in self.sources:
            if isinstance(source, ShippedSetSource):
                b, s = source.proposals_for(ctx, own)
            else:
                b, s = source.proposals(ctx)
            per_source.append(b)
            single += s
        # the sources' whole sets taken in turn (each source's best first), then the single edits
        bundles = [b[i] for i in range(max(map(len, per_source), default=0)) for b in per_source if i < len(b)]
        if not singles:
            return bundles
        if len(ctx.sentences) > 1:  # removing one sentence is always a candidate
            single += [Proposal(name, (), (s,), "remove") for s in ctx.sentences]
        order = rng.permutation(len(single)) if single else []
        return bundles + [single[i] for i in order]

    def joint_proposals(self, descriptions: DescriptionSet, space, metrics: dict,
                        classes: Sequence[str]) -> list[JointProposal]:
        """Whole-set proposals for ``classes``: for each kind of the sources' whole-sentence-set proposals (the
        best-aligned trained class, the class of the same name in one shipped set, ...), every class's proposal
        of that kind as one edit; kinds that reach more classes first."""
        kinds: dict[str, list[Proposal]] = {}
        for name in classes:
            seen = set()
            for p in self.proposals(descriptions, space, metrics, name, np.random.default_rng(0), singles=False):
                if p.kind and p.kind not in seen:  # a class's first proposal of each kind
                    seen.add(p.kind)
                    kinds.setdefault(p.kind, []).append(p)
        order = sorted(kinds, key=lambda k: (-len(kinds[k]), list(kinds).index(k)))
        return [JointProposal(tuple(kinds[k]), f"{k}, {len(kinds[k])} classes") for k in order
                if len(kinds[k]) > 1 or len(classes) == 1]

    # ------------------------------------------------------------------ the loop
    def run(self, descriptions: DescriptionSet, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None) -> SearchResult:
        """Search from ``descriptions`` (a :class:`~prolab.descriptions.DescriptionSet` covering the dataset's
        classes; other classes are kept as they are). ``progress(fraction, message)`` after each proposal;
        ``cancel`` (anything with ``is_set()``) stops the search between proposals."""
        st = self.settings
        t0 = time.perf_counter()
        missing = descriptions.missing(self.search_half.classes)
        if missing:
            raise ProLabError(f"The descriptions have no entry for {name_list(missing)} "
                              f"(classes of {self.search_half.name}).")
        editable = list(self.search_half.classes)
        if st.classes is not None:
            unknown = [c for c in st.classes if c not in editable]
            if unknown:
                raise ProLabError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a class of "
                                  f"{self.search_half.name}; pick from {', '.join(editable)}.")
            editable = [c for c in editable if c in st.classes]
        current = descriptions
        t1 = time.perf_counter()
        searcher = HalfScorer(self.search_half, self.encoder, self._dataset_part(current))
        guard = HalfScorer(self.guard_half, self.encoder, self._dataset_part(current))
        self.evaluation_seconds += time.perf_counter() - t1
        search_m = search_before = searcher.metrics
        guard_m = guard_before = guard.metrics
        kept: list[KeptChange] = []
        trajectory = [TrajectoryPoint(0, time.perf_counter() - t0, search_m["miou"], guard_m["miou"], False)]
        tried: set[tuple] = set()
        blocked: list[int] = []  # proposals that gained on the search half but lost on the guard half
        n = 0

        def over_budget() -> str:
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if st.budget is not None and n >= st.budget:
                return f"budget of {st.budget} proposals used"
            if st.seconds is not None and time.perf_counter() - t0 >= st.seconds:
                return f"time budget of {st.seconds:g} s used"
            return ""

        def fraction() -> float:
            parts = []
            if st.budget is not None:
                parts.append(n / st.budget)
            if st.seconds is not None:
                parts.append((time.perf_counter() - t0) / st.seconds)
            return min(1.0, max(parts))

        def attempt(proposal) -> bool | None:
            """Try one proposal: None when it changes nothing new, else whether it was kept."""
            nonlocal current, search_m, guard_m, n
            candidate = proposal.apply_to(current)
            if candidate is None:
                return None
            changed = [c for c in editable if candidate[candidate.find(c)] != current[current.find(c)]]
            key = tuple((c, tuple(candidate[candidate.find(c)])) for c in changed)
            if not changed or key in tried:
                return None
            tried.add(key)
            n += 1
            trial_s = self._trial(searcher, candidate)
            gain = trial_s.metrics["miou"] - search_m["miou"]
            ok = False
            if gain >= st.margin and gain > 0:
                trial_g = self._trial(guard, candidate)
                guard_gain = trial_g.metrics["miou"] - guard_m["miou"]
                if guard_gain < -GUARD_TOLERANCE:
                    blocked.append(n)
                else:
                    ok = True
                    for c in changed:
                        was, now = current[current.find(c)], candidate[candidate.find(c)]
                        before_c, after_c = search_m["per_class_iou"].get(c), trial_s.metrics["per_class_iou"].get(c)
                        kept.append(KeptChange(n, c, tuple(x for x in now if x not in was),
                                               tuple(x for x in was if x not in now), proposal.source, gain,
                                               guard_gain, None if before_c is None or after_c is None
                                               else after_c - before_c, len(changed)))
                    searcher.commit(trial_s)
                    guard.commit(trial_g)
                    current, search_m, guard_m = candidate, trial_s.metrics, trial_g.metrics
            trajectory.append(TrajectoryPoint(n, time.perf_counter() - t0, search_m["miou"], guard_m["miou"], ok))
            if progress is not None:
                progress(fraction(), f"{n} proposals, {len({k.step for k in kept})} kept: search half mIoU "
                                     f"{100 * search_m['miou']:.2f}, guard half {100 * guard_m['miou']:.2f}")
            return ok

        # 1. the whole label set at once, one kind of proposal for every class, while that gains
        stop = over_budget()
        while not stop:
            space = self.trained.edited(self._dataset_part(current), self.encoder)
            accepted = False
            for joint in self.joint_proposals(current, space, search_m, editable):
                stop = over_budget()
                if stop:
                    break
                if attempt(joint):
                    accepted = True
                    break
            if not accepted:
                break
        # 2. one class at a time: the classes that lose most first, a round trying each class's best
        # proposal, the next round its next two, ... (no class takes the whole budget)
        queues: dict[str, list[Proposal]] = {}
        queue_state: dict[str, tuple] = {}
        visited: dict[str, int] = {}
        version = 0
        while not stop:
            space = self.trained.edited(self._dataset_part(current), self.encoder)
            iou, pixels = search_m["per_class_iou"], search_m["per_class_pixels"]
            ranked = sorted(editable, key=lambda c: (visited.get(c, 0), pixels.get(c, 0) == 0,
                                                     iou.get(c) if iou.get(c) is not None else 1.0, c))
            accepted = False
            exhausted = True
            for name in ranked:
                state = (tuple(current[current.find(name)]), version)
                if queue_state.get(name) != state:
                    rng = np.random.default_rng([st.seed, editable.index(name), version])
                    queues[name] = self.proposals(current, space, search_m, name, rng)
                    queue_state[name] = state
                visited[name] = visited.get(name, 0) + 1
                visits = 0
                while queues[name] and visits < min(st.per_visit, visited[name]):
                    stop = over_budget()
                    if stop:
                        break
                    result = attempt(queues[name].pop(0))
                    if result is None:
                        continue
                    exhausted = False
                    visits += 1
                    if result:
                        accepted = True
                        version += 1
                        break
                if stop or accepted:
                    break
            if not stop and not accepted and exhausted:  # a whole round found nothing new to try
                stop = "no proposal left"
        skipped = [s for src in self.sources for s in getattr(src, "skipped", [])]
        return SearchResult(descriptions, current, kept, trajectory, search_before, search_m, guard_before, guard_m,
                            proposals=n, seconds=time.perf_counter() - t0, evaluation_seconds=self.evaluation_seconds,
                            stop_reason=stop, cancelled=stop == "cancelled", skipped=skipped,
                            guard_rejected=blocked)


def improve_descriptions(model, cache: EvalCache, descriptions: DescriptionSet, encoder=None,
                         settings: SearchSettings = SearchSettings(), split_seed: int = 0, llm=None,
                         progress: ProgressFn | None = None,
                         cancel: threading.Event | None = None) -> SearchResult:
    """Split ``cache`` in halves (:func:`split_halves` with ``split_seed``) and run a :class:`DescriptionSearch`
    from ``descriptions``; ``llm``: an :class:`~prolab.llm.LLMConfig` to also ask an LLM (when configured)."""
    from prolab.encoder import TextEncoder

    space = model.label_space
    if space is None:
        raise ProLabError("The description search needs a property model with a label space.")
    encoder = encoder or TextEncoder(space.encoder_id, template=space.template)
    search, guard = split_halves(cache, split_seed)
    return DescriptionSearch(model, search, guard, encoder, settings, llm=llm).run(descriptions, progress, cancel)


def save_report(result: SearchResult, path) -> None:
    """Write :meth:`SearchResult.to_dict` as JSON (NaN as null), atomically."""
    from prolab.descriptions import write_text_atomic

    write_text_atomic(path, json.dumps(json_ready(result.to_dict()), indent=1, ensure_ascii=False) + "\n")
