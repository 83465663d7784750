"""What bench.paper_claims runs: the held-out classes, the evaluation sets, the backbones and their
recipes, the profiles (smoke, quick, full), and the list of training runs (:func:`make_jobs`)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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
    removed = removed_union_classes(union)
    directory.mkdir(parents=True, exist_ok=True)
    kept = {c: union.descriptions[c] for c in union.descriptions if c not in removed}
    mapping = {key: {c: (None if t in removed else t) for c, t in table.items()}
               for key, table in union.mapping.items()}
    (directory / "union.json").write_text(json.dumps(kept, indent=1, ensure_ascii=False))
    (directory / "union_mapping.json").write_text(json.dumps(mapping, indent=1, ensure_ascii=False))
    return directory


def removed_union_classes(union) -> set[str]:
    """The union classes removed with the held-out ones (their MSRC classes and :data:`ALSO_REMOVED`)."""
    msrc = union.mapping["msrc_23"]
    return {msrc[c] for c in HELD_OUT} | {c for c in ALSO_REMOVED if c in union.descriptions}


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


def short_backbone(backbone: str) -> str:
    """A backbone's name in a chart's legend."""
    return {PRETRAINED: "pretrained Lite0", SCRATCH: "scratch CNN"}.get(backbone, backbone)
