"""What ``python app.py`` can set (its command line, :mod:`app.main`), and the names the UI gives its choices."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prolab.caches import CacheSizes
from prolab.llm import LLMConfig

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


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
    disk_budget_mb: float = 2048.0  # and the files all sessions hand out (exports, segmented videos)
    model_dirs: list[str] = field(default_factory=list)  # where /load_model may load from when shared
    allow_any_model: bool = False  # shared servers may load any directory or hub id
    data_root: str | None = None  # labelled sets for the Evaluate tab (None: $PROLAB_DATA or ../shared/datasets)
    caches: CacheSizes = field(default_factory=CacheSizes)  # what the services keep in memory (models, pools)
    keep_state: bool = True  # keep each browser's work (edits, novel categories, evaluations) in --state-dir
    state_dir: str | None = None  # None: default_state_dir()
    state_mb_each: float = 4.0  # a browser's saved work beyond this is not saved (they are told)
    state_mb_total: float = 256.0  # the file beyond this: the least recently used workspaces are deleted

    def state_folder(self) -> Path:
        """Where the workspaces' database lives: ``--state-dir``, else ``$PROLAB_STATE_DIR``, else
        ``<cache folder>/state`` (``~/.cache/prolab/state``)."""
        from prolab.caches import default_cache_dir

        chosen = self.state_dir or os.environ.get("PROLAB_STATE_DIR")
        return Path(chosen).expanduser() if chosen else default_cache_dir() / "state"

    @property
    def is_shared(self) -> bool:
        """Reachable from other machines (``--share`` or a non-loopback ``--host``)."""
        return self.share or self.host not in LOOPBACK_HOSTS

    @property
    def restricts_models(self) -> bool:
        """Whether loading is limited to the shipped models and those named at start-up."""
        return self.is_shared and not self.allow_any_model

    def llm_config(self) -> LLMConfig:
        extra = {"cache_dir": Path(self.cache_dir) / "llm"} if self.cache_dir else {}
        return LLMConfig.from_env(model=self.llm_model, base_url=self.llm_base_url,
                                  api_key=os.environ.get(self.llm_api_key_env) or None, **extra)


