"""ONNX Runtime backend: the network's forward pass (image -> stride-4 output map and the head's features)
exported once with ``torch.onnx.export(dynamo=True)`` and run through onnxruntime.

Only the network is replaced. :class:`OnnxSegmenter` stands in for a :class:`PropertySegmenter`
everywhere a model is passed (``embed_image``, ``predict_images``, ``evaluate``, the app's workbench):
it keeps the eager model's config, label space, normalisation and final 1x1 conv, and only its
``forward`` runs the ONNX graph. Resizing, padding, flips, sliding windows and every bit of label-space
scoring stay in :mod:`prolab.inference` / :mod:`prolab.scoring`, shared by both backends.

The graph takes (B, 3, H, W) normalised images with H and W any multiples of 32 (dynamic batch, height
and width) and returns ``out`` (B, D or C, H/4, W/4) and ``features`` (the head's last 1x1 conv input).
Its metadata records a hash of the weights it was exported from; a graph that does not match the
model's weights is refused (re-run ``prolab export``) instead of silently giving another model's output.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from cachetools import LRUCache
from torch import nn

from prolab.caches import CACHE_SIZES, default_cache_dir
from prolab.errors import ProLabError
from prolab.model.heads import PyramidPooling
from prolab.model.segmenter import PropertySegmenter

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
BACKENDS = ("torch", "onnx")
_WEIGHTS_KEY = "prolab_weights_sha1"
_MAX_SIDE_BLOCKS = 256  # dynamic height/width up to 256 * 32 = 8192 px (inference's 4 * 2048 cap)


def weights_hash(model: PropertySegmenter) -> str:
    """SHA-1 of the model's parameters and buffers (names, shapes and values): the key an exported
    graph is checked against."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _ExportNet(nn.Module):
    """forward(x) -> (out, features): the tensors ONNX graphs return (no dicts)."""

    def __init__(self, model: PropertySegmenter):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.model(x, return_aux=False, return_features=True)
        return result["out"], result["features"]


#: The exporter's logger that warns, once per op, that torchvision's detection ops (nms, roi_align, ...)
#: cannot be registered: prolab uses no torchvision op.
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what the exporter says that does not concern a prolab model: torchvision's missing ops
    and torch's own deprecation of ``LeafSpec`` (pytree internals). Everything else still shows."""
    logger = logging.getLogger(_REGISTRATION_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


# torch.onnx.export and the quieting around it (stdout, a logger's level, warning filters) are
# process-wide state: one export at a time, whichever thread asks.
_EXPORT_LOCK = threading.Lock()


def export_onnx(model: PropertySegmenter, path: str | os.PathLike) -> Path:
    """Write ``model``'s forward pass as an ONNX graph with dynamic batch, height and width to ``path``
    (written to a temporary name first, so an interrupted export leaves no half-written graph).
    Exports in one process run one at a time."""
    with _EXPORT_LOCK:
        return _export_onnx(model, Path(path))


def _export_onnx(model: PropertySegmenter, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).cpu().eval()
    for m in net.modules():
        if isinstance(m, PyramidPooling):
            m.traceable = True  # exact adaptive pooling at every size (see adaptive_avg_pool2d_traceable)
    batch = torch.export.Dim("batch", min=1, max=64)
    hb = torch.export.Dim("h32", min=1, max=_MAX_SIDE_BLOCKS)
    wb = torch.export.Dim("w32", min=1, max=_MAX_SIDE_BLOCKS)
    example = torch.zeros(1, 3, 256, 320)
    try:  # the exporter narrates each stage on stdout; a CLI command or the app's log does not want that
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), _quiet_exporter():
            program = torch.onnx.export(_ExportNet(net).eval(), (example,), dynamo=True, optimize=True,
                                        input_names=["x"], output_names=["out", "features"],
                                        dynamic_shapes={"x": {0: batch, 2: 32 * hb, 3: 32 * wb}},
                                        verbose=False)
    except Exception as exc:  # an exporter failure is specific to the architecture, not a crash of ours
        raise ProLabError(f"ONNX export failed ({exc.__class__.__name__}: {str(exc).splitlines()[0]}).") from exc
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = _WEIGHTS_KEY, weights_hash(model)
    import onnx  # lazy: onnx and onnxruntime load only for the ONNX backend

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cache_path(model: PropertySegmenter) -> Path:
    """Where :func:`onnx_model` keeps graphs exported on the fly (under :func:`prolab.caches.default_cache_dir`)."""
    return default_cache_dir() / "onnx" / f"{weights_hash(model)}.onnx"


