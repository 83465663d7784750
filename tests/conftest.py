"""Shared fixtures. Tests use the real bundled encoder and, where present, the shared datasets."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# apps built or started by tests keep browsers' work here, never in the user's cache folder
os.environ.setdefault("PROLAB_STATE_DIR", tempfile.mkdtemp(prefix="prolab-test-state-"))
REPO = Path(__file__).resolve().parents[1]


def shared_datasets_dir() -> Path:
    """``$PROLAB_DATA`` or ``../shared/datasets`` next to the repository."""
    return Path(os.environ.get("PROLAB_DATA") or REPO.parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def encoder(tmp_path_factory):
    """The default (bundled all-MiniLM-L6-v2) encoder with a per-session cache folder."""
    from prolab.encoder import TextEncoder

    return TextEncoder(cache_dir=tmp_path_factory.mktemp("embcache"))


@pytest.fixture(scope="session")
def live_model_dir(tmp_path_factory, encoder) -> Path:
    """A tiny random property model (outputs scaled so that its classes differ from pixel to pixel), shared
    by the live, video and ONNX tests: its ONNX graph is exported once, into :func:`onnx_cache_dir`."""
    from tests.app_server import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("live-model"), encoder, output_scale=40.0)


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory) -> Path:
    """The cache where :func:`live_model_dir`'s ONNX graph is exported the first time a test needs it
    (an export takes about 15 s on 2 cores; every later test loads the file)."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared datasets folder; tests that need it are skipped, with a message, when absent."""
    root = shared_datasets_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"shared datasets not found at {root} (set PROLAB_DATA)")
    return root
