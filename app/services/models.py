"""The models the app serves: loading them (once; the last few kept), what a shared server may load,
the shipped models and their cards."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache
from huggingface_hub import hf_hub_download

from app.config import AppConfig
from app.services.text import TextService
from prolab.assets import DEFAULT_MODEL_DIR, MODELS_DIR
from prolab.errors import ProLabError
from prolab.labelsets import MODEL_KEY
from prolab.labelspace import LabelSpace, suggested_k
from prolab.limits import control_character
from prolab.model import PropertySegmenter, untrained_model
from prolab.model.segmenter import resolve_checkpoint

#: Longest model directory or hub id accepted (Linux paths: 4,096 bytes).
MAX_SOURCE_CHARS = 1024


@dataclass
class ModelEntry:
    """A loaded model with what the UI says about it."""

    model: PropertySegmenter | None  # None only in the banner's placeholder before the model loads
    source: str  # path or hub id as given
    directory: Path | None
    untrained: bool = False
    card: str = ""

    @property
    def name(self) -> str:
        """A local model's folder name, else the hub id: never the server's full path."""
        local = self.directory is not None and Path(self.source).expanduser().is_dir()
        return self.directory.name if local else self.source

    @property
    def title(self) -> str:
        """The model card's title (its first ``# `` heading), else :attr:`name`."""
        if self.untrained:
            return "untrained random model"
        return card_heading(self.card) or self.name


class ModelService:
    """Loaded models, shared read-only by every user."""

    def __init__(self, config: AppConfig, text: TextService):
        self.config, self.text = config, text
        self._lock = threading.RLock()
        # the least recently used is dropped beyond config.caches.models (the untrained placeholder counts)
        self._models: LRUCache[str, ModelEntry] = LRUCache(maxsize=config.caches.models)

    @property
    def default_source(self) -> str | None:
        if self.config.model:
            return self.config.model
        return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "config.json").is_file() else None

    def default(self) -> ModelEntry:
        """The start-up model (``--model``, else the shipped default, else an untrained one)."""
        src = self.default_source
        if not src:
            return self._untrained()
        try:
            return self.load(src, check_allowed=False)
        except ProLabError as exc:  # say which model, and that another one can still be loaded
            raise ProLabError(f"The start-up model cannot be loaded: {exc} Load another one in the "
                              "'Model & help' tab.") from None

    def check_allowed(self, source: str) -> None:
        """On a shared server (see :attr:`AppConfig.restricts_models`) only the shipped models and the
        ones named at start-up load. The answer is the same whether or not ``source`` exists, so the
        server's file system cannot be probed."""
        if not self.config.restricts_models:
            return
        named = [self.config.model] if self.config.model else []
        if source in named:
            return
        roots = [MODELS_DIR, *(Path(d) for d in self.config.model_dirs),
                 *(Path(m) for m in named if Path(m).expanduser().is_dir())]
        resolved = Path(source).expanduser().resolve()  # symlinks and ".." resolved before comparing
        if any(resolved.is_relative_to(r.expanduser().resolve()) for r in roots):
            return
        raise ProLabError("This server only loads the shipped models and the ones named at start-up "
                          "(--model, --model-dir); its operator can allow others with --allow-any-model.")

    def load(self, source: str, check_allowed: bool = True) -> ModelEntry:
        """Load (once) a checkpoint directory or hub id; the last few (``config.caches.models``) stay in memory."""
        source = str(source).strip()
        if not source:
            raise ProLabError("Give a model directory or a Hugging Face id (owner/name).")
        if len(source) > MAX_SOURCE_CHARS or control_character(source):
            raise ProLabError(f"A model directory or Hugging Face id is a path of at most {MAX_SOURCE_CHARS} "
                              "plain characters.")
        if check_allowed:
            self.check_allowed(source)
        with self._lock:
            entry = self._models.get(source)  # a hit becomes the most recently used
        if entry is not None:
            return entry
        directory = resolve_checkpoint(source)
        model = PropertySegmenter.from_pretrained(directory)
        entry = ModelEntry(model, source, directory, card=read_model_card(directory, source))
        with self._lock:
            self._models[source] = entry
        return entry

    def _untrained(self) -> ModelEntry:
        """A random compact model over the default label set, its label space cached on disk."""
        with self._lock:
            if "<untrained>" in self._models:
                return self._models["<untrained>"]
            text = self.text
            ls = text.label_set(self.config.label_set if self.config.label_set != MODEL_KEY else "ade20k_150")
            enc = text.encoder()
            k = suggested_k(ls.descriptions.num_sentences)
            cache = text.cache_dir() / "app" / f"untrained-{ls.key}-{k}"
            space = None
            if (cache / "labelspace.json").is_file():
                try:
                    space = LabelSpace.load(cache, encoder=enc)
                    if space.descriptions().to_dict() != ls.descriptions.to_dict():
                        space = None
                except ProLabError:
                    space = None
            if space is None:
                space = LabelSpace.build(ls.descriptions, enc, k=k)
                space.save(cache)
            model = untrained_model(space, input_size=self.config.inference_size or 512)
            entry = ModelEntry(model, "untrained", None, untrained=True, card=UNTRAINED_CARD)
            self._models["<untrained>"] = entry
            return entry

    def inference_size(self, entry: ModelEntry) -> int:
        """The network input size the app runs ``entry`` at (``--inference-size`` wins)."""
        return self.config.inference_size or entry.model.config.input_size