class OnnxSegmenter(nn.Module):
    """A :class:`PropertySegmenter` whose forward pass runs an exported graph in onnxruntime.

    Everything but ``forward`` (config, label space, ``normalize``, the decode head's weights that
    low-rank re-scoring reads) is the eager model's, so callers use it exactly like the model.
    ``run`` is thread-safe (onnxruntime sessions are), so one instance serves every app session.
    """

    backend = "onnx"

    def __init__(self, model: PropertySegmenter, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        import onnx  # lazy: onnx and onnxruntime load only for the ONNX backend
        import onnxruntime as ort

        self.eager = model
        self.path = Path(path)
        try:
            meta = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
        except Exception as exc:
            raise ProLabError(f"Cannot read ONNX graph {self.path}: {exc.__class__.__name__}: {exc}") from exc
        if meta.get(_WEIGHTS_KEY) != weights_hash(model):
            raise ProLabError(f"{self.path} was exported from other weights than this model's; "
                              "re-run `prolab export --format onnx`.")
        options = ort.SessionOptions()
        # Same thread budget as torch: a fair comparison, and the app's other work keeps its cores.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No spin-waiting between operators (onnxruntime's default): on a machine busier than its cores a
        # spinning thread holds a core its sibling needs (a 320 x 448 forward took about 1.5x as long with
        # spinning on 2 shared cores); the same reason prolab.threads sets OMP_WAIT_POLICY=PASSIVE for torch.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.eval()  # never in training mode: embed_image would otherwise toggle the shared eager model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["eager"], name)

    def forward(self, x: torch.Tensor, return_aux: bool | None = None,
                return_features: bool = False) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ProLabError(f"Expected (B, 3, H, W) images with H and W multiples of 32, got {tuple(x.shape)}.")
        out, features = self.session.run(None, {"x": np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)})
        result = {"out": torch.from_numpy(out)}
        if return_features:
            result["features"] = torch.from_numpy(features)
        return result


class OnnxPool:
    """The ONNX backends of the last ``size`` models asked for (least recently used dropped), each loaded
    once: the app's services keep one for every user. Thread-safe: two sessions asking at once for a
    model's backend load (or export) it once.

    Keyed by ``id(model)``: each entry holds its model (``backend.eager``), so that id cannot be reused
    while the entry lives."""

    def __init__(self, size: int = CACHE_SIZES.onnx_backends):
        self._items: LRUCache[tuple[int, str], OnnxSegmenter] = LRUCache(maxsize=size)
        self._lock = threading.Lock()  # guards the two dicts, never held while loading
        # per key: the lock its loaders queue on and how many of them hold or wait for it
        self._loading: dict[tuple[int, str], list] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, model: PropertySegmenter, model_dir: str | os.PathLike | None = None,
            export_if_missing: bool = True) -> OnnxSegmenter:
        """:func:`onnx_model`'s backend of ``model``, loaded on the first call.

        One lock per model: a second request for a model being loaded waits for that load instead of
        running its own (and retries it, one at a time, if it failed), while requests for other models
        go on. (Exports themselves run one at a time in the process: :func:`export_onnx`.)"""
        key = (id(model), str(model_dir))
        with self._lock:
            backend = self._items.get(key)
            if backend is not None and backend.eager is model:
                return backend
            entry = self._loading.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                with self._lock:
                    backend = self._items.get(key)
                if backend is None or backend.eager is not model:
                    backend = onnx_model(model, model_dir, export_if_missing)
                    with self._lock:
                        self._items[key] = backend
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0 and self._loading.get(key) is entry:
                    del self._loading[key]
        return backend


def onnx_model(model: PropertySegmenter, model_dir: str | os.PathLike | None = None,
               export_if_missing: bool = True, pool: OnnxPool | None = None) -> OnnxSegmenter:
    """The ONNX backend of ``model`` (itself when it is one): ``model_dir/model.onnx`` when it is there
    (``prolab export``), else a graph exported once into the cache folder (:func:`cache_path`).

    Without ``pool`` the backend is loaded anew (a fraction of a second); a caller that asks again and
    again (the app, per session and per webcam frame) passes the :class:`OnnxPool` it keeps."""
    if isinstance(model, OnnxSegmenter):
        return model
    if pool is not None:
        return pool.get(model, model_dir, export_if_missing)
    path = Path(model_dir) / ONNX_FILE if model_dir is not None else None
    if path is None or not path.is_file():
        path = cache_path(model)
        if not path.is_file():
            if not export_if_missing:
                raise ProLabError("This model has no ONNX export; run `prolab export --format onnx`.")
            with _EXPORT_LOCK:  # another thread may have written it while this one waited
                if not path.is_file():
                    log.warning("Exporting the network to ONNX once (%s)...", path)
                    _export_onnx(model, path)
    return OnnxSegmenter(model, path)


def with_backend(model: PropertySegmenter, backend: str, model_dir: str | os.PathLike | None = None,
                 pool: OnnxPool | None = None):
    """``model`` itself (``backend="torch"``) or its :class:`OnnxSegmenter` (``"onnx"``, kept in ``pool``
    when one is given: see :func:`onnx_model`)."""
    if backend not in BACKENDS:
        raise ProLabError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "torch":
        return model.eager if isinstance(model, OnnxSegmenter) else model
    return onnx_model(model, model_dir, pool=pool)
