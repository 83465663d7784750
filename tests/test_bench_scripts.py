"""Smoke tests of the benchmark scripts: each runs end to end in its tiny mode and writes the JSON the
docs are built from (keys and value types checked here; the numbers themselves are not asserted,
since a two-step training run has no meaningful accuracy)."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    return importlib.import_module(f"bench.{name}")


def _is_rate(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def _stat(d: dict, n: int) -> None:
    assert set(d) >= {"mean", "std", "n", "values"}
    assert d["n"] == n and len(d["values"]) == n
    assert _is_rate(d["mean"]) and d["std"] >= 0.0
    assert min(d["values"]) <= d["mean"] <= max(d["values"])


def test_paper_claims_smoke(datasets_dir, tmp_path):
    from bench.claims.aggregate import P3_FIELDS
    from bench.claims.plan import HELD_OUT, PRETRAINED, PROFILES, SCRATCH

    bench = _load("paper_claims")
    out = tmp_path / "runs"
    res = bench.main(["--smoke", "--data-root", str(datasets_dir), "--out-dir", str(out),
                      "--results", str(tmp_path / "claims.json"), "--figures", str(tmp_path / "fig")])
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert set(saved) >= {"part1", "part2", "part3", "part4", "meta", "runs", "figures"}
    profile = PROFILES["smoke"]
    seeds = len(profile["seeds"])

    # 1: both supervisions, both val sets, one value per seed
    for sup in ("property", "category"):
        for key in ("msrc_v2_val", "camvid_val"):
            _stat(saved["part1"][sup][key], seeds)
    assert set(saved["part1"]["delta_property_minus_category"]) == {"msrc_v2_val", "camvid_val"}
    # the runs really differ by supervision: a category model has no label space
    assert "label_space" in saved["runs"]["property_s0"] and "label_space" not in saved["runs"]["category_s0"]
    # every arm uses the pretrained EfficientNet-Lite0 but the from-scratch comparison row
    assert saved["part1"]["backbone"] == PRETRAINED == saved["meta"]["backbone"]
    scratch = saved["part1"]["scratch"]
    assert scratch["backbone"] == SCRATCH and scratch["seeds"] == profile["scratch_seeds"]
    for sup in ("property", "category"):
        _stat(scratch[sup]["camvid_val"], len(profile["scratch_seeds"]))
        assert saved["runs"][f"scratch_{sup}_s0"]["settings"]["backbone"] == SCRATCH
    assert {r["settings"]["backbone"] for n, r in saved["runs"].items() if not n.startswith("scratch_")} \
        == {PRETRAINED}
    assert saved["meta"]["recipe"]["model"]["backbone_options"]["pretrained"] is True
    assert saved["meta"]["scratch_recipe"]["model"]["backbone"] == SCRATCH

    # 2: one point per stop, for both supervisions
    assert saved["part2"]["steps"] == profile["stops"]
    for sup in ("property", "category"):
        assert len(saved["part2"][sup]["camvid_val"]) == len(profile["stops"])
        _stat(saved["part2"][sup]["camvid_val"][-1], seeds)
        assert len(saved["part2"]["scratch"][sup]["msrc_v2_val"]) == len(profile["stops"])
    assert [p["step"] for p in saved["runs"]["property_s0"]["curve"]] == profile["stops"]

    # 3: held-out classes removed from the label space, scored by projection and control (each with the
    # open-set credit and without), upper bound and chance
    p3 = saved["part3"]
    assert p3["classes"] == list(HELD_OUT)
    assert {"cow", "sheep", "horse", "cat", "dog", "bird"} <= set(p3["union_classes_removed"])
    assert p3["open_set_credit"]["weight"] > 0
    block = p3["sets"]["msrc_v2_val"]
    assert set(block["per_class"]) == set(HELD_OUT)
    for c, row in block["per_class"].items():
        assert set(row) == set(P3_FIELDS) | {"pixels"}
        draws = len(p3["seeds"]) * profile["control_draws"]
        for field, most in (("projected_credit", len(p3["seeds"])), ("projected_plain", len(p3["seeds"])),
                            ("control_credit", draws), ("control_plain", draws)):
            assert row[field]["n"] <= most  # classes absent from the GT and never predicted have no IoU
        assert isinstance(row["pixels"], int) and row["pixels"] >= 0
        assert row["chance"] is None or _is_rate(row["chance"])
    assert set(block["mean"]) == set(P3_FIELDS)
    assert set(block["known_classes_miou"]) == {"credit", "plain"}
    ls = saved["runs"]["heldout_s0"]["label_space"]
    assert ls["classes"] == p3["training_label_space_classes"]
    assert ls["classes"] < saved["runs"]["property_s0"]["label_space"]["classes"]
    _check_heldout_scoring(out, datasets_dir)

    # 4: one row per K plus the prolab template
    rows = saved["part4"]["rows"]
    assert [r["k"] for r in rows if r["template"] == "plain"] == profile["ks"]
    assert any(r["template"] == "prolab" for r in rows)
    for r in rows:
        _stat(r["camvid_val"], len(profile["part4_seeds"]))
        assert isinstance(r["sentences"], int) and r["sentences"] > 0

    assert saved["meta"]["mode"] == "smoke" and saved["meta"]["elapsed_s"] > 0
    assert all(isinstance(v, float) and v > 0 for v in saved["meta"]["part_run_seconds"].values())
    assert len(saved["figures"]) == 4
    for rel in saved["figures"]:
        png = (tmp_path / rel).resolve()
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["part1"] == saved["part1"]


def _check_heldout_scoring(out: Path, datasets_dir: Path) -> None:
    """Part 3's scoring of the smoke run's held-out model: the plain arm is exactly ``evaluate(prior=None)``
    with the trained classes' sentences and the held-out classes' descriptions, and the open-set credit
    counts the six added classes, and only them, as novel (from their sentences)."""
    from bench.claims.evaluation import score_arms
    from bench.claims.plan import HELD_OUT
    from prolab.data import read_shared
    from prolab.data.union import load_union
    from prolab.descriptions import DescriptionSet
    from prolab.encoder import TextEncoder
    from prolab.evaluate import evaluate, make_scorer
    from prolab.model import PropertySegmenter
    from prolab.novel_prior import PriorSettings

    model = PropertySegmenter.from_pretrained(out / "heldout_s0")
    trained = list(model.label_space.class_names)
    union = load_union(out / "small_union")
    table = union.mapping["msrc_23"]
    targets = [table[c] for c in HELD_OUT]
    space = model.label_space.extended(DescriptionSet({t: union.descriptions[t] for t in targets}),
                                       TextEncoder(model.label_space.encoder_id, template=model.label_space.template))
    src = read_shared(datasets_dir, "msrc_v2", "val", teacher=False)
    got = score_arms(model, src, {"projected": space}, union.mapping, PriorSettings(), 64, 2)
    assert set(got["projected"]) == {"credit", "plain"} and model.label_space.class_names == trained
    given = space.descriptions()
    ref = evaluate(model, src, size=64, mapping=union.mapping, limit=2, prior=None,
                   descriptions=DescriptionSet({c: list(given[table.get(c, c)]) for c in src.classes}))
    assert got["projected"]["plain"]["per_class_iou"] == ref["per_class_iou"]
    scorer = make_scorer(model, src.classes, "msrc_23", union.mapping, prior=PriorSettings(), space=space)
    assert set(scorer.novel_classes()) == set(HELD_OUT)
    # bench.heldout_rescore re-scores the saved run the same way, without retraining it
    from bench.heldout_rescore import animals_miou, rescore

    again = rescore(str(out / "heldout_s0"), str(datasets_dir), size=64, draws=1,
                    union_dir=str(out / "small_union"), limit=2)
    assert again["projected_plain"]["msrc_v2_val"]["per_class_iou"] == ref["per_class_iou"]
    assert set(again) >= {"projected_credit", "control_credit", "projected_plain", "control_plain"}
    iou = animals_miou(again["projected_credit"], list(HELD_OUT))
    present = [c for c in HELD_OUT if ref["per_class_pixels"][c]]
    assert (0.0 <= iou <= 1.0) if present else np.isnan(iou)


def test_paper_claims_chance_iou():
    from bench.claims.aggregate import chance_iou

    # uniform guess over 4 classes; a class with n of N pixels: n / (N + 3n)
    got = chance_iou({"a": 100, "b": 300, "c": 600, "d": 0})
    assert got["d"] is None
    assert math.isclose(got["a"], 100 / (1000 + 300))
    assert math.isclose(got["c"], 600 / (1000 + 1800))


def test_speed_smoke(tmp_path):
    bench = _load("speed")
    res = bench.main(["--smoke", "--json", str(tmp_path / "speed.json")])
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["smoke"] is True and res["labelspace"] == saved["labelspace"]
    ls = saved["labelspace"]
    assert ls["k"] == 8 and ls["classes"] == 23 and ls["sentences"] > ls["classes"]
    for phase in ("cold", "warm"):
        assert ls[phase]["median_s"] > 0 and ls[phase]["median_cpu_s"] >= 0
    assert ls["warm"]["sentences_encoded"] == 0  # a warm build encodes nothing
    assert ls["cold"]["encoder_load_median_s"] > 0
    assert set(saved["forward"]) == {"64", "128"}
    for size, d in saved["forward"].items():
        assert d["median_s"] > 0
        assert d["output_shape"][1:] == [int(size) // 4, int(size) // 4]
    assert isinstance(saved["model"]["source"], str) and saved["model"]["parameters"] > 0
    rs = saved["rescore"]
    assert rs["new_label_space"]["classes"] == 23 and rs["new_label_space"]["median_s"] > 0
    assert rs["classes_added_same_centres"]["classes"] == 24
    assert "skipped" in saved["app"]
    assert saved["memory"]["end_mb"] >= saved["memory"]["after_labelspace_mb"] > 0


def test_app_memory_bench_smoke(tmp_path, encoder):
    """``python -m bench.app_memory`` end to end with 3 users and a 3 s TTL on a tiny model: it prints the RSS
    numbers, and every session (warm-up included) is released after it expires."""
    import os
    import re
    import subprocess
    import sys

    from tests.app_server import save_tiny_model

    model = save_tiny_model(tmp_path / "m", encoder)
    cache = encoder.cache.path.parent
    res = subprocess.run([sys.executable, "-m", "bench.app_memory", "--users", "3", "--ttl", "3",
                          "--rounds", "1", "--model", str(model), "--label-set", "camvid_11"],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, HF_HUB_OFFLINE="1", PROLAB_CACHE_DIR=str(cache)))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(4 of 4 sessions released)" in res.stdout, res.stdout
    for label in ("RSS after warm-up", "RSS after 3 users have segmented", "RSS after their sessions expired",
                  "held per user", "arrays released per session"):
        line = next(ln for ln in res.stdout.splitlines() if label in ln)
        assert re.search(r"-?\d+\.\d+ MB", line), line


def test_bench_scripts_are_modules_of_the_bench_package():
    """Every bench runs as ``python -m bench.<name>`` and imports its helpers as ``bench.<module>``:
    none edits ``sys.path`` or imports a sibling by its bare name."""
    import re

    scripts = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")
    assert len(scripts) >= 7
    for path in scripts:
        source = path.read_text(encoding="utf-8")
        assert "sys.path" not in source, f"{path.name} edits sys.path"
        siblings = {p.stem for p in scripts} - {path.stem}
        bare = re.findall(r"^\s*(?:from|import) (\w+)", source, re.M)
        assert not siblings & set(bare), f"{path.name} imports a bench module by its bare name"
        _load(path.stem)


def _bench_imports(path: Path) -> set[str]:
    """The ``bench.*`` modules (and ``bench.<name>`` of ``from bench import name``) ``path`` imports."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
            found.add(node.module)
            if node.module == "bench":
                found |= {f"bench.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bench"}
    return found


