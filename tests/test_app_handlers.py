"""The app's handlers called directly, without a server: the real components are built inside
``gr.Blocks()`` (not launched) on a tiny untrained model, each handler is called as its event calls it,
and what it returns (``{component: value}``) is checked against the outputs its event declares.

The forward pass is counted by wrapping ``embed_image_factored`` wherever prolab imported it (the
workbench and the evaluation cache call it for every forward pass), so re-segmenting paths can be shown to re-score the cached embeddings.
"""
from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import numpy as np
import pytest

from tests.app_server import save_tiny_model
from tests.builders import write_labelled_folder

gr = pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = str(REPO / "assets" / "examples" / "astronaut.png")
CAMVID = json.loads((REPO / "assets" / "descriptions" / "camvid_11.json").read_text())
EVERY_SENTENCE = [s for v in CAMVID.values() for s in v]  # a class with these wins almost everywhere
MAX_FUNCTION_LINES = 60
#: The labelled sets' classes: sky is the background (class 0), zebra is not a CamVid class.
EVAL_CLASSES = ["sky", "road", "tree", "zebra"]
EVAL_IMAGES = 3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Three tiny labelled sets in the shared datasets' format (the Evaluate tab's list)."""
    root = tmp_path_factory.mktemp("datasets")
    for i, name in enumerate(("tinyset", "tinyset2", "tinyset3")):
        write_labelled_folder(root / name, EVAL_CLASSES, n=EVAL_IMAGES, seed=i, shared=True)
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory, encoder, data_root):
    from app.main import build_demo
    from app.config import AppConfig
    from app.services import Services

    model = save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder)
    res = Services(AppConfig(model=str(model), label_set="camvid_11", cache_dir=str(encoder.cache.path.parent),
                              data_root=str(data_root)))
    return build_demo(services=res)


@pytest.fixture()
def ui(demo):
    return demo.prolab_ui


@pytest.fixture()
def forward_passes(monkeypatch) -> list:
    """One entry per forward pass of the network from now on."""
    import sys

    import prolab.inference

    calls: list = []
    real = prolab.inference.embed_image_factored

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("prolab") and getattr(module, "embed_image_factored", None) is real:
            monkeypatch.setattr(module, "embed_image_factored", counted)
    return calls


def event(demo, api_name: str):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name)


def call(demo, api_name: str, *args) -> dict:
    """Call the handler of event ``api_name`` as gradio does (resources and UI bound); every component
    it returns must be one of the event's outputs (gradio refuses others)."""
    fn = event(demo, api_name)
    out = fn.fn(*args)
    assert isinstance(out, dict) and out, api_name
    declared = {id(c) for c in fn.outputs}
    strays = [c for c in out if id(c) not in declared]
    assert not strays, f"{api_name} returns components that are not its outputs: {strays}"
    return out


def segmented(demo, state=None, threshold=0.0) -> dict:
    return call(demo, "segment", state, ASTRONAUT, "camvid_11", None, threshold, 0.55)


def loaded(demo):
    """A new session with the image loaded but not segmented."""
    out = call(demo, "load_image", None, ASTRONAUT)
    assert "Image loaded" in out[demo.prolab_ui.viewer.status]
    return out[demo.prolab_ui.state]


def test_segment_returns_every_result_panel(demo, ui, forward_passes):
    out = segmented(demo)
    assert set(out) == set(ui.result)  # a segmentation updates every result panel
    assert out[ui.viewer.image].shape == (512, 512, 3)
    assert " present" in out[ui.viewer.legend] and "CamVid-11" in out[ui.viewer.status]
    assert len(out[ui.properties.property]["choices"]) > 2
    assert len(forward_passes) == 1
    again = segmented(demo, out[ui.state])
    assert len(forward_passes) == 1 and "cached" in again[ui.viewer.status]


def test_edited_descriptions_rescore_the_result_without_a_forward_pass(demo, ui, forward_passes):
    s = segmented(demo)[ui.state]
    wb = s.edit.workbench
    embeddings, before = wb._output, wb.last.labels.copy()
    assert "sky" not in {wb.last.class_names[i] for i in np.unique(before)}
    out = call(demo, "edit_class", s, "camvid_11", None, "sky", "\n".join(EVERY_SENTENCE), 0.0, 0.55)
    assert len(forward_passes) == 1 and wb._output is embeddings  # the cached features, re-scored
    sky = wb.last.class_names.index("sky")
    assert (wb.last.labels == sky).mean() > 0.5 and not np.array_equal(wb.last.labels, before)
    assert "(edited)" in out[ui.viewer.status] and "forward pass: cached" in out[ui.viewer.status]
    assert out[ui.edit.changes][0][0] == "sky" and out[ui.edit.class_name]["value"] == "sky"
    assert 'data-class="sky"' in out[ui.viewer.legend]
    out = call(demo, "reset_descriptions", s, "sky", 0.0, 0.55)
    assert np.array_equal(wb.last.labels, before) and not out[ui.edit.changes]
    assert len(forward_passes) == 1


def test_novel_categories_rescore_the_result_without_a_forward_pass(demo, ui, forward_passes):
    s = segmented(demo)[ui.state]
    text = json.dumps({"everything": EVERY_SENTENCE})
    out = call(demo, "segment_novel", s, text, 0.0, 0.55)
    assert set(out) == set(ui.result) | {ui.novel.table}  # never the user's text boxes
    assert 'data-class="everything"' in out[ui.viewer.legend] and "★ new" in out[ui.viewer.legend]
    rows = out[ui.novel.table]
    assert {row[0] for row in rows} == {"everything"}
    # the trained classes it aligns to and the properties it maps to, each with its similarity
    kinds = [row[1] for row in rows]
    assert "trained class" in kinds and any(k.startswith("property ") for k in kinds)
    assert all(isinstance(row[3], float) and 0.0 <= row[3] <= 1.0 for row in rows)
    detail = call(demo, "class_detail", s, "sky")
    assert "Aligns to trained classes" in detail[ui.space.class_md] and "**sky** 1.00 (100%)" in detail[ui.space.class_md]
    assert all(0.0 < row[3] <= 1.0 for row in detail[ui.space.class_rows])
    out = call(demo, "clear_novel", s, 0.0, 0.55)
    assert 'data-class="everything"' not in out[ui.viewer.legend] and out[ui.novel.table] == []
    assert len(forward_passes) == 1


