"""The app's services: what is shared between users, each with one job.

- :class:`~app.services.text.TextService`: encoders, shipped label sets, spaces of unedited sets;
- :class:`~app.services.models.ModelService`: loading models, what a shared server may load;
- :class:`~app.services.sessions.SessionService`: users' sessions and the bounds on what they hold;
- :class:`~app.services.evaluation.EvaluationService`: labelled sets and their cached model outputs
  (each user's evaluations: :mod:`app.services.eval_history`, kept in their session);
- :class:`~app.services.workspace.WorkspaceService`: each browser's saved work (SQLite), restored into
  a new or freed session.

:class:`Services` holds one of each (``build_demo`` makes it) and warms them up after start.
"""
from __future__ import annotations

import logging
import threading

from app.config import AppConfig
from app.services.evaluation import EvaluationService
from app.services.models import ModelService
from app.services.sessions import SessionService
from app.services.text import TextService
from app.services.workspace import WorkspaceService, open_store
from prolab.onnx_backend import OnnxPool, onnx_model

log = logging.getLogger("prolab.app")


def _import_before_threads() -> None:
    """Import, in one thread and before the server starts, what the warm-up thread (scikit-learn) and a
    user's first plot (plotly) both import: narwhals' subpackages import each other, so two threads
    importing it at once can deadlock (``_DeadlockError: ... _ModuleLock('narwhals.stable.v2')``)."""
    try:
        import narwhals.stable  # noqa: F401  (v1 and v2)
    except ImportError:  # plotly and scikit-learn versions that do not use it
        pass


class Services:
    """Every service of one app process."""

    def __init__(self, config: AppConfig | None = None):
        self.config = config = config or AppConfig()
        self.text = TextService(config)
        self.models = ModelService(config, self.text)
        self.backends = OnnxPool(config.caches.onnx_backends)  # the fast quality step's ONNX sessions, for every user
        store = open_store(config.state_folder(), config.state_mb_each, config.state_mb_total) \
            if config.keep_state else None
        self.workspaces = WorkspaceService(store, config.caches.workspace_pages)
        self.sessions = SessionService(config, self.models, self.text, self.backends, self.workspaces)
        self.evaluation = EvaluationService(config, self.models.inference_size)
        self.warm_error: str | None = None
        _import_before_threads()

    def warm_up(self) -> None:
        """Load the default model, the encoder network and the default label space in the background, so
        that the first click does not pay for them (``python app.py`` is ready before this ends)."""
        threading.Thread(target=self._warm, name="prolab-warmup", daemon=True).start()

    def _warm(self) -> None:
        try:
            entry = self.models.default()
            enc = self.text.encoder_for(entry.model)
            if enc is not None:
                enc.model  # noqa: B018 - loads sentence-transformers (the slow import)
            session = self.sessions.new(entry)
            session.edit.space()
            if not entry.untrained:
                onnx_model(entry.model, entry.directory, pool=self.backends)  # the fast step's graph
            log.info("warm-up done")
        except Exception as exc:  # reported again, readably, on the first user action
            self.warm_error = f"{exc.__class__.__name__}: {exc}"
            log.warning("warm-up failed: %s", self.warm_error)