def test_benches_share_helpers_not_each_others_code():
    """A bench (a module run as ``python -m bench.<name>``) imports the shared modules (bench.common,
    bench.app_server, bench.cached_scoring, bench.claims), never another bench; the shared modules
    import no bench; tests import no private (``_``) bench module."""
    modules = {f"bench.{p.stem}": p for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py"}
    modules |= {f"bench.claims.{p.stem}": p for p in (REPO / "bench" / "claims").glob("*.py")
                if p.name != "__init__.py"}
    benches = {name for name, p in modules.items()
               if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")}
    assert {"bench.speed", "bench.paper_claims", "bench.heldout_rescore", "bench.webcam_fps"} <= benches
    assert {"bench.common", "bench.app_server", "bench.cached_scoring", "bench.claims.plan"}.isdisjoint(benches)
    for name, path in sorted(modules.items()):
        others = _bench_imports(path) & benches - {name}
        assert not others, f"{name} imports the bench {sorted(others)}: move what they share to a shared module"
    for path in sorted((REPO / "tests").glob("*.py")):
        private = {m for m in _bench_imports(path) if any(part.startswith("_") for part in m.split("."))}
        assert not private, f"tests/{path.name} imports {sorted(private)}"


def test_label_transfer_smoke(datasets_dir, tmp_path):
    """bench.label_transfer on two val images per dataset: every row, opaque ids equal to names, the
    tables and the chart written."""
    bench = _load("label_transfer")
    out = tmp_path / "lt.json"
    res = bench.main(["--data-root", str(datasets_dir), "--limit", "2", "--json", str(out),
                      "--chart", str(tmp_path / "lt.png")])
    assert set(res["datasets"]) == {"msrc_v2", "camvid"}
    msrc, camvid = res["datasets"]["msrc_v2"], res["datasets"]["camvid"]
    for rows in (msrc, camvid):
        assert rows["own, opaque ids"] == rows["own"]
        assert {"trained", "own", "own, property scores only"} <= set(rows)
    assert {"pascal_context_59 by name", "ade20k_150 by name", "trained, merged as ade20k_150"} <= set(msrc)
    assert "cityscapes_19 by name" in camvid
    assert "person" in msrc["pascal_context_59 by name"]["per_class_iou"]  # face + body merged
    assert json.loads(out.read_text())["datasets"]["camvid"]["trained"] == camvid["trained"]
    assert "| class |" in out.with_suffix(".md").read_text()
    assert (tmp_path / "lt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hostile_matrix_finds_no_traceback_in_the_cli(tmp_path):
    """``python -m bench.hostile_matrix --only cli`` on a tiny model: every bad invocation of every command
    ends with one ``error:`` line (or a usage error), never a traceback."""
    import json
    import os
    import subprocess
    import sys

    from tests.test_train import tiny_model

    tiny_model("property").save_pretrained(tmp_path / "m")
    out = tmp_path / "matrix.json"
    res = subprocess.run([sys.executable, "-m", "bench.hostile_matrix", "--only", "cli", "--model", str(tmp_path / "m"),
                          "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    summary = json.loads(out.read_text())["summary"]["cli"]
    assert res.returncode == 0 and summary["tracebacks"] == 0, res.stdout[-3000:]
    assert summary["cases"] >= 70


def test_the_readme_s_unseen_animals_story_states_what_bench_unseen_story_measured():
    """Issue #28: the story said "add a cat" and a newcomer saw "wall 37.7 % | animal 33.6 %" (ADE20K-150's
    own animal class, before a cat is added): the README now says each step's result as measured."""
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = " ".join(repo.joinpath("README.md").read_text().split())
    measured = json.loads(repo.joinpath("docs", "results", "unseen_story.json").read_text())
    for step, top in measured.items():
        said = " | ".join(f"{c} {p:.1f} %" for c, p in top[:2])
        assert said in readme, (step, said)
    assert "msrc_23.json" in readme and "bench.unseen_story" in readme


def test_hostile_matrix_refuses_every_oversized_input_with_a_sentence(tmp_path, encoder):
    """``python -m bench.hostile_matrix --limits`` (issue 31's cases, CLI and app, on a tiny model): every
    input too large, named twice or holding control characters is refused with a sentence that names no
    internal path, with no traceback in a response or in the log, and the cases leave no temporary files."""
    import json
    import os
    import subprocess
    import sys

    from tests.app_server import save_tiny_model

    model = save_tiny_model(tmp_path / "m", encoder)
    out = tmp_path / "limits.json"
    res = subprocess.run([sys.executable, "-m", "bench.hostile_matrix", "--limits", "--model", str(model),
                          "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, HF_HUB_OFFLINE="1", PROLAB_CACHE_DIR=str(encoder.cache.path.parent)))
    summary = json.loads(out.read_text())["summary"]
    assert res.returncode == 0, res.stdout[-3000:]
    for side, least in (("cli", 15), ("app", 20)):
        assert summary[side]["cases"] >= least and summary[side]["failed"] == 0, summary
        assert summary[side]["tracebacks"] == summary[side]["bad_messages"] == 0
    assert summary["log"] == {"tracebacks": 0, "refusal_lines": summary["app"]["cases"]}
    assert summary["process"]["temp_mb_left_by_cases"] < 1.0


def test_description_search_smoke(datasets_dir, tmp_path):
    """bench.description_search on four MSRC-v2 val images, at most 20 proposals or 20 s a search (on an idle
    machine the proposals end it; the 19th is the first it keeps): both halves reported, the full scorer
    agrees with the search's own numbers, the tables and the chart written."""
    bench = _load("description_search")
    out = tmp_path / "ds.json"
    res = bench.main(["--data-root", str(datasets_dir), "--limit", "4", "--seconds", "20", "--budget", "20",
                      "--threads", "1", "--datasets", "msrc_v2", "--starts", "one sentence", "--json", str(out),
                      "--chart", str(tmp_path / "ds.png")])
    run = res["runs"]["msrc_v2, one sentence"]
    assert math.isclose(run["guard_after_full_scorer"], run["guard_miou"]["after"], abs_tol=1e-9)
    assert run["guard_miou"]["after"] >= run["guard_miou"]["before"]
    assert {"shipped", "trained"} <= set(run["reference"]) and run["per_class"]
    assert out.with_suffix(".md").is_file() and (tmp_path / "ds.png").is_file()


def test_bridge_novelty_smoke(datasets_dir, tmp_path):
    """bench.bridge_novelty on two val images per set: both novelty rules scored for the plain and the shipped
    sets and the unseen animals (whose novelty the size-matched rule leaves as it was), the old rule only
    inside its context, the JSON written."""
    import prolab.alignment as alignment

    bench = _load("bridge_novelty")
    out = tmp_path / "bn.json"
    res = bench.main(["--data-root", str(datasets_dir), "--limit", "2", "--json", str(out),
                      "--datasets", "camvid", "unseen animals"])
    camvid = res["runs"]["camvid"]
    assert camvid["images"] == 2 and set(camvid) >= {"trained", "plain", "shipped"}
    assert set(camvid["plain"]) == {"new", "old"} and camvid["plain"]["new"]["per_class_iou"]
    animals = res["runs"]["unseen animals"]
    assert animals["new"]["per_class_iou"] == animals["old"]["per_class_iou"]
    assert alignment.sentence_set_scores.__name__ == "sentence_set_scores"  # restored after the old rule
    assert json.loads(out.read_text())["runs"]["camvid"]["trained"] == camvid["trained"]


def test_activation_drift_is_zero_for_the_reference_and_is_the_anchor_loss(datasets_dir, tmp_path):
    import torch

    from prolab.assets import DEFAULT_MODEL_DIR
    from prolab.data.readers import read_source
    from prolab.images import load_image
    from prolab.inference import embed_image, final_projection
    from prolab.model import PropertySegmenter
    from prolab.scoring import anchor_loss

    reference = PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR, score_offsets=False).eval()
    moved = PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR, score_offsets=False).eval()
    last = final_projection(moved)  # pixel features -> embedding
    torch.manual_seed(0)
    with torch.no_grad():
        last.weight.add_(0.5 * last.weight.std() * torch.randn_like(last.weight))
    moved.save_pretrained(tmp_path / "moved")
    out = tmp_path / "drift.json"
    res = _load("activation_drift").main(["--reference", str(DEFAULT_MODEL_DIR), "--model", str(DEFAULT_MODEL_DIR),
                                          "--model", str(tmp_path / "moved"), "--dataset", "msrc_v2",
                                          "--data-root", str(datasets_dir), "--limit", "1", "--size", "256",
                                          "--json", str(out)])
    same, other = (res["models"][k]["msrc_v2"] for k in (str(DEFAULT_MODEL_DIR), str(tmp_path / "moved")))
    assert same["mean_1_minus_cos"] == 0 and same["strongest_property_changed"] == 0
    image = load_image(read_source("msrc_v2", datasets_dir, "val", teacher=False).samples[0].image)
    centers = torch.as_tensor(reference.label_space.centers, dtype=torch.float32)
    expected = float(anchor_loss(embed_image(moved, image, size=256)[None], embed_image(reference, image, size=256)[None],
                                 centers, reference.config.temperature))
    assert expected > 0.001 and other["mean_1_minus_cos"] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert other["p90_1_minus_cos"] >= other["mean_1_minus_cos"] and 0 < other["strongest_property_changed"] <= 1
    assert json.loads(out.read_text())["size"] == 256


def test_activation_drift_takes_the_strongest_property_from_the_logits_not_the_saturated_sigmoid():
    import torch

    from prolab.scoring import property_activations, property_logits

    centers = torch.eye(3, 4)  # property k = embedding axis k
    ref = torch.tensor([8.0, 9.0, 0.0, 0.0]).view(1, 4, 1, 1)  # logits 200, 225: both activations round to 1.0
    moved = torch.tensor([9.0, 8.0, 0.0, 0.0]).view(1, 4, 1, 1)
    p, q = property_activations(moved, centers, 0.04), property_activations(ref, centers, 0.04)
    assert p[0, 0] == q[0, 1] == 1.0 and p.argmax(1) == q.argmax(1)  # the tie the old count fell into
    lm, lr = property_logits(moved, centers, 0.04), property_logits(ref, centers, 0.04)
    distance, changed = _load("activation_drift").compare(lm, lr)
    assert changed == 1 and distance.shape == (1,) and distance[0] == pytest.approx(0.0, abs=1e-6)
    assert _load("activation_drift").compare(lr, lr)[1] == 0


def test_forward_ab_interleaves_and_reports_the_slower_model(monkeypatch):
    """A fake clock that each forward advances by its own cost, which drifts from round to round: the order
    alternates ABBA, B / A is the ratio of the medians and the pairwise ratio the median of the same-round ratios
    (the two differ here, and pairing a round's A with another round's B would give neither)."""
    ab = _load("forward_ab")
    clock, calls = [0.0], []
    costs = {"a": iter([0.010, 0.020, 0.030, 0.100]), "b": iter([0.040, 0.050, 0.060, 0.070])}

    def forward(name: str):
        def run():
            calls.append(name)
            clock[0] += next(costs[name])
        return run

    monkeypatch.setattr(ab.time, "perf_counter", lambda: clock[0])
    res = ab.interleaved(forward("a"), forward("b"), rounds=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert res["a_ms"] == pytest.approx([10.0, 20.0, 30.0, 100.0])
    assert res["b_ms"] == pytest.approx([40.0, 50.0, 60.0, 70.0])
    assert res["median_a_ms"] == pytest.approx(25.0) and res["median_b_ms"] == pytest.approx(55.0)
    assert res["b_over_a"] == pytest.approx(2.2)
    assert res["median_pair_ratio"] == pytest.approx((2.5 + 2.0) / 2)  # ratios 4, 2.5, 2, 0.7


def test_forward_ab_runs_two_saved_models_and_leaves_the_process_as_it_was(tiny_model_dir, tmp_path):
    import torch

    threads = torch.get_num_threads()
    other = 2 if threads == 1 else 1
    res = _load("forward_ab").main(["--a", str(tiny_model_dir), "--b", str(tiny_model_dir), "--size", "64",
                                    "--rounds", "2", "--threads", str(other), "--flush-denormals",
                                    "--json", str(tmp_path / "ab.json")])
    assert torch.get_num_threads() == threads  # the caller's pool is back
    saved = json.loads((tmp_path / "ab.json").read_text())
    assert set(saved["runs"]) == {"default", "flush_denormals"} and saved["threads"] == other
    for run in saved["runs"].values():
        assert len(run["a_ms"]) == len(run["b_ms"]) == 2 and min(run["a_ms"] + run["b_ms"]) > 0
        assert isinstance(run["flush_supported"], bool)
    assert saved["weights"]["a"] == saved["weights"]["b"] and len(saved["weights"]["a"]) > 8
    assert saved["size"] == 64 and res["machine"]["cores"] >= 1
    bad = [["--rounds", "3"], ["--rounds", "0"], ["--threads", "0"], ["--size", "4096"],
           ["--b", str(tmp_path / "runs" / "nope")]]
    for extra in bad:
        args = ["--a", str(tiny_model_dir), "--b", str(tiny_model_dir), *extra]
        with pytest.raises(SystemExit):
            _load("forward_ab").main(args)
        assert torch.get_num_threads() == threads
