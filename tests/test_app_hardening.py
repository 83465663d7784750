"""The app's handlers under hostile or careless use (issue 21): bounded sessions, bounded LLM requests, no
lost work, one readable message per mistake, and no stale or misleading views. Called without a server,
as in ``tests/test_app_handlers.py`` (whose fixtures build the real components on a tiny model)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.builders import write_labelled_folder
from tests.test_app_handlers import (EVAL_CLASSES, _zipped, call, data_root, demo,  # noqa: F401 (fixtures)
                                     event, segmented, ui)

gr = pytest.importorskip("gradio")


def fn_named(demo, name: str):
    """An event's handler by function name (for events without an API name)."""
    return next(fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == name)


# ---------------------------------------------------------------------------- sessions
def test_sessions_beyond_the_cap_are_released_least_recent_first_and_told(demo, ui, monkeypatch):
    res = demo.prolab_services.sessions
    for s in list(res._sessions):  # other tests' sessions: out of the way
        s.release()
    monkeypatch.setattr(res.config, "max_sessions", 2)
    first, second = segmented(demo)[ui.state], segmented(demo)[ui.state]
    call(demo, "rescore", first, 0.0, 0.55)  # first is now the most recently used
    third = segmented(demo)[ui.state]
    assert second.released and second.evicted and second.edit.image is None
    assert not first.released and not third.released
    with pytest.raises(gr.Error, match="make room for other users"):
        call(demo, "rescore", second, 0.0, 0.55)
    # told once; then an ordinary fresh session (no image: the threshold is kept, no error)
    assert "upload an image" in call(demo, "rescore", second, 0.0, 0.55)[ui.viewer.status]
    live = [s for s in res._sessions if not s.released]
    assert len(live) <= 2


def test_sessions_beyond_the_memory_budget_are_released_too(demo, ui, monkeypatch):
    res = demo.prolab_services.sessions
    for s in list(res._sessions):
        s.release()
    first = segmented(demo)[ui.state]
    monkeypatch.setattr(res.config, "max_sessions", 100)
    monkeypatch.setattr(res.config, "session_memory_mb", 1.5 * first.nbytes / 2 ** 20)  # room for one
    second = segmented(demo)[ui.state]  # over budget once it has segmented: the next action or sweep evicts
    assert res.sweep() == 1
    assert first.released and first.evicted and not second.released


def test_a_busy_session_is_neither_swept_when_idle_nor_evicted(demo, ui, monkeypatch):
    """A handler running without the session's lock (a description search) marks it busy: the sweeper and the
    session cap leave it alone, and it counts as used when the work ends."""
    res = demo.prolab_services.sessions
    for s in list(res._sessions):
        s.release()
    busy = segmented(demo)[ui.state]
    monkeypatch.setattr(res.config, "session_ttl", 0.0)  # every session is idle at once
    with res.working(busy):
        assert busy.busy == 1 and res.sweep() == 0 and not busy.released
        monkeypatch.setattr(res.config, "max_sessions", 1)
        other = segmented(demo)[ui.state]
        assert not busy.released and not other.released  # the cap could not take the busy one
    assert busy.busy == 0 and res.sweep() >= 1 and busy.released  # idle again: swept


# ---------------------------------------------------------------------------- novel categories and the LLM
def test_llm_requests_are_capped_in_number_and_length(demo):
    with pytest.raises(gr.Error, match="at most 20 at a time"):
        call(demo, "generate_descriptions", ", ".join(f"thing {i}" for i in range(21)), "{}")
    with pytest.raises(gr.Error, match="at most 60 characters"):
        call(demo, "generate_descriptions", "x" * 61, "{}")
    with pytest.raises(gr.Error, match="too much text"):
        call(demo, "generate_descriptions", "y" * 1_000_000, "{}")


@pytest.mark.parametrize("box, message", [('{"zebra": ["Black and white stripes",]}', "not valid JSON"),
                                          ('["a list"]', "must hold a JSON object"),
                                          ("[" * 100_000, "nested too deeply")],
                         ids=["trailing-comma", "a-list", "deep"])
def test_generate_and_template_never_overwrite_a_box_they_cannot_read(demo, box, message):
    """The box is not an output of a failed event, so what the user typed stays; no request is made."""
    for api_name in ("generate_descriptions", "novel_template"):
        with pytest.raises(gr.Error, match=message) as err:
            call(demo, api_name, "okapi", box)
        assert "left as it is" in err.value.message


def test_deep_json_and_a_bom_in_the_novel_box(demo, ui):
    s = segmented(demo)[ui.state]
    with pytest.raises(gr.Error, match="nested too deeply"):
        call(demo, "segment_novel", s, "[" * 100_000, 0.0, 0.55)
    out = call(demo, "segment_novel", s, "\ufeff" + json.dumps({"zebra": ["Black and white stripes"]}), 0.0, 0.55)
    assert "zebra" in out[ui.viewer.legend] or out[ui.novel.table]


