"""The README's unseen-animals story, step by step, on the cat photo (assets/examples/chelsea.png).

    python -m bench.unseen_story [--json docs/results/unseen_story.json]

The unseen-animals model (no animal in training) under ADE20K-150, then with a cat added as a novel
category: first one short sentence, then MSRC-v2's cat sentences (assets/descriptions/msrc_23.json).
Printed: the four largest classes of each result (share of the image). ADE20K-150 has an "animal" class
of its own, also never seen by this model: before a cat is added, that class is what the cat is shown as.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from bench.common import write_json
from prolab.assets import DESCRIPTIONS_DIR, EXAMPLES_DIR, MODELS_DIR

STEPS = (("ADE20K-150", None),
         ("ADE20K-150 + cat (one sentence)", ["A small furry pet"]),
         ("ADE20K-150 + cat (MSRC-v2's sentences)", "msrc"))


def shares(seg, top: int = 4) -> list[tuple[str, float]]:
    """The ``top`` largest classes of a result with their share of the image in percent."""
    a = np.bincount(seg.labels[seg.labels >= 0].ravel(), minlength=len(seg.class_names)) / seg.labels.size
    return [(seg.class_names[i], round(100 * float(a[i]), 1)) for i in np.argsort(-a, kind="stable")[:top]]


def run() -> dict:
    import torch

    from prolab.descriptions import DescriptionSet
    from prolab.edit_session import EditSession, SetNovel
    from prolab.encoder import TextEncoder
    from prolab.model.segmenter import PropertySegmenter

    torch.set_num_threads(1)
    model_dir = MODELS_DIR / "unseen_animals"
    session = EditSession(PropertySegmenter.from_pretrained(model_dir), TextEncoder(), "ade20k_150",
                          model_dir=model_dir)
    msrc_cat = json.loads((DESCRIPTIONS_DIR / "msrc_23.json").read_text())["cat"]
    out = {}
    for name, sentences in STEPS:
        if sentences is None:
            seg = session.segment(str(EXAMPLES_DIR / "chelsea.png"))
        else:
            cat = msrc_cat if sentences == "msrc" else sentences
            seg = session.apply(SetNovel(DescriptionSet({"cat": cat})))
        out[name] = shares(seg)
        print(f"{name:40s} " + " | ".join(f"{c} {p:.1f} %" for c, p in out[name]))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    result = run()
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
