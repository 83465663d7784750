"""The description search (:mod:`prolab.description_search`) on val: search on one half, report the other.

    nice -n 15 python -m bench.description_search [--seconds 300] [--budget N] [--threads 2]
        [--json docs/results/description_search.json] [--chart docs/figures/description_search.png]

Start sets, offline proposals only:

- CamVid val and MSRC-v2 val with the default model: every class as one sentence ("A photo of a {name}.") and
  the plain-words sets of ``bench/tables/plain_<set>.json``; beside them the shipped descriptions and the
  trained classes on the same halves, and the plain-words sets against the trained classes on the whole of val
  (before and after the search);
- MSRC-v2 val with ``assets/models/unseen_animals`` (trained without animals): the known classes as the
  model's trained classes (their own sentences), the six animals from ``assets/descriptions/msrc_23.json``;
  only the animals are searched; the animals' mean IoU on the guard half before and after (over the animals
  with ground-truth pixels in that half, as ``bench/unseen_categories.py`` counts; ``animals_all_six_*``: over
  all six, an animal predicted where there is none counting 0).

Each search gets ``--seconds`` of wall time (and ``--budget`` proposals if given) on ``--threads`` torch
threads; the machine's load average is recorded. The final descriptions are re-scored on the guard half with
:meth:`prolab.eval_cache.EvalCache.rescore` as a check of the search's own numbers.
Writes the JSON, a Markdown table beside it and a chart of mIoU against proposals tried.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.cached_scoring import cached_outputs
from bench.common import ROOT, write_json
from prolab.assets import DEFAULT_MODEL_DIR, MODELS_DIR

SETS = {"camvid": "camvid_11", "msrc_v2": "msrc_23"}
ANIMALS = ("cow", "horse", "sheep", "bird", "cat", "dog")


def pct(x):
    return None if x is None else round(100 * x, 2)


def one_sentence(classes):
    from prolab.descriptions import DescriptionSet

    return DescriptionSet({c: [f"A photo of a {c}."] for c in classes})


def run_search(model, cache, start, encoder, args, classes=None) -> dict:
    """One search from ``start`` on ``cache``'s halves; the result's summary, per-class IoU and trajectory."""
    from prolab.description_search import DescriptionSearch, SearchSettings, split_halves

    search, guard = split_halves(cache, args.split_seed)
    settings = SearchSettings(budget=args.budget, seconds=args.seconds, seed=args.seed, margin=args.margin,
                              classes=tuple(classes) if classes else None)
    load = os.getloadavg()[0]
    result = DescriptionSearch(model, search, guard, encoder, settings).run(start)
    check = guard.rescore(descriptions=result.descriptions.subset(cache.classes), encoder=encoder)
    out = result.to_dict()
    out["load_average_at_start"] = round(load, 2)
    out["load_average_at_end"] = round(os.getloadavg()[0], 2)
    out["val_before"] = merged_miou(result.search_before, result.guard_before)
    out["val_after"] = merged_miou(result.search_after, result.guard_after)
    out["guard_after_full_scorer"] = check["miou"]
    out["present"] = {half: [c for c, n in m["per_class_pixels"].items() if n]  # classes with ground truth
                      for half, m in (("search", result.search_before), ("guard", result.guard_before))}
    return out


def merged_miou(a: dict, b: dict) -> float:
    """mIoU of the whole set from its two halves' confusion matrices (no pixel is predicted unknown here)."""
    import numpy as np

    m = np.asarray(a["confusion"], np.int64) + np.asarray(b["confusion"], np.int64)
    tp = np.diag(m).astype(float)
    union = m.sum(0) + m.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def halves_reference(cache, encoder, descriptions, split_seed: int) -> dict:
    from prolab.description_search import split_halves

    search, guard = split_halves(cache, split_seed)
    return {"search": search.rescore(descriptions=descriptions, encoder=encoder),
            "guard": guard.rescore(descriptions=descriptions, encoder=encoder)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--animals-model", type=Path, default=MODELS_DIR / "unseen_animals")
    ap.add_argument("--data-root")
    ap.add_argument("--datasets", nargs="*", default=list(SETS), choices=list(SETS))
    ap.add_argument("--starts", nargs="+", default=["one sentence", "plain words", "unseen animals"])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--budget", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.001)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="first N val images (a quick look)")
    ap.add_argument("--snapshots", type=Path, help="folder of the caches' snapshots: read when there, else written")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "description_search.json")
    ap.add_argument("--chart", type=Path, default=ROOT / "docs" / "figures" / "description_search.png")
    ap.add_argument("--from-json", action="store_true", help="only redraw the chart and table from --json")
    args = ap.parse_args(argv)
    if args.from_json:
        result = json.loads(args.json.read_text(encoding="utf-8"))
        finish(result, args)
        return result

    import torch

    from prolab import labelsets
    from prolab.data.readers import find_data_root, read_shared
    from prolab.descriptions import DescriptionSet, load_descriptions
    from prolab.encoder import TextEncoder
    from prolab.eval_cache import EvalCache
    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter

    torch.set_num_threads(args.threads)
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("error: no datasets folder: pass --data-root or set PROLAB_DATA.")
    result = {"threads": args.threads, "seconds_budget": args.seconds, "budget": args.budget, "seed": args.seed,
              "split_seed": args.split_seed, "margin": args.margin, "cpus": os.cpu_count(), "runs": {}}
    model = PropertySegmenter.from_pretrained(args.model)
    encoder = TextEncoder(model.label_space.encoder_id, template=model.label_space.template)
    for name in args.datasets:
        t0 = time.perf_counter()
        cache = cached_outputs(model, Path(args.model), name, args)
        print(f"{name}: cache of {len(cache)} images in {time.perf_counter() - t0:.0f} s", flush=True)
        shipped = labelsets.load(SETS[name]).descriptions.subset(cache.classes)
        plain = load_descriptions(ROOT / "bench" / "tables" / f"plain_{SETS[name]}.json").subset(cache.classes)
        refs = {"trained": {h: cache_half.rescore() for h, cache_half in
                            zip(("search", "guard"), _halves(cache, args.split_seed))},
                "shipped": halves_reference(cache, encoder, shipped, args.split_seed)}
        val = {k: merged_miou(v["search"], v["guard"]) for k, v in refs.items()}
        for start_name, start in (("one sentence", one_sentence(cache.classes)), ("plain words", plain)):
            if start_name not in args.starts:
                continue
            print(f"{name}, {start_name}: searching ...", flush=True)
            run = run_search(model, cache, start, encoder, args)
            run["reference"] = {k: {h: m["miou"] for h, m in v.items()} for k, v in refs.items()}
            run["reference_per_class_guard"] = {k: v["guard"]["per_class_iou"] for k, v in refs.items()}
            run["val"] = {**val, "start": run["val_before"], "after": run["val_after"]}
            result["runs"][f"{name}, {start_name}"] = run
            print_run(f"{name}, {start_name}", run)
    if "unseen animals" in args.starts:
        animals_model = PropertySegmenter.from_pretrained(args.animals_model)
        mapping = load_mapping(args.animals_model)
        cache = cached_outputs(animals_model, Path(args.animals_model), "msrc_v2", args)
        trained = animals_model.label_space.descriptions()
        table = mapping.get("msrc_23", {})
        shipped = labelsets.load("msrc_23").descriptions
        start = DescriptionSet({c: (shipped[c] if c in ANIMALS else trained[table.get(c, c)]) for c in cache.classes})
        print("unseen animals: searching ...", flush=True)
        run = run_search(animals_model, cache, start, encoder, args, classes=[c for c in ANIMALS if c in cache.classes])
        rows = {r["class"]: r for r in run["per_class"]}
        for half in ("search", "guard"):
            for when in ("before", "after"):
                # as bench/unseen_categories.py and bench/bridge_novelty.py: the animals with ground truth there
                vals = [rows[c][f"{half}_{when}"] or 0.0 for c in ANIMALS if c in run["present"][half]]
                run[f"animals_{half}_{when}"] = sum(vals) / len(vals) if vals else None
                every = [rows[c][f"{half}_{when}"] or 0.0 for c in ANIMALS if c in rows]
                run[f"animals_all_six_{half}_{when}"] = sum(every) / len(every) if every else None
        result["runs"]["msrc_v2, unseen animals"] = run
        print_run("msrc_v2, unseen animals", run)
    write_json(args.json, result)
    finish(result, args)
    return result


