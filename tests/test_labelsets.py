"""prolab.labelsets: shipped sets with palettes, custom sets."""
import json

import numpy as np
import pytest

from prolab import labelsets
from prolab.errors import ProLabError


def test_shipped_sets_listed_with_ade_first():
    keys = [k for k, _ in labelsets.available()]
    assert keys[0] == "ade20k_150"
    assert {"camvid_11", "cityscapes_19", "msrc_23", "pascal_context_59", "coco_stuff_171"} <= set(keys)


def test_load_orders_classes_like_the_class_list_with_its_palette():
    ls = labelsets.load("camvid_11")
    meta = json.loads((labelsets.ASSETS / "datasets" / "camvid_11.json").read_text())
    assert ls.class_names == meta["classes"]
    assert ls.palette.shape == (11, 3) and ls.palette.dtype == np.uint8
    assert ls.palette.tolist() == meta["palette"]
    with pytest.raises(ProLabError, match="Unknown label set"):
        labelsets.load("nope")


def test_custom_from_json_text_and_errors(tmp_path):
    ls = labelsets.custom('{"cat": ["Small furry animal"], "dog": ["Barking pet"]}')
    assert ls.class_names == ["cat", "dog"] and ls.palette.shape == (2, 3)
    p = tmp_path / "d.json"
    p.write_text('{"boat": ["Floats on water"]}')
    assert labelsets.custom(p).class_names == ["boat"]
    with pytest.raises(ProLabError, match="not valid JSON"):
        labelsets.custom("{broken")
    with pytest.raises(ProLabError):
        labelsets.custom("{}")
