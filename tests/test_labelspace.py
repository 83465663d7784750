import numpy as np
import pytest

from prolab.descriptions import DescriptionSet
from prolab.encoder import TextEncoder, apply_template
from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace

SMALL = {
    "cat": ["Small domestic animal", "Covered in soft fur", "Has four legs and a tail",
            "Has pointed ears and whiskers", "Often found indoors on furniture"],
    "dog": ["Domestic animal kept as a pet", "Covered in fur", "Has four legs and a wagging tail",
            "Has a snout and floppy ears", "Often seen on walks outdoors"],
    "sky": ["The space above the ground outdoors", "Blue during the day", "Often has white clouds",
            "Bright and without texture", "Seen at the top of outdoor photos"],
    "road": ["Flat paved surface for vehicles", "Made of grey asphalt", "Has painted lane markings",
             "Runs horizontally along the ground", "Found outdoors between buildings"],
    "car": ["Motor vehicle with four wheels", "Has a metal body and glass windows",
            "Often red, white, black or silver", "Has headlights and doors", "Found on roads"],
    "tree": ["Tall woody plant", "Has a trunk and branches", "Covered in green leaves",
             "Has rough brown bark", "Found in parks and forests"],
}


@pytest.fixture(scope="module")
def space(encoder):
    return LabelSpace.build(SMALL, encoder, k=12, seed=0)


def test_structure(space):
    assert space.k == 12 and space.num_classes == 6 and space.dim == 384
    assert space.centers.shape == (12, 384)
    assert space.class_matrix.shape == (6, 12)
    assert len(space.sentences) == len(space.sentence_property) == 30
    # every sentence's property is used by its class, and nothing else is
    expected = np.zeros((6, 12), bool)
    expected[space.sentence_class, space.sentence_property] = True
    assert (space.multihot == expected).all()
    # property names are member sentences
    for k, name in enumerate(space.property_names):
        members = [s for s, p in zip(space.sentences, space.sentence_property) if p == k]
        assert name in members
    props = space.properties()
    assert sum(p.size for p in props) == 30
    assert all(set(p.classes) <= set(SMALL) for p in props)


def test_embeddings_are_unit_norm(encoder):
    e = encoder.encode(["Covered in fur", "Made of glass"])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_semantics_animals_share_more_than_animal_and_sky(encoder):
    space = LabelSpace.build(SMALL, encoder, k=10, seed=0)
    mh = space.multihot.astype(int)
    cat, dog, sky = (space.class_index(n) for n in ("cat", "dog", "sky"))
    assert (mh[cat] & mh[dog]).sum() > (mh[cat] & mh[sky]).sum()
    assert (mh[cat] & mh[dog]).sum() > (mh[dog] & mh[sky]).sum()


def test_deterministic(encoder, space):
    again = LabelSpace.build(SMALL, encoder, k=12, seed=0)
    np.testing.assert_array_equal(again.centers, space.centers)
    np.testing.assert_array_equal(again.sentence_property, space.sentence_property)
    assert again.property_names == space.property_names


def test_save_load_round_trip(tmp_path, encoder, space):
    space.save(tmp_path / "ls")
    back = LabelSpace.load(tmp_path / "ls", encoder)
    np.testing.assert_array_equal(back.centers, space.centers)
    np.testing.assert_array_equal(back.class_matrix, space.class_matrix)
    np.testing.assert_array_equal(back.sentence_embeddings, space.sentence_embeddings)
    assert back.class_names == space.class_names and back.property_names == space.property_names
    assert (back.encoder_id, back.template, back.k, back.seed) == (
        space.encoder_id, space.template, space.k, space.seed)


def test_load_with_other_encoder_is_an_error(tmp_path, space):
    space.save(tmp_path / "ls")
    other = TextEncoder("some-org/another-encoder", cache_dir=False)
    with pytest.raises(ProLabError, match="built with encoder"):
        LabelSpace.load(tmp_path / "ls", other)
    with pytest.raises(ProLabError, match="template"):
        LabelSpace.load(tmp_path / "ls", TextEncoder(template="prolab", cache_dir=False))