UNTRAINED_CARD = """### Untrained random model
No trained model was found (looked for `assets/models/default/`), so the app runs a small **randomly
initialised** compact CNN. Everything works, but the segmentations are **meaningless**.
Train one with `python -m prolab train --config configs/default_property.yaml` or load one in this tab.
"""


def card_heading(card: str) -> str:
    """A model card's title: its first ``# `` heading without the trailing ``(`path`)``."""
    line = next((ln for ln in card.splitlines() if ln.startswith("# ")), "")
    return line[2:].split("(")[0].strip().strip("`")


def card_pitch(card: str) -> str:
    """A model card's one-line pitch: its first quoted (``> ``) line."""
    return next((ln[2:].strip() for ln in card.splitlines() if ln.startswith("> ")), "")


def shipped_models() -> list[tuple[str, str]]:
    """``(label, name)`` for every model under ``assets/models``, the default first: the label is the
    model card's title and its one-line pitch, the name its folder's (never the server's path; see
    :func:`shipped_model_dir`)."""
    found = []
    for d in sorted(p for p in MODELS_DIR.glob("*") if (p / "config.json").is_file()):
        card = d / "MODEL_CARD.md"
        text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else ""
        title, pitch = card_heading(text) or d.name, card_pitch(text)
        found.append((f"{title}: {pitch}" if pitch else title, d.name))
    return sorted(found, key=lambda item: item[1] != DEFAULT_MODEL_DIR.name)


def shipped_model_dir(name: str) -> Path:
    """The folder of the shipped model ``name`` (a value of :func:`shipped_models`)."""
    if name not in {n for _, n in shipped_models()}:
        names = ", ".join(n for _, n in shipped_models())
        typed = str(name)
        if "/" in typed or "\\" in typed or len(typed) > 80:  # a path or a wall of text: not repeated back
            raise ProLabError(f"Shipped models are picked by name ({names}); to load a model folder, type it in "
                              "the Model tab's \"Load a model\" box.")
        raise ProLabError(f"No shipped model {typed!r}; pick one of the list ({names}).")
    return MODELS_DIR / name


def shipped_name(source: str | None) -> str | None:
    """The shipped model's name when ``source`` is one (the dropdown's value), else None."""
    if not source or not Path(source).expanduser().is_dir():
        return None
    folder = Path(source).expanduser().resolve()
    return folder.name if folder.parent == MODELS_DIR.resolve() and (folder / "config.json").is_file() else None


def read_model_card(directory: Path, source: str) -> str:
    """``MODEL_CARD.md`` or ``README.md`` of a model directory (hub: fetched when online)."""
    for name in ("MODEL_CARD.md", "README.md"):
        p = Path(directory) / name
        if p.is_file():
            return p.read_text(encoding="utf-8", errors="replace")
    if not Path(source).expanduser().is_dir():
        try:
            return Path(hf_hub_download(source, "README.md")).read_text(encoding="utf-8", errors="replace")
        except Exception:  # offline or no card: the card is optional
            pass
    return "_This model has no model card (MODEL_CARD.md or README.md)._"


