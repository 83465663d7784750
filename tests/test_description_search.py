"""The description search: halves, determinism, the acceptance
rule and the guard half, cancel, progress, the report, the LLM path (a real HTTP server and the openai client)
and ``prolab describe --improve``."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from prolab import labelsets
from prolab.cli import main
from prolab.data import read_folder
from prolab.description_search import (DescriptionSearch, LLMSource, NameSource, PropertySource, SearchSettings,
                                       ShippedSetSource, TrainedClassSource, format_report, split_halves)
from prolab.descriptions import DescriptionSet, load_descriptions, save_descriptions
from prolab.errors import ProLabError
from prolab.eval_cache import EvalCache, cache_subset
from prolab.labelspace import LabelSpace
from prolab.llm import LLMConfig
from tests.fake_llm_server import FakeLLMServer, Reply, completion, error, json_list
from tests.test_eval_cache import CLASSES, _write_folder, colour_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, encoder):
    """A colour model over the CamVid label space, its saved tiny twin (for the CLI), a six-image folder
    dataset of five CamVid classes and its cache (with the open-set credit's maps)."""
    from tests.app_server import save_tiny_model

    base = tmp_path_factory.mktemp("search")
    model_dir = save_tiny_model(base / "model", encoder)
    model = colour_model(LabelSpace.load(model_dir / "labelspace"))
    folder = _write_folder(base / "data", n=6)
    # bilinear: the search's logic is under test here, on flat colour images a guided filter has no edges to use
    cache = EvalCache.build(model, read_folder(folder), guided=False)
    return model, model_dir, folder, cache


def one_sentence() -> DescriptionSet:
    return DescriptionSet({c: [f"A photo of a {c}."] for c in CLASSES})


def shipped() -> DescriptionSet:
    return labelsets.load("camvid_11").descriptions.subset(CLASSES)


def offline_sources(model, encoder):
    """The offline sources, with the one shipped set of these classes (encoding every shipped set takes a
    minute with a fresh encoder cache)."""
    return [ShippedSetSource(encoder, keys=("camvid_11",)), TrainedClassSource(model.label_space, encoder),
            PropertySource(model.label_space)]


def run(setup, encoder, sources=None, **settings):
    model, _, _, cache = setup
    search, guard = split_halves(cache, 0)
    return DescriptionSearch(model, search, guard, encoder, SearchSettings(**{"budget": 8, **settings}),
                             sources=sources if sources is not None else offline_sources(model, encoder))


def replace_prior(cache):
    """The cache without the open-set credit (another scoring path)."""
    out = cache_subset(cache, range(len(cache)))
    out.prior = None
    return out


def test_halves_are_disjoint_deterministic_and_by_name(setup):
    cache = setup[3]
    a, b = split_halves(cache, 0)
    stems = lambda c: [im.stem for im in c.images]  # noqa: E731
    assert set(stems(a)).isdisjoint(stems(b)) and len(a) + len(b) == len(cache) and len(a) == 3
    assert stems(split_halves(cache, 0)[0]) == stems(a)
    assert {tuple(stems(split_halves(cache, s)[0])) for s in range(8)} != {tuple(stems(a))}  # the seed matters
    reversed_cache = cache_subset(cache, range(len(cache) - 1, -1, -1))
    assert sorted(stems(split_halves(reversed_cache, 0)[0])) == sorted(stems(a))
    with pytest.raises(ProLabError, match="two labelled images"):
        split_halves(cache_subset(cache, [0]), 0)


def test_search_is_deterministic_for_a_seed_and_keeps_only_gains(setup, encoder):
    r1 = run(setup, encoder, budget=12, margin=0.001).run(one_sentence())
    r2 = run(setup, encoder, budget=12, margin=0.001).run(one_sentence())
    assert r1.descriptions.to_dict() == r2.descriptions.to_dict()
    assert [k.to_dict() for k in r1.kept] == [k.to_dict() for k in r2.kept]
    assert [(p.proposals, p.search_miou, p.guard_miou) for p in r1.trajectory] == \
           [(p.proposals, p.search_miou, p.guard_miou) for p in r2.trajectory]
    assert r1.proposals == 12 and len(r1.trajectory) == 13 and r1.stop_reason.startswith("budget")
    assert r1.kept, "the shipped sentences of the same classes are among the proposals; some must gain"
    for k in r1.kept:
        assert k.search_delta >= 0.001 and k.guard_delta >= 0
    searched = [p.search_miou for p in r1.trajectory]
    guarded = [p.guard_miou for p in r1.trajectory]
    assert searched == sorted(searched) and guarded == sorted(guarded)
    assert r1.search_after["miou"] > r1.search_before["miou"]
    # the final state is what the full scorer measures on the halves
    search, guard = split_halves(setup[3], 0)
    assert search.rescore(descriptions=r1.descriptions, encoder=encoder)["miou"] == pytest.approx(r1.search_after["miou"])
    assert guard.rescore(descriptions=r1.descriptions, encoder=encoder)["miou"] == pytest.approx(r1.guard_after["miou"])
    # kept sentences are the descriptions' difference from the start
    for k in r1.kept:
        assert set(k.added) <= set(r1.descriptions[k.class_name]) or any(
            later.class_name == k.class_name and later.step > k.step for later in r1.kept)


def test_the_name_source_offers_a_novel_class_its_name_alone_then_added(setup, encoder):
    from prolab.alignment import Alignment
    from prolab.description_search import ClassContext

    def ctx(sentences, novelty):
        return ClassContext("cow", sentences, 0.1, None, [], [], {}, [], novelty)

    long = ["a large farm animal with four legs", "a black and white animal grazing"]
    alone, added = NameSource().proposals(ctx(long, 1.0))[0]
    assert (alone.add, alone.remove, added.add, added.remove) == (
        ("A photo of a cow.",), tuple(long), ("A photo of a cow.",), ())
    assert NameSource().proposals(ctx(long, 0.0)) == ([], [])  # explained by trained classes: nothing
    assert NameSource().proposals(ctx(["A photo of a cow."], 1.0)) == ([], [])  # already its name alone
    # the search gives each class its novelty from the alignment with the trained classes
    model, _, _, cache = setup
    half = split_halves(cache, 0)[0]
    search = run(setup, encoder, sources=[NameSource()])
    start = DescriptionSet({**shipped().to_dict(), CLASSES[0]: ["a purple umbrella in the rain"]})
    space = model.label_space.edited(start, encoder)
    novelty = Alignment.between(space, model.label_space).novelty
    metrics = half.rescore(descriptions=start, encoder=encoder)
    for c in CLASSES:
        assert search._context(start, space, metrics, c).novelty == pytest.approx(novelty[space.class_index(c)])
        offered = search.proposals(start, space, metrics, c, np.random.default_rng(0), singles=False)
        assert bool(offered) == (novelty[space.class_index(c)] > 0)
    assert novelty[space.class_index(CLASSES[0])] > 0
    assert any(isinstance(src, NameSource) for src in DescriptionSearch(model, half, half, encoder).sources)


def test_a_margin_nothing_reaches_keeps_nothing(setup, encoder):
    result = run(setup, encoder, budget=5, margin=0.99).run(one_sentence())
    assert result.kept == [] and result.descriptions.to_dict() == one_sentence().to_dict()
    assert result.search_after["miou"] == result.search_before["miou"] and result.proposals == 5


def test_the_guard_half_turns_down_gains_that_do_not_generalise(setup, encoder):
    """A guard half of the same images with every class's pixels labelled as another: what helps the search
    half hurts it."""
    from prolab.eval_cache import CachedImage

    model, _, _, cache = setup
    search, _ = split_halves(cache, 0)
    swap = np.arange(256, dtype=np.uint8)
    swap[:len(CLASSES)] = np.roll(np.arange(len(CLASSES)), 1)  # every class's pixels labelled as another
    swapped = cache_subset(search, range(len(search)))
    swapped.images = [CachedImage(im.stem, im.features, swap[im.label], im.sentence_map) for im in search.images]
    result = DescriptionSearch(model, search, swapped, encoder, SearchSettings(budget=20, margin=0.0),
                               sources=offline_sources(model, encoder)).run(one_sentence())
    assert result.guard_rejected, "some proposal gained on the search half and lost on the swapped guard half"
    assert result.guard_after["miou"] >= result.guard_before["miou"]
    assert all(k.step not in result.guard_rejected for k in result.kept)


def test_cancel_and_progress(setup, encoder):
    cancel = threading.Event()
    calls = []

    def progress(fraction, message):
        calls.append((fraction, message))
        if len(calls) == 3:
            cancel.set()

    result = run(setup, encoder, budget=20).run(one_sentence(), progress=progress, cancel=cancel)
    assert result.cancelled and result.stop_reason == "cancelled" and result.proposals == 3
    assert [round(f, 6) for f, _ in calls] == [round(i / 20, 6) for i in (1, 2, 3)]
    assert all("proposals" in m and "guard half" in m for _, m in calls)
    full = run(setup, encoder, budget=4).run(one_sentence(), progress=lambda f, m: calls.append((f, m)))
    assert calls[-1][0] == 1.0 and not full.cancelled


def test_report_contents(setup, encoder):
    result = run(setup, encoder, budget=10).run(one_sentence())
    report = json.loads(json.dumps(result.to_dict()))
    assert set(report) >= {"search_miou", "guard_miou", "proposals", "seconds", "seconds_per_proposal", "kept",
                           "per_class", "trajectory", "descriptions", "stop_reason"}
    assert report["proposals"] == 10 and report["seconds_per_proposal"] > 0
    for row in report["kept"]:
        assert set(row) >= {"class", "added", "removed", "source", "search_delta", "guard_delta"}
        assert row["class"] in CLASSES and (row["added"] or row["removed"]) and row["source"]
    assert [r["class"] for r in report["per_class"]] == list(setup[3].classes)
    text = format_report(result)
    assert "search half" in text and "guard half" in text
    assert all(k.class_name in text or "classes" in text for k in result.kept)


def test_settings_and_inputs_are_checked(setup, encoder):
    for bad in ({"budget": 0}, {"budget": None, "seconds": None}, {"seconds": -1.0}, {"margin": 2.0},
                {"seed": -1}):
        with pytest.raises(ProLabError):
            SearchSettings(**{"budget": 5, **bad})
    search = run(setup, encoder)
    with pytest.raises(ProLabError, match="no entry for"):
        search.run(DescriptionSet({"sky": ["blue"]}))
    with pytest.raises(ProLabError, match="not a class"):
        run(setup, encoder, classes=("zebra",)).run(one_sentence())


def test_only_the_classes_given_are_edited(setup, encoder):
    result = run(setup, encoder, budget=10, classes=("car", "tree")).run(one_sentence())
    for c in CLASSES:
        if c not in ("car", "tree"):
            assert result.descriptions[c] == one_sentence()[c]


# ---------------------------------------------------------------------------- the LLM path
def llm_config(url, timeout=5.0):
    return LLMConfig(model="fake-model", base_url=url, api_key="k", timeout=timeout, retries=0, max_tokens=None)


def test_llm_proposals_through_a_real_server(setup, encoder):
    good = ["Wide flat grey asphalt surface", "Painted white lane markings", "Vehicles drive on it",
            "Blue sky overhead"]
    with FakeLLMServer(default=lambda cat: json_list(good)) as srv:
        source = LLMSource(llm_config(srv.url))
        result = run(setup, encoder, budget=6, margin=0.0, sources=[source]).run(one_sentence())
        assert srv.requests, "the openai client talked to the server"
        body = srv.requests[0]["body"]
        assert body["model"] == "fake-model" and "Class:" in body["messages"][-1]["content"]
        assert "Confused with" in body["messages"][-1]["content"] or "Current sentences" in body["messages"][-1]["content"]
    assert result.proposals > 0 and result.skipped == []
    added = {s for k in result.kept for s in k.added}
    assert added <= set(good)
    assert all(k.source.startswith("LLM") for k in result.kept)


@pytest.mark.parametrize("reply, reason", [
    (error(500, "boom"), "request failed"),
    (error(400, "bad request"), "request failed"),
    (Reply(200, "this is not json", content_type="application/json"), "request failed"),
    (completion(""), "no usable sentence"),
    (completion(None), "no usable sentence"),
    (Reply(200, {"choices": []}), "request failed"),
    (Reply(delay=3.0, body=completion('["late"]').body), "no LLM answer within"),
])
def test_llm_failures_are_skipped_and_change_nothing(setup, encoder, reply, reason):
    with FakeLLMServer(default=lambda cat: reply) as srv:
        source = LLMSource(llm_config(srv.url, timeout=1.0))
        result = run(setup, encoder, budget=5, margin=0.0, sources=[source]).run(one_sentence())
        assert srv.requests
    assert result.descriptions.to_dict() == one_sentence().to_dict() and result.kept == []
    assert result.skipped and all(reason in s for s in result.skipped), result.skipped


def test_llm_source_needs_an_endpoint():
    with pytest.raises(ProLabError, match="No LLM endpoint"):
        LLMSource(LLMConfig(model="m", base_url=None, api_key=None))


# ---------------------------------------------------------------------------- CLI
def test_cli_improve(setup, tmp_path, capsys):
    _, model_dir, folder, _ = setup
    start = tmp_path / "start.json"
    save_descriptions(one_sentence(), start)
    out, report = tmp_path / "improved.json", tmp_path / "report.json"
    rc = main(["describe", "--improve", str(start), "--folder", str(folder), "--segmenter", str(model_dir),
               "--budget", "4", "--seed", "1", "--margin", "0", "--out", str(out), "--report", str(report)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "search half" in text and "guard half" in text and str(out) in text
    improved = load_descriptions(out)
    assert improved.categories == one_sentence().categories
    data = json.loads(report.read_text())
    assert data["proposals"] == 4 and data["descriptions"] == improved.to_dict()
    # a shipped key works as the start, and mistakes are one sentence with exit status 2
    for argv, message in (
            (["--improve", "camvid_11"], "--dataset NAME or --folder PATH"),
            (["--improve", "nope_42", "--folder", str(folder)], "neither"),
            (["--improve", str(start), "--folder", str(folder), "--budget", "0"], "budget"),
            (["--improve", str(start), "--folder", str(folder), "--margin", "-1"], "--margin")):
        rc = main(["describe", *argv, "--segmenter", str(model_dir), "--out", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- the plain-words sets
@pytest.mark.parametrize("key", ["camvid_11", "msrc_23"])
def test_plain_word_sets_are_our_own_words(key):
    """bench/tables/plain_<set>.json: every class of the shipped set, three sentences each, none of them a
    sentence of any shipped description file (ignoring case, spacing and a final full stop)."""
    from pathlib import Path

    from prolab.assets import DESCRIPTIONS_DIR

    def norm(s: str) -> str:
        return " ".join(s.split()).casefold().rstrip(".")

    repo = Path(__file__).resolve().parents[1]
    plain = load_descriptions(repo / "bench" / "tables" / f"plain_{key}.json")
    assert plain.categories == labelsets.load(key).class_names
    assert all(len(plain[c]) == 3 for c in plain)
    shipped_sentences = set()
    for path in DESCRIPTIONS_DIR.rglob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        for value in (data.values() if isinstance(data, dict) else []):
            items = value if isinstance(value, list) else (value.values() if isinstance(value, dict) else [])
            shipped_sentences |= {norm(s) for s in items if isinstance(s, str)}
    assert len(shipped_sentences) > 1000
    copied = [s for c in plain for s in plain[c] if norm(s) in shipped_sentences]
    assert copied == []