def test_novel_categories_before_segmenting_compute_nothing(demo, ui, forward_passes):
    """With an image but no result, novel categories are only added (as every other re-segmenting
    change does): no forward pass until Segment, which then uses them."""
    s = loaded(demo)
    out = call(demo, "segment_novel", s, json.dumps({"everything": EVERY_SENTENCE}), 0.0, 0.55)
    assert set(out) == {ui.state, ui.viewer.status, ui.novel.table}
    assert out[ui.viewer.status] == "Novel categories added; press **Segment**."
    assert not forward_passes and s.edit.last is None
    assert 'data-class="everything"' in segmented(demo, s)[ui.viewer.legend]
    assert len(forward_passes) == 1
    fresh = call(demo, "segment_novel", None, json.dumps({"zebra": ["Black and white stripes"]}), 0.0, 0.55)
    assert "upload an image" in fresh[ui.viewer.status]


@pytest.mark.parametrize("api_name, args, status", [
    ("set_label_set", ("msrc_23", None), "Label set: **MSRC-v2-23**."),
    ("edit_class", ("camvid_11", None, "road", "Flat grey asphalt"), "Descriptions updated."),
    ("reset_descriptions", (None,), "Descriptions updated."),
    ("clear_novel", (), "Novel categories removed."),
    ("rebuild_label_space", ("camvid_11", None, 8), None),
    ("use_model_properties", ("camvid_11", None), None),
])
def test_without_a_result_resegmenting_changes_only_say_so(demo, ui, forward_passes, api_name, args, status):
    """One path: with nothing segmented, no panel of the result is touched and nothing is computed."""
    s = loaded(demo)
    out = call(demo, api_name, s, *args, 0.0, 0.55)
    assert not {ui.viewer.image, ui.viewer.legend, ui.controls.top_fig} & set(out)
    assert out.get(ui.viewer.status) == status and s.edit.last is None and not forward_passes


def test_label_set_and_label_space_changes_rescore_the_result(demo, ui, forward_passes):
    s = segmented(demo)[ui.state]
    out = call(demo, "set_label_set", s, "msrc_23", None, 0.0, 0.55)
    assert "MSRC" in out[ui.viewer.status] and "cached" in out[ui.viewer.status]
    assert out[ui.controls.custom_file]["visible"] is False
    out = call(demo, "rebuild_label_space", s, "camvid_11", None, 8, 0.0, 0.55)
    assert "K = 8" in out[ui.viewer.status] and "own K-Means" in out[ui.viewer.status]
    assert len(out[ui.space.prop_table]) == 8 and len(out[ui.properties.property]["choices"]) == 8
    out = call(demo, "use_model_properties", s, "camvid_11", None, 0.0, 0.55)
    assert "(the model's properties)" in out[ui.viewer.status]
    assert len(forward_passes) == 1


def test_errors_are_escaped_messages_and_leave_the_session_as_it_was(demo, ui):
    s = segmented(demo)[ui.state]
    labels = s.edit.last.labels.copy()
    with pytest.raises(gr.Error, match="not valid JSON"):
        call(demo, "segment_novel", s, '{"zebra": [', 0.0, 0.55)
    with pytest.raises(gr.Error, match="no sentences"):
        call(demo, "segment_novel", s, '{"zebra": []}', 0.0, 0.55)
    assert len(s.edit.novel) == 0 and np.array_equal(s.edit.last.labels, labels)
    with pytest.raises(gr.Error) as err:
        call(demo, "property_map", s, "<script>alert(1)</script>", True)
    assert "<script>" not in err.value.message and "&lt;script&gt;" in err.value.message
    with pytest.raises(gr.Error, match="finite"):
        call(demo, "rescore", s, float("nan"), 0.55)
    assert " present" in call(demo, "rescore", s, 0.0, 0.55)[ui.viewer.legend]


def test_upload_errors_show_in_place_and_keep_the_image(demo, ui, tmp_path):
    s = loaded(demo)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.warns(UserWarning, match="broken.png"):  # outside a server gr.Warning warns
        out = call(demo, "load_image", s, str(bad))
    assert set(out) == {ui.state, ui.viewer.status} and "broken.png is not a readable image" in out[ui.viewer.status]
    assert s.edit.image is not None


def test_select_events_get_their_event_data(demo, ui):
    s = segmented(demo)[ui.state]
    out = call(demo, "inspect_click", s, gr.SelectData(None, {"index": [300, 200], "value": None}))
    i = ui.inspector
    assert (out[i.px], out[i.py]) == (300, 200) and "Pixel (300, 200)" in out[i.inspect_md]
    assert out[ui.right_tabs].selected == "inspector"
    out = call(demo, "pick_property", s, gr.SelectData(None, {"index": [2, 0], "value": 2, "row_value": [2, "x"]}))
    assert out[ui.properties.property] == "2" and "Property 2" in out[ui.space.prop_md]
    out = call(demo, "pick_example", gr.SelectData(None, {"index": 0, "value": None}))
    assert Path(out[ui.viewer.file]).is_file()