def test_typing_mistakes_badge_only_their_own_panel(demo, ui):
    """A mistake in a text box (novel categories, a class's sentences, an imported file) must not cover
    the result image, legend and status with error badges: the last good result stays on screen."""
    own = {"segment_novel": ui.novel.table, "clear_novel": ui.novel.table, "edit_class": ui.edit.changes,
           "reset_class": ui.edit.changes, "reset_descriptions": ui.edit.changes,
           "import_descriptions": ui.edit.changes, "load_custom_label_set": ui.controls.custom_file}
    for api_name, target in own.items():
        targets = event(demo, api_name).show_progress_on
        assert [c._id for c in targets or []] == [target._id], api_name


# ---------------------------------------------------------------------------- what the status says
def _changed(status: str) -> str:
    return status.split("% of pixels changed")[0].rsplit(" ", 1)[-1]


def test_a_label_set_picked_once_but_fired_twice_reports_the_real_change(demo, ui):
    s = segmented(demo)[ui.state]
    first = call(demo, "set_label_set", s, "msrc_23", None, 0.0, 0.55)[ui.viewer.status]
    again = call(demo, "set_label_set", s, "msrc_23", None, 0.0, 0.55)[ui.viewer.status]
    slider = call(demo, "rescore", s, 0.0, 0.55)[ui.viewer.status]
    assert float(_changed(first)) > 0
    assert _changed(again) == _changed(first) == _changed(slider)


def test_resetting_the_only_edited_class_is_no_longer_edited(demo, ui):
    s = segmented(demo)[ui.state]
    out = call(demo, "edit_class", s, "camvid_11", None, "road", "Flat grey asphalt", 0.0, 0.55)
    assert "(edited)" in out[ui.viewer.status]
    out = call(demo, "reset_class", s, "road", 0.0, 0.55)
    assert "(edited)" not in out[ui.viewer.status] and not s.edit.edited_sets()


def test_rebuilding_with_another_k_refreshes_the_explorer_views(demo, ui):
    s = segmented(demo)[ui.state]
    call(demo, "rebuild_label_space", s, "camvid_11", None, 8, 0.0, 0.55)
    refresh = fn_named(demo, "refresh_views")
    assert {c._id for c in refresh.outputs} >= {ui.space.sentence_plot._id, ui.space.class_md._id,
                                               ui.space.class_rows._id, ui.space.prop_md._id,
                                               ui.space.matrix_plot._id, ui.space.prop_query._id}
    after = {f.trigger_after for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "refresh_views"}
    assert after == {event(demo, "rebuild_label_space")._id, event(demo, "use_model_properties")._id}
    out = refresh.fn(s, "property", "road")
    rows = out[ui.space.class_rows]
    assert rows and all(int(r[1]) < 8 for r in rows)  # properties of the K = 8 space
    assert out[ui.space.matrix_plot] is None and out[ui.space.prop_query] == ""


# ---------------------------------------------------------------------------- Evaluate uploads
def test_evaluate_uploads_with_too_many_classes_or_wrong_masks_are_refused(demo, ui, tmp_path):
    folder = write_labelled_folder(tmp_path / "many", EVAL_CLASSES, n=1)
    (folder / "classes.txt").write_text("".join(f"class {i}\n" for i in range(300)))
    with pytest.raises(gr.Error, match="more than 255 classes; the limit is 255"):
        call(demo, "evaluate", None, "camvid_11", None, "upload", _zipped(folder, tmp_path / "many.zip"), "")
    folder = write_labelled_folder(tmp_path / "t", EVAL_CLASSES, n=1)
    Image.fromarray(np.zeros((64, 48), np.uint8)).save(folder / "masks" / "im0.png")  # image is 64 x 48
    with pytest.raises(gr.Error, match="transposed"):
        call(demo, "evaluate", None, "camvid_11", None, "upload", _zipped(folder, tmp_path / "t.zip"), "")
    latin = write_labelled_folder(tmp_path / "latin", ["caf\xe9", "road"], n=1)
    (latin / "classes.txt").write_bytes("caf\xe9\nroad\n".encode("latin-1"))
    out = call(demo, "evaluate", None, "camvid_11", None, "upload", _zipped(latin, tmp_path / "latin.zip"), "")
    assert "mIoU" in out[ui.evaluate.summary]


def test_a_folder_at_the_root_keeps_the_message_readable(demo):
    with pytest.raises(gr.Error) as err:
        call(demo, "evaluate", None, "camvid_11", None, "upload", None, "/etc")
    assert "imagesetc" not in err.value.message and "images/ and masks/" in err.value.message


