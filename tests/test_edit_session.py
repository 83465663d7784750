"""prolab.edit_session: label-set switching, edits kept per label set and validate-then-commit, in one object
a notebook can use without the app."""
import numpy as np
import pytest

from prolab import labelsets
from prolab.caches import CacheSizes
from prolab.descriptions import DescriptionSet
from prolab.edit_session import (EditClass, EditSession, LabelSetChoice, Rebuild, ResetClass, ResetDescriptions,
                                 SetNovel, SetQuality, SwitchModel, UseDescriptions, UseModelProperties)
from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace
from prolab.labelspace import suggested_k
from prolab.model import untrained_model

CAMVID, MSRC = LabelSetChoice("camvid_11"), LabelSetChoice("msrc_23")


@pytest.fixture(scope="module")
def model(encoder):
    camvid = labelsets.load("camvid_11")
    space = LabelSpace.build(camvid.descriptions, encoder, k=suggested_k(camvid.descriptions.num_sentences))
    return untrained_model(space, input_size=64)


@pytest.fixture()
def session(model, encoder):
    """A session with an image segmented; ``forwards`` counts the network's forward passes."""
    s = EditSession(model, encoder, "camvid_11")
    s.forwards = []
    handle = model.register_forward_hook(lambda *a: s.forwards.append(1))
    s.segment(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    yield s
    handle.remove()


def test_an_edit_re_scores_the_result_without_a_forward_pass(session):
    first = session.last
    seg = session.apply(EditClass("sky", ["a blue expanse above everything", "  "]), threshold=0.0)
    assert seg is session.last and seg is not first and len(session.forwards) == 1
    assert session.descriptions["sky"] == ["a blue expanse above everything"]  # blank lines dropped
    assert session.is_edited and session.name == "CamVid-11 (edited)"
    assert [(c.name, c.status) for c in session.changes()] == [("sky", "edited")]
    assert session.apply(threshold=0.0) is seg  # nothing changed: not scored again


def test_edits_are_kept_per_label_set_and_restored_on_the_way_back(session):
    session.apply(EditClass("road", ["flat grey asphalt"]))
    session.apply(on=MSRC)
    assert session.label_set.key == "msrc_23" and not session.is_edited
    assert session.last.class_names == session.label_set.class_names  # re-scored with the new set
    session.apply(on=CAMVID)
    assert session.descriptions["road"] == ["flat grey asphalt"]
    assert list(session.edited_sets()) == [CAMVID]
    session.apply(ResetClass("road"))  # the last edit undone: the shipped set again, not "edited"
    assert not session.is_edited and session.edited_sets() == {}
    session.apply(EditClass("zebra", ["black and white stripes"]))  # a class added by hand ...
    session.apply(ResetClass("zebra"))  # ... is removed by its reset
    assert session.descriptions.find("zebra") is None and not session.is_edited
    session.apply(EditClass("road", ["x"]), EditClass("sky", ["y"]))
    session.apply(ResetDescriptions())
    assert not session.is_edited


def test_a_failing_change_leaves_everything_as_it_was(session, encoder, model):
    session.apply(EditClass("road", ["flat grey asphalt"]))
    before = (session.choice, session.descriptions, session.novel, session.last, session.model)
    with pytest.raises(ProLabError, match="class name"):
        session.apply(EditClass("  ", ["x"]), on=MSRC)  # the label-set switch is undone with the edit
    with pytest.raises(ProLabError, match="at least one class"):
        session.apply(UseDescriptions(DescriptionSet({})))
    with pytest.raises(ProLabError, match="Pick a class"):
        session.apply(SetNovel(DescriptionSet({"zebra": ["stripes"]})), ResetClass("no such class"))
    with pytest.raises(ProLabError, match="quality must be one of"):
        session.apply(SetQuality("turbo"))
    with pytest.raises(ProLabError, match="descriptions JSON"):
        session.apply(on=LabelSetChoice("custom"))
    assert (session.choice, session.descriptions, session.novel, session.last, session.model) == before
    assert session.quality == "default" and session.edited_sets() == {CAMVID: session.descriptions}


def test_novel_categories_rebuilt_properties_and_another_model(session, model, encoder, tmp_path):
    zebra = DescriptionSet({"zebra": ["black and white stripes", "a horse-like animal"]})
    seg = session.apply(SetNovel(zebra))
    assert seg.class_names[-1] == "zebra" and seg.num_novel == 1 and len(session.forwards) == 1
    seg = session.apply(Rebuild(4))
    assert session.mode == "own" and seg.space.k == 4 and len(session.forwards) == 1
    session.apply(UseModelProperties())
    assert session.last.space.k == model.label_space.k
    session.apply(EditClass("road", ["flat grey asphalt"]))
    other = untrained_model(model.label_space, seed=1, input_size=64)
    seg = session.apply(SwitchModel(other, encoder))  # the result on screen is segmented with it
    assert session.model is other and seg is not None and seg.class_names[-1] == "zebra"
    assert session.descriptions["road"] == ["flat grey asphalt"] and session.novel is zebra
    assert session.segment(again=False) is seg  # nothing changed since


def test_custom_and_model_label_sets(session, tmp_path, model):
    path = tmp_path / "mine.json"
    path.write_text('{"water": ["a blue liquid surface"], "grass": ["short green blades"]}')
    seg = session.apply(on=LabelSetChoice("custom", str(path)))
    assert seg.class_names == ["water", "grass"] and session.label_set.name == "Custom (mine.json)"
    assert session.apply(on=LabelSetChoice("custom")) is seg  # "the custom set in use"
    session.apply(on=LabelSetChoice("model"))
    assert session.label_set.class_names == model.label_space.class_names
    assert LabelSetChoice("camvid_11", "ignored.json").custom_path is None


def test_the_readme_example_runs_on_the_shipped_model(capsys, monkeypatch):
    """The README's "Editing label sets from Python" snippet, as written (the shipped default model)."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # its paths are the repository's
    readme = (repo / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Editing label sets from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the repository's own README
    session = scope["session"]
    assert session.label_set.key == "ade20k_150" and session.novel.categories == ["spacesuit"]
    assert session.edited_sets()[LabelSetChoice("camvid_11")]["sky"] == ["A blue expanse above everything"]
    assert scope["seg"].class_names[-1] == "spacesuit" and capsys.readouterr().out.strip()


def test_select_switches_without_re_scoring_and_bad_thresholds_are_refused(session):
    shown = session.last
    session.select(MSRC)  # a view of the label set: the result on screen is left as it was
    assert session.label_set.key == "msrc_23" and session.last is shown
    assert session.segment(again=False) is not shown  # the next re-segmentation uses the new set
    for bad in (float("nan"), float("inf"), "high"):
        with pytest.raises(ProLabError, match="unknown threshold"):
            session.apply(threshold=bad)
    assert session.threshold is None


def test_a_change_whose_re_scoring_fails_is_undone(session, model, encoder, monkeypatch):
    """The re-segmentation is part of the transaction: a model whose forward pass fails leaves the session
    on the old model, with its result."""
    import prolab.workbench

    shown = session.last

    def broken(*a, **k):
        raise ProLabError("the network failed")

    monkeypatch.setattr(prolab.workbench, "embed_image_factored", broken)
    other = untrained_model(model.label_space, seed=2, input_size=64)
    with pytest.raises(ProLabError, match="the network failed"):
        session.apply(SwitchModel(other, encoder))
    assert session.model is model and session.last is shown


def test_the_session_keeps_as_many_recent_spaces_as_its_cache_sizes_say(model, encoder):
    """``cache_sizes.recent_spaces`` bounds the label spaces a session keeps: switching back to a label set
    reuses its derived space while it is among the recent ones, and derives it again once it was dropped."""
    shipped = {c.key: labelsets.load(c.key) for c in (CAMVID, MSRC)}  # the very same objects each time, as the app
    for recent, kept in ((4, True), (1, False)):
        s = EditSession(model, encoder, "msrc_23", label_sets=shipped.__getitem__,
                        cache_sizes=CacheSizes(recent_spaces=recent))
        first = s.space()
        s.select(CAMVID)
        s.space()
        s.select(MSRC)
        assert (s.space() is first) is kept, recent


def test_the_label_state_round_trips_as_json_through_a_fresh_session(session, model, encoder, tmp_path):
    """export_state is plain JSON (no path, no image); restore_state in a new session brings back the label
    set in use, the edits of every label set, the novel categories and a custom set without its file."""
    import json

    path = tmp_path / "mine.json"
    path.write_text('{"water": ["a blue liquid surface"], "grass": ["short green blades"]}')
    session.apply(EditClass("water", ["waves on a lake"]), on=LabelSetChoice("custom", str(path)))
    session.apply(EditClass("road", ["flat grey asphalt"]), on=CAMVID)
    zebra = DescriptionSet({"zebra": ["black and white stripes"]})
    session.apply(SetNovel(zebra), on=MSRC)
    before = session.revision
    session.apply(on=MSRC)
    assert session.revision == before  # nothing changed: nothing to write
    data = json.loads(json.dumps(session.export_state()))
    path.unlink()  # a restored session never needs the file
    assert str(tmp_path) not in json.dumps(data)
    fresh = EditSession(model, encoder, "camvid_11")
    fresh.restore_state(data)
    assert fresh.choice == MSRC and fresh.novel.to_dict() == zebra.to_dict() and not fresh.is_edited
    fresh.apply(on=CAMVID)
    assert fresh.descriptions["road"] == ["flat grey asphalt"]
    fresh.apply(on=LabelSetChoice("custom"))  # "custom" without a file: the custom set restored
    assert fresh.label_set.name == "Custom (mine.json)" and fresh.descriptions["water"] == ["waves on a lake"]
    seg = fresh.segment(np.zeros((40, 60, 3), np.uint8))
    assert seg.class_names == ["water", "grass", "zebra"]


@pytest.mark.parametrize("bad, message", [
    ({"schema": 99}, "another format"),
    ("not a dict", "another format"),
    ({"schema": 1, "choice": {"key": "no_such_set"}}, "no_such_set"),
    ({"schema": 1, "choice": {"key": "camvid_11"}, "novel": {"": ["x"]}}, "could not be read back"),
    ({"schema": 1, "choice": {"key": "custom", "custom": "custom:abc"}}, "custom label set"),
    ({"schema": 1, "choice": {"key": "camvid_11"}, "edits": [{"choice": {"key": "camvid_11"}}]}, "incomplete"),
    ({"schema": 1, "choice": {"key": "camvid_11"}, "custom_sets": [
        {"id": "custom:0", "name": "x", "descriptions": {"a": ["b"]}}]}, "does not match"),
])
def test_restoring_foreign_data_is_refused_and_changes_nothing(session, bad, message):
    session.apply(EditClass("road", ["flat grey asphalt"]))
    before = (session.choice, session.descriptions, session.novel, session.edited_sets(), session.revision)
    with pytest.raises(ProLabError, match=message):
        session.restore_state(bad)
    assert (session.choice, session.descriptions, session.novel, session.edited_sets(), session.revision) == before
