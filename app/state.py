"""App configuration, shared read-only resources and per-user session state.

Shared between users (read-only after loading, guarded by locks while loading): the text
encoders, loaded models and the shipped label sets. Everything a user changes lives in their own
:class:`Session` (kept in a ``gr.State``), so two browser tabs never see each other's work.
"""
from __future__ import annotations

import functools
import gc
import logging
import os
import shutil
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from prolab.assets import DEFAULT_MODEL_DIR, MODELS_DIR
from prolab.errors import ProLabError

log = logging.getLogger("prolab.app")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Evaluation caches of the shared datasets kept for all users together (least recently used dropped).
SHARED_EVAL_CACHES = 2
#: Labelled sets (model, set, size) whose evaluation history one session keeps; evaluations kept per set.
MAX_EVAL_TARGETS = 4
MAX_EVAL_RECORDS = 50
MODEL_LABEL = "Model's training classes"
CUSTOM_LABEL = "Custom (upload a descriptions JSON)"


@dataclass
class AppConfig:
    """Everything ``python app.py`` can set."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    model: str | None = None  # local dir or hub id; None: assets/models/default, else untrained
    label_set: str = "ade20k_150"
    inference_size: int | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key_env: str = "OPENAI_API_KEY"
    cache_dir: str | None = None
    open_browser: bool = False
    session_ttl: float = 1800.0  # seconds a user's state is kept after their last action
    max_sessions: int = 40  # sessions holding an image at once; the least recently used is released first
    session_memory_mb: float = 2048.0  # and the arrays all sessions hold together (uploaded sets' caches too)
    model_dirs: list[str] = field(default_factory=list)  # where /load_model may load from when shared
    allow_any_model: bool = False  # shared servers may load any directory or hub id
    data_root: str | None = None  # labelled sets for the Evaluate tab (None: $PROLAB_DATA or ../shared/datasets)

    @property
    def is_shared(self) -> bool:
        """Reachable from other machines (``--share`` or a non-loopback ``--host``)."""
        return self.share or self.host not in LOOPBACK_HOSTS

    @property
    def restricts_models(self) -> bool:
        """Whether loading is limited to the shipped models and those named at start-up."""
        return self.is_shared and not self.allow_any_model

    def llm_config(self):
        from prolab.llm import LLMConfig

        extra = {"cache_dir": Path(self.cache_dir) / "llm"} if self.cache_dir else {}
        return LLMConfig.from_env(model=self.llm_model, base_url=self.llm_base_url,
                                  api_key=os.environ.get(self.llm_api_key_env) or None, **extra)


@dataclass
class ModelEntry:
    """A loaded model with what the UI says about it."""

    model: object
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


def _import_before_threads() -> None:
    """Import, in one thread and before the server starts, what the warm-up thread (scikit-learn) and a
    user's first plot (plotly) both import: narwhals' subpackages import each other, so two threads
    importing it at once can deadlock (``_DeadlockError: ... _ModuleLock('narwhals.stable.v2')``)."""
    try:
        import narwhals.stable  # noqa: F401  (v1 and v2)
    except ImportError:  # plotly and scikit-learn versions that do not use it
        pass


class Resources:
    """Process-wide, lazily loaded, shared read-only objects."""

    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.RLock()
        self._encoders: dict[tuple[str, str], object] = {}
        self._models: OrderedDict[str, ModelEntry] = OrderedDict()
        self._label_sets: dict[str, object] = {}
        self.warm_error: str | None = None
        from prolab.workbench import SharedSpaces

        self.shared_spaces = SharedSpaces()  # unedited label sets' spaces, held once for all users
        from prolab.eval_cache import EvalCachePool

        self.eval_caches = EvalCachePool(SHARED_EVAL_CACHES)  # the shared datasets' model outputs
        self._sessions: weakref.WeakSet = weakref.WeakSet()
        self._sweeper: threading.Thread | None = None
        _import_before_threads()

    # -------------------------------------------------------------- models
    @property
    def default_model_source(self) -> str | None:
        if self.config.model:
            return self.config.model
        return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "config.json").is_file() else None

    def default_model(self) -> ModelEntry:
        src = self.default_model_source
        if not src:
            return self._untrained_model()
        try:
            return self.load_model(src, check_allowed=False)
        except ProLabError as exc:  # say which model, and that another one can still be loaded
            raise ProLabError(f"The start-up model cannot be loaded: {exc} Load another one in the "
                              "'Model & help' tab.") from None

    def check_model_allowed(self, source: str) -> None:
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

    def load_model(self, source: str, check_allowed: bool = True) -> ModelEntry:
        """Load (once) a checkpoint directory or hub id; the last three stay in memory."""
        source = str(source).strip()
        if not source:
            raise ProLabError("Give a model directory or a Hugging Face id (owner/name).")
        if check_allowed:
            self.check_model_allowed(source)
        with self._lock:
            if source in self._models:
                self._models.move_to_end(source)
                return self._models[source]
        from prolab.model import PropertySegmenter
        from prolab.model.segmenter import resolve_checkpoint

        directory = resolve_checkpoint(source)
        model = PropertySegmenter.from_pretrained(directory)
        entry = ModelEntry(model, source, directory, card=read_model_card(directory, source))
        with self._lock:
            self._models[source] = entry
            while len(self._models) > 3:
                self._models.popitem(last=False)
        return entry

    def _untrained_model(self) -> ModelEntry:
        """A random compact model over the default label set, its label space cached on disk."""
        with self._lock:
            if "<untrained>" in self._models:
                return self._models["<untrained>"]
            from prolab.labelspace import LabelSpace
            from prolab.workbench import suggested_k, untrained_model

            ls = self.label_set(self.config.label_set if self.config.label_set != "model" else "ade20k_150")
            enc = self.encoder()
            k = suggested_k(ls.descriptions.num_sentences)
            cache = self.cache_dir() / "app" / f"untrained-{ls.key}-{k}"
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

    # -------------------------------------------------------------- sessions
    def track(self, session: "Session") -> None:
        """Note a user action on ``session``. Sessions idle for ``session_ttl`` are released by a
        background sweeper: gr.State's own expiry does it for open tabs, but gradio keeps the state
        of a closed tab (or a finished API client) for an hour whatever the TTL."""
        session.last_used, session.released = time.monotonic(), False
        with self._lock:
            self._sessions.add(session)
            if self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep_forever, name="prolab-sessions", daemon=True)
                self._sweeper.start()
        self.evict_beyond_cap(keep=session)

    def evict_beyond_cap(self, keep: "Session | None" = None) -> int:
        """Release the least recently used sessions while more than ``max_sessions`` hold state (a bound
        on memory however fast new sessions arrive); ``keep`` (the one acting now) never goes, nor does a
        session that is busy. Each released one is marked ``evicted``: its user is told on their next
        action. Returns how many were released."""
        with self._lock:
            live = sorted((s for s in self._sessions if not s.released), key=lambda s: s.last_used)
        excess, done = len(live) - self.config.max_sessions, 0
        held = sum(s.nbytes for s in live)
        budget = self.config.session_memory_mb * 2 ** 20
        for s in live:
            if done >= excess and held <= budget:
                break
            if s is keep or not s.lock.acquire(blocking=False):
                continue
            try:
                if not s.released:
                    held -= s.nbytes
                    release_session(s, reason="evicted (too many sessions)")
                    s.evicted = True
                    done += 1
            finally:
                s.lock.release()
        return done

    def sweep(self) -> int:
        """Release every session idle for longer than ``session_ttl``, and the least recently used beyond
        the session cap or memory budget (a session grows after its action: an upload, a result); returns
        how many."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions
                    if not s.released and now - s.last_used > self.config.session_ttl]
        done = 0
        for s in idle:
            if s.lock.acquire(blocking=False):  # busy means in use: not idle after all
                try:
                    if time.monotonic() - s.last_used > self.config.session_ttl:  # not touched meanwhile
                        release_session(s)
                        done += 1
                finally:
                    s.lock.release()
        return done + self.evict_beyond_cap()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(max(0.5, min(30.0, self.config.session_ttl / 4)))
            try:
                self.sweep()
            except Exception:  # the sweeper must never die
                log.exception("session sweep failed")

    # -------------------------------------------------------------- encoders and label sets
    def cache_dir(self) -> Path:
        from prolab.encoder import default_cache_dir

        return Path(self.config.cache_dir) if self.config.cache_dir else default_cache_dir()

    def encoder(self, encoder_id: str | None = None, template: str | None = None):
        """The shared text encoder for (id, template); the network itself loads on first use."""
        from prolab.encoder import DEFAULT_ENCODER, DEFAULT_TEMPLATE, TextEncoder
        from prolab.workbench import MemoEncoder

        key = (encoder_id or DEFAULT_ENCODER, template or DEFAULT_TEMPLATE)
        with self._lock:
            if key not in self._encoders:  # one in-memory layer shared by every session
                self._encoders[key] = MemoEncoder(
                    TextEncoder(key[0], template=key[1], cache_dir=self.cache_dir()))
            return self._encoders[key]

    def encoder_for(self, model) -> object | None:
        space = getattr(model, "label_space", None)
        if model.config.supervision != "property":
            return None
        if space is not None:
            return self.encoder(space.encoder_id, space.template)
        return self.encoder(model.config.encoder_id, model.config.template)

    def label_set(self, key: str):
        with self._lock:
            if key not in self._label_sets:
                from prolab import labelsets

                self._label_sets[key] = labelsets.load(key)
            return self._label_sets[key]

    def label_set_choices(self) -> list[tuple[str, str]]:
        """Dropdown choices ``(label, key)``: the shipped sets, the model's own classes, custom."""
        from prolab import labelsets

        return [(f"{name} ({key})", key) for key, name in labelsets.available()] + [
            (MODEL_LABEL, "model"), (CUSTOM_LABEL, "custom")]

    # -------------------------------------------------------------- labelled sets (Evaluate tab)
    def data_root(self) -> Path | None:
        from prolab.data.readers import find_data_root

        return find_data_root(self.config.data_root)

    def eval_sets(self) -> list[tuple[str, int]]:
        """``(dataset, images)`` of the shared datasets' val splits with ground truth."""
        from prolab.data.readers import labelled_sets

        root = self.data_root()
        return labelled_sets(root, "val") if root is not None else []

    def inference_size(self, entry: ModelEntry) -> int:
        return self.config.inference_size or entry.model.config.input_size

    def shared_eval_cache(self, entry: ModelEntry, name: str, progress=None) -> tuple[object, bool]:
        """``(EvalCache, built now)`` of ``entry``'s model on shared dataset ``name``'s val split, built
        once for every user (:attr:`eval_caches` keeps the last :data:`SHARED_EVAL_CACHES`)."""
        from prolab.data.readers import read_shared
        from prolab.eval_cache import EvalCache
        from prolab.evaluate import load_mapping

        if name not in dict(self.eval_sets()):
            raise ProLabError(f"No labelled set {name!r} on this server; pick one of the list or upload a zip.")
        size, built = self.inference_size(entry), []

        def build():
            built.append(True)
            source = read_shared(self.data_root(), name, "val", teacher=False)
            return EvalCache.build(entry.model, source, size=size, mapping=load_mapping(entry.directory),
                                   progress=progress)

        return self.eval_caches.get((id(entry.model), name, "val", size), build), bool(built)

    # -------------------------------------------------------------- warm-up
    def warm_up(self) -> None:
        """Load the default model, the encoder network and the default label space in the background,
        so that the first click does not pay for imports (``python app.py`` is ready before this ends)."""
        def run():
            try:
                entry = self.default_model()
                enc = self.encoder_for(entry.model)
                if enc is not None:
                    enc.inner.model  # noqa: B018 - loads sentence-transformers (the slow import)
                wb, _ = self.workbench(entry, self.config.label_set)
                if wb.is_property_model:
                    wb.space()
                import prolab.inference  # noqa: F401
                if entry.model is not None and not entry.untrained:
                    from prolab.onnx_backend import onnx_model

                    onnx_model(entry.model, entry.directory)  # the fast setting's graph (exported once, cached)
                log.info("warm-up done")
            except Exception as exc:  # reported again, readably, on the first user action
                self.warm_error = f"{exc.__class__.__name__}: {exc}"
                log.warning("warm-up failed: %s", self.warm_error)

        threading.Thread(target=run, name="prolab-warmup", daemon=True).start()

    def workbench(self, entry: ModelEntry, key: str, label_set=None):
        """``(Workbench, key)`` for ``entry`` scoring the label set ``key`` (``label_set``, when given,
        is that set already resolved). A category model only has its own classes, so its key is
        always "model"."""
        from prolab.workbench import Workbench

        if entry.model.config.supervision == "category":
            key = "model"
        if key == "model":
            label_set = self.model_label_set(entry)
        elif label_set is None:
            label_set = self.label_set(key)
        return Workbench(entry.model, self.encoder_for(entry.model), label_set, self.config.inference_size,
                         shared_spaces=self.shared_spaces), key

    @staticmethod
    def model_label_set(entry: ModelEntry):
        from prolab import labelsets
        from prolab.descriptions import DescriptionSet

        model = entry.model
        if model.config.supervision == "category":  # fixed classes; names stand in for descriptions
            names = model.class_names
            return labelsets.from_names(names, DescriptionSet({n: [n] for n in names}), "model", MODEL_LABEL)
        space = model.label_space
        if space is None:
            raise ProLabError("This model has no training label space; pick a label set instead.")
        return labelsets.from_names(space.class_names, space.descriptions(), "model", MODEL_LABEL)


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
        raise ProLabError(f"No shipped model {str(name)[:80]!r}; pick one of the list.")
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
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(source, "README.md")).read_text(encoding="utf-8", errors="replace")
        except Exception:  # offline or no card: the card is optional
            pass
    return "_This model has no model card (MODEL_CARD.md or README.md)._"


