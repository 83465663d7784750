"""Time label-space builds: ~1,500 sentences at K=256, then a rebuild after editing one category.

    python -m bench.labelspace_build [--descriptions assets/descriptions/ade20k_150.json] [--k 256]

Prints: cold build (empty embedding cache: model load + encode + K-Means), a rebuild after editing
one category (cache hit for all other sentences, K-Means again), and the instant re-assign edit
(centres kept). Timings are wall-clock on this machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from bench.common import write_json
from prolab.assets import DESCRIPTIONS_DIR
from prolab.descriptions import load_descriptions
from prolab.encoder import TextEncoder
from prolab.labelspace import LabelSpace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptions", default=str(DESCRIPTIONS_DIR / "ade20k_150.json"))
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    ds = load_descriptions(args.descriptions)
    with tempfile.TemporaryDirectory() as cache:
        enc = TextEncoder(cache_dir=cache)
        t0 = time.perf_counter()
        space = LabelSpace.build(ds, enc, k=args.k, seed=0)
        cold = time.perf_counter() - t0
        encoded_cold = enc.num_encoded

        first = ds.categories[0]
        edited = ds.with_category(first, ds[first][:-1] + [f"An edited sentence about {first}"])
        enc.num_encoded = 0
        t0 = time.perf_counter()
        LabelSpace.build(edited, enc, k=args.k, seed=0)
        rebuild = time.perf_counter() - t0
        encoded_rebuild = enc.num_encoded

        enc.num_encoded = 0
        t0 = time.perf_counter()
        space.edited(edited, enc)
        reassign = time.perf_counter() - t0

    rows = {
        "classes": len(ds), "sentences": ds.num_sentences, "k": args.k,
        "cold_build_s": round(cold, 3), "cold_sentences_encoded": encoded_cold,
        "rebuild_after_one_edit_s": round(rebuild, 3), "rebuild_sentences_encoded": encoded_rebuild,
        "reassign_only_edit_s": round(reassign, 3),
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
