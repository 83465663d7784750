"""Re-evaluating a labelled set after a description edit, without new forward passes (goal: <= 2 s).

    python -m bench.eval_rescore [--model DIR] [--dataset msrc_v2] [--split val] [--label-set msrc_23]
                                 [--edit-class cat] [--runs 5] [--threads 2] [--json OUT]

Runs :class:`prolab.eval_cache.EvalCache` as the app's Evaluate panel does: the first evaluation runs
the model over every image of the set and caches the decoder's last features in half precision, then
scores the label set (``model.label_space.edited(descriptions)``, as the workbench segments with).
Each re-evaluation edits one class's sentences (its first four kept, a new one added: encoded and
assigned to its nearest property), re-derives the label space and re-scores every cached image
against the ground truth at full resolution. Wall and CPU seconds are medians of ``--runs``; the machine's load average
is printed, since wall time on a shared machine depends on it. Run from the repository root.

On a machine busier than its cores, OpenMP's default spin-waiting makes every multi-threaded torch
operation wait for a descheduled sibling thread: re-scoring (many small operations) is then many times
slower with 2 threads than with 1. ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) or
``--threads 1`` avoids it; the policy in force is printed with the results.
"""
from __future__ import annotations

import argparse
import os
import statistics
import uuid
from pathlib import Path

from bench.common import timed, write_json
from prolab import labelsets
from prolab.assets import DEFAULT_MODEL_DIR
from prolab.data.readers import data_root, read_folder, read_shared
from prolab.encoder import TextEncoder
from prolab.eval_cache import EvalCache
from prolab.eval_report import compare
from prolab.evaluate import load_mapping

GOAL_SECONDS = 2.0


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (results carry no home paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--dataset", default="msrc_v2", help="shared dataset (under --data-root / $PROLAB_DATA)")
    ap.add_argument("--folder", type=Path, help="an images/ + masks/ + classes.txt folder instead of --dataset")
    ap.add_argument("--split", default="val")
    ap.add_argument("--data-root")
    ap.add_argument("--label-set", default="msrc_23", help="the label set whose descriptions are edited")
    ap.add_argument("--edit-class", help="class whose sentences are edited (default: cat, else the first)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    import torch

    from prolab.model import PropertySegmenter

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    model = PropertySegmenter.from_pretrained(args.model)
    source = read_folder(args.folder) if args.folder else read_shared(data_root(args.data_root), args.dataset,
                                                                      args.split)
    encoder = TextEncoder()  # with its in-memory layer, as the app uses it
    label_set = labelsets.load(args.label_set)
    base = label_set.descriptions
    edit_class = args.edit_class or ("cat" if base.find("cat") else base.categories[0])

    def first():
        cache = EvalCache.build(model, source, mapping=load_mapping(args.model))
        return cache, cache.rescore(model.label_space.edited(base, encoder))

    t = timed(first)
    (cache, before), first_wall, first_cpu = t.result, t.median_s, t.median_cpu_s
    nonce = uuid.uuid4().hex[:8]  # new text each run: the encoder's on-disk cache cannot answer it

    walls, cpus, scored = [], [], []
    after = before
    for i in range(args.runs):
        # keep the class's first four sentences, add a new one (new text: encoded and assigned)
        edited = base.with_category(edit_class, base[base.find(edit_class)][:4] + [f"Has soft fur {nonce} {i}"])
        t = timed(lambda: cache.rescore(model.label_space.edited(edited, encoder)))
        after = t.result
        walls += t.walls
        cpus += t.cpus
        scored.append(after["rescore_seconds"])
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    delta = compare(before, after)
    row = next(r for r in delta.rows if r.name.casefold() == edit_class.casefold())
    mb = cache.nbytes / 2 ** 20
    result = {
        "model": _shown(args.model), "dataset": f"{source.name}/{source.split}", "images": len(cache),
        "size": cache.size, "label_set": args.label_set, "edited_class": edit_class,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (spin, then sleep)"),
        "load_average": [load_start, os.getloadavg()[0]],
        "first_evaluation": {"wall_s": first_wall, "cpu_s": first_cpu, "forward_s": cache.build_seconds},
        "re_evaluation": {"runs": args.runs, "median_wall_s": wall, "median_cpu_s": cpu,
                          "median_scoring_s": statistics.median(scored), "wall_s": walls},
        "cache_mb": mb, "goal_s": GOAL_SECONDS, "within_goal": wall <= GOAL_SECONDS,
        "miou": [before["miou"], after["miou"]],
    }
    print(f"load average {load_start:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"torch threads {torch.get_num_threads()}; OMP_WAIT_POLICY {result['omp_wait_policy']}")
    print(f"model {_shown(args.model)}; {source.name}/{source.split}: {len(cache)} images at {cache.size} px; "
          f"label set {args.label_set}")
    print(f"{'first evaluation (forward + cache + score)':<52}{first_wall:9.2f} s wall {first_cpu:9.2f} s CPU")
    print(f"{f're-evaluation after editing {edit_class!r} (median of {args.runs})':<52}{wall:9.2f} s wall "
          f"{cpu:9.2f} s CPU  {'ok' if wall <= GOAL_SECONDS else 'over'} (goal <= {GOAL_SECONDS:.0f} s)")
    print(f"{'  of which scoring the cached images':<52}{statistics.median(scored):9.2f} s wall")
    print(f"{'cache memory':<52}{mb:9.1f} MB")
    print(f"mIoU {100 * before['miou']:.2f} -> {100 * after['miou']:.2f}; {edit_class} "
          f"{100 * (row.a or 0):.2f} -> {100 * (row.b or 0):.2f}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
