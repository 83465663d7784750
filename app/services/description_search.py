"""Each user's description search in the app ("Improve these descriptions", Evaluate tab): the run in
progress, which the Cancel button stops through its ``threading.Event`` (the library checks it between
proposals), and the last result, which Apply turns into the user's edits. The search itself is
:func:`prolab.description_search.improve_descriptions`; it runs outside the session's lock, so this state
has its own small lock."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prolab.description_search import SearchResult
from prolab.edit_session import LabelSetChoice
from prolab.errors import ProLabError


@dataclass(frozen=True)
class SearchRun:
    """A finished (or cancelled) search: its result, the label set it searched and the labelled set's name."""

    result: SearchResult
    choice: LabelSetChoice
    label_set_name: str
    set_name: str


@dataclass(eq=False)
class SearchState:
    """One session's search: at most one runs at a time; ``last`` is the result Apply uses."""

    last: SearchRun | None = None
    _cancel: threading.Event | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def start(self) -> threading.Event:
        """A new run's cancel event; a readable error while another run of this session is in progress."""
        with self._lock:
            if self._cancel is not None:
                raise ProLabError("A search is already running for these descriptions: wait for it, or press "
                                  "Cancel.")
            self._cancel = threading.Event()
            return self._cancel

    def finish(self, run: SearchRun | None) -> None:
        """The run is over: keep ``run`` (None: it failed, the previous result stays) for Apply."""
        with self._lock:
            self._cancel = None
            if run is not None:
                self.last = run

    def cancel(self) -> bool:
        """Ask the running search to stop after its current proposal; False when none runs."""
        with self._lock:
            if self._cancel is None:
                return False
            self._cancel.set()
            return True

    def clear(self) -> None:
        """Stop a running search and forget the result (the session is released)."""
        self.cancel()
        self.last = None
