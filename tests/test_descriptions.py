import json

import pytest

from prolab.descriptions import DescriptionSet, load_descriptions, parse_descriptions, save_descriptions
from prolab.errors import ProLabError


def test_normalises_whitespace_and_drops_exact_duplicates_keeping_order():
    ds = DescriptionSet({"  wall ": ["Vertical  structure ", "Made of brick", "Vertical structure", "  "]})
    assert ds.categories == ["wall"]
    assert ds["wall"] == ["Vertical structure", "Made of brick"]


@pytest.mark.parametrize("data, message", [
    ({"": ["x"]}, "non-empty"),
    ({"   ": ["x"]}, "non-empty"),
    ({"wall": []}, "no sentences"),
    ({"wall": ["   "]}, "no sentences"),
    ({"wall": ["ok", 3]}, "must be a string"),
    ({"wall": "a single string"}, "list of strings"),
    ({"Wall": ["a"], " wall ": ["b"]}, "differ only by case"),
    ({"traffic light": ["a"], "Traffic  Light": ["b"]}, "differ only by case"),
])
def test_rejects_bad_descriptions_with_clear_message(data, message):
    with pytest.raises(ProLabError, match=message):
        DescriptionSet(data)


def test_json_round_trip_is_official_shape(tmp_path):
    ds = DescriptionSet({"wall": ["Vertical structure"], "sky": ["Blue expanse", "Has clouds"]})
    path = save_descriptions(ds, tmp_path / "d.json")
    raw = json.loads(path.read_text())
    assert raw == {"wall": ["Vertical structure"], "sky": ["Blue expanse", "Has clouds"]}
    assert load_descriptions(path).to_dict() == ds.to_dict()


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ProLabError, match="not found"):
        load_descriptions(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProLabError, match="not valid JSON"):
        load_descriptions(tmp_path / "bad.json")
    with pytest.raises(ProLabError, match="JSON object"):
        parse_descriptions("[1, 2]")


def test_editing_helpers():
    ds = DescriptionSet({"cat": ["Has fur"], "dog": ["Barks"]})
    assert ds.with_category("CAT", ["Purrs"])["cat"] == ["Purrs"]
    assert ds.with_category("cow", ["Moos"]).categories == ["cat", "dog", "cow"]
    assert ds.without(["Dog"]).categories == ["cat"]
    with pytest.raises(ProLabError, match="Unknown category"):
        ds.without(["horse"])
    merged = ds.merged({"cat": ["Other"], "cow": ["Moos"]})
    assert merged["cat"] == ["Has fur"] and merged["cow"] == ["Moos"]
    assert ds.merged({"cat": ["Other"]}, overwrite=True)["cat"] == ["Other"]
    assert ds.subset(["dog", "cat"]).categories == ["dog", "cat"]


def test_missing_names_match_find_and_messages_shorten_long_lists():
    from prolab.errors import name_list

    ds = DescriptionSet({"traffic light": ["Has lamps"], "Dog": ["Barks"]})
    names = ["dog", "Traffic  Light", "zebra", "cow", "DOG"]
    assert ds.missing(names) == ["zebra", "cow"] == [n for n in names if ds.find(n) is None]
    assert ds.missing([]) == []
    assert name_list(["a", "b"]) == "a, b"
    assert name_list([f"c{i}" for i in range(10)]) == "c0, c1, c2, c3, c4, c5, c6, c7 ..."
    assert name_list(["a", "b", "c"], limit=2) == "a, b ..."