def test_zip_bomb_mask_is_a_readable_error(demo, tmp_path):
    """A mask over PIL's pixel limit inside an upload: one message, not a DecompressionBombError."""
    folder = write_labelled_folder(tmp_path / "bomb", EVAL_CLASSES, n=1)
    Image.new("L", (20000, 10000)).save(folder / "masks" / "im0.png")
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p in folder.rglob("*"):
            if p.is_file():
                z.write(p, p.relative_to(folder))
    with pytest.raises(gr.Error, match="too large|at most 16.8 MP"):
        call(demo, "evaluate", None, "camvid_11", None, "upload", str(path), "")
    assert Path(path).stat().st_size < 2_000_000


# ---------------------------------------------------------------------------- start-up and arguments
@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "--port must be between 1 and 65535"), (["--host", "256.1.1.1"], "--host"),
    (["--label-set", "nope"], "not a label set"), (["--cache-dir", "/proc/nope"], "cannot be written"),
    (["--session-ttl", "inf"], "--session-ttl"), (["--session-ttl", "nan"], "--session-ttl"),
    (["--max-sessions", "0"], "--max-sessions"), (["--session-memory", "nan"], "--session-memory")])
def test_app_arguments_are_checked_before_the_server_starts(args, message, capsys):
    from app.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--no-browser", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err


def test_the_banner_and_model_picker_at_start_up_name_the_model_not_its_path(demo, ui):
    from app.main import placeholder_entry
    from app.views.model import banner
    from prolab.assets import DEFAULT_MODEL_DIR, MODELS_DIR

    html = banner(placeholder_entry(False, str(DEFAULT_MODEL_DIR)))
    assert str(DEFAULT_MODEL_DIR) not in html and "<code>default</code>" in html
    choices = [value for _, value in ui.model.shipped.choices]
    assert choices and not any("/" in v for v in choices) and "default" in choices
    assert not ui.model.card.parent.open  # the model card is folded
    with pytest.raises(gr.Error, match="picked by name") as typed_path:  # the typed path is not repeated
        call(demo, "load_shipped_model", None, str(MODELS_DIR / "default"))
    assert str(MODELS_DIR) not in str(typed_path.value) and "default" in str(typed_path.value)
    with pytest.raises(gr.Error, match="No shipped model 'nope'"):
        call(demo, "load_shipped_model", None, "nope")