def _halves(cache, split_seed):
    from prolab.description_search import split_halves

    return split_halves(cache, split_seed)


def print_run(name: str, run: dict) -> None:
    g, s = run["guard_miou"], run["search_miou"]
    line = (f"{name}: guard half {pct(g['before'])} -> {pct(g['after'])} (full scorer {pct(run['guard_after_full_scorer'])}), "
            f"search half {pct(s['before'])} -> {pct(s['after'])}; {run['proposals']} proposals in {run['seconds']:.0f} s "
            f"({run['seconds_per_proposal']:.2f} s each), load {run['load_average_at_start']}")
    if "reference" in run:
        line += f"; shipped guard {pct(run['reference']['shipped']['guard'])}, trained guard {pct(run['reference']['trained']['guard'])}"
    if "val" in run:
        v = run["val"]
        line += (f"; val: start {pct(v['start'])} ({v['start'] / v['trained']:.3f}x trained), after {pct(v['after'])} "
                 f"({v['after'] / v['trained']:.3f}x)")
    if "animals_guard_before" in run:
        line += (f"; animals guard {pct(run['animals_guard_before'])} -> {pct(run['animals_guard_after'])} "
                 f"(all six {pct(run['animals_all_six_guard_before'])} -> {pct(run['animals_all_six_guard_after'])})")
    print(line, flush=True)


