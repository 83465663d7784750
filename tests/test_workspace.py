"""Each browser's kept work (app/services/workspace.py): the SQLite store's caps and refusals, and the app's
handlers called as a page calls them (its gradio page id), across a freed session, a page reload, a server
restart (new services on the same folder), "Forget my work" and ``--no-state``."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.app_server import save_tiny_model

gr = pytest.importorskip("gradio")

from app.config import AppConfig  # noqa: E402
from app.services.workspace import WorkspaceStore, is_workspace_id, open_store  # noqa: E402
from prolab.errors import ProLabError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = str(REPO / "assets" / "examples" / "astronaut.png")
ZEBRA = json.dumps({"zebra": ["black and white stripes", "a horse-like animal"]})


# ---------------------------------------------------------------------------- the store alone
def _work(i: int, classes: int = 40) -> dict:
    """About 20 KB of saved work, different for each ``i``."""
    return {"edit": {"descriptions": {f"class {i} {c}": [f"sentence {i}.{c}.{j} " + "x" * 80 for j in range(5)]
                                      for c in range(classes)}}}


def test_the_file_stays_under_its_cap_with_300_workspaces(tmp_path):
    cap = 2 * 2**20
    store = WorkspaceStore(tmp_path, max_bytes_each=256 * 1024, max_bytes_total=cap)
    ids = [store.issue() for _ in range(300)]
    size = len(json.dumps(_work(0)).encode())
    for i, wid in enumerate(ids):
        store.save(wid, _work(i))
    on_disk = store.file_bytes()
    print(f"300 workspaces of {size / 1024:.1f} KB each ({300 * size / 2**20:.1f} MB): file + log "
          f"{on_disk / 2**20:.2f} MB, cap {cap / 2**20:.0f} MB, {store.count()} kept")
    assert on_disk <= cap  # the file and its log
    assert store.count() < 300 and store.load(ids[-1]) is not None  # the latest kept, the oldest gone
    assert not store.exists(ids[0]) and store.load(ids[0]) is None


def test_a_workspace_over_its_cap_is_refused_with_a_sentence(tmp_path):
    store = WorkspaceStore(tmp_path, max_bytes_each=10_000, max_bytes_total=2**20)
    wid = store.issue()
    store.save(wid, {"small": 1})
    with pytest.raises(ProLabError, match=r"not saved any more: it would take .* MB, more than"):
        store.save(wid, _work(0))
    assert store.load(wid)["small"] == 1  # what was saved before stays


def test_ids_are_random_and_queries_are_keyed_by_them(tmp_path):
    store = WorkspaceStore(tmp_path, 2**20, 2**22)
    a, b = store.issue(), store.issue()
    assert a != b and is_workspace_id(a) and is_workspace_id(b)
    store.save(a, {"mine": "a"})
    assert store.load(b) is None and store.load(a)["mine"] == "a"
    for made_up in ("' OR 1=1 --", "0" * 32, a.upper(), None, 123):
        assert not store.exists(made_up) and store.load(made_up) is None


def test_damaged_or_foreign_rows_are_refused_with_a_sentence(tmp_path):
    store = WorkspaceStore(tmp_path, 2**20, 2**22)
    wid = store.issue()
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE workspaces SET data=? WHERE id=?", ("{not json", wid))
    with pytest.raises(ProLabError, match="could not be read"):
        store.load(wid)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE workspaces SET data=? WHERE id=?", (json.dumps({"schema": 99}), wid))
    with pytest.raises(ProLabError, match="another version"):
        store.load(wid)


def test_a_database_of_another_version_is_refused_at_start_up(tmp_path):
    open_store(tmp_path, 1, 8)
    with sqlite3.connect(tmp_path / "workspaces.sqlite3") as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(ProLabError, match="another version"):
        open_store(tmp_path, 1, 8)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "workspaces.sqlite3").write_text("not a database" * 100)
    with pytest.raises(ProLabError, match="cannot be used as the workspace database"):
        open_store(tmp_path / "junk", 1, 8)


# ---------------------------------------------------------------------------- the app's handlers
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, encoder) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder)


def make_demo(model_dir, encoder, state_dir, **config):
    """A new app process, as far as the handlers can tell (services, sessions and pages are new)."""
    from app.main import build_demo
    from app.services import Services

    return build_demo(services=Services(AppConfig(model=str(model_dir), label_set="camvid_11",
                                                  cache_dir=str(encoder.cache.path.parent),
                                                  state_dir=str(state_dir), **config)))


def page(name: str):
    """What gradio passes as the request of an event from page (browser tab) ``name``."""
    return SimpleNamespace(session_hash=name)


def run(demo, api_name: str, *args, on_page: str | None = None):
    fn = next(f for f in demo.fns.values() if f.api_name == api_name)
    return fn.fn(*args, request=page(on_page) if on_page else None)


def load_page(demo, name: str, stored=None) -> str:
    """The page-load event: the workspace id the browser keeps from now on."""
    fn = next(f for f in demo.fns.values() if getattr(f.fn, "handler", None).__name__ == "open_workspace")
    out = fn.fn(stored, request=page(name))
    return out[demo.prolab_ui.workspace.browser]


def edit_and_add_novel(demo, on_page: str):
    ui = demo.prolab_ui
    s = run(demo, "segment", None, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page=on_page)[ui.state]
    run(demo, "edit_class", s, "camvid_11", None, "road", "flat grey asphalt", 0.0, 0.55, on_page=on_page)
    run(demo, "segment_novel", s, ZEBRA, 0.0, 0.55, on_page=on_page)
    return s


def test_work_survives_a_freed_session_a_reload_and_a_restart(model_dir, encoder, tmp_path):
    from app.services.sessions import release_session

    demo = make_demo(model_dir, encoder, tmp_path)
    ui = demo.prolab_ui
    wid = load_page(demo, "page-1")
    s = edit_and_add_novel(demo, "page-1")
    release_session(s)  # the TTL (or the session cap) freed it
    assert s.edit.edited_sets() == {} and s.edit.image is None
    out = run(demo, "segment", s, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page="page-1")
    assert out[ui.state].edit.descriptions["road"] == ["flat grey asphalt"]
    assert out[ui.state].edit.last.class_names[-1] == "zebra"  # re-segmented with the novel category

    assert load_page(demo, "page-2", stored=wid) == wid  # a reload: a new page, the same browser
    out = run(demo, "segment", None, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page="page-2")
    assert out[ui.state] is not s and out[ui.state].edit.descriptions["road"] == ["flat grey asphalt"]

    restarted = make_demo(model_dir, encoder, tmp_path)  # a server restart: nothing in memory
    assert load_page(restarted, "page-3", stored=wid) == wid
    out = run(restarted, "segment", None, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page="page-3")
    edit = out[restarted.prolab_ui.state].edit
    assert edit.descriptions["road"] == ["flat grey asphalt"] and edit.last.class_names[-1] == "zebra"

    other = load_page(restarted, "page-4")  # another browser: its own, empty workspace
    assert other != wid
    out = run(restarted, "segment", None, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page="page-4")
    edit = out[restarted.prolab_ui.state].edit
    assert not edit.is_edited and len(edit.novel) == 0
    assert load_page(restarted, "page-5", stored="0" * 32) not in (wid, other, "0" * 32)  # made-up ids: a new one


def test_evaluations_come_back_with_their_descriptions(model_dir, encoder, tmp_path, tmp_path_factory):
    from tests.builders import write_labelled_folder

    root = tmp_path_factory.mktemp("datasets")
    write_labelled_folder(root / "tinyset", ["sky", "road", "tree"], n=2, seed=0, shared=True)
    demo = make_demo(model_dir, encoder, tmp_path, data_root=str(root))
    wid = load_page(demo, "p1")
    s = run(demo, "evaluate", None, "camvid_11", None, "tinyset", None, "", on_page="p1")[demo.prolab_ui.state]
    run(demo, "edit_class", s, "camvid_11", None, "road", "flat grey asphalt", 0.0, 0.55, on_page="p1")
    run(demo, "evaluate", s, "camvid_11", None, "tinyset", None, "", on_page="p1")
    saved = json.loads(sqlite3.connect(tmp_path / "workspaces.sqlite3").execute(
        "SELECT data FROM workspaces WHERE id=?", (wid,)).fetchone()[0])
    assert [r["version"] for r in saved["evaluation"]["histories"][0]["records"]] == [1, 2]
    assert "confusion" not in saved["evaluation"]["histories"][0]["records"][0]["metrics"]

    restarted = make_demo(model_dir, encoder, tmp_path, data_root=str(root))
    load_page(restarted, "p2", stored=wid)
    ui = restarted.prolab_ui
    out = run(restarted, "restore_evaluation", None, "1", "road", 0.0, 0.55, on_page="p2")
    assert "v1" in out[ui.evaluate.status] and out[ui.state].edit.descriptions["road"] != ["flat grey asphalt"]
    out = run(restarted, "evaluate", out[ui.state], "camvid_11", None, "tinyset", None, "", on_page="p2")
    assert out[ui.state].evaluation.current().records[-1].version == 3  # numbering goes on


def test_forget_my_work_deletes_it_and_starts_afresh(model_dir, encoder, tmp_path):
    demo = make_demo(model_dir, encoder, tmp_path)
    ui = demo.prolab_ui
    wid = load_page(demo, "p1")
    s = edit_and_add_novel(demo, "p1")
    out = run(demo, "forget_work", s, on_page="p1")
    assert out[ui.state] is None and out[ui.workspace.browser] != wid and s.released
    store = demo.prolab_services.workspaces.store
    assert not store.exists(wid) and "deleted" in out[ui.workspace.note]
    assert load_page(demo, "p2", stored=wid) != wid  # the forgotten id is never used again
    out = run(demo, "segment", None, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page="p2")
    assert not out[ui.state].edit.is_edited and len(out[ui.state].edit.novel) == 0


def test_a_damaged_workspace_is_told_and_the_action_goes_on(model_dir, encoder, tmp_path, monkeypatch):
    demo = make_demo(model_dir, encoder, tmp_path)
    wid = load_page(demo, "p1")
    with sqlite3.connect(tmp_path / "workspaces.sqlite3") as conn:
        conn.execute("UPDATE workspaces SET data=? WHERE id=?", (json.dumps({"schema": 1, "edit": {"schema": 7}}), wid))
    told = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: told.append(message))
    out = run(demo, "segment", None, ASTRONAUT, "camvid_11", None, 0.0, 0.55, on_page="p1")
    assert out[demo.prolab_ui.state].edit.last is not None  # segmented all the same
    assert len(told) == 1 and "another format" in told[0]
    s = out[demo.prolab_ui.state]
    run(demo, "edit_class", s, "camvid_11", None, "road", "flat grey asphalt", 0.0, 0.55, on_page="p1")
    assert demo.prolab_services.workspaces.store.load(wid)["edit"]["schema"] == 1  # overwritten by the change


def test_no_state_keeps_today_s_in_memory_behaviour(model_dir, encoder, tmp_path):
    demo = make_demo(model_dir, encoder, tmp_path / "state", keep_state=False)
    ui = demo.prolab_ui
    assert ui.workspace.browser is None and not (tmp_path / "state").exists()
    assert not any(f.api_name == "forget_work" for f in demo.fns.values())
    s = edit_and_add_novel(demo, "p1")
    assert s.workspace is None and s.edit.descriptions["road"] == ["flat grey asphalt"]
    assert not (tmp_path / "state").exists()