def test_gradio_reads_every_handler_s_signature(demo):
    """Handlers are bound to the resources and the UI; gradio must still see their type hints (event
    data is passed by annotation) and their inputs, and the docstring is the API description."""
    from gradio.helpers import special_args

    for fn in demo.fns.values():
        hints = typing.get_type_hints(fn.fn)  # raises if an annotation cannot be resolved
        assert "res" not in fn.fn.__signature__.parameters and "ui" not in fn.fn.__signature__.parameters
        wants_event = any(h is gr.SelectData for h in hints.values())
        assert (special_args(fn.fn)[2] is not None) == wants_event, fn.api_name
    assert "forward pass per image" in event(demo, "segment").fn.__doc__


# ---------------------------------------------------------------------------- Evaluate tab
def evaluated(demo, state=None, label_set="camvid_11", eval_set="tinyset", upload=None, folder="") -> dict:
    return call(demo, "evaluate", state, label_set, None, eval_set, upload, folder)


def _latest(state) -> dict:
    return state.evaluation.current().records[-1].metrics


def _zipped(folder: Path, path: Path) -> str:
    import shutil

    return shutil.make_archive(str(path.with_suffix("")), "zip", folder)


@pytest.fixture()
def fresh_caches(demo):
    """Every test starts without shared evaluation caches (they outlive sessions)."""
    demo.prolab_services.evaluation.caches.clear()


def test_evaluate_then_edit_then_evaluate_shows_each_class_s_change(demo, ui, forward_passes, fresh_caches):
    e = ui.evaluate
    out = evaluated(demo)
    s = out[ui.state]
    assert len(forward_passes) == EVAL_IMAGES  # the first evaluation runs the model once per image
    summary = out[e.summary]
    assert "**tinyset val** (3 images)" in summary and "evaluation **v1**" in summary and "**mIoU " in summary
    assert f"{EVAL_IMAGES} forward passes" in summary and "No earlier evaluation of this set" in summary
    assert "Not in the label set, so never predicted (IoU 0): zebra." in summary
    fig = out[e.chart]
    assert len(fig.data) == 1 and "zebra (not in the label set)" in fig.data[0].y
    assert out[e.deltas] == [] and out[e.version_b]["value"] == "1" and out[e.version_a]["value"] is None
    before = _latest(s)["per_class_iou"]
    assert before["zebra"] in (0.0, None)
    call(demo, "edit_class", s, "camvid_11", None, "sky", "\n".join(EVERY_SENTENCE), 0.0, 0.55)
    out = evaluated(demo, s)
    assert len(forward_passes) == EVAL_IMAGES  # re-scored from the cache
    after = _latest(s)["per_class_iou"]
    assert after["sky"] > (before["sky"] or 0.0) + 0.2  # sky now wins nearly everywhere; sky is the background
    summary = out[e.summary]
    assert "Re-evaluated from the cache" in summary and "against v1" in summary and "CamVid-11 (edited)" in summary
    assert f"sky {100 * (before['sky'] or 0):.1f} → {100 * after['sky']:.1f}" in summary
    sky = next(r for r in out[e.deltas] if r[0] == "sky")
    assert sky[1:] == [f"{100 * (before['sky'] or 0):.1f}", f"{100 * after['sky']:.1f}",
                       f"{100 * (after['sky'] - (before['sky'] or 0)):+.1f}"]
    changes = [abs(float(r[3])) for r in out[e.deltas] if r[3] != "–"]
    assert changes == sorted(changes, reverse=True)  # largest change first
    assert len(out[e.chart].data) == 2 and out[e.chart].data[0].name == "v1"  # the previous IoU beside each bar
    assert [c[1] for c in out[e.version_a]["choices"]] == ["2", "1"] and out[e.version_a]["value"] == "1"
    for row in out[e.confused]:
        assert " ↔ " in row[0] and row[1] == row[2] + row[3] > 0


def test_restore_puts_back_an_earlier_label_set_and_its_descriptions(demo, ui, forward_passes, fresh_caches):
    s = evaluated(demo)[ui.state]
    call(demo, "edit_class", s, "camvid_11", None, "sky", "Blue and bright", 0.0, 0.55)
    evaluated(demo, s)
    evaluated(demo, s, label_set="msrc_23")  # v3: another label set, the same labelled set
    assert s.edit.choice.key == "msrc_23"
    out = call(demo, "compare_evaluations", s, "1", "2")
    assert "**v1 → v2** (CamVid-11 → CamVid-11 (edited))" in out[ui.evaluate.summary]
    assert next(r for r in out[ui.evaluate.deltas] if r[0] == "sky")
    out = call(demo, "restore_evaluation", s, "2", "sky", 0.0, 0.55)
    assert s.edit.choice.key == "camvid_11" and out[ui.controls.label_set] == "camvid_11"
    assert out[ui.edit.text] == "Blue and bright" and out[ui.edit.changes][0][0] == "sky"
    assert "v2" in out[ui.evaluate.status] and "Descriptions updated." == out[ui.viewer.status]
    out = call(demo, "restore_evaluation", s, "1", "sky", 0.0, 0.55)
    assert not s.edit.is_edited and out[ui.edit.changes] == []
    assert out[ui.edit.text] == "\n".join(CAMVID["sky"])
    assert not s.edit.edited_sets()  # the restored shipped set is not an edit
    segmented(demo, s)
    out = call(demo, "restore_evaluation", s, "2", "sky", 0.0, 0.55)  # re-segments through EditSession.apply
    assert "CamVid-11 (edited)" in out[ui.viewer.status] and "forward pass: cached" in out[ui.viewer.status]
    assert set(ui.result) <= set(out) and len(forward_passes) == EVAL_IMAGES + 1
    with pytest.raises(gr.Error, match=r"No evaluation version 9 \(kept: 1, 2, 3\)"):
        call(demo, "restore_evaluation", s, "9", "sky", 0.0, 0.55)
    with pytest.raises(gr.Error, match="Pick version A"):
        call(demo, "compare_evaluations", s, None, "2")
    with pytest.raises(gr.Error, match="Nothing evaluated yet"):
        call(demo, "compare_evaluations", None, "1", "2")