def test_load_corrupt_or_missing(tmp_path, space):
    with pytest.raises(ProLabError, match="not a label space"):
        LabelSpace.load(tmp_path)
    space.save(tmp_path / "ls")
    (tmp_path / "ls" / "labelspace.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ProLabError, match="Corrupt"):
        LabelSpace.load(tmp_path / "ls")


@pytest.mark.parametrize("k, message", [(1, ">= 2"), (0, ">= 2"), (31, "larger than the number")])
def test_bad_k(encoder, k, message):
    with pytest.raises(ProLabError, match=message):
        LabelSpace.build(SMALL, encoder, k=k)


def test_k_above_distinct_sentences_is_an_error(encoder):
    dup = {"a": ["Covered in fur", "Has four legs"], "b": ["Covered in fur", "Has four legs"]}
    with pytest.raises(ProLabError, match="distinct"):
        LabelSpace.build(dup, encoder, k=3)


def test_duplicate_signatures_reported(encoder):
    dup = {"a": ["Covered in fur", "Has four legs"], "b": ["Covered in fur", "Has four legs"],
           "c": ["Made of glass", "Transparent and shiny"]}
    space = LabelSpace.build(dup, encoder, k=2)
    assert space.duplicate_groups() == [["a", "b"]]
    assert any("a, b" in w for w in space.warnings)
    # Warnings are derived per space: extending one does not touch the other's.
    bigger = space.extended({"d": ["Made of glass", "Transparent and shiny"]}, encoder)
    assert any("c, d" in w for w in bigger.warnings)
    assert not any("c, d" in w for w in space.warnings) and isinstance(space.warnings, tuple)
    # a large group is named by its first few classes and a count (one short log line, not every name)
    many = space.extended({f"copy {i}": ["Covered in fur", "Has four legs"] for i in range(20)}, encoder)
    (line,) = [w for w in many.warnings if "copy" in w]
    assert line.startswith("22 classes") and line.endswith("and 14 more") and "copy 19" not in line


def test_extended_encodes_each_new_sentence_once(encoder, space, monkeypatch):
    seen: list[str] = []
    real = encoder.encode

    def counting(texts, *args, **kwargs):
        seen.extend(texts)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting)
    new = {"lorry": ["Large motor vehicle with six wheels", "Drives on asphalt roads"]}
    space.extended(new, encoder)
    assert sorted(seen) == sorted(new["lorry"])


def test_projection_lands_on_the_properties_it_talks_about(encoder, space):
    held_out = {"horse": ["Covered in short fur", "Has four long legs and a tail"],
                "lorry": ["Large motor vehicle with six wheels", "Drives on asphalt roads"]}
    before = space.centers.copy(), space.class_matrix.copy()
    proj = space.project(held_out, encoder)
    np.testing.assert_array_equal(space.centers, before[0])
    np.testing.assert_array_equal(space.class_matrix, before[1])
    animal_props = set(space.class_properties("cat")) | set(space.class_properties("dog"))
    vehicle_props = set(space.class_properties("car")) | set(space.class_properties("road"))
    horse, lorry = set(proj.sentence_property["horse"]), set(proj.sentence_property["lorry"])
    assert horse <= animal_props and not horse & (vehicle_props - animal_props)
    assert lorry & vehicle_props and not lorry & (animal_props - vehicle_props)
    assert proj.multihot.shape == proj.soft.shape == (2, 12)
    assert (proj.soft >= 0).all() and (proj.soft <= 1.0 + 1e-5).all()
    # the hard assignment is each sentence's best-cosine centre, so it carries high soft weight
    for i, name in enumerate(proj.class_names):
        assert proj.soft[i, list(set(proj.sentence_property[name]))].min() >= np.median(proj.soft[i])


def test_extended_keeps_properties_and_adds_classes(encoder, space):
    ext = space.extended({"horse": ["Covered in short fur", "Has four long legs"]}, encoder)
    assert ext.class_names == space.class_names + ["horse"]
    np.testing.assert_array_equal(ext.centers, space.centers)
    assert ext.property_names == space.property_names
    np.testing.assert_array_equal(ext.class_matrix[:6], space.class_matrix)
    soft = space.extended({"horse": ["Covered in short fur"]}, encoder, soft=True)
    assert soft.class_matrix[-1].sum() > 1  # soft weights over many properties


def test_edit_reassign_and_recluster(encoder, space):
    edited = space.descriptions().with_category("sky", ["Blue expanse overhead", "Has white clouds"])
    fast = space.edited(edited.without(["tree"]), encoder)
    np.testing.assert_array_equal(fast.centers, space.centers)
    assert "tree" not in fast.class_names and fast.descriptions()["sky"][0] == "Blue expanse overhead"
    slow = space.edited(edited, encoder, recluster=True)
    assert slow.k == 12 and not np.array_equal(slow.centers, space.centers)
    smaller = space.edited(edited, encoder, k=6)
    assert smaller.k == 6


