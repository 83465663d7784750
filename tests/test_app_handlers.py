"""The app's handlers called directly, without a server: the real components are built inside
``gr.Blocks()`` (not launched) on a tiny untrained model, each handler is called as its event calls it,
and what it returns (``{component: value}``) is checked against the outputs its event declares.

The forward pass is counted by wrapping ``prolab.inference.embed_image_factored`` (which the workbench
calls for every forward pass), so re-segmenting paths can be shown to re-score the cached embeddings.
"""
from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import numpy as np
import pytest

from tests.app_server import save_tiny_model

gr = pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = str(REPO / "assets" / "examples" / "astronaut.png")
CAMVID = json.loads((REPO / "assets" / "descriptions" / "camvid_11.json").read_text())
EVERY_SENTENCE = [s for v in CAMVID.values() for s in v]  # a class with these wins almost everywhere
MAX_FUNCTION_LINES = 60


@pytest.fixture(scope="module")
def demo(tmp_path_factory, encoder):
    from app.main import build_demo
    from app.state import AppConfig, Resources

    model = save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder)
    res = Resources(AppConfig(model=str(model), label_set="camvid_11", cache_dir=str(encoder.cache.path.parent)))
    return build_demo(resources=res)


@pytest.fixture()
def ui(demo):
    return demo.prolab_ui


@pytest.fixture()
def forward_passes(monkeypatch) -> list:
    """One entry per forward pass of the network from now on."""
    import prolab.inference

    calls: list = []
    real = prolab.inference.embed_image_factored

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prolab.inference, "embed_image_factored", counted)
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
    wb = s.workbench
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
    assert {row[0] for row in out[ui.novel.table]} == {"everything"}
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
    assert not forward_passes and s.workbench.last is None
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
    assert out.get(ui.viewer.status) == status and s.workbench.last is None and not forward_passes


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
    labels = s.workbench.last.labels.copy()
    with pytest.raises(gr.Error, match="not valid JSON"):
        call(demo, "segment_novel", s, '{"zebra": [', 0.0, 0.55)
    with pytest.raises(gr.Error, match="no sentences"):
        call(demo, "segment_novel", s, '{"zebra": []}', 0.0, 0.55)
    assert len(s.workbench.novel) == 0 and np.array_equal(s.workbench.last.labels, labels)
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
    assert s.workbench.image is not None


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
