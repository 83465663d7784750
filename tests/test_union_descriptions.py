"""The union description set (MSRC + CamVid + COCO-80 + ADE-150) and the assembled ADE file."""
from __future__ import annotations

import json

import pytest

from prolab.descriptions import load_descriptions
from prolab.errors import ProLabError
from tests.conftest import REPO
from tools import assemble_descriptions as tool

DESC = REPO / "assets" / "descriptions"
KEYS = ("msrc_23", "camvid_11", "coco_80", "ade20k_150")
RERUN = "re-run `python -m tools.assemble_descriptions`"


@pytest.fixture(scope="module")
def union():
    return load_descriptions(DESC / "union.json")


@pytest.fixture(scope="module")
def mapping():
    return json.loads((DESC / "union_mapping.json").read_text(encoding="utf-8"))


def test_union_sentence_counts(union):
    counts = {c: len(s) for c, s in union.items()}
    bad = {c: n for c, n in counts.items() if not 8 <= n <= 15}
    assert not bad, f"union classes outside 8..15 sentences: {bad}"


@pytest.mark.parametrize("key", KEYS)
def test_mapping_covers_dataset_and_targets_exist(key, union, mapping):
    classes = tool.dataset_classes(key)
    table = mapping[key]
    assert list(table) == classes, f"{key}: mapping must list every class in dataset order"
    missing = {c: t for c, t in table.items() if union.find(t) is None}
    assert not missing, f"{key}: union classes missing from union.json: {missing}"


@pytest.mark.parametrize("key", KEYS)
def test_no_two_classes_of_one_dataset_share_a_union_class(key, mapping):
    targets: dict[str, list[str]] = {}
    for c, t in mapping[key].items():
        targets.setdefault(t, []).append(c)
    shared = {t: cs for t, cs in targets.items() if len(cs) > 1}
    assert not shared, f"{key}: {shared}"


def test_every_union_class_is_used_and_notes_present(union, mapping):
    used = {t for k in KEYS for t in mapping[k].values()}
    assert set(union) == used
    notes = mapping["_notes"]
    assert isinstance(notes, list) and notes and all(isinstance(n, str) and n for n in notes)


def test_required_merges_and_separations(mapping):
    msrc, camvid, coco, ade = (mapping[k] for k in KEYS)
    assert msrc["aeroplane"] == coco["airplane"] == ade["airplane"]
    assert camvid["pavement"] == ade["sidewalk"]
    assert camvid["pedestrian"] == coco["person"] == ade["person"]
    for name in ("tree", "building", "sky", "road", "car"):
        assert msrc[name] == camvid[name] == ade[name] == name
    assert len({msrc["face"], msrc["body"], ade["person"]}) == 3
    assert camvid["bicyclist"] not in {ade["person"], ade["bicycle"]}


def test_ade_file_equals_assembled_parts():
    assembled = tool.assemble_ade()
    shipped = load_descriptions(DESC / "ade20k_150.json")
    assert list(shipped) == tool.dataset_classes("ade20k_150")
    assert shipped.to_dict() == assembled.to_dict(), f"ade20k_150.json is stale: {RERUN}"


def test_union_files_are_up_to_date(union, mapping):
    _, built, built_mapping = tool.assemble()
    assert union.to_dict() == built.to_dict(), f"union.json is stale: {RERUN}"
    assert mapping == built_mapping, f"union_mapping.json is stale: {RERUN}"


def test_shipped_union_loads_for_training():
    from prolab.data.union import load_union

    space = load_union(DESC)
    assert space.source.endswith("union.json")
    assert "_notes" not in space.mapping
    for key in KEYS:
        targets = space.dataset_classes(key, tool.dataset_classes(key))
        assert None not in targets
        assert len(set(targets)) == len(targets)


def test_mapping_clash_fails_loudly():
    lists = {"d": ["car", "automobile", "tree"]}
    with pytest.raises(ProLabError, match="share one union class"):
        tool.union_mapping(lists, {"d": {"automobile": "car"}})
    with pytest.raises(ProLabError, match="does not have"):
        tool.union_mapping(lists, {"d": {"lorry": "truck"}})
    assert tool.union_mapping(lists, {"d": {"automobile": "auto"}})["d"]["automobile"] == "auto"


def test_assemble_ade_checks_parts(tmp_path):
    def write(name, data):
        (tmp_path / name).write_text(json.dumps(data), encoding="utf-8")

    write("ade20k_150_a.json", {"wall": ["Vertical"], "sky": ["Blue"]})
    write("ade20k_150_b.json", {"floor": ["Flat"]})
    ds = tool.assemble_ade(tmp_path, ["sky", "floor", "wall"])
    assert list(ds) == ["sky", "floor", "wall"]
    with pytest.raises(ProLabError, match="in no part"):
        tool.assemble_ade(tmp_path, ["sky", "floor", "wall", "tree"])
    with pytest.raises(ProLabError, match="does not have"):
        tool.assemble_ade(tmp_path, ["sky", "floor"])
    write("ade20k_150_c.json", {"sky": ["Clouds"]})
    with pytest.raises(ProLabError, match="in both"):
        tool.assemble_ade(tmp_path, ["sky", "floor", "wall"])


def test_merge_sentences_leads_dedups_and_caps():
    lead = ["A paved walkway for pedestrians beside a street", "Made of concrete slabs"]
    other = ["A paved path for pedestrians beside a road", "Made of concrete slabs",
             "Poles and trees stand on it"]
    merged = tool.merge_sentences(lead, [other])
    assert merged == lead + ["Poles and trees stand on it"]
    words = "red blue green wood metal glass tall flat round soft hard wet dry old new young".split()
    first, second = words[:10], words[10:] + ["shiny", "dull"]
    many = tool.merge_sentences([f"Made of {w}" for w in first], [[f"Looks {w}" for w in second]])
    assert many == [f"Made of {w}" for w in first] + [f"Looks {w}" for w in second[:5]]


def test_ade_class_90_has_its_official_name(mapping):
    """ADE-150 class 90 is "television receiver" (objectInfo150.txt). The union keeps "television",
    the name in the shipped models' label spaces, and every shipped model's mapping (used by
    ``evaluate``) names the official class and finds the model's class for it."""
    from prolab.evaluate import class_indices, load_mapping
    from prolab.labelsets import load

    classes = tool.dataset_classes("ade20k_150")
    assert classes[89] == "television receiver" and "television" not in classes
    assert load("ade20k_150").class_names[89] == "television receiver"
    assert mapping["ade20k_150"]["television receiver"] == mapping["coco_80"]["tv"] == "television"
    models = sorted((REPO / "assets" / "models").glob("*/dataset_mapping.json"))
    assert models, "no shipped model has a dataset_mapping.json"
    for path in models:
        table = json.loads(path.read_text(encoding="utf-8"))["ade20k_150"]
        assert table == mapping["ade20k_150"], f"{path} differs from union_mapping.json for ade20k_150"
        ls = path.parent / "labelspace" / "labelspace.json"
        model_classes = (json.loads(ls.read_text(encoding="utf-8"))["class_names"] if ls.is_file() else
                         json.loads((path.parent / "config.json").read_text(encoding="utf-8"))["class_names"])
        assert "television" in model_classes  # trained weights: the union name is unchanged
        [row] = class_indices(model_classes, ["television receiver"], "ade20k_150", load_mapping(path.parent))
        assert model_classes[row] == "television"