@dataclass(eq=False)
class EvalState:
    """One user's Evaluate panel: an evaluation history per labelled set (model, set, size), the set
    shown (``target``), and the cache of an uploaded set, this user's own: ``(key, EvalCache)``."""

    histories: OrderedDict = field(default_factory=OrderedDict)
    target: tuple | None = None
    upload: tuple | None = None

    def history(self, target: tuple):
        """The history of ``target`` (created on first use; the oldest set's is dropped beyond
        :data:`MAX_EVAL_TARGETS`), which becomes the one shown."""
        from prolab.eval_cache import EvalHistory

        if target not in self.histories:
            self.histories[target] = EvalHistory(MAX_EVAL_RECORDS)
        self.histories.move_to_end(target)
        while len(self.histories) > MAX_EVAL_TARGETS:
            self.histories.popitem(last=False)
        self.target = target
        return self.histories[target]

    def current(self):
        """The history of the set evaluated last."""
        if self.target not in self.histories:
            raise ProLabError("Nothing evaluated yet: press Evaluate first.")
        return self.histories[self.target]

    @property
    def nbytes(self) -> int:
        """Bytes of the uploaded set's cache (the histories hold metrics only)."""
        return self.upload[1].nbytes if self.upload is not None else 0

    def clear(self) -> None:
        self.histories.clear()
        self.target = self.upload = None


