"""Reproduce the paper's claims at small scale: property vs category supervision, training length,
unknown categories from descriptions, and label-space choices (K, template, encoder).

    python -m bench.paper_claims --quick        # CPU, about 35 minutes on an idle 2-core machine
    python -m bench.paper_claims                # the full run (hours)
    python -m bench.paper_claims --smoke        # under a minute; checks the pipeline (used by the tests)

Every run uses the project's own training (:func:`prolab.train.train`) and evaluation
(:func:`prolab.evaluate.evaluate`, and its :func:`~prolab.evaluate.make_scorer` for part 3); the recipe is
the same for every arm: the ImageNet-pretrained EfficientNet-Lite0 fine-tuned as in
``configs/default_property.yaml`` (BatchNorm statistics, stem and first two stages frozen, inputs
scaled to [-1, 1], backbone learning rate x0.2, lr 1e-3, 64-channel decoder with auxiliary head) on the
MSRC-v2 and CamVid train ground truth (no teacher labels) in the union label space, evaluated on MSRC-v2
val and CamVid val. ``--backbone compact-cnn`` trains every arm from scratch instead (the earlier recipe).
Results go to a JSON file, charts (PNG) to ``--figures``.

1. Property vs category supervision: same backbone, data and recipe; several seeds; mean +- std. A
   comparison row trains both supervisions with the compact CNN from scratch (``scratch_seeds``).
2. Training length: the same runs are stopped (``stop_after``), evaluated and resumed at several
   steps of one poly schedule.
3. Unknown categories: the property model is retrained with MSRC cow, sheep, horse, cat, dog and bird
   (and the union's generic "animal", whose sentences name them) removed from the label space and
   their pixels ignored. At test time they come back only through their descriptions, projected onto
   the trained properties (:meth:`LabelSpace.extended`), scored twice: with the open-set credit of
   :mod:`prolab.novel_prior` (the library's default for description-only classes) and without it
   (plain ProLab scores). Control: the same model, scored the same two ways, with each held-out class
   described by random sentences of the training classes. Upper bound: the model of part 1 (same
   recipe, trained with them). Chance: a uniform random prediction over the 23 MSRC classes.
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

#: The backbones an arm can use: the model config and the optimiser settings that go with it.
#: ``efficientnet-lite0`` is the recipe of configs/default_property.yaml (the shipped default model);
#: ``compact-cnn`` the from-scratch recipe this script used before (comparison row of part 1).
PRETRAINED, SCRATCH = "efficientnet-lite0", "compact-cnn"
BACKBONES: dict[str, dict[str, Any]] = {
    PRETRAINED: dict(lr=1e-3, backbone_lr_mult=0.2,
                     model={"backbone": PRETRAINED,
                            "backbone_options": {"pretrained": True, "freeze_bn": True, "freeze_stages": 2},
                            "pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.5, 0.5, 0.5],
                            "decoder_channels": 64, "aux_head": True}),
    SCRATCH: dict(lr=2e-3, backbone_lr_mult=1.0,
                  model={"backbone": SCRATCH, "decoder_channels": 64, "aux_head": True}),
}
BACKBONE_LABELS = {PRETRAINED: "EfficientNet-Lite0, ImageNet-pretrained", SCRATCH: "compact CNN, from scratch"}

#: Settings per mode. ``steps`` is the poly schedule's length; ``stops`` the steps evaluated on the way;
#: ``scratch_seeds`` the seeds of part 1's from-scratch comparison arms (property and category).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(split="val", short_side=64, crop=64, batch=2, steps=2, stops=[1, 2], warmup=1,
                  seeds=[0, 1], scratch_seeds=[0], heldout_seeds=[0], part4_seeds=[0], k=32, ks=[16, 32],
                  eval_limit=3, eval_train=False, control_draws=1, threads=1, jobs=1, small_union=True),
    # Sized for ~35 min on an idle 2-core machine, 2 runs x 1 thread at a time (measured 2026-11-30, 1 thread,
    # batch 8, 192 px crops, CPU s/step: pretrained Lite0 property 0.61, category 0.49; compact CNN 0.53, 0.35;
    # evaluation ~6 s per stop, part 3's scoring ~90 s): 14 runs, ~3,500 CPU s in all.
    "quick": dict(split="train", short_side=192, crop=192, batch=8, steps=400, stops=[100, 200, 300, 400],
                  warmup=30, seeds=[0, 1, 2], scratch_seeds=[0], heldout_seeds=[0], part4_seeds=[0], k=256,
                  ks=[16, 32, 64, 128, 256], eval_limit=None, eval_train=True, control_draws=3,
                  threads=1, jobs=2),
    "full": dict(split="train", short_side=192, crop=192, batch=8, steps=2000,
                 stops=[250, 500, 1000, 1500, 2000], warmup=50, seeds=[0, 1, 2], scratch_seeds=[0, 1, 2],
                 heldout_seeds=[0, 1, 2], part4_seeds=[0], k=256, ks=[16, 32, 64, 128, 256],
                 eval_limit=None, eval_train=True, control_draws=5, threads=1, jobs=2),
}
LEAK_WORDS = re.compile(r"\b(cows?|cattle|sheep|horses?|pon(y|ies)|cats?|kittens?|dogs?|pupp(y|ies)|birds?)\b", re.I)


# ---------------------------------------------------------------------------- one training run
def base_config(profile: dict, data_root: str, cache_dir: str, backbone: str = PRETRAINED) -> dict[str, Any]:
    """The recipe shared by every arm (everything but supervision, seed, label space choices)."""
    recipe = BACKBONES[backbone]
    return dict(data_root=data_root, sources=[{"name": "msrc_v2"}, {"name": "camvid"}],
                split=profile["split"], label_space="union", k=profile["k"], use_teacher=False,
                short_side=profile["short_side"], crop_size=profile["crop"], batch_size=profile["batch"],
                steps=profile["steps"], warmup_steps=profile["warmup"], lr=recipe["lr"],
                backbone_lr_mult=recipe["backbone_lr_mult"], weight_decay=0.01,
                threads=profile["threads"], data_cache_dir=cache_dir, progress=False, log_every=10,
                checkpoint_every=max(profile["stops"]) + 1, model=json.loads(json.dumps(recipe["model"])))


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

    return _metrics(evaluate(model, source, size=size, mapping=mapping, limit=limit))


def _metrics(r: dict) -> dict:
    return {"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"], "per_class_iou": r["per_class_iou"],
            "per_class_pixels": r["per_class_pixels"], "labelled_pixels": r["labelled_pixels"],
            "images": r["images"]}


def score_arms(model, source, spaces: dict, mapping: dict, prior, size: int,
               limit: int | None) -> dict:
    """Score ``source`` under several label spaces ({name: LabelSpace}), each with the open-set credit
    (``prior``, :class:`prolab.novel_prior.PriorSettings`) and without it, from one forward pass (and
    one ImageNet sentence map) per image: {name: {"credit": metrics, "plain": metrics}}.

    Scorers come from :func:`prolab.evaluate.make_scorer` with the classes picked from each space; the
    model's own space is what counts as trained (a class added from descriptions is novel as far as its
    sentences are unlike the trained classes'); "plain" is the same without the credit.
    """
    import numpy as np

    from prolab.data.dataset import read_index_png
    from prolab.evaluate import IGNORE, ConfusionMatrix, make_scorer
    from prolab.images import load_image
    from prolab.inference import embed_image, segment
    key = source.label_key or source.name
    scorers = {}
    for name, space in spaces.items():
        for mode, settings in (("credit", prior), ("plain", None)):
            scorers[name, mode] = make_scorer(model, source.classes, key, mapping, prior=settings, space=space)
    mapper = next((sc.credit.sentence_map for sc in scorers.values() if sc.credit is not None), None)
    cms = {k: ConfusionMatrix(len(source.classes)) for k in scorers}
    offset = int(source.meta.get("offset", 0))
    samples = source.samples[:limit] if limit else source.samples
    for sample in samples:
        if sample.label is None:
            continue
        image = load_image(sample.image)
        output = embed_image(model, image, size=size)
        prior_map = mapper(image) if mapper is not None else None
        gt = read_index_png(sample.label).astype(np.int64)
        if offset:
            gt = np.where(gt == 0, IGNORE, gt - offset)
        for k, scorer in scorers.items():
            cms[k].update(segment(scorer(output, prior_map), gt.shape), gt)
    out: dict[str, dict] = {}
    for (name, mode), cm in cms.items():
        out.setdefault(name, {})[mode] = _metrics({**cm.metrics(list(source.classes)), "images": len(samples)})
    return out


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
    train_cpu = 0.0  # CPU seconds in training (the rest of cpu_s is evaluation)
    for i, stop in enumerate(job["stops"]):
        cfg = load_config(None, **job["config"], stop_after=stop, resume=i > 0)
        t_train = time.process_time()
        # Resuming: start from the checkpointed model (weights are reloaded by train anyway), which
        # saves re-running K-Means for a label space that is already known.
        train(cfg, model=PropertySegmenter.from_pretrained(out / CHECKPOINT_DIR) if i > 0 else None)
        train_cpu += time.process_time() - t_train
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
        t_held = time.process_time()
        result["heldout"] = heldout_evaluation(model, out, job)
        result["heldout_eval_cpu_s"] = round(time.process_time() - t_held, 1)
    summary = json.loads((out / "train_summary.json").read_text())
    result.update(wall_s=round(time.perf_counter() - t_wall, 1), cpu_s=round(time.process_time() - t_cpu, 1),
                  train_cpu_s=round(train_cpu, 1), train_images=summary["images"], threads=summary["threads"])
    return result


def _trained_duplicates(space, mapping: dict) -> int:
    """How many classes the training data uses share their property signature with another such class."""
    used = {t for key in ("msrc_23", "camvid_11") for t in mapping.get(key, {}).values() if t}
    groups = [[c for c in g if c in used] for g in space.duplicate_groups()]
    return sum(len(g) for g in groups if len(g) > 1)


def heldout_evaluation(model, out: Path, job: dict) -> dict:
    """Held-out classes added back from their descriptions (projection) vs random-sentence controls,
    each scored with the open-set credit of :mod:`prolab.novel_prior` (the library's default for
    description-only classes) and without it (plain ProLab scores)."""
    import dataclasses

    import numpy as np

    from prolab.data.union import load_union
    from prolab.descriptions import DescriptionSet
    from prolab.encoder import TextEncoder
    from prolab.novel_prior import PriorSettings

    union = load_union(job.get("union_dir"))
    space = model.label_space
    removed = _removed_union_classes(union)
    leaked = sorted(c for c in removed if c in space.class_names)
    if leaked:
        raise RuntimeError(f"held-out classes present in the training label space: {leaked}")
    targets = [union.mapping["msrc_23"][c] for c in HELD_OUT]
    real = DescriptionSet({t: union.descriptions[t] for t in targets})
    encoder = TextEncoder(space.encoder_id, template=space.template)
    prior = PriorSettings()
    pool = list(space.sentences)
    spaces = {"projected": space.extended(real, encoder)}
    for draw in range(job["control_draws"]):
        rng = np.random.default_rng(1000 + draw)
        fake = DescriptionSet({t: [pool[i] for i in rng.choice(len(pool), size=len(real[t]), replace=False)]
                               for t in targets})
        spaces[f"control_{draw}"] = space.extended(fake, encoder)
    sources = _eval_sources(job["config"]["data_root"], job["eval_limit"], job.get("heldout_eval_train", False))
    sources.pop("camvid_val")
    scored = {}
    for key, src in sources.items():
        # Extra control draws only on val: the train images take most of the evaluation time.
        arms = {n: sp for n, sp in spaces.items() if key == "msrc_v2_val" or n in ("projected", "control_0")}
        scored[key] = score_arms(model, src, arms, union.mapping, prior,
                                 job["size"], job["eval_limit"])
    result: dict[str, Any] = {}
    for mode in ("credit", "plain"):
        result[f"projected_{mode}"] = {key: arms["projected"][mode] for key, arms in scored.items()}
        result[f"control_{mode}"] = [{key: arms[f"control_{d}"][mode] for key, arms in scored.items()
                                      if f"control_{d}" in arms} for d in range(job["control_draws"])]
    leaks = [s for s in space.sentences if LEAK_WORDS.search(s)]
    return {"classes": list(HELD_OUT), "union_classes_removed": sorted(removed),
            "training_label_space_classes": space.num_classes,
            "training_sentences_mentioning_heldout_words": len(leaks), "examples": leaks[:5],
            "open_set_credit": dataclasses.asdict(prior), **result}


# ---------------------------------------------------------------------------- the plan
def make_jobs(profile: dict, args) -> list[dict]:
    """Every training run of the benchmark (part 1 runs double as part 2 curves and part 3/4 references)."""
    runs_dir = Path(args.out_dir)
    backbone = getattr(args, "backbone", PRETRAINED)
    base = base_config(profile, args.data_root, str(runs_dir / "datacache"), backbone)
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
        settings = {**settings, "backbone": cfg["model"]["backbone"]}
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
    if with_part1 and backbone != SCRATCH:
        # Comparison row: the same arms with the compact CNN trained from scratch (its own lr).
        scratch = {k: v for k, v in base_config(profile, "", "", SCRATCH).items()
                   if k in ("lr", "backbone_lr_mult", "model")}
        for seed in profile.get("scratch_seeds", []):
            for sup in ("property", "category"):
                add(f"scratch_{sup}_s{seed}", "1s", {"supervision": sup, "seed": seed}, supervision=sup,
                    seed=seed, **scratch)
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


def _finals(runs: list[dict]) -> dict:
    return {f"{n}_{sp}": mean_std([r["final"][f"{n}_{sp}"]["miou"] for r in runs]) for n, sp in EVAL_SETS}


def _curves(runs: list[dict], n_stops: int) -> dict:
    return {f"{n}_{sp}": [mean_std([r["curve"][i][f"{n}_{sp}"] for r in runs]) for i in range(n_stops)]
            for n, sp in EVAL_SETS}


def _scratch_runs(results: dict, sup: str) -> list[dict]:
    return [r for name, r in sorted(results.items()) if name.startswith(f"scratch_{sup}_s")]


def part1(results: dict, profile: dict) -> dict:
    out: dict[str, Any] = {}
    for sup in ("property", "category"):
        out[sup] = _finals([results[f"{sup}_s{s}"] for s in profile["seeds"]])
    out["delta_property_minus_category"] = {
        k: (out["property"][k]["mean"] - out["category"][k]["mean"]) for k in out["property"]}
    out["seeds"] = list(profile["seeds"])
    out["backbone"] = results[f"property_s{profile['seeds'][0]}"]["settings"]["backbone"]
    if _scratch_runs(results, "property") and _scratch_runs(results, "category"):
        sc: dict[str, Any] = {"backbone": SCRATCH,
                              "seeds": [r["settings"]["seed"] for r in _scratch_runs(results, "property")]}
        for sup in ("property", "category"):
            sc[sup] = _finals(_scratch_runs(results, sup))
        sc["delta_property_minus_category"] = {
            k: (sc["property"][k]["mean"] - sc["category"][k]["mean"]) for k in sc["property"]}
        out["scratch"] = sc
    return out


def part2(results: dict, profile: dict) -> dict:
    n = len(profile["stops"])
    out: dict[str, Any] = {"steps": list(profile["stops"]), "schedule_steps": profile["steps"]}
    for sup in ("property", "category"):
        out[sup] = _curves([results[f"{sup}_s{s}"] for s in profile["seeds"]], n)
    if _scratch_runs(results, "property") and _scratch_runs(results, "category"):
        out["scratch"] = {sup: _curves(_scratch_runs(results, sup), n) for sup in ("property", "category")}
    return out


def chance_iou(pixels: dict[str, int]) -> dict[str, float | None]:
    """Expected IoU of a uniform random guess over the C classes: n_c / (N + n_c (C - 1))."""
    c, n = len(pixels), sum(pixels.values())
    return {k: (v / (n + v * (c - 1)) if v else None) for k, v in pixels.items()}


#: Part 3's scored arms: the held-out model with the classes from their descriptions or from random
#: training sentences, each with the open-set credit (the library default) and without it.
P3_ARMS = ("projected_credit", "control_credit", "projected_plain", "control_plain")
P3_FIELDS = P3_ARMS + ("upper_bound", "chance")


def part3(results: dict, profile: dict) -> dict:
    out: dict[str, Any] = {"classes": list(HELD_OUT), "seeds": list(profile["heldout_seeds"]), "sets": {}}
    held = [results[f"heldout_s{s}"]["heldout"] for s in profile["heldout_seeds"]]
    first = held[0]
    out.update({k: first[k] for k in ("union_classes_removed", "training_label_space_classes",
                                      "training_sentences_mentioning_heldout_words", "examples",
                                      "open_set_credit")})
    for key in first["projected_plain"]:
        rows = {}
        pixels = first["projected_plain"][key]["per_class_pixels"]
        for c in HELD_OUT:
            vals: dict[str, list] = {f: [] for f in P3_ARMS}
            for h in held:
                for mode in ("credit", "plain"):
                    vals[f"projected_{mode}"].append(h[f"projected_{mode}"][key]["per_class_iou"][c])
                    vals[f"control_{mode}"] += [d[key]["per_class_iou"][c] for d in h[f"control_{mode}"] if key in d]
            upper = []  # the part 1 property model of the same seed, trained with them
            for s in profile["heldout_seeds"]:
                final = results.get(f"property_s{s}", {}).get("final", {})
                if key in final:
                    upper.append(final[key]["per_class_iou"][c])
            rows[c] = {**{f: mean_std(v) for f, v in vals.items()},
                       "upper_bound": mean_std(upper) if upper else None,
                       "chance": chance_iou(pixels)[c], "pixels": pixels[c]}
        present = [c for c in HELD_OUT if rows[c]["pixels"]]

        def avg(field):
            vals = [rows[c][field]["mean"] if isinstance(rows[c][field], dict) else rows[c][field]
                    for c in present]
            vals = [v for v in vals if v is not None]
            return statistics.fmean(vals) if vals and len(vals) == len(present) else None

        out["sets"][key] = {"per_class": rows, "classes_with_pixels": present,
                            "mean": {f: avg(f) for f in P3_FIELDS},
                            "upper_bound_seen_in_training": key.endswith("_train"),
                            "known_classes_miou": {mode: _known_miou([h[f"projected_{mode}"][key] for h in held])
                                                   for mode in ("credit", "plain")}}
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
    keys = list(names)
    paths = []

    if "part1" in res:
        # 1. supervision (the from-scratch comparison arms hatched, beside the main backbone's)
        p1 = res["part1"]
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        groups = [(p1, sup, f"{sup}, {_short_backbone(p1.get('backbone', SCRATCH))}", colours[sup], None)
                  for sup in ("property", "category")]
        if "scratch" in p1:
            groups += [(p1["scratch"], sup, f"{sup}, {_short_backbone(SCRATCH)}", colours[sup], "//")
                       for sup in ("property", "category")]
        width, top = 0.8 / len(groups), 1.0
        for j, (block, sup, label, colour, hatch) in enumerate(groups):
            means = [100 * (block[sup][k]["mean"] or 0) for k in keys]
            stds = [100 * (block[sup][k]["std"] or 0) for k in keys]
            top = max(top, *(a + b for a, b in zip(means, stds)), *(100 * max(block[sup][k]["values"] or [0])
                                                                     for k in keys))
            xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(keys))]
            ax.bar(xs, means, width * 0.95, yerr=stds, capsize=3, label=label, hatch=hatch,
                   color=colour if hatch is None else "white", edgecolor=colour)
            for x, v in zip(xs, [block[sup][k]["values"] for k in keys]):
                ax.scatter([x] * len(v), [100 * y for y in v], s=10, color="black", zorder=3)
        ax.set_xticks(range(len(keys)), [names[k] for k in keys])
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"Property vs category supervision ({len(p1['seeds'])} seeds"
                     + (f"; from scratch: {len(p1['scratch']['seeds'])}" if "scratch" in p1 else "") + ")")
        ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
        ax.legend(loc="upper center", fontsize=7, ncol=2)
        paths.append(_save(fig, fig_dir / f"{prefix}_supervision.png"))

    if "part2" in res:
        # 2. training length
        p2 = res["part2"]
        main = _short_backbone(res.get("part1", {}).get("backbone", PRETRAINED))
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
        for ax, k in zip(axes, keys):
            for block, style, tag in ((p2, "o-", main), (p2.get("scratch"), "s--", _short_backbone(SCRATCH))):
                if block is None:
                    continue
                for sup in ("property", "category"):
                    m = [100 * (x["mean"] or 0) for x in block[sup][k]]
                    s = [100 * (x["std"] or 0) for x in block[sup][k]]
                    ax.plot(p2["steps"], m, style, color=colours[sup], label=f"{sup}, {tag}")
                    ax.fill_between(p2["steps"], [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                                    color=colours[sup], alpha=0.15)
            ax.set_title(names[k])
            ax.set_xlabel(f"training step (poly schedule of {p2['schedule_steps']} steps)")
            ax.set_ylabel("mIoU (%)")
            ax.legend(fontsize=7)
        paths.append(_save(fig, fig_dir / f"{prefix}_training_length.png"))

    if "part3" in res:
        # 3. unknown categories: with the open-set credit (solid) and without it (hatched)
        p3 = res["part3"]
        sets = [k for k in ("msrc_v2_val", "msrc_v2_train") if k in p3["sets"]]
        fig, axes = plt.subplots(1, len(sets), figsize=(7.5 * len(sets), 3.8), squeeze=False)
        for ax, key in zip(axes[0], sets):
            block = p3["sets"][key]
            rows = block["per_class"]
            cls = list(rows)
            arms = [("projected_credit", "from descriptions, open-set credit", "#2ca02c", None),
                    ("control_credit", "random sentences, open-set credit", "#7f7f7f", None),
                    ("projected_plain", "from descriptions, plain ProLab", "#2ca02c", "//"),
                    ("control_plain", "random sentences, plain ProLab", "#7f7f7f", "//"),
                    ("upper_bound", "trained with them" + (" (seen)" if key.endswith("train") else ""), "#1f77b4",
                     None),
                    ("chance", "chance", "#d62728", None)]
            width, top = 0.8 / len(arms), 0.0
            for j, (field, label, colour, hatch) in enumerate(arms):
                vals = []
                for c in cls:
                    v = rows[c][field]
                    v = v["mean"] if isinstance(v, dict) else v
                    vals.append(100 * v if v is not None else 0)
                m = block["mean"][field]
                vals.append(100 * m if m is not None else 0)
                top = max(top, *vals)
                ax.bar([i + (j - (len(arms) - 1) / 2) * width for i in range(len(cls) + 1)], vals, width * 0.95,
                       label=label, hatch=hatch, color=colour if hatch is None else "white", edgecolor=colour)
            ax.set_xticks(range(len(cls) + 1), [c + ("" if rows[c]["pixels"] else "\n(absent)") for c in cls]
                          + ["mean\n(present)"])
            ax.set_ylabel("IoU (%)")
            ax.set_ylim(0, max(top, 1.0) * 1.35)  # room for the legend above the bars
            ax.set_title(f"Held-out classes, {names.get(key, 'MSRC-v2 train images')}")
            ax.legend(fontsize=6, ncol=3, loc="upper center")
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


def _short_backbone(backbone: str) -> str:
    return {PRETRAINED: "pretrained Lite0", SCRATCH: "scratch CNN"}.get(backbone, backbone)


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
    sets = ("msrc_v2_val", "camvid_val")
    blocks = [(p1, p1.get("backbone", SCRATCH))] + ([(p1["scratch"], SCRATCH)] if "scratch" in p1 else [])
    rows = []
    for block, backbone in blocks:
        rows += [[f"{sup} ({BACKBONE_LABELS.get(backbone, backbone)})"]
                 + [f"{_pct(block[sup][k])} [{_seeds(block[sup][k])}]" for k in sets]
                 for sup in ("property", "category")]
        rows.append([f"property - category ({BACKBONE_LABELS.get(backbone, backbone)})"]
                    + [f"{100 * block['delta_property_minus_category'][k]:+.1f}" for k in sets])
    scratch = (f"; from-scratch comparison row: seeds {p1['scratch']['seeds']}" if "scratch" in p1 else "")
    return [f"**1. Property vs category supervision** (mIoU %, mean +- std over seeds {p1['seeds']}{scratch}; "
            "per-seed values in brackets)\n",
            _md_table(["supervision (backbone)", "MSRC-v2 val", "CamVid val"], rows)]


def _md_part2(p2: dict, backbone: str = PRETRAINED) -> list[str]:
    blocks = [(p2, _short_backbone(backbone))]
    if "scratch" in p2:
        blocks.append((p2["scratch"], _short_backbone(SCRATCH)))
    header, rows = ["step"], [[str(step)] for step in p2["steps"]]
    for block, tag in blocks:
        for k, name in (("msrc_v2_val", "MSRC"), ("camvid_val", "CamVid")):
            for sup in ("property", "category"):
                header.append(f"{name} {sup}" + (f" ({tag})" if len(blocks) > 1 else ""))
                for i, row in enumerate(rows):
                    row.append(_pct(block[sup][k][i]))
    return [f"\n**2. Training length** (mIoU %, mean +- std over seeds, at steps of one poly schedule of "
            f"{p2['schedule_steps']} steps)\n", _md_table(header, rows)]


def _md_part3(p3: dict, names: dict) -> list[str]:
    credit = p3.get("open_set_credit") or {}
    out = [f"\n**3. Unknown categories** (IoU %, seeds {p3['seeds']}). Removed from training (label space and "
           f"pixels): {', '.join(p3['union_classes_removed'])}; training label space "
           f"{p3['training_label_space_classes']} classes; {p3['training_sentences_mentioning_heldout_words']} of its "
           "sentences mention a held-out animal word. *Projected*: the held-out model with the classes added back "
           "from their descriptions; *control*: the same model with each class described by random sentences of "
           "training classes (the same number per class). Each is scored *with the open-set credit* "
           "(prolab.novel_prior, the library default for description-only classes: ImageNet-classifier ConSE "
           f"sentence map x (1 - best trained score); weight {credit.get('weight')}, temperature "
           f"{credit.get('temperature')}, top {credit.get('top')}, {credit.get('short_side')} px) and *plain* "
           "(ProLab scores only). *Upper bound*: the part 1 property model of the same seed, trained with them; "
           "*chance*: uniform random guess over the 23 MSRC classes.\n"]
    for key, block in p3["sets"].items():
        note = " (the upper-bound model was trained on these images; the held-out model saw the images but none " \
               "of these classes' pixels)" if block["upper_bound_seen_in_training"] else ""
        out.append(f"\n{names.get(key, key)}{note}:\n")
        rows = [[c, f"{row['pixels']:,}"] + [_pct(row[f]) for f in P3_FIELDS] for c, row in block["per_class"].items()]
        m = block["mean"]
        rows.append([f"mean of {len(block['classes_with_pixels'])} present", ""] + [_pct(m[f]) for f in P3_FIELDS])
        out.append(_md_table(["class", "GT pixels", "projected + credit", "control + credit", "projected, plain",
                              "control, plain", "upper bound", "chance"], rows))
        known = block["known_classes_miou"]
        out.append(f"\nmIoU of the other (known) MSRC classes for the held-out model with the projected classes: "
                   f"{_pct(known['credit'])} with the credit, {_pct(known['plain'])} plain")
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
        out += _md_part2(res["part2"], res.get("part1", {}).get("backbone", res["meta"].get("backbone", PRETRAINED)))
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
PART_NAMES = {"1": "1+2", "1s": "1+2 (from scratch)"}


def _recipe(profile: dict, backbone: str) -> dict:
    return {k: v for k, v in base_config(profile, "<data_root>", "<cache>", backbone).items()
            if k not in ("data_root", "data_cache_dir", "progress", "log_every", "checkpoint_every")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings, about 35 min on an idle 2-core CPU")
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
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default=PRETRAINED,
                    help="backbone of every arm (default: the ImageNet-pretrained EfficientNet-Lite0 with the recipe "
                         "of configs/default_property.yaml; compact-cnn: from scratch, no comparison row)")
    ap.add_argument("--scratch-seeds", type=int, nargs="*", default=None,
                    help="seeds of part 1's from-scratch comparison arms (default: the profile's; none: skip them)")
    args = ap.parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = dict(PROFILES[name])
    if args.steps:
        scale = args.steps / profile["steps"]
        profile["stops"] = sorted({max(1, round(s * scale)) for s in profile["stops"]})
        profile["steps"] = args.steps
    if args.jobs:
        profile["jobs"] = args.jobs
    if args.scratch_seeds is not None:
        profile["scratch_seeds"] = list(args.scratch_seeds)
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
    print(f"paper_claims --{name}: {len(jobs)} training runs ({args.backbone}), {profile['jobs']} at a time, "
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
        "part_run_seconds": {PART_NAMES.get(k, k): round(v, 1) for k, v in sorted(part_s.items())},
        "jobs": profile["jobs"], "profile": profile, "parts": args.parts, "backbone": args.backbone,
        "recipe": _recipe(profile, args.backbone),
        **({"scratch_recipe": _recipe(profile, SCRATCH)} if any(r["part"] == "1s" for r in results.values()) else {}),
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