def test_an_uploaded_zip_is_this_session_s_own_and_bad_ones_are_readable_errors(demo, ui, forward_passes,
                                                                                tmp_path):
    folder = write_labelled_folder(tmp_path / "mine", EVAL_CLASSES, n=2)
    good = _zipped(folder, tmp_path / "my set.zip")
    out = call(demo, "evaluate", None, "camvid_11", None, "upload", good, "")
    s = out[ui.state]
    assert "**my set all** (2 images)" in out[ui.evaluate.summary] and len(forward_passes) == 2
    assert s.evaluation.upload is not None and s.evaluation.nbytes > 0
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    no_masks = tmp_path / "no_masks.zip"
    import zipfile

    with zipfile.ZipFile(no_masks, "w") as z:
        z.writestr("images/a.png", b"x")
        z.writestr("classes.txt", "sky\n")
    for bad, message in ((broken, "broken.zip is not a readable zip file"), (no_masks, "needs images/ and masks/")):
        with pytest.raises(gr.Error, match=message) as err:
            call(demo, "evaluate", s, "camvid_11", None, "upload", str(bad), "")
        assert "/tmp" not in err.value.message and "prolab-eval" not in err.value.message
    out = call(demo, "evaluate", s, "camvid_11", None, "upload", good, "")  # the session survived, cache kept
    assert "against v1" in out[ui.evaluate.summary] and len(forward_passes) == 2
    other = call(demo, "evaluate", None, "camvid_11", None, "upload", good, "")[ui.state]
    assert len(forward_passes) == 4 and other.evaluation.upload[1] is not s.evaluation.upload[1]
    out = call(demo, "evaluate", s, "camvid_11", None, "upload", None, str(folder))  # a folder, when local
    assert "**mine all**" in out[ui.evaluate.summary]
    s.release()
    assert s.evaluation.upload is None and s.evaluation.nbytes == 0
    # nothing chosen: one message, in the status (and a toast), no error on the other panels
    with pytest.warns(UserWarning, match="Nothing to evaluate yet: upload a .zip"):
        out = call(demo, "evaluate", s, "camvid_11", None, "upload", None, "")
    assert set(out) == {ui.state, ui.evaluate.status} and "upload a .zip" in out[ui.evaluate.status]
    with pytest.raises(gr.Error, match="No labelled set '../tinyset'"):
        call(demo, "evaluate", s, "camvid_11", None, "../tinyset", None, "")


def test_classes_outside_the_model_s_training_classes_get_the_open_set_credit(demo, ui, tmp_path):
    folder = str(write_labelled_folder(tmp_path / "fields", ["sky", "grass"], n=1))
    out = call(demo, "evaluate", None, "msrc_23", None, "upload", None, folder)
    assert "Outside the model's training classes: grass. They get the open-set credit" in out[ui.evaluate.summary]
    cache = out[ui.state].evaluation.upload[1]
    assert cache.prior is not None and all(im.sentence_map is not None for im in cache.images)
    summary = call(demo, "evaluate", None, "camvid_11", None, "upload", None, folder)[ui.evaluate.summary]
    assert "never predicted (IoU 0): grass." in summary and "Outside the model's training" not in summary


def test_shared_servers_evaluate_uploads_only(demo, ui, tmp_path, monkeypatch):
    folder = write_labelled_folder(tmp_path / "mine", EVAL_CLASSES, n=1)
    monkeypatch.setattr(demo.prolab_services.config, "host", "0.0.0.0")
    with pytest.raises(gr.Error, match="uploaded zips only"):
        call(demo, "evaluate", None, "camvid_11", None, "upload", None, str(folder))


def test_shared_sets_are_built_once_for_every_user_and_at_most_two_are_kept(demo, ui, forward_passes,
                                                                           fresh_caches):
    evaluated(demo)
    evaluated(demo)  # another session: the same cache
    assert len(forward_passes) == EVAL_IMAGES
    for name in ("tinyset2", "tinyset3"):
        evaluated(demo, eval_set=name)
    pool = demo.prolab_services.evaluation.caches
    assert len(pool) == demo.prolab_services.config.caches.shared_eval_caches == 2
    assert len(forward_passes) == 3 * EVAL_IMAGES
    assert pool.nbytes > 0
    evaluated(demo, eval_set="tinyset3")  # kept
    evaluated(demo)  # dropped (least recently used): built again
    assert len(forward_passes) == 4 * EVAL_IMAGES


def test_the_evaluate_panel_lists_the_shared_sets_and_states_its_memory_bound(demo, ui):
    choices = [c[1] for c in ui.evaluate.eval_set.choices]
    assert choices == ["tinyset", "tinyset2", "tinyset3", "upload"] and ui.evaluate.eval_set.value == "tinyset"
    shown = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]
    assert any("at most 2 kept" in text and "512 MiB" in text for text in shown)
    upload = next(fn for fn in demo.fns.values() if fn.fn.__name__ == "use_upload")  # a private event
    assert upload.fn() == {ui.evaluate.eval_set: "upload"}


#: A labelled set of CamVid classes only (the search needs every class of the set in the label set).
SEARCH_CLASSES = ["sky", "road", "tree"]


def _improve(demo, state, folder, budget=5, unit="proposals") -> dict:
    return call(demo, "improve_descriptions", state, "camvid_11", None, "upload", None, str(folder), budget, unit)


