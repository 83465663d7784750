"""The app's services without a server: evaluation histories and the shared cache pool."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.services.eval_history import EvalHistory
from app.services.evaluation import EvalCachePool
from prolab.errors import ProLabError


def test_history_compares_and_restores():
    h = EvalHistory(max_records=3)
    assert h.compare() is None
    base = {"dataset": "d", "split": "val", "pixel_accuracy": 0.5}
    for i, miou in enumerate([0.1, 0.2, 0.3, 0.4]):
        h.add({**base, "miou": miou, "per_class_iou": {"cat": miou}}, descriptions={"cat": [f"v{i}"]})
    assert [r.version for r in h.records] == [2, 3, 4]
    c = h.compare()
    assert c.miou == (0.3, 0.4) and c.rows[0].a == 0.3
    assert h.compare(2, 4).miou == (0.2, 0.4)
    assert h.restore(3) == {"cat": ["v2"]}
    with pytest.raises(ProLabError, match="No evaluation version 1"):
        h.restore(1)


def test_cache_pool_keeps_the_most_recent_and_builds_each_once():
    builds: list[str] = []

    def build(key):
        def run():
            builds.append(key)
            time.sleep(0.2)  # long enough for the other threads to ask meanwhile
            return type("Cache", (), {"nbytes": 10})()
        return run

    pool = EvalCachePool(2)
    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.get("a", build("a")))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == ["a"] and len({id(c) for c in got}) == 1
    pool.get("b", build("b"))
    pool.get("a", build("a"))  # a is now the most recent
    pool.get("c", build("c"))  # drops b
    assert builds == ["a", "b", "c"] and len(pool) == 2 and pool.nbytes == 20
    assert pool.peek("b") is None and pool.peek("a") is got[0]
    with pytest.raises(ProLabError, match="at least one"):
        EvalCachePool(0)


def test_services_import_each_other_without_a_cycle():
    """The services' imports (those for type hints and inside functions too) form no cycle: each user's
    evaluations (eval_history) are kept apart from what users share (evaluation), which uses sessions."""
    import ast

    root = Path(__file__).resolve().parents[1] / "app" / "services"
    names = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in names:
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        targets = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        targets |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        graph[name] = {t.rsplit(".", 1)[1] for t in targets if t.startswith("app.services.")} & names
    assert "eval_history" in graph["sessions"] and "evaluation" not in graph["sessions"]
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, "import cycle: " + " -> ".join((*path, node))
        if node not in done:
            for nxt in sorted(graph[node]):
                visit(nxt, (*path, node))
            done.add(node)

    for name in sorted(names):
        visit(name, ())


def test_a_session_keeps_the_histories_of_its_most_recently_evaluated_sets():
    """EvalState keeps ``eval_targets`` histories (the least recently evaluated set's dropped), each of
    ``eval_records`` evaluations: the sizes of the one config (:class:`prolab.caches.CacheSizes`)."""
    from app.services.eval_history import EvalState
    from prolab.caches import CacheSizes

    state = EvalState(CacheSizes(eval_targets=2, eval_records=3))
    a = state.history("a")
    state.history("b")
    assert state.history("a") is a  # "a" is now the most recently evaluated
    state.history("c")  # drops "b"
    assert set(state.histories) == {"a", "c"} and state.current() is state.histories["c"]
    assert a.max_records == 3
    with pytest.raises(ValueError, match="eval_targets"):
        CacheSizes(eval_targets=0)


def test_a_users_session_takes_its_cache_sizes_from_the_app_config(live_model_dir):
    """AppConfig.caches is the one config of every cache size: each user's EditSession keeps its recent
    label spaces and similarity rows by it, not by the library's defaults."""
    from app.config import AppConfig
    from app.services import Services
    from prolab.caches import CacheSizes

    config = AppConfig(model=str(live_model_dir), caches=CacheSizes(recent_spaces=1, similarity_rows=16))
    session = Services(config).sessions.new()
    assert session.edit.cache_sizes is config.caches


def test_the_shared_encoders_keep_as_many_sentences_as_the_app_config_says(tmp_path):
    """The encoders every user shares keep ``AppConfig.caches.encoder_sentences`` sentence vectors in
    memory (the size in the one config, not a number in the encoder)."""
    from app.config import AppConfig
    from app.services.text import TextService
    from prolab.caches import CACHE_SIZES, CacheSizes
    from prolab.encoder import TextEncoder

    text = TextService(AppConfig(cache_dir=str(tmp_path), caches=CacheSizes(encoder_sentences=7)))
    assert text.encoder().memory_items == 7
    assert TextEncoder(cache_dir=False).memory_items == CACHE_SIZES.encoder_sentences


def test_an_evaluation_panels_memory_is_read_safely_while_its_owner_drops_the_upload():
    """The memory bound reads every session's bytes without its lock: an uploaded set's cache dropped
    meanwhile (a new upload frees the old one first) is counted or not, never read half-way."""
    from types import SimpleNamespace

    from app.services.eval_history import EvalState
    from tests.builders import dropped_after_one_read

    state = dropped_after_one_read(EvalState, {"upload"})()
    state.upload = (("key",), SimpleNamespace(nbytes=123))
    assert state.nbytes == 123