@dataclass(eq=False)  # compared and hashed by identity (kept in a WeakSet)
class Session:
    """One user's state: the workbench plus what the UI remembers between events."""

    workbench: object
    model_entry: ModelEntry
    label_key: str
    edits: dict[str, object] = field(default_factory=dict)  # label-set key -> edited descriptions
    custom_set: object = None
    image_name: str = ""
    evaluation: EvalState = field(default_factory=EvalState)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    live: object = field(default_factory=lambda: _live_stream(), repr=False)  # the webcam stream (its own lock: frames never wait for `lock`)
    video_dir: str | None = None  # this session's segmented videos (deleted with the session)
    quality: str = "default"  # the speed/quality dial (prolab.quality), for Segment and Live alike
    last_used: float = field(default_factory=time.monotonic)
    released: bool = False
    evicted: bool = False  # released to make room for other users; told on the next action
    shown_with: tuple | None = None  # (threshold, label space) the result on screen was scored with
    opacity: float = 0.55  # the overlay's, as last shown
    resized_from: tuple[int, int] | None = None  # (width, height) of an upload shrunk for work

    def __deepcopy__(self, memo):  # gr.State may copy values; a session is shared by reference
        return self

    @property
    def wb(self):
        return self.workbench

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this session holds (image, network output, results, an uploaded set's cache)."""
        return 0 if self.released else self.workbench.nbytes() + self.evaluation.nbytes

    def release(self) -> int:
        """Drop the image and everything computed from it (when the session expires); returns the bytes
        that were held."""
        with self.lock:
            held = 0 if self.released else self.workbench.nbytes() + self.evaluation.nbytes
            self.workbench.release()
            self.edits.clear()
            self.evaluation.clear()
            self.image_name, self.released, self.shown_with, self.resized_from = "", True, None, None
            if self.video_dir:
                shutil.rmtree(self.video_dir, ignore_errors=True)
                self.video_dir = None
        return held


def _live_stream():
    from prolab.live import LiveStream

    return LiveStream()


def new_session(resources: Resources, entry: ModelEntry | None = None) -> Session:
    """A session on ``entry`` (default: the start-up model)."""
    entry = entry or resources.default_model()
    wb, key = resources.workbench(entry, resources.config.label_set)
    return Session(wb, entry, key)


def release_session(state, reason: str = "expired") -> None:
    """``gr.State``'s delete callback: free an expired session's arrays now, and hand the freed memory
    back to the operating system (glibc keeps freed heap memory otherwise, so RSS would not drop)."""
    if not isinstance(state, Session) or state.released:
        return
    held = state.release()
    gc.collect()
    _trim_heap()
    log.info("session %s: released %.1f MB", reason, held / 1e6)


def evicted_message(max_sessions: int) -> str:
    """What a user whose session was released for others reads on their next action."""
    return (f"Your session was closed to make room for other users (this server keeps up to {max_sessions} "
            "recently active ones, within a memory budget), so your image, results and edits were freed. Upload "
            "or pick the image again and press Segment; text you typed in the boxes is still there.")


def _trim_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def user_errors(fn):
    """Show :class:`ProLabError` as a readable message; turn bugs into a short message (traceback in
    the log) so that the app keeps running and nothing in the user's session is reset."""
    import gradio as gr

    from app.views import escape

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ProLabError as exc:  # messages quote file and class names: escaped, the toast is HTML
            raise gr.Error(escape(str(exc)), print_exception=False) from None
        except Exception as exc:
            log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
            raise gr.Error(escape(f"Something went wrong ({exc.__class__.__name__}: {exc}). Your work is kept; "
                                  "the details are in the server log."), print_exception=False) from None

    return wrapper