def markdown(result: dict) -> str:
    out = ["# Description search (`python -m bench.description_search`), val, search on one half, guard the other", "",
           f"{result['threads']} torch threads, {result['seconds_budget']:g} s a search"
           + (f", at most {result['budget']} proposals" if result.get("budget") else "")
           + f", seed {result['seed']}, margin {100 * result['margin']:.2f} points.", "",
           "| run | guard before | guard after | search before | search after | shipped (guard) | trained (guard) | "
           "proposals | seconds | s/proposal | load |", "|---" * 11 + "|"]
    for name, run in result["runs"].items():
        ref = run.get("reference", {})
        out.append(f"| {name} | {pct(run['guard_miou']['before'])} | {pct(run['guard_miou']['after'])} | "
                   f"{pct(run['search_miou']['before'])} | {pct(run['search_miou']['after'])} | "
                   f"{pct(ref.get('shipped', {}).get('guard'))} | {pct(ref.get('trained', {}).get('guard'))} | "
                   f"{run['proposals']} | {run['seconds']:.0f} | {run['seconds_per_proposal']:.2f} | "
                   f"{run['load_average_at_start']} |")
    for name, run in result["runs"].items():
        out += ["", f"## {name}: per class, guard half (IoU)", "", "| class | before | after | search half before | after |",
                "|---|---|---|---|---|"]
        out += [f"| {r['class']} | {pct(r['guard_before'])} | {pct(r['guard_after'])} | {pct(r['search_before'])} | "
                f"{pct(r['search_after'])} |" for r in run["per_class"]]
        steps = {}
        for k in run["kept"]:
            steps.setdefault(k["step"], []).append(k)
        out += ["", "Kept changes:", ""]
        for step, rows in steps.items():
            classes = ", ".join(r["class"] for r in rows)
            out.append(f"- proposal {step}: {classes} ({rows[0]['source']}): search {100 * rows[0]['search_delta']:+.2f}, "
                       f"guard {100 * rows[0]['guard_delta']:+.2f}")
    return "\n".join(out) + "\n"


def finish(result: dict, args) -> None:
    args.json.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    chart(result, args.chart)
    print(f"wrote {args.json} (and .md) and {args.chart}")


def chart(result: dict, path: Path) -> None:
    """mIoU of both halves against proposals tried, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        xs = [p["proposals"] for p in run["trajectory"]]
        ax.step(xs, [100 * p["search_miou"] for p in run["trajectory"]], where="post", label="search half")
        ax.step(xs, [100 * p["guard_miou"] for p in run["trajectory"]], where="post", label="guard half")
        ref = run.get("reference", {}).get("shipped", {}).get("guard")
        if ref is not None:
            ax.axhline(100 * ref, color="grey", ls="--", lw=1, label="shipped (guard)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("proposals tried")
        ax.set_ylabel("mIoU")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
