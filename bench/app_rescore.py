"""What one app click costs after the first forward pass (the app's < 100 ms goal at 512 x 512).

    python -m bench.app_rescore [--model DIR] [--label-set ade20k_150] [--runs 7] [--threads 1] [--bilinear]

Runs the app's own per-user object (:class:`prolab.edit_session.EditSession`, each change one
``apply`` transaction as the app's handlers make it) on the 512 x 512 astronaut example: one forward pass,
then the re-segmentations the UI triggers - same space with a new unknown threshold, a novel category
added, one class's descriptions edited, another label set. Each is timed end to end (validate and commit
the change, label-space update, scoring, full-resolution label map); the encoder's on-disk cache
is warmed first, as it is in the app after a sentence has been seen once. Without ``--model`` the
default model is used when present, else an untrained compact model over the label set (speed does
not depend on the weights).
"""
from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

from bench.common import timed
from prolab import labelsets
from prolab.assets import DEFAULT_MODEL_DIR as DEFAULT_MODEL
from prolab.assets import EXAMPLES_DIR
from prolab.descriptions import DescriptionSet
from prolab.edit_session import EditClass, EditSession, LabelSetChoice, SetNovel
from prolab.encoder import TextEncoder
from prolab.labelspace import LabelSpace, suggested_k
from prolab.model import PropertySegmenter, untrained_model

NOVEL = {"zebra": ["Horse-like animal with black and white stripes", "Four thin legs and a short mane",
                   "Grazes on grass in open savanna", "Often seen in herds"]}


def load_model(path: Path | None, label_set, encoder):
    if path is None and (DEFAULT_MODEL / "config.json").is_file():
        path = DEFAULT_MODEL
    if path is not None:
        return PropertySegmenter.from_pretrained(path), str(path)
    space = LabelSpace.build(label_set.descriptions, encoder, k=suggested_k(label_set.descriptions.num_sentences))
    return untrained_model(space, input_size=512), f"untrained compact-cnn over {label_set.key}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--label-set", default="ade20k_150")
    ap.add_argument("--other-label-set", default="coco_stuff_171")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: stable numbers on a shared machine)")
    ap.add_argument("--bilinear", action="store_true",
                    help="time the default step with bilinear upsampling (its upsampling until 2026-12-08)")
    args = ap.parse_args()
    if args.bilinear:  # this process only: the session reads its step from the dial
        import dataclasses

        from prolab import quality

        quality.QUALITIES[quality.DEFAULT_QUALITY] = dataclasses.replace(
            quality.QUALITIES[quality.DEFAULT_QUALITY], guided=False)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = TextEncoder()
    ls = labelsets.load(args.label_set)
    other = labelsets.load(args.other_label_set)
    model, name = load_model(args.model, ls, encoder)
    loaded = {ls.key: ls, other.key: other}  # the app loads each shipped set once for every user
    session = EditSession(model, encoder, ls.key, label_sets=loaded.__getitem__, inference_size=512)

    t = time.perf_counter()
    first = session.segment(EXAMPLES_DIR / "astronaut.png")
    forward = time.perf_counter() - t
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    emb = session.workbench.forward(session.network_in_use)
    # warm the encoder cache with every sentence a step below will use (as a prior click would have)
    edit_class = ls.class_names[0]
    edits = [EditClass(edit_class, ls.descriptions[edit_class] + [f"Edited sentence {i}"]) for i in range(args.runs)]
    encoder.encode([s for c in NOVEL.values() for s in c] + [f"Edited sentence {i}" for i in range(args.runs)]
                   + [s for c in other.descriptions for s in other.descriptions[c]])
    session.apply(SetNovel(DescriptionSet(NOVEL)))

    def threshold(i):
        session.apply(threshold=0.1 + 0.01 * i)

    def novel(i):
        session.apply(SetNovel(DescriptionSet({f"zebra {i}": NOVEL["zebra"]})))  # a new object: the space is rebuilt

    def edit(i):
        if i == 0:
            session.apply(SetNovel())  # an edit on its own; the row above measured an extension
        session.apply(edits[i])

    def switch(i):
        session.apply(on=LabelSetChoice(other.key if i % 2 == 0 else ls.key))

    def runs(step):  # the step is given the run's number: 0, 1, ...
        return timed(step, args.runs, setup=itertools.count().__next__)

    rows = [("re-segment, new unknown threshold", runs(threshold)),
            ("add a novel category + re-segment", runs(novel)),
            (f"edit '{edit_class}' descriptions + re-segment", runs(edit)),
            (f"switch label set ({ls.key} <-> {other.key}) + re-segment", runs(switch))]
    print(f"model: {name}; image 512 x 512, embeddings {tuple(emb.shape)}, K = {first.space.k}, "
          f"{len(first.class_names)} classes; torch threads {torch.get_num_threads()}")
    print(f"{'first segmentation (forward pass + scoring)':<58}{forward * 1000:9.1f} ms")
    print(f"{'':<58}{'wall':>9}    {'CPU':>9}  (medians of {args.runs}; goal: < 100 ms compute)")
    for label, t in rows:
        wall, cpu = t.median_s, t.median_cpu_s
        flag = "ok" if cpu < 0.1 else "over the goal"
        print(f"{label:<58}{wall * 1000:9.1f} ms {cpu * 1000:9.1f} ms  {flag}")


if __name__ == "__main__":
    main()
