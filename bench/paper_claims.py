"""Reproduce the paper's claims at small scale: property vs category supervision, training length,
unknown categories from descriptions, and label-space choices (K, template, encoder).

    python -m bench.paper_claims --quick        # CPU, under 30 minutes on an idle 2-core machine
    python -m bench.paper_claims                # the full run (hours)
    python -m bench.paper_claims --smoke        # seconds; checks the pipeline (used by the tests)

Every run uses the project's own training (:func:`prolab.train.train`) and evaluation
(:func:`prolab.evaluate.evaluate`); the recipe is the same for every arm: a compact CNN trained from
scratch on the MSRC-v2 and CamVid train ground truth (no teacher labels) in the union label space,
evaluated on MSRC-v2 val and CamVid val. Results go to a JSON file, charts (PNG) to ``--figures``.

1. Property vs category supervision: same backbone, data and recipe; several seeds; mean +- std.
2. Training length: the same runs are stopped (``stop_after``), evaluated and resumed at several
   steps of one poly schedule.
3. Unknown categories: the property model is retrained with MSRC cow, sheep, horse, cat, dog and bird
   (and the union's generic "animal", whose sentences name them) removed from the label space and
   their pixels ignored. At test time they come back only through their descriptions, projected onto
   the trained properties (:meth:`LabelSpace.extended`). Control: the same model with each held-out
   class described by random sentences of the training classes. Upper bound: the model of part 1
   (same recipe, trained with them). Chance: a uniform random prediction over the 23 MSRC classes.
4. Label-space choices for the property model: K, the sentence template and (with ``--encoders``,
   which needs the network for hub ids) the sentence encoder.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.speed import machine  # one description of the machine for every bench result

HELD_OUT = ("cow", "sheep", "horse", "cat", "dog", "bird")  # MSRC-v2 class names
# Union classes removed with them: "animal" (ADE-150) is described by naming them
# ("A living creature such as a dog, cat, horse, bird or cow").
ALSO_REMOVED = ("animal",)
EVAL_SETS = (("msrc_v2", "val"), ("camvid", "val"))
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

#: Settings per mode. ``steps`` is the poly schedule's length; ``stops`` the steps evaluated on the way.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(split="val", short_side=64, crop=64, batch=2, steps=2, stops=[1, 2], warmup=1,
                  seeds=[0, 1], heldout_seeds=[0], part4_seeds=[0], k=32, ks=[16, 32], eval_limit=3,
                  eval_train=False, control_draws=1, threads=1, jobs=1, small_union=True),
    "quick": dict(split="train", short_side=128, crop=128, batch=8, steps=360, stops=[90, 180, 270, 360],
                  warmup=30, seeds=[0, 1, 2], heldout_seeds=[0], part4_seeds=[0], k=256,
                  ks=[16, 32, 64, 128, 256], eval_limit=None, eval_train=True, control_draws=3,
                  threads=1, jobs=2),
    "full": dict(split="train", short_side=192, crop=192, batch=8, steps=2000,
                 stops=[250, 500, 1000, 1500, 2000], warmup=50, seeds=[0, 1, 2],
                 heldout_seeds=[0, 1, 2], part4_seeds=[0], k=256, ks=[16, 32, 64, 128, 256],
                 eval_limit=None, eval_train=True, control_draws=5, threads=1, jobs=2),
}
LEAK_WORDS = re.compile(r"\b(cows?|cattle|sheep|horses?|pon(y|ies)|cats?|kittens?|dogs?|pupp(y|ies)|birds?)\b", re.I)


# ---------------------------------------------------------------------------- one training run
def base_config(profile: dict, data_root: str, cache_dir: str) -> dict[str, Any]:
    """The recipe shared by every arm (everything but supervision, seed, label space choices)."""
    return dict(data_root=data_root, sources=[{"name": "msrc_v2"}, {"name": "camvid"}],
                split=profile["split"], label_space="union", k=profile["k"], use_teacher=False,
                short_side=profile["short_side"], crop_size=profile["crop"], batch_size=profile["batch"],
                steps=profile["steps"], warmup_steps=profile["warmup"], lr=2e-3, weight_decay=0.01,
                threads=profile["threads"], data_cache_dir=cache_dir, progress=False, log_every=10,
                checkpoint_every=max(profile["stops"]) + 1,
                model={"backbone": "compact-cnn", "decoder_channels": 64, "aux_head": True})


def small_union_dir(directory: Path) -> Path:
    """The union restricted to the classes MSRC-v2 and CamVid map to, plus "animal" (smoke runs: a
    few hundred sentences to encode instead of thousands)."""
    from prolab.data.union import load_union

    union = load_union()
    keys = ("msrc_23", "camvid_11")
    used = {t for k in keys for t in union.mapping[k].values() if t} | set(ALSO_REMOVED)
    directory.mkdir(parents=True, exist_ok=True)
    kept = {c: union.descriptions[c] for c in union.descriptions if c in used}
    (directory / "union.json").write_text(json.dumps(kept, indent=1, ensure_ascii=False))
    (directory / "union_mapping.json").write_text(json.dumps({k: union.mapping[k] for k in keys}, indent=1))
    return directory


def heldout_descriptions_dir(directory: Path, union_dir: str | None = None) -> Path:
    """A descriptions folder holding the union without the held-out classes; their mapping is null,
    so their pixels become ignore (255) in training."""
    from prolab.data.union import load_union

    union = load_union(union_dir)
    removed = _removed_union_classes(union)
    directory.mkdir(parents=True, exist_ok=True)
    kept = {c: union.descriptions[c] for c in union.descriptions if c not in removed}
    mapping = {key: {c: (None if t in removed else t) for c, t in table.items()}
               for key, table in union.mapping.items()}
    (directory / "union.json").write_text(json.dumps(kept, indent=1, ensure_ascii=False))
    (directory / "union_mapping.json").write_text(json.dumps(mapping, indent=1, ensure_ascii=False))
    return directory


def _removed_union_classes(union) -> set[str]:
    msrc = union.mapping["msrc_23"]
    return {msrc[c] for c in HELD_OUT} | {c for c in ALSO_REMOVED if c in union.descriptions}


def _eval_sources(data_root: str, limit: int | None, with_train: bool = False):
    from prolab.data import read_shared

    out = {f"{name}_{split}": read_shared(data_root, name, split, teacher=False) for name, split in EVAL_SETS}
    if with_train:
        out["msrc_v2_train"] = read_shared(data_root, "msrc_v2", "train", teacher=False)
    return out


def _score(model, source, mapping, size, limit) -> dict:
    from prolab.evaluate import evaluate

    r = evaluate(model, source, size=size, mapping=mapping, limit=limit)
    return {"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"], "per_class_iou": r["per_class_iou"],
            "per_class_pixels": r["per_class_pixels"], "labelled_pixels": r["labelled_pixels"],
            "images": r["images"]}


def run_job(job: dict) -> dict:
    """Train one arm (stopping at every step of ``job['stops']``) and evaluate it; returns its results."""
    logging.getLogger("prolab").setLevel(logging.ERROR)
    import torch

    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter
    from prolab.train import CHECKPOINT_DIR, load_config, train

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    out = Path(job["config"]["out_dir"])
    if out.exists():
        shutil.rmtree(out)  # a stale checkpoint must not be resumed
    torch.set_num_threads(job["config"].get("threads") or 1)
    sources = _eval_sources(job["config"]["data_root"], job["eval_limit"])
    if job.get("heldout"):
        # Its own mapping sends the held-out classes nowhere; MSRC is scored in heldout_evaluation.
        sources.pop("msrc_v2_val")
    result: dict[str, Any] = {"name": job["name"], "part": job["part"], "settings": job["settings"],
                              "curve": [], "final": {}}
    model = None
    for i, stop in enumerate(job["stops"]):
        cfg = load_config(None, **job["config"], stop_after=stop, resume=i > 0)
        # Resuming: start from the checkpointed model (weights are reloaded by train anyway), which
        # saves re-running K-Means for a label space that is already known.
        train(cfg, model=PropertySegmenter.from_pretrained(out / CHECKPOINT_DIR) if i > 0 else None)
        model = PropertySegmenter.from_pretrained(out)
        mapping = load_mapping(out)
        point = {"step": stop}
        for key, src in sources.items():
            point[key] = _score(model, src, mapping, job["size"], job["eval_limit"])
        result["curve"].append({"step": stop, **{k: v["miou"] for k, v in point.items() if k != "step"}})
        result["final"] = {k: v for k, v in point.items() if k != "step"}
    if model.label_space is not None:
        space = model.label_space
        result["label_space"] = {"k": space.k, "classes": space.num_classes, "sentences": len(space.sentences),
                                 "template": space.template, "encoder": space.encoder_id,
                                 "trained_classes_with_identical_signature": _trained_duplicates(space, mapping)}
    if job.get("eval_train"):
        train_src = _eval_sources(job["config"]["data_root"], job["eval_limit"], True)["msrc_v2_train"]
        result["final"]["msrc_v2_train"] = _score(model, train_src, load_mapping(out), job["size"], job["eval_limit"])
    if job.get("heldout"):
        result["heldout"] = heldout_evaluation(model, out, job)
    summary = json.loads((out / "train_summary.json").read_text())
    result.update(wall_s=round(time.perf_counter() - t_wall, 1), cpu_s=round(time.process_time() - t_cpu, 1),
                  train_images=summary["images"], threads=summary["threads"])
    return result


def _trained_duplicates(space, mapping: dict) -> int:
    """How many classes the training data uses share their property signature with another such class."""
    used = {t for key in ("msrc_23", "camvid_11") for t in mapping.get(key, {}).values() if t}
    groups = [[c for c in g if c in used] for g in space.duplicate_groups()]
    return sum(len(g) for g in groups if len(g) > 1)


def heldout_evaluation(model, out: Path, job: dict) -> dict:
    """Held-out classes added back from their descriptions (projection) vs random-sentence controls."""
    import numpy as np

    from prolab.data.union import load_union
    from prolab.descriptions import DescriptionSet
    from prolab.encoder import TextEncoder
    from prolab.model import PropertySegmenter

    union = load_union(job.get("union_dir"))
    space = model.label_space
    removed = _removed_union_classes(union)
    leaked = sorted(c for c in removed if c in space.class_names)
    if leaked:
        raise RuntimeError(f"held-out classes present in the training label space: {leaked}")
    targets = [union.mapping["msrc_23"][c] for c in HELD_OUT]
    real = DescriptionSet({t: union.descriptions[t] for t in targets})
    encoder = TextEncoder(space.encoder_id, template=space.template)
    sources = _eval_sources(job["config"]["data_root"], job["eval_limit"], job.get("heldout_eval_train", False))
    sources.pop("camvid_val")

    def score(descriptions: DescriptionSet, only: str | None = None) -> dict:
        extended = space.extended(descriptions, encoder)
        m = PropertySegmenter.from_pretrained(out, label_space=extended)
        return {key: _score(m, src, union.mapping, job["size"], job["eval_limit"])
                for key, src in sources.items() if only in (None, key)}

    projected = score(real)
    pool = list(space.sentences)
    controls = []
    for draw in range(job["control_draws"]):
        rng = np.random.default_rng(1000 + draw)
        fake = DescriptionSet({t: [pool[i] for i in rng.choice(len(pool), size=len(real[t]), replace=False)]
                               for t in targets})
        # Extra draws only on val: the train images take most of the evaluation time.
        controls.append(score(fake, only=None if draw == 0 else "msrc_v2_val"))
    leaks = [s for s in space.sentences if LEAK_WORDS.search(s)]
    return {"classes": list(HELD_OUT), "union_classes_removed": sorted(removed),
            "training_label_space_classes": space.num_classes,
            "training_sentences_mentioning_heldout_words": len(leaks), "examples": leaks[:5],
            "projected": projected, "control": controls}


# ---------------------------------------------------------------------------- the plan
def make_jobs(profile: dict, args) -> list[dict]:
    """Every training run of the benchmark (part 1 runs double as part 2 curves and part 3/4 references)."""
    runs_dir = Path(args.out_dir)
    base = base_config(profile, args.data_root, str(runs_dir / "datacache"))
    common = dict(stops=profile["stops"], size=profile["short_side"], eval_limit=profile["eval_limit"],
                  control_draws=profile["control_draws"])
    union_dir = None
    if profile.get("small_union"):
        union_dir = str(small_union_dir(runs_dir / "small_union"))
        base["descriptions_dir"] = union_dir
    common["union_dir"] = union_dir
    jobs = []

    def add(name, part, settings, **overrides):
        extra = {k: overrides.pop(k) for k in ("eval_train", "heldout", "heldout_eval_train") if k in overrides}
        stops = overrides.pop("stops", common["stops"])
        cfg = {**base, **overrides, "out_dir": str(runs_dir / name)}
        jobs.append({**common, "name": name, "part": part, "settings": settings, "config": cfg,
                     **extra, "stops": stops})

    parts = set(args.parts)
    with_part1 = bool(parts & {"1", "2"})
    for seed in profile["seeds"] if with_part1 else profile["heldout_seeds"] if "3" in parts else []:
        for sup in ("property", "category") if with_part1 else ("property",):
            add(f"{sup}_s{seed}", "1" if with_part1 else "3", {"supervision": sup, "seed": seed}, supervision=sup,
                seed=seed, eval_train=bool(profile["eval_train"] and sup == "property"
                                           and seed in profile["heldout_seeds"] and "3" in parts),
                **({} if with_part1 else {"stops": [profile["stops"][-1]]}))
    if "3" not in parts:
        profile = dict(profile, heldout_seeds=[])
    if "4" not in parts:
        profile = dict(profile, part4_seeds=[])
    desc_dir = heldout_descriptions_dir(runs_dir / "heldout_descriptions", union_dir)
    for seed in profile["heldout_seeds"]:
        add(f"heldout_s{seed}", "3", {"supervision": "property", "seed": seed, "held_out": list(HELD_OUT)},
            supervision="property", seed=seed, descriptions_dir=str(desc_dir), heldout=True,
            heldout_eval_train=bool(profile["eval_train"]),
            stops=[profile["stops"][-1]])
    last = [profile["stops"][-1]]
    for seed in profile["part4_seeds"]:
        for k in profile["ks"]:
            if k == profile["k"] and seed in profile["seeds"] and with_part1:
                continue  # the part 1 property run is this arm
            add(f"k{k}_s{seed}", "4", {"k": k, "template": "plain", "encoder": DEFAULT_ENCODER, "seed": seed},
                supervision="property", seed=seed, k=k, stops=last)
        for template in args.templates:
            if template != "plain":
                add(f"template_{template}_s{seed}", "4",
                    {"k": profile["k"], "template": template, "encoder": DEFAULT_ENCODER, "seed": seed},
                    supervision="property", seed=seed, template=template, stops=last)
        for enc in args.encoders:
            if enc != DEFAULT_ENCODER:
                slug = re.sub(r"[^A-Za-z0-9]+", "-", enc).strip("-")
                add(f"encoder_{slug}_s{seed}", "4", {"k": profile["k"], "template": "plain", "encoder": enc,
                                                      "seed": seed},
                    supervision="property", seed=seed, encoder=enc, stops=last)
    return jobs


def prepare_data(jobs: list[dict]) -> None:
    """Decode and cache the training images once per label mapping, before parallel workers start
    (two workers writing the same cache file at once would race)."""
    from prolab.train import build_dataset, load_config

    seen = set()
    for job in jobs:
        key = job["config"].get("descriptions_dir")
        if key in seen:
            continue
        seen.add(key)
        build_dataset(load_config(None, **job["config"]))


def run_all(jobs: list[dict], n_jobs: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    if n_jobs <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for job in jobs:
                results[job["name"]] = _logged(run_job(job))
        finally:
            torch.set_num_threads(threads)  # in-process runs (tests) must not leave 1 thread behind
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for f in futures:
            r = _logged(f.result())
            results[r["name"]] = r
    return results


def _logged(r: dict) -> dict:
    finals = ", ".join(f"{k} {v['miou'] * 100:.1f}" for k, v in r["final"].items())
    print(f"  [{r['part']}] {r['name']:<24} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU | mIoU {finals}",
          flush=True)
    return r


# ---------------------------------------------------------------------------- aggregation
def mean_std(values: list[float]) -> dict:
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals), "values": vals}


def part1(results: dict, profile: dict) -> dict:
    out = {}
    for sup in ("property", "category"):
        runs = [results[f"{sup}_s{s}"] for s in profile["seeds"]]
        out[sup] = {f"{n}_{sp}": mean_std([r["final"][f"{n}_{sp}"]["miou"] for r in runs]) for n, sp in EVAL_SETS}
    out["delta_property_minus_category"] = {
        k: (out["property"][k]["mean"] - out["category"][k]["mean"]) for k in out["property"]}
    out["seeds"] = list(profile["seeds"])
    return out


def part2(results: dict, profile: dict) -> dict:
    out = {"steps": list(profile["stops"]), "schedule_steps": profile["steps"]}
    for sup in ("property", "category"):
        runs = [results[f"{sup}_s{s}"] for s in profile["seeds"]]
        out[sup] = {f"{n}_{sp}": [mean_std([r["curve"][i][f"{n}_{sp}"] for r in runs])
                                  for i in range(len(profile["stops"]))] for n, sp in EVAL_SETS}
    return out


def chance_iou(pixels: dict[str, int]) -> dict[str, float | None]:
    """Expected IoU of a uniform random guess over the C classes: n_c / (N + n_c (C - 1))."""
    c, n = len(pixels), sum(pixels.values())
    return {k: (v / (n + v * (c - 1)) if v else None) for k, v in pixels.items()}


def part3(results: dict, profile: dict) -> dict:
    out: dict[str, Any] = {"classes": list(HELD_OUT), "seeds": list(profile["heldout_seeds"]), "sets": {}}
    first = results[f"heldout_s{profile['heldout_seeds'][0]}"]["heldout"]
    out.update({k: first[k] for k in ("union_classes_removed", "training_label_space_classes",
                                      "training_sentences_mentioning_heldout_words", "examples")})
    for key in first["projected"]:
        rows = {}
        for c in HELD_OUT:
            proj, ctrl, upper = [], [], []
            for s in profile["heldout_seeds"]:
                h = results[f"heldout_s{s}"]["heldout"]
                proj.append(h["projected"][key]["per_class_iou"][c])
                ctrl += [d[key]["per_class_iou"][c] for d in h["control"] if key in d]
                up = results.get(f"property_s{s}", {}).get("final", {}).get(key)
                if up is not None:
                    upper.append(up["per_class_iou"][c])
            pixels = first["projected"][key]["per_class_pixels"]
            rows[c] = {"projected": mean_std(proj), "control": mean_std(ctrl),
                       "upper_bound": mean_std(upper) if upper else None,
                       "chance": chance_iou(pixels)[c], "pixels": pixels[c]}
        present = [c for c in HELD_OUT if rows[c]["pixels"]]

        def avg(field):
            vals = [rows[c][field]["mean"] if isinstance(rows[c][field], dict) else rows[c][field]
                    for c in present]
            vals = [v for v in vals if v is not None]
            return statistics.fmean(vals) if vals and len(vals) == len(present) else None

        out["sets"][key] = {"per_class": rows, "classes_with_pixels": present,
                            "mean": {f: avg(f) for f in ("projected", "control", "upper_bound", "chance")},
                            "upper_bound_seen_in_training": key.endswith("_train"),
                            "known_classes_miou_projected": _known_miou(
                                [results[f"heldout_s{s}"]["heldout"]["projected"][key]
                                 for s in profile["heldout_seeds"]])}
    return out


def _known_miou(evals: list[dict]) -> float | None:
    vals = []
    for e in evals:
        v = [x for c, x in e["per_class_iou"].items() if c not in HELD_OUT and x is not None]
        vals.append(statistics.fmean(v) if v else None)
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def part4(results: dict, profile: dict, args) -> dict:
    rows = []

    def arm(name_fn, settings):
        runs = [results.get(name_fn(s)) for s in profile["part4_seeds"]]
        runs = [r for r in runs if r is not None]
        if not runs:
            return
        row = dict(settings)
        for n, sp in EVAL_SETS:
            row[f"{n}_{sp}"] = mean_std([r["final"][f"{n}_{sp}"]["miou"] for r in runs])
        ls = runs[0].get("label_space", {})
        row["sentences"] = ls.get("sentences")
        row["trained_classes_with_identical_signature"] = ls.get("trained_classes_with_identical_signature")
        rows.append(row)

    for k in profile["ks"]:
        arm(lambda s, k=k: f"property_s{s}" if k == profile["k"] and f"property_s{s}" in results else f"k{k}_s{s}",
            {"k": k, "template": "plain", "encoder": DEFAULT_ENCODER})
    for t in args.templates:
        if t != "plain":
            arm(lambda s, t=t: f"template_{t}_s{s}", {"k": profile["k"], "template": t, "encoder": DEFAULT_ENCODER})
    for enc in args.encoders:
        if enc != DEFAULT_ENCODER:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", enc).strip("-")
            arm(lambda s, slug=slug: f"encoder_{slug}_s{s}", {"k": profile["k"], "template": "plain", "encoder": enc})
    return {"seeds": list(profile["part4_seeds"]), "rows": rows}


# ---------------------------------------------------------------------------- charts
def charts(res: dict, fig_dir: Path, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    names = {"msrc_v2_val": "MSRC-v2 val", "camvid_val": "CamVid val"}
    colours = {"property": "#1f77b4", "category": "#ff7f0e"}
    paths = []

    if "part1" in res:
        # 1. supervision
        p1 = res["part1"]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        keys = list(names)
        for j, sup in enumerate(("property", "category")):
            means = [100 * (p1[sup][k]["mean"] or 0) for k in keys]
            stds = [100 * (p1[sup][k]["std"] or 0) for k in keys]
            xs = [i + (j - 0.5) * 0.38 for i in range(len(keys))]
            ax.bar(xs, means, 0.36, yerr=stds, capsize=4, label=f"{sup} supervision", color=colours[sup])
            for x, s in zip(xs, [p1[sup][k]["values"] for k in keys]):
                ax.scatter([x] * len(s), [100 * v for v in s], s=10, color="black", zorder=3)
        ax.set_xticks(range(len(keys)), [names[k] for k in keys])
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"Property vs category supervision ({len(p1['seeds'])} seeds)")
        ax.legend(loc="lower right", fontsize=8)
        paths.append(_save(fig, fig_dir / f"{prefix}_supervision.png"))

    if "part2" in res:
        # 2. training length
        p2 = res["part2"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
        for ax, k in zip(axes, keys):
            for sup in ("property", "category"):
                m = [100 * (x["mean"] or 0) for x in p2[sup][k]]
                s = [100 * (x["std"] or 0) for x in p2[sup][k]]
                ax.plot(p2["steps"], m, "o-", color=colours[sup], label=sup)
                ax.fill_between(p2["steps"], [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                                color=colours[sup], alpha=0.2)
            ax.set_title(names[k])
            ax.set_xlabel(f"training step (poly schedule of {p2['schedule_steps']} steps)")
            ax.set_ylabel("mIoU (%)")
            ax.legend(fontsize=8)
        paths.append(_save(fig, fig_dir / f"{prefix}_training_length.png"))

    if "part3" in res:
        # 3. unknown categories
        p3 = res["part3"]
        sets = [k for k in ("msrc_v2_val", "msrc_v2_train") if k in p3["sets"]]
        fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 3.6), squeeze=False)
        for ax, key in zip(axes[0], sets):
            rows = p3["sets"][key]["per_class"]
            cls = list(rows)
            arms = [("projected", "from descriptions", "#2ca02c"), ("control", "random sentences", "#7f7f7f"),
                    ("upper_bound", "trained with them" + (" (seen)" if key.endswith("train") else ""), "#1f77b4"),
                    ("chance", "chance", "#d62728")]
            for j, (field, label, colour) in enumerate(arms):
                vals = []
                for c in cls:
                    v = rows[c][field]
                    v = v["mean"] if isinstance(v, dict) else v
                    vals.append(100 * v if v is not None else 0)
                ax.bar([i + (j - 1.5) * 0.2 for i in range(len(cls))], vals, 0.19, label=label, color=colour)
            ax.set_xticks(range(len(cls)), [c + ("" if rows[c]["pixels"] else "\n(absent)") for c in cls])
            ax.set_ylabel("IoU (%)")
            ax.set_ylim(bottom=0)
            ax.set_title(f"Held-out classes, {names.get(key, 'MSRC-v2 train images')}")
            ax.legend(fontsize=7)
        paths.append(_save(fig, fig_dir / f"{prefix}_unknown_categories.png"))

    if "part4" in res:
        # 4. label space
        rows = res["part4"]["rows"]
        kr = [r for r in rows if r["template"] == "plain" and r["encoder"] == DEFAULT_ENCODER]
        others = [r for r in rows if r not in kr]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for k, marker in zip(keys, ("o", "s")):
            line, = ax.plot([r["k"] for r in kr], [100 * (r[k]["mean"] or 0) for r in kr], marker + "-",
                            label=f"{names[k]} (plain template)")
            for r, star in zip(others, ("*", "P", "X", "D", "^")):
                ax.scatter([r["k"]], [100 * (r[k]["mean"] or 0)], marker=star, s=90, color=line.get_color(),
                           label=f"{names[k]} ({r['template']}, {r['encoder'].split('/')[-1]})")
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["k"] for r in kr], [str(r["k"]) for r in kr])
        ax.set_xlabel("K (number of properties)")
        ax.set_ylabel("mIoU (%)")
        ax.set_title("Label-space choices (property model)")
        ax.legend(fontsize=7)
        paths.append(_save(fig, fig_dir / f"{prefix}_label_space.png"))
    return paths


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


# ---------------------------------------------------------------------------- tables
def _pct(x: dict | float | None) -> str:
    if isinstance(x, dict):
        if x.get("mean") is None:
            return "n/a"
        return f"{100 * x['mean']:.1f} +- {100 * x['std']:.1f}" if x["n"] > 1 else f"{100 * x['mean']:.1f}"
    return "n/a" if x is None else f"{100 * x:.1f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds(x: dict) -> str:
    return ", ".join(f"{100 * v:.1f}" for v in x["values"])


def _md_part1(p1: dict) -> list[str]:
    return [f"**1. Property vs category supervision** (mIoU %, mean +- std over seeds {p1['seeds']}; "
            "per-seed values in brackets)\n",
            _md_table(["supervision", "MSRC-v2 val", "CamVid val"],
                      [[sup] + [f"{_pct(p1[sup][k])} [{_seeds(p1[sup][k])}]" for k in ("msrc_v2_val", "camvid_val")]
                       for sup in ("property", "category")]
                      + [["property - category"] + [f"{100 * p1['delta_property_minus_category'][k]:+.1f}"
                                                    for k in ("msrc_v2_val", "camvid_val")]])]


def _md_part2(p2: dict) -> list[str]:
    rows = [[str(step)] + [_pct(p2[sup][k][i]) for k in ("msrc_v2_val", "camvid_val") for sup in ("property", "category")]
            for i, step in enumerate(p2["steps"])]
    return [f"\n**2. Training length** (mIoU %, mean +- std over seeds, at steps of one poly schedule of "
            f"{p2['schedule_steps']} steps)\n",
            _md_table(["step", "MSRC property", "MSRC category", "CamVid property", "CamVid category"], rows)]


def _md_part3(p3: dict, names: dict) -> list[str]:
    out = [f"\n**3. Unknown categories** (IoU %, seeds {p3['seeds']}). Removed from training (label space and "
           f"pixels): {', '.join(p3['union_classes_removed'])}; training label space "
           f"{p3['training_label_space_classes']} classes; {p3['training_sentences_mentioning_heldout_words']} of its "
           "sentences mention a held-out animal word. *Projected*: the held-out model with the classes added back "
           "from their descriptions; *control*: the same model with each class described by random sentences of "
           "training classes; *upper bound*: the same recipe trained with them; *chance*: uniform random guess "
           "over the 23 MSRC classes.\n"]
    for key, block in p3["sets"].items():
        note = " (the upper-bound model was trained on these images; the held-out model saw the images but none " \
               "of these classes' pixels)" if block["upper_bound_seen_in_training"] else ""
        out.append(f"\n{names.get(key, key)}{note}:\n")
        rows = [[c, f"{row['pixels']:,}", _pct(row["projected"]), _pct(row["control"]), _pct(row["upper_bound"]),
                 _pct(row["chance"])] for c, row in block["per_class"].items()]
        m = block["mean"]
        rows.append([f"mean of {len(block['classes_with_pixels'])} present", "", _pct(m["projected"]),
                     _pct(m["control"]), _pct(m["upper_bound"]), _pct(m["chance"])])
        out.append(_md_table(["class", "GT pixels", "projected", "control", "upper bound", "chance"], rows))
        out.append(f"\nmIoU of the other (known) MSRC classes for the held-out model: "
                   f"{_pct(block['known_classes_miou_projected'])}")
    return out


def _md_part4(p4: dict) -> list[str]:
    return [f"\n**4. Label-space choices** (property model, mIoU %, seeds {p4['seeds']}; *shared*: training "
            "classes whose property signature equals another training class's)\n",
            _md_table(["K", "template", "encoder", "sentences", "MSRC-v2 val", "CamVid val", "shared"],
                      [[r["k"], r["template"], r["encoder"], r["sentences"], _pct(r["msrc_v2_val"]),
                        _pct(r["camvid_val"]), r["trained_classes_with_identical_signature"] or 0]
                       for r in p4["rows"]])]


def markdown(res: dict) -> str:
    """The result tables as Markdown (printed, and saved next to the JSON for the docs)."""
    names = {"msrc_v2_val": "MSRC-v2 val", "camvid_val": "CamVid val", "msrc_v2_train": "MSRC-v2 train images"}
    out = []
    if "part1" in res:
        out += _md_part1(res["part1"])
    if "part2" in res:
        out += _md_part2(res["part2"])
    if "part3" in res:
        out += _md_part3(res["part3"], names)
    if "part4" in res:
        out += _md_part4(res["part4"])
    meta = res["meta"]
    out.append(f"\n**Time** ({meta['jobs']} runs at a time, one thread each; sum of the runs' wall times per part; "
               f"1/5/15-min load average at the start {', '.join(f'{x:.1f}' for x in meta['load_average_start'])}, "
               f"at the end {', '.join(f'{x:.1f}' for x in meta['load_average_end'])})\n")
    out.append(_md_table(["part", "run time (s)"], [[k, f"{v:.0f}"] for k, v in meta["part_run_seconds"].items()]
                         + [["data preparation", f"{meta['data_prep_s']:.0f}"],
                            ["total elapsed", f"{meta['elapsed_s']:.0f}"]]))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings, under 30 min on a 2-core CPU")
    mode.add_argument("--smoke", action="store_true", help="a few steps on the val split (tests)")
    ap.add_argument("--data-root", default=os.environ.get("PROLAB_DATA") or str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--out-dir", default=None, help="training runs folder (default runs/bench/paper_claims_<mode>)")
    ap.add_argument("--results", default=None, help="results JSON (default docs/results/paper_claims_<mode>.json)")
    ap.add_argument("--figures", default=None, help="chart folder (default docs/figures)")
    ap.add_argument("--jobs", type=int, default=None, help="training runs in parallel (each with 1 thread)")
    ap.add_argument("--encoders", nargs="*", default=[DEFAULT_ENCODER],
                    help="sentence encoders for part 4 (hub ids need the network), e.g. BAAI/bge-small-en-v1.5")
    ap.add_argument("--templates", nargs="*", default=["plain", "prolab"])
    ap.add_argument("--steps", type=int, default=None, help="override the schedule length (stops scale with it)")
    ap.add_argument("--parts", default="1234", help="which parts to run, e.g. 3 (part 3 also trains its upper bound)")
    args = ap.parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = dict(PROFILES[name])
    if args.steps:
        scale = args.steps / profile["steps"]
        profile["stops"] = sorted({max(1, round(s * scale)) for s in profile["stops"]})
        profile["steps"] = args.steps
    if args.jobs:
        profile["jobs"] = args.jobs
    if not (Path(args.data_root) / "msrc_v2").is_dir() or not (Path(args.data_root) / "camvid").is_dir():
        raise SystemExit(f"MSRC-v2 / CamVid not found under {args.data_root} (pass --data-root or set PROLAB_DATA)")
    args.out_dir = args.out_dir or str(ROOT / "runs" / "bench" / f"paper_claims_{name}")
    default_results = (Path(args.out_dir) if name == "smoke" else ROOT / "docs" / "results") / f"paper_claims_{name}.json"
    results_path = Path(args.results or default_results)
    fig_dir = Path(args.figures or (Path(args.out_dir) / "figures" if name == "smoke" else ROOT / "docs" / "figures"))

    if profile["jobs"] > 1:
        # Each worker uses one thread; BLAS/OpenMP pools in the spawned children must agree.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(profile["threads"])
    started = datetime.now(timezone.utc)
    load_start = list(os.getloadavg())  # other work on the machine inflates every wall time below
    t0 = time.perf_counter()
    jobs = make_jobs(profile, args)
    print(f"paper_claims --{name}: {len(jobs)} training runs, {profile['jobs']} at a time, "
          f"{profile['steps']} steps, crop {profile['crop']}, batch {profile['batch']}", flush=True)
    t_prep = time.perf_counter()
    prepare_data(jobs)
    prep_s = time.perf_counter() - t_prep
    print(f"  data prepared in {prep_s:.0f} s", flush=True)
    results = run_all(jobs, profile["jobs"])
    res: dict[str, Any] = {}
    if "1" in args.parts:
        res["part1"] = part1(results, profile)
    if "2" in args.parts:
        res["part2"] = part2(results, profile)
    if "3" in args.parts:
        res["part3"] = part3(results, profile)
    if "4" in args.parts:
        res["part4"] = part4(results, profile, args)
    part_s: dict[str, float] = {}
    for r in results.values():
        part_s[r["part"]] = part_s.get(r["part"], 0.0) + r["wall_s"]
    res["meta"] = {
        "mode": name, "started_utc": started.isoformat(timespec="seconds"), "machine": machine(),
        "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
        "elapsed_s": round(time.perf_counter() - t0, 1), "data_prep_s": round(prep_s, 1),
        "part_run_seconds": {("1+2" if k == "1" else k): round(v, 1) for k, v in sorted(part_s.items())},
        "jobs": profile["jobs"], "profile": profile, "parts": args.parts,
        "recipe": {k: v for k, v in base_config(profile, "<data_root>", "<cache>").items()
                   if k not in ("data_root", "data_cache_dir", "progress", "log_every", "checkpoint_every")},
        "eval": {"sets": [f"{n}_{s}" for n, s in EVAL_SETS], "mode": "whole", "short_side": profile["short_side"]},
    }
    res["runs"] = {k: {kk: vv for kk, vv in r.items() if kk != "heldout"} for k, r in results.items()}
    res["figures"] = [os.path.relpath(p, results_path.parent) for p in charts(res, fig_dir, results_path.stem)]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    results_path.with_suffix(".md").write_text(md)
    print("\n" + md)
    print(f"\nresults: {results_path}\nfigures: {', '.join(res['figures'])}")
    return res


if __name__ == "__main__":
    main()
