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
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.claims.aggregate import part1, part2, part3, part4
from bench.claims.charts import charts
from bench.claims.plan import (BACKBONES, DEFAULT_ENCODER, EVAL_SETS, PRETRAINED, PROFILES, SCRATCH, base_config,
                               make_jobs)
from bench.claims.tables import markdown
from bench.claims.training import prepare_data, run_all
from bench.common import ROOT, default_data_root, machine, write_json

PART_NAMES = {"1": "1+2", "1s": "1+2 (from scratch)"}


def _recipe(profile: dict, backbone: str) -> dict:
    return {k: v for k, v in base_config(profile, "<data_root>", "<cache>", backbone).items()
            if k not in ("data_root", "data_cache_dir", "progress", "log_every", "checkpoint_every")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings, about 35 min on an idle 2-core CPU")
    mode.add_argument("--smoke", action="store_true", help="a few steps on the val split (tests)")
    ap.add_argument("--data-root", default=default_data_root())
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
    write_json(results_path, res)
    md = markdown(res)
    results_path.with_suffix(".md").write_text(md)
    print("\n" + md)
    print(f"\nresults: {results_path}\nfigures: {', '.join(res['figures'])}")
    return res


if __name__ == "__main__":
    main()
