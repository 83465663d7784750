"""Each user's evaluations in the app: a history per labelled set to compare and restore
(:class:`EvalHistory`), and a session's Evaluate panel (:class:`EvalState`: those histories and the cache of
the set the user uploaded). What is shared between users is in :mod:`app.services.evaluation`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from cachetools import LRUCache

from app.services.description_search import SearchState
from prolab.caches import CACHE_SIZES, CacheSizes
from prolab.descriptions import DescriptionSet
from prolab.edit_session import LabelSetChoice
from prolab.errors import ProLabError
from prolab.eval_cache import EvalCache
from prolab.eval_report import Comparison, compare

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


@dataclass(eq=False)
class EvalState:
    """One user's Evaluate panel: an evaluation history per labelled set (model, set, size), the set
    shown (``target``), the cache of an uploaded set, this user's own: ``(key, EvalCache)``, and the description
    search (:class:`~app.services.description_search.SearchState`). ``sizes``:
    how many sets have a history (``eval_targets``) and evaluations each keeps (``eval_records``)."""

    sizes: CacheSizes = CACHE_SIZES
    histories: LRUCache = field(init=False)  # target -> EvalHistory, least recently evaluated dropped
    target: tuple | None = None
    upload: tuple[tuple, EvalCache] | None = None
    search: SearchState = field(default_factory=SearchState)  # "Improve these descriptions"

    revision: int = 0  # goes up with every evaluation kept (whoever saves the histories writes them again)

    def __post_init__(self):
        self.histories = LRUCache(maxsize=self.sizes.eval_targets)

    def history(self, target: tuple) -> EvalHistory:
        """The history of ``target`` (created on first use; the least recently evaluated set's is dropped
        beyond ``sizes.eval_targets``), which becomes the one shown."""
        history = self.histories.get(target)  # a hit becomes the most recently used
        if history is None:
            history = self.histories[target] = EvalHistory(self.sizes.eval_records)
        self.target = target
        self.revision += 1  # a record is added to it next
        return history

    def current(self) -> EvalHistory:
        """The history of the set evaluated last."""
        if self.target not in self.histories:
            raise ProLabError("Nothing evaluated yet: press Evaluate first.")
        return self.histories[self.target]

    @property
    def nbytes(self) -> int:
        """Bytes of the uploaded set's cache (the histories hold metrics only); read once, as other threads
        read it without the session's lock (the memory bound)."""
        upload = self.upload
        return upload[1].nbytes if upload is not None else 0

    def clear(self) -> None:
        self.histories.clear()
        self.target = self.upload = None
        self.search.clear()

    def export_data(self) -> dict:
        """The histories as JSON-able data (records: version, metrics, descriptions, note, label set), least
        recently evaluated first; an uploaded set's cached outputs are not in it."""
        def record(r: EvalRecord) -> dict:
            choice = r.meta.get("choice")
            return {"version": r.version, "metrics": r.metrics, "note": r.note, "created": r.created,
                    "descriptions": None if r.descriptions is None else r.descriptions.to_dict(),
                    "choice": choice.to_data() if isinstance(choice, LabelSetChoice) else None}

        return {"target": None if self.target is None else list(self.target),
                "histories": [{"target": list(t), "next": h._next, "records": [record(r) for r in h.records]}
                              for t, h in self.histories.items()]}

    def restore_data(self, data) -> None:
        """Put back :meth:`export_data`'s histories (data in another form is a :class:`ProLabError` and
        changes nothing)."""
        if data is None:
            return
        histories = LRUCache(maxsize=self.sizes.eval_targets)
        try:
            for item in data["histories"]:
                history = EvalHistory(self.sizes.eval_records)
                for r in item["records"]:
                    choice = LabelSetChoice.from_data(r["choice"]) if r.get("choice") is not None else None
                    ds = None if r.get("descriptions") is None else DescriptionSet(r["descriptions"])
                    if not isinstance(r["metrics"], dict):
                        raise TypeError("metrics")
                    history.records.append(EvalRecord(int(r["version"]), r["metrics"], ds, str(r.get("note", "")),
                                                      float(r.get("created", 0.0)), {"choice": choice}))
                del history.records[:-history.max_records]
                history._next = max([int(item["next"]), *(r.version + 1 for r in history.records)])
                histories[_target(item["target"])] = history
            target = None if data.get("target") is None else _target(data["target"])
        except ProLabError as exc:
            raise ProLabError(f"Your saved evaluations could not be read back: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProLabError("Your saved evaluations are in a form this version cannot read, so they were not "
                              "restored.") from None
        self.histories, self.target = histories, target if target in histories else None


def _target(items) -> tuple:
    """A history's key read back: JSON keeps a tuple of strings and numbers as a list."""
    if not isinstance(items, list) or not all(isinstance(i, (str, int, float, type(None))) for i in items):
        raise TypeError("target")
    return tuple(items)