def test_cache_rebuild_encodes_only_the_edited_category(tmp_path):
    enc = TextEncoder(cache_dir=tmp_path / "cache")
    LabelSpace.build(SMALL, enc, k=8)
    first = enc.num_encoded
    assert first == 30
    changed = DescriptionSet(SMALL).with_category("dog", SMALL["dog"][:3] + ["Has a long snout", "Barks"])
    enc2 = TextEncoder(cache_dir=tmp_path / "cache")  # a new process would see the same cache
    LabelSpace.build(changed, enc2, k=8)
    assert enc2.num_encoded == 2


def test_templates():
    assert apply_template("Covered in Fur.", "plain") == "covered in fur"
    assert apply_template("A small animal", "prolab") == "which is a small animal"
    assert apply_template("Has four legs", "prolab") == "which has four legs"
    assert apply_template("Often found indoors", "prolab") == "which often found indoors"
    assert apply_template("Fur on the body", "prolab") == "which has fur on the body"
    assert apply_template("Fur", "a photo of {}") == "a photo of fur"
    with pytest.raises(ProLabError, match="Unknown template"):
        apply_template("x", "nonsense")


def test_encoder_from_a_local_model_folder(tmp_path):
    from prolab.encoder import bundled_model_path

    local = TextEncoder(str(bundled_model_path()), cache_dir=tmp_path)
    assert local.id == str(bundled_model_path().resolve())  # a local folder is its own id
    e = local.encode(["Covered in fur", "Made of glass"])
    assert e.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    default = TextEncoder(cache_dir=False).encode(["Covered in fur", "Made of glass"])
    np.testing.assert_allclose(e, default, atol=1e-5)  # same weights, so the same vectors


def test_unknown_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(ProLabError, match="Cannot load sentence encoder"):
        TextEncoder(str(tmp_path / "no-such-model"), cache_dir=False).encode(["x"])


def test_the_encoders_memory_serves_repeats_and_asks_the_cache_for_misses_only(tmp_path, monkeypatch):
    """Re-deriving a space after an edit re-encodes every sentence: the in-memory layer answers those it
    has seen, only new ones go to the on-disk cache (or the network), and callers get their own array."""
    from prolab.encoder import TextEncoder

    enc = TextEncoder(cache_dir=tmp_path)
    first = enc.encode(["a red brick wall", "a blue sky"])
    asked: list[list[str]] = []
    real = enc._encode_texts
    monkeypatch.setattr(enc, "_encode_texts", lambda texts, *a: asked.append(list(texts)) or real(texts, *a))
    again = enc.encode(["a blue sky", "green grass", "a red brick wall", "green grass"])
    assert asked == [["green grass"]]  # the default template leaves a sentence as it is
    np.testing.assert_array_equal(again[[2, 0]], first)
    again[:] = 0  # a caller writing into its array does not change what the memory holds
    np.testing.assert_array_equal(enc.encode(["a red brick wall"])[0], first[0])
    assert len(asked) == 1
    off = TextEncoder(cache_dir=tmp_path, memory_items=0)
    off.encode(["a blue sky"])
    assert off._memory == {}


def test_property_names_are_the_models_whatever_the_label_set(encoder, space):
    """A property keeps the name its own (training) sentences gave it in every space derived from it,
    whichever classes it serves there (issue #28: property 22 was named after another class under
    ADE20K-150 than under the model's classes); the class's own sentences in it are asked for apart."""
    other = DescriptionSet({"horse": ["Covered in short fur", "Has four long legs", "Eats grass in fields"],
                            "lorry": ["Motor vehicle for goods", "Has large wheels", "Drives on roads"],
                            "cloud": ["White and fluffy", "Floats in the blue sky"]})
    derived = space.edited(other, encoder)
    assert derived.property_names == space.property_names
    again = derived.edited(space.descriptions().with_category("cat", ["Has whiskers and purrs"]), encoder)
    assert again.property_names == space.property_names
    assert space.extended(other, encoder).property_names == space.property_names
    # its names differ from what naming by the new sentences would give: the old behaviour is gone
    assert any(name not in derived.sentences for name in derived.property_names)
    # each class's own sentences in a property
    for name in derived.class_names:
        own = derived.class_sentences(name)
        assert own == list(other[name])
        by_property = [s for k in derived.class_properties(name) for s in derived.class_sentences(name, k)]
        assert sorted(by_property) == sorted(own)
    k = derived.class_properties("horse")[0]
    assert set(derived.class_sentences("horse", k)) <= set(other["horse"])
    with pytest.raises(ProLabError, match="Property 99 does not exist"):
        derived.class_sentences("horse", 99)
    rebuilt = space.edited(other, encoder, k=4)  # new properties: named from the new sentences
    assert all(name in rebuilt.sentences for name in rebuilt.property_names)