def test_improve_keeps_a_real_change_then_apply_makes_it_the_edits_and_reset_undoes_it(demo, ui, forward_passes,
                                                                                      tmp_path):
    """A deliberately bad road (every CamVid sentence: road wins everywhere): the search finds a change that
    raises both halves' mIoU, from the evaluation's cache (no forward pass), and Apply makes it the edits."""
    folder = write_labelled_folder(tmp_path / "streets", SEARCH_CLASSES, n=4)
    im = ui.evaluate.improve
    with pytest.raises(gr.Error, match="Nothing to apply yet"):
        call(demo, "apply_improvement", None, "sky", 0.0, 0.55)
    s = segmented(demo)[ui.state]
    call(demo, "edit_class", s, "camvid_11", None, "road", "\n".join(EVERY_SENTENCE), 0.0, 0.55)
    call(demo, "evaluate", s, "camvid_11", None, "upload", None, str(folder))
    passes, edited = len(forward_passes), s.edit.descriptions.to_dict()
    with pytest.raises(gr.Error, match=r"The budget \(proposals\) must be between 1 and"):
        _improve(demo, s, folder, budget=0)
    out = _improve(demo, s, folder)
    assert len(forward_passes) == passes  # re-scored the evaluation's cached outputs
    run = s.evaluation.search.last
    assert run is not None and run.result.kept and not s.evaluation.search.running
    assert run.result.search_after["miou"] > run.result.search_before["miou"]
    assert run.result.guard_after["miou"] >= run.result.guard_before["miou"]
    rows = out[im.kept]
    assert len(rows) == len(run.result.kept) and rows[0][0] == run.result.kept[0].class_name
    assert float(rows[0][4]) > 0 and float(rows[0][5]) >= 0  # the step's gain on each half, in points
    assert "Kept " in out[im.status] and "**Apply**" in out[im.status]
    assert s.edit.descriptions.to_dict() == edited == run.result.start.to_dict()  # nothing changes before Apply
    out = call(demo, "apply_improvement", s, "sky", 0.0, 0.55)
    assert s.edit.descriptions.to_dict() == run.result.descriptions.to_dict()
    changed = {r[0] for r in out[ui.edit.changes]}
    assert {k.class_name for k in run.result.kept if k.added or k.removed} <= changed
    first = run.result.kept[0].class_name
    assert out[ui.edit.class_name]["value"] == first and out[ui.edit.text] == "\n".join(s.edit.descriptions[first])
    assert "Applied the search's changes" in out[im.status] and "forward pass: cached" in out[ui.viewer.status]
    again = call(demo, "evaluate", s, "camvid_11", None, "upload", None, str(folder))  # measured again
    assert "Re-evaluated from the cache" in again[ui.evaluate.summary] and len(forward_passes) == passes
    out = call(demo, "reset_descriptions", s, "sky", 0.0, 0.55)
    assert not s.edit.is_edited and out[ui.edit.changes] == []


def test_cancel_stops_the_search_cleanly_and_keeps_the_session(demo, ui, tmp_path):
    import threading
    import time

    folder = write_labelled_folder(tmp_path / "streets", SEARCH_CLASSES, n=4)
    s = call(demo, "evaluate", None, "camvid_11", None, "upload", None, str(folder))[ui.state]
    assert call(demo, "cancel_improvement", s)[ui.evaluate.improve.status] == "No search is running."
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(out=_improve(demo, s, folder, budget=500)))
    worker.start()
    deadline = time.monotonic() + 120
    while not s.evaluation.search.running and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.evaluation.search.running and s.busy == 1  # the sweeper leaves a running search's session alone
    with pytest.raises(gr.Error, match="A search is already running"):
        _improve(demo, s, folder)
    with pytest.raises(gr.Error, match="still running"):
        call(demo, "apply_improvement", s, "sky", 0.0, 0.55)
    assert "Cancelling" in call(demo, "cancel_improvement", s)[ui.evaluate.improve.status]
    worker.join(120)
    assert not worker.is_alive() and not s.evaluation.search.running and s.busy == 0
    run = s.evaluation.search.last
    assert run.result.cancelled and run.result.proposals < 500
    assert outcome["out"][ui.evaluate.improve.status].startswith("**Cancelled** after")
    with pytest.raises(gr.Error, match="no entry for zebra"):  # the session goes on; tinyset has a class CamVid lacks
        call(demo, "improve_descriptions", s, "camvid_11", None, "tinyset", None, "", 3, "proposals")


def _functions(root: Path):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}", node.end_lineno - first + 1


def test_no_function_in_the_app_is_longer_than_60_lines():
    long = {name: n for name, n in _functions(REPO / "app") if n > MAX_FUNCTION_LINES}
    assert not long, long