# ---------------------------------------------------------------------------- new-user details
def test_a_big_upload_says_it_was_resized(demo, ui, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(big)
    out = call(demo, "load_image", None, str(big))
    assert "Resized from 2000 x 1500 to 1024 x 768" in out[ui.viewer.status]
    out = call(demo, "segment", out[ui.state], str(big), "camvid_11", None, 0.0, 0.55)
    assert "Resized from 2000 x 1500" in out[ui.viewer.status]


def test_the_pixel_inspector_marks_the_pixel(demo, ui):
    s = segmented(demo)[ui.state]
    out = call(demo, "inspect_pixel", s, 40, 30)
    marked = out[ui.viewer.image]
    plain = call(demo, "rescore", s, 0.0, 0.55)[ui.viewer.image]
    diff = np.argwhere((marked != plain).any(-1))
    assert len(diff) and abs(diff[:, 0].mean() - 30) < 3 and abs(diff[:, 1].mean() - 40) < 3
    with pytest.raises(gr.Error, match="outside"):
        call(demo, "inspect_pixel", s, 100_000, 0)


def test_counts_are_pluralised_and_headers_do_not_break_words():
    from app.views.common import CSS
    from app.views.labelspace import property_detail
    from tests.builders import random_label_space

    space = random_label_space(8, k=10, classes=5)
    k = next(k for k in range(space.k) if space.multihot[:, k].sum() == 1)
    assert "Used by 1 class:" in property_detail(space, k)
    assert "word-break:normal" in CSS


def test_a_class_without_ground_truth_pixels_is_explained(demo, ui, tmp_path):
    folder = write_labelled_folder(tmp_path / "absent", EVAL_CLASSES, n=1)
    (folder / "classes.txt").write_text("\n".join(EVAL_CLASSES + ["horse"]) + "\n")  # listed, no pixels
    out = call(demo, "evaluate", None, "msrc_23", None, "upload", _zipped(folder, tmp_path / "absent.zip"), "")
    assert "No pixels of horse in this set's ground truth" in out[ui.evaluate.summary]


def test_a_negative_pixel_position_is_a_message(demo, ui):
    s = segmented(demo)[ui.state]
    with pytest.raises(gr.Error, match="x must be at least 0, got -1"):
        call(demo, "inspect_pixel", s, -1, 0)


# ---------------------------------------------------------------------------- input limits and files (issue 31)
def test_label_sets_beyond_the_limits_are_refused_before_any_work(demo, ui, tmp_path):
    from prolab.limits import LIMITS

    state = segmented(demo)[ui.state]
    big = tmp_path / "big.json"
    big.write_text(json.dumps({f"class_{i}": ["a", "b"] for i in range(LIMITS.max_classes + 1)}))
    with pytest.raises(gr.Error, match=f"the limit is {LIMITS.max_classes}"):
        call(demo, "load_custom_label_set", state, "custom", str(big), 0.0, 0.55)
    dup = tmp_path / "dup.json"
    dup.write_text('{"zebra": ["stripes"], "zebra": ["hooves"]}')
    with pytest.raises(gr.Error, match="names &#x27;zebra&#x27; twice|names 'zebra' twice"):
        call(demo, "load_custom_label_set", state, "custom", str(dup), 0.0, 0.55)
    with pytest.raises(gr.Error, match="per class"):
        call(demo, "edit_class", state, "camvid_11", None, "road", "x\n" * 100_000, 0.0, 0.55)
    with pytest.raises(gr.Error, match="characters; the limit is 100"):
        call(demo, "edit_class", state, "camvid_11", None, "n" * 1_000_000, "a sentence", 0.0, 0.55)
    with pytest.raises(gr.Error, match="control character"):
        call(demo, "segment_novel", state, json.dumps({"ok\x00ay": ["x"]}), 0.0, 0.55)
    with pytest.raises(gr.Error, match="the limit is 4 MB"):
        call(demo, "segment_novel", state, json.dumps({"zebra": ["x" * 100] * 50_000}), 0.0, 0.55)
    novel = {f"novel {i}": ["x"] for i in range(LIMITS.max_classes - 5)}  # within the limit alone, not with camvid's 11
    with pytest.raises(gr.Error, match="with these novel categories"):
        call(demo, "segment_novel", state, json.dumps(novel), 0.0, 0.55)
    assert state.edit.last is not None and not state.released  # the user's result is kept


def test_exports_belong_to_their_session_and_go_with_it(demo, ui, monkeypatch):
    from app.services.sessions import release_session

    res = demo.prolab_services.sessions
    state = segmented(demo)[ui.state]
    files = call(demo, "export_mask", state)[ui.export.files] + call(demo, "export_descriptions_file", state)[ui.export.files]
    assert all(Path(f).is_file() and Path(f).is_relative_to(state.folder) for f in files)
    assert res.disk_used() >= sum(Path(f).stat().st_size for f in files)
    release_session(state)
    assert not any(Path(f).exists() for f in files) and state.folder is None
    # a disk budget full of a session in use: a sentence before anything is written
    other = segmented(demo)[ui.state]
    call(demo, "export_mask", other)
    monkeypatch.setattr(res.config, "disk_budget_mb", other.edit.image.nbytes / 2 ** 20 / 2)
    with pytest.raises(gr.Error, match="space for files to download"):
        call(demo, "export_mask", other)
    # ... while an idle session's files make room (it is released and told)
    third = segmented(demo)[ui.state]
    monkeypatch.setattr(res.config, "disk_budget_mb", (other.disk_bytes / 2 + third.edit.image.nbytes) / 2 ** 20)
    call(demo, "export_mask", third)
    assert other.released and other.evicted and not third.released


def test_api_calls_without_an_event_or_with_a_bad_method_are_sentences(demo, ui):
    state = segmented(demo)[ui.state]
    with pytest.raises(gr.Error, match="Click a point of the result image"):
        fn_named(demo, "inspect_click").fn(state, None)
    with pytest.raises(gr.Error, match="Click a row of the table"):
        fn_named(demo, "pick_property").fn(state, None)
    with pytest.raises(gr.Error, match="Choose a map method"):
        event(demo, "sentence_map").fn(state, "camvid_11", None, None, "class", "")
    with pytest.raises(gr.Error, match="at most 1024 plain characters"):
        call(demo, "load_model", state, "m" * 100_000)


def test_gradio_expiry_leaves_a_session_in_use_to_the_sweeper(demo, ui, monkeypatch):
    """gradio's clock for a tab's state can run out while a long call works or has just returned; the files
    that call returns must still be there when gradio copies them."""
    import time

    from app.services.sessions import expire_session

    state = segmented(demo)[ui.state]
    files = call(demo, "export_mask", state)[ui.export.files]
    monkeypatch.setattr(state, "ttl", 60.0)
    expire_session(state)  # just used: kept
    assert not state.released and all(Path(f).is_file() for f in files)
    with state.lock:  # in use by another call (the callback runs in gradio's own thread)
        import threading

        t = threading.Thread(target=expire_session, args=(state,))
        t.start()
        t.join()
    assert not state.released
    state.last_used = time.monotonic() - 61
    expire_session(state)  # idle beyond the TTL: released with its files
    assert state.released and not any(Path(f).exists() for f in files)
