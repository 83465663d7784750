"""The text side every user shares: sentence encoders, the shipped label sets and the label spaces derived
from unedited label sets, each loaded once per process and read-only afterwards."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from cachetools import LRUCache

from app.config import AppConfig
from prolab import labelsets
from prolab.caches import CACHE_SIZES, default_cache_dir
from prolab.descriptions import DescriptionSet
from prolab.encoder import DEFAULT_ENCODER, DEFAULT_TEMPLATE, TextEncoder
from prolab.labelsets import MODEL_KEY, MODEL_NAME, LabelSet
from prolab.labelspace import LabelSpace
from prolab.edit_session import CUSTOM_KEY

CUSTOM_LABEL = "Custom (upload a descriptions JSON)"


class SharedSpaces:
    """Label spaces derived from unedited label sets, shared read-only between users' workbenches
    (a :class:`prolab.edit_session.SpaceStore`; thread-safe).

    Keyed by identity of the model and the descriptions object (entries keep both alive, so an id is
    never reused while its entry exists); the least recently used of ``size`` entries is dropped.
    """

    def __init__(self, size: int = CACHE_SIZES.shared_spaces):
        self.size = size
        # (id(model), id(descriptions)) -> (model, descriptions, space): the entry holds both objects
        self._items: LRUCache[tuple[int, int], tuple] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def get_or_build(self, model, descriptions: DescriptionSet, build: Callable[[], LabelSpace]) -> LabelSpace:
        key = (id(model), id(descriptions))
        with self._lock:
            hit = self._items.get(key)  # a hit becomes the most recently used
        if hit is not None and hit[0] is model and hit[1] is descriptions:
            return hit[2]
        space = build()  # outside the lock: two users may build the same space once each, harmlessly
        with self._lock:
            self._items[key] = (model, descriptions, space)
        return space


class TextService:
    """Encoders (one per encoder id and template; their in-memory layer serves every user), shipped label
    sets (loaded once, so every user scores the very same description objects) and :class:`SharedSpaces`."""

    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.RLock()
        self._encoders: dict[tuple[str, str], TextEncoder] = {}
        self._label_sets: dict[str, LabelSet] = {}
        self.shared_spaces = SharedSpaces(config.caches.shared_spaces)

    def cache_dir(self) -> Path:
        return Path(self.config.cache_dir) if self.config.cache_dir else default_cache_dir()

    def encoder(self, encoder_id: str | None = None, template: str | None = None) -> TextEncoder:
        """The shared text encoder for (id, template); the network itself loads on first use."""
        key = (encoder_id or DEFAULT_ENCODER, template or DEFAULT_TEMPLATE)
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = TextEncoder(key[0], template=key[1], cache_dir=self.cache_dir(),
                                                  memory_items=self.config.caches.encoder_sentences)
            return self._encoders[key]

    def encoder_for(self, model) -> TextEncoder | None:
        """The encoder of ``model``'s label space (None for a category model)."""
        if model.config.supervision != "property":
            return None
        space = model.label_space
        if space is not None:
            return self.encoder(space.encoder_id, space.template)
        return self.encoder(model.config.encoder_id, model.config.template)

    def label_set(self, key: str) -> LabelSet:
        """A shipped label set, loaded once."""
        with self._lock:
            if key not in self._label_sets:
                self._label_sets[key] = labelsets.load(key)
            return self._label_sets[key]

    @staticmethod
    def label_set_choices() -> list[tuple[str, str]]:
        """Dropdown choices ``(label, key)``: the shipped sets, the model's own classes, custom."""
        return [(f"{name} ({key})", key) for key, name in labelsets.available()] + [
            (MODEL_NAME, MODEL_KEY), (CUSTOM_LABEL, CUSTOM_KEY)]