def test_the_library_does_not_import_gradio():
    for path in (REPO / "prolab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "gradio" for n in names), path


#: The app's public API (``gradio_client`` endpoint names): kept when the code behind them moves.
PUBLIC_API = sorted([
    "class_detail", "class_matrix", "class_sentences", "clear_novel", "compare_evaluations", "edit_class", "evaluate",
    "export_descriptions", "export_descriptions_file", "export_label_space", "export_mask", "export_overlay",
    "export_property_maps", "generate_descriptions", "import_descriptions", "inspect_click", "inspect_pixel",
    "label_space_summary", "live_frame", "load_custom_label_set", "load_image", "load_model", "load_shipped_model",
    "model_info", "novel_template", "overlay", "pick_example", "pick_property", "property_detail", "property_map",
    "property_map_stretch", "property_maps_overview", "quick_sentence_map", "rebuild_label_space", "rescore",
    "reset_class", "reset_descriptions", "restore_evaluation", "search_properties", "segment", "segment_novel",
    "segment_video", "sentence_map", "set_label_set", "set_quality", "top_property_maps", "use_model_properties",
    # issue 27: "Improve these descriptions" in the Evaluate tab
    "improve_descriptions", "cancel_improvement", "apply_improvement"])


def test_every_event_runs_a_declared_handler_and_the_api_is_kept(demo):
    """One contract for every event (session, lock, errors supplied by app/handlers.py) and the same
    endpoint names as before the handlers moved behind it."""
    for fn in demo.fns.values():
        assert hasattr(getattr(fn.fn, "handler", None), "spec"), fn.api_name
    public = sorted(fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public")
    assert public == PUBLIC_API


def test_tab_handlers_repeat_no_session_lock_or_error_boilerplate():
    """Sessions, locks and error messages are the contract's job: no tab module takes a lock, creates or
    tracks a session or turns an exception into a gradio error itself."""
    for path in sorted((REPO / "app" / "tabs").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not names & {"ensure_session", "new_session", "user_errors"}, path.name
        assert not attrs & {"lock", "acquire", "track", "Error", "ensure"}, (path.name, attrs & {"lock", "Error"})


def test_a_model_switch_re_segments_the_result_on_screen(demo, ui, tmp_path, encoder, forward_passes):
    """Loading another model keeps the label set, the edits and the image, and the overlay on screen is
    the new model's (it was the old one's, left behind)."""
    s = segmented(demo)[ui.state]
    call(demo, "edit_class", s, "camvid_11", None, "road", "Flat grey asphalt", 0.0, 0.55)
    old_labels, old_model = s.edit.last.labels.copy(), s.edit.model
    other = save_tiny_model(tmp_path / "other", encoder, output_scale=3.0)
    out = call(demo, "load_model", s, str(other))
    assert s.edit.model is not old_model and len(forward_passes) == 2
    assert set(ui.result) <= set(out) and out[ui.viewer.image].shape == (512, 512, 3)
    assert "CamVid-11 (edited)" in out[ui.viewer.status] and s.edit.descriptions["road"] == ["Flat grey asphalt"]
    net = s.edit.network_in_use
    assert net.model is s.edit.model and s.edit.workbench.is_current(net, s.edit.space(), s.edit.threshold)
    assert s.edit.last.labels.shape == old_labels.shape


#: docs/ARCHITECTURE.md's layers, top first: a module may import its own layer or those below.
LAYERS = [["app.main"], ["app.tabs"], ["app.handlers"], ["app.views"], ["app.services"],
          ["app.inputs", "app.config", "app.components"], ["prolab"]]


def _layer(module: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) for n in names if module == n or module.startswith(n + ".")),
                None)


def test_the_app_imports_only_downwards_as_docs_architecture_draws_it():
    """Imports that run (not those only for type checkers) go from a layer to itself or below."""
    for path in sorted((REPO / "app").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        own = _layer(module)
        if own is None:  # app/__init__.py
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and id(node) not in typing_only:
                names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "app" else [node.module]
                for name in names:  # "from app import views" imports app.views
                    target = _layer(name)
                    assert target is None or target >= own, f"{module} imports {name} (a layer above)"


def test_errors_name_uploaded_files_never_the_upload_folder(demo, ui, tmp_path):
    """A custom label set read from gradio's upload folder is kept by content: restoring an earlier evaluation
    of it works after the file is gone. A file gone before it was read: the message names the file only.
    Long text holding a "/" (not a path) keeps its readable message."""
    import shutil

    from app.handlers import UPLOADS

    folder = Path(UPLOADS) / "pl-test-upload-abc123"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.json"
    path.write_text(json.dumps({"sky": ["a blue expanse above"], "road": ["flat grey asphalt"]}))
    try:
        s = call(demo, "evaluate", None, "custom", str(path), "tinyset", None, "")[ui.state]
        call(demo, "set_label_set", s, "camvid_11", None, 0.0, 0.55)
        call(demo, "evaluate", s, "camvid_11", None, "tinyset", None, "")
        shutil.rmtree(folder)
        call(demo, "restore_evaluation", s, "1", "sky", 0.0, 0.55)
        assert s.edit.choice.key == "custom" and s.edit.label_set.name == "Custom (mine.json)"
        call(demo, "set_label_set", s, "camvid_11", None, 0.0, 0.55)
        with pytest.raises(gr.Error) as err:
            call(demo, "set_label_set", s, "custom", str(folder / "theirs.json"), 0.0, 0.55)
        assert "theirs.json" in str(err.value) and UPLOADS not in str(err.value)
        assert s.edit.choice.key == "camvid_11"  # nothing changed
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with pytest.raises(gr.Error, match="Pick or type a class name first"):
        call(demo, "edit_class", s, "camvid_11", None, "", "x" * 300 + " and/or " + "y" * 10, 0.0, 0.55)


def test_focusing_a_list_updates_only_that_lists_choices(demo, ui):
    """Focus events fire on a mere click and run beside the pick that follows (a stale reply can land
    last): one that wrote the sentences box lost unapplied edits and raced the class's sentences (a CI
    failure); one that wrote the live tab's "Show" value undid a pick made while it waited. Each may update
    only the component focused, and only its choices."""
    focus = [fn for fn in demo.fns.values() if any(name == "focus" for _, name in fn.targets)]
    assert len(focus) >= 2  # the Edit tab's class list and the live tab's "Show" list
    s = segmented(demo)[ui.state]
    for fn in focus:
        focused = {block for block, name in fn.targets if name == "focus"}
        written = {c._id for c in fn.outputs if c is not ui.state}
        assert written == focused, fn.name
        args = [s, "camvid_11", None] if (ui.edit.class_name._id, "focus") in fn.targets else [s]
        args += [None] * (len(fn.inputs) - len(args))
        out = fn.fn(*args)
        update = next(v for c, v in out.items() if c is not ui.state)
        assert "choices" in update and "value" not in update, fn.name


def test_repeated_user_events_run_the_latest_instead_of_being_dropped(demo):
    """A pick, a slider release or a keystroke sent while the previous one runs is run after it (gradio's
    default drops it, leaving the page out of step with what was computed)."""
    repeated = [fn for fn in demo.fns.values()
                if any(name in ("input", "release", "select", "submit") for _, name in fn.targets)]
    assert len(repeated) >= 10
    assert all(fn.trigger_mode == "always_last" for fn in repeated), [fn.name for fn in repeated
                                                                      if fn.trigger_mode != "always_last"]
    clicks = [fn for fn in demo.fns.values() if fn.targets and all(name == "click" for _, name in fn.targets)]
    assert clicks and all(fn.trigger_mode == "once" for fn in clicks)  # a double click is one action


def test_the_edit_box_keeps_unapplied_sentences(demo, ui):
    """gradio's class list sends a pick again when it loses focus: the class already shown leaves the box
    alone (it may hold edits not applied yet); moving to another class keeps them as a draft, shown again
    when the user comes back; applying or resetting the class drops it."""
    s = segmented(demo)[ui.state]
    sky = "\n".join(CAMVID["sky"])
    out = call(demo, "class_sentences", s, "camvid_11", None, "sky", "")
    assert out[ui.edit.text] == sky
    typed = "a pale ceiling of cloud\nwhite and flat"
    again = call(demo, "class_sentences", s, "camvid_11", None, "sky", typed)  # the blur's repeat
    assert ui.edit.text not in again and "value" not in again[ui.edit.class_name]
    road = call(demo, "class_sentences", s, "camvid_11", None, "road", typed)
    assert road[ui.edit.text] == "\n".join(CAMVID["road"]) and road[ui.edit.class_name]["value"] == "road"
    back = call(demo, "class_sentences", s, "camvid_11", None, "Sky", "\n".join(CAMVID["road"]))
    assert back[ui.edit.text] == typed and back[ui.edit.class_name]["value"] == "sky"  # road had no edit
    assert ("camvid_11", "road") not in s.edit_drafts
    call(demo, "class_sentences", s, "camvid_11", None, "road", typed + "\nmore")
    call(demo, "reset_class", s, "road", 0.0, 0.55)  # resetting road keeps sky's draft
    assert s.edit_drafts == {("camvid_11", "sky"): typed + "\nmore"}
    call(demo, "reset_class", s, "sky", 0.0, 0.55)
    assert s.edit_drafts == {}


def test_tab_visits_keep_what_the_user_typed(demo, ui):
    """Opening the Label space tab refreshes its views but leaves the K box (the user's next rebuild) and the
    property search as they are; the Property maps tab leaves a property the user picked."""
    s = segmented(demo)[ui.state]
    out = call(demo, "label_space_summary", s, "camvid_11", None, "road")
    assert "value" not in out[ui.space.k] and "In use: K =" in out[ui.space.k]["info"]
    rows = out[ui.space.prop_table]
    assert rows and len(rows) < len(call(demo, "label_space_summary", s, "camvid_11", None, "")[ui.space.prop_table])
    chosen = call(demo, "property_maps_overview", s, "3", 4, True)
    assert ui.properties.property not in chosen and chosen[ui.properties.heat_md]
    fresh = call(demo, "property_maps_overview", s, "", 4, True)
    assert fresh[ui.properties.property]


def test_the_quick_sentence_map_follows_the_chosen_method(demo, ui):
    """Opening the Label space tab redraws the sentence map at once; with PCA chosen it stays PCA (a cached
    UMAP used to replace it)."""
    s = segmented(demo)[ui.state]
    chosen = call(demo, "quick_sentence_map", s, "property", None, "pca")[ui.space.sentence_plot]
    assert chosen.layout.title.text.startswith("PCA of ")


def test_an_empty_shipped_list_loads_nothing(demo, ui):
    """The shipped-model list is emptied when a model from elsewhere is loaded, and its blur sends that
    empty pick: nothing is loaded, no error."""
    s = segmented(demo)[ui.state]
    model = s.model_entry
    out = call(demo, "load_shipped_model", s, "")
    assert s.model_entry is model and out[ui.model.info_md]


def test_views_of_the_label_set_do_not_re_score_the_result_on_screen(demo, ui):
    s = segmented(demo)[ui.state]
    shown = s.edit.last
    call(demo, "class_sentences", s, "msrc_23", None, "cow")
    assert s.edit.label_set.key == "msrc_23" and s.edit.last is shown


# ---------------------------------------------------------------------------- issue #28: a newcomer's findings
def _demo_without_datasets(tmp_path_factory, model: Path, cache: Path):
    from app.config import AppConfig
    from app.main import build_demo
    from app.services import Services

    return build_demo(services=Services(AppConfig(model=str(model), label_set="camvid_11", cache_dir=str(cache),
                                                  data_root=str(tmp_path_factory.mktemp("no-datasets")))))


@pytest.fixture(scope="module")
def bare_demo(tmp_path_factory, encoder):
    """The app without a labelled set (an empty data folder)."""
    return _demo_without_datasets(tmp_path_factory, save_tiny_model(tmp_path_factory.mktemp("tiny"), encoder),
                                  encoder.cache.path.parent)


@pytest.fixture(scope="module")
def category_demo(tmp_path_factory, encoder):
    """The app on a category-supervised baseline model."""
    from tests.app_server import save_tiny_category_model

    return _demo_without_datasets(tmp_path_factory, save_tiny_category_model(tmp_path_factory.mktemp("category")),
                                  encoder.cache.path.parent)


def test_without_a_shared_set_the_evaluate_tab_says_where_they_come_from_and_evaluate_says_it_once(bare_demo):
    ui = bare_demo.prolab_ui
    assert [v for _, v in ui.evaluate.eval_set.choices] == ["upload"]  # the upload only
    hint = ui.evaluate.summary.value
    assert "No shared labelled set" in hint and "PROLAB_DATA" in hint and "--data-root" in hint
    with pytest.warns(UserWarning) as toasts:  # one toast; no gr.Error, so no error badge on six panels
        out = call(bare_demo, "evaluate", None, "camvid_11", None, "upload", None, "")
    assert len(toasts) == 1 and "Nothing to evaluate yet" in str(toasts[0].message), \
        [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in toasts]
    assert set(out) == {ui.state, ui.evaluate.status}


def test_a_category_model_keeps_its_label_set_says_so_once_and_has_no_property_maps(category_demo):
    ui = category_demo.prolab_ui
    s = call(category_demo, "segment", None, ASTRONAUT, "model", None, 0.0, 0.55)[ui.state]
    with pytest.warns(UserWarning) as toasts:  # gradio's dropdown sends one pick twice: one toast
        call(category_demo, "set_label_set", s, "cityscapes_19", None, 0.0, 0.55)
        out = call(category_demo, "set_label_set", s, "cityscapes_19", None, 0.0, 0.55)
    assert len(toasts) == 1 and "category-supervised" in str(toasts[0].message)
    assert out[ui.controls.label_set] == "model"  # the dropdown shows what the result is on
    assert "category-supervised" in out[ui.viewer.status] and ui.viewer.image not in out
    assert s.edit.choice.key == "model" and s.edit.last is not None
    md = call(category_demo, "property_maps_overview", s, "", 6, True)[ui.properties.heat_md]
    assert "has no properties" in md and "Segment an image first" not in md
    with pytest.raises(gr.Error, match="has no properties"):
        call(category_demo, "property_map", s, "0", True)


def test_properties_keep_the_model_s_names_and_classes_are_explained_by_their_own_sentences(demo, ui):
    s = segmented(demo)[ui.state]
    model_names = list(s.edit.space().property_names)
    call(demo, "set_label_set", s, "msrc_23", None, 0.0, 0.55)
    msrc = s.edit.space()
    assert list(msrc.property_names) == model_names  # one name per property, whatever the label set
    out = call(demo, "class_detail", s, "cat")
    md = out[ui.space.class_md]
    for k in msrc.class_properties("cat"):  # each property the cat uses, with what the cat says there
        own = msrc.class_sentences("cat", k)
        assert f"`{k}`" in md and all(x in md for x in own)
    novel = json.dumps({"zebra": ["Covered in black and white stripes", "A horse-like animal on grass"]})
    table = call(demo, "segment_novel", s, novel, 0.0, 0.55)[ui.novel.table]
    notes = [row[4] for row in table if row[1].startswith("property")]
    assert notes and all("sentence" in n and "“" in n for n in notes)
    assert "Covered in black and white stripes" in " ".join(notes)


def test_novel_categories_are_written_as_names_and_sentence_lines_and_kept_as_json(demo, ui):
    text = "zebra\nCovered in black and white stripes\nA horse-like animal\n\n fire hydrant \nA short red post\n"
    box = call(demo, "editor_to_json", text)[ui.novel.descriptions]
    assert json.loads(box) == {"zebra": ["Covered in black and white stripes", "A horse-like animal"],
                               "fire hydrant": ["A short red post"]}
    to_editor = event(demo, "json_to_editor").fn
    assert to_editor(box, text) == {}  # the same categories: the typed text is left alone
    pasted = json.dumps({"cat": ["Has whiskers", "Purrs"]})
    assert call(demo, "json_to_editor", pasted, text)[ui.novel.editor] == "cat\nHas whiskers\nPurrs"
    assert to_editor("{broken", text) == {}  # typing JSON: the editor waits
    # the template (JSON) reaches the editor through the same path
    tpl = call(demo, "novel_template", "okapi", "{}")[ui.novel.descriptions]
    assert call(demo, "json_to_editor", tpl, "")[ui.novel.editor].startswith("okapi\nWrite 5 to 15")


def test_a_threshold_set_before_any_image_is_kept_without_an_error(demo, ui):
    """The slider's release also fires when the page's focus moves (seen in Chromium on a fresh page):
    it used to put a "No image yet" error toast up before the user did anything."""
    out = call(demo, "rescore", None, 0.25, 0.55)
    assert "Unknown threshold 0.25" in out[ui.viewer.status] and out[ui.state].edit.threshold == 0.25


def test_enter_commits_typed_numbers():
    from app.main import launch_kwargs

    assert "pl-enter-commits" in launch_kwargs()["head"] and "blur()" in launch_kwargs()["head"]


def test_the_legend_leaves_out_classes_under_0_05_percent():
    from types import SimpleNamespace

    from app.views.common import legend_html

    labels = np.zeros((100, 100), np.int32)
    labels[:50] = 1
    labels[0, 0] = 2  # 0.01 %: a stray pixel
    labels[1, :10] = 3  # 0.1 %
    seg = SimpleNamespace(labels=labels, class_names=["sky", "road", "tree", "car"], num_novel=0,
                          palette=np.full((4, 3), 128, np.uint8))
    html = legend_html(seg)
    assert 'data-class="tree"' not in html and "<b>0.0%</b>" not in html and "+1 class under 0.05% not listed" in html
    assert 'data-class="car"' in html and "3 classes present" in html


def test_a_file_that_is_not_an_image_is_one_sentence_naming_it(demo, ui, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    with pytest.warns(UserWarning):
        status = call(demo, "load_image", None, str(notes))[ui.viewer.status]
    assert "notes.txt is not an image" in status
    assert "BufferedReader" not in status and "UnidentifiedImageError" not in status and str(tmp_path) not in status
