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


# pytest-xdist (pyproject's addopts: ``-n auto --dist loadgroup``) runs the suite in one worker process per
# core. Each worker is a test process of its own: one torch thread each, so that the workers do not
# oversubscribe the cores (the app servers, CLIs and benches the tests start keep their own defaults).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import prolab  # noqa: F401 - first, as every entry point: it sets OpenMP's passive wait policy
    import torch

    torch.set_num_threads(1)

#: Test modules that drive Chromium: run on one worker, one after the other (a browser and an app server
#: each take a core while they work).
BROWSER_MODULES = ("test_app_browser", "test_webcam_browser", "test_workspace_browser")
#: The session fixture whose first user exports the tiny model's ONNX graph (about 30 s).
ONNX_GRAPH_FIXTURE = "onnx_cache_dir"


def _module_name(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    return module.__name__.rsplit(".", 1)[-1] if module else ""


def xdist_group(item: pytest.Item, modules_with_graph: set[str]) -> str | None:
    """The worker group of a test under ``--dist loadgroup`` (None: any worker, test by test).

    A module whose tests share a module-scoped fixture (an app server, a model, an exported graph) is one
    group, so that the fixture is built once; the modules that use the exported tiny ONNX graph are one
    group, so that it is exported once; the browser modules are one group."""
    module = _module_name(item)
    if module in BROWSER_MODULES:
        return "browser"
    if module in modules_with_graph:
        return "tiny-onnx-graph"
    fixtures = getattr(item, "_fixtureinfo", None)
    defs = fixtures.name2fixturedefs.values() if fixtures else ()
    if any(d and d[-1].scope == "module" for d in defs):
        return module
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config, items):
    with_graph = {_module_name(item) for item in items if ONNX_GRAPH_FIXTURE in getattr(item, "fixturenames", ())}
    for item in items:
        group = xdist_group(item, with_graph)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def shared_datasets_dir() -> Path:
    """``$PROLAB_DATA`` or ``../shared/datasets`` next to the repository."""
    return Path(os.environ.get("PROLAB_DATA") or REPO.parent / "shared" / "datasets")


def run_temp_dir(tmp_path_factory) -> Path:
    """This run's temporary folder, shared by pytest-xdist's workers (each worker's own ``basetemp`` is a
    folder inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def encoder(tmp_path_factory):
    """The default (bundled all-MiniLM-L6-v2) encoder with a per-run cache folder, shared by the workers
    (the cache is SQLite: concurrent readers and writers are safe): a sentence one test encodes, or one the
    app servers the tests start encode, is not encoded again by another worker."""
    from prolab.encoder import TextEncoder

    return TextEncoder(cache_dir=run_temp_dir(tmp_path_factory) / "embcache")


@pytest.fixture(scope="session")
def live_model_dir(tmp_path_factory, encoder) -> Path:
    """A tiny random property model (outputs scaled so that its classes differ from pixel to pixel), shared
    by the live, video and ONNX tests: its ONNX graph is exported once, into :func:`onnx_cache_dir`."""
    from tests.app_server import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("live-model"), encoder, output_scale=40.0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny untrained property model saved to a folder (for CLI runs whose outcome does not depend on
    the weights: refusals, limits)."""
    from tests.test_train import tiny_model

    d = tmp_path_factory.mktemp("tiny-model") / "m"
    tiny_model("property").save_pretrained(d)
    return d


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
