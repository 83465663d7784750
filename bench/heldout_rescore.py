"""Re-score a trained part-3 held-out model of ``bench.paper_claims`` with the library's current open-set
credit settings (``prolab.novel_prior.PriorSettings``), without retraining it.

    python -m bench.heldout_rescore [--run runs/bench/paper_claims_quick/heldout_s0] [--size 192]
                                    [--draws 3] [--json docs/results/paper_claims_quick_part3_rescored.json]

Same scoring as part 3 (MSRC-v2 val; held-out animals added back from their descriptions vs random-sentence
controls, with and without the credit); prints the animals' mean IoU over the classes present.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from bench.common import ROOT, default_data_root, write_json


def rescore(run: str, data_root: str, size: int, draws: int, union_dir: str | None = None,
            limit: int | None = None) -> dict:
    """Part 3's held-out scoring of the model saved in ``run`` (its ``"projected_*"`` / ``"control_*"``)."""
    from bench.claims.evaluation import heldout_evaluation
    from prolab.model import PropertySegmenter

    model = PropertySegmenter.from_pretrained(run)
    job = {"config": {"data_root": data_root}, "eval_limit": limit, "control_draws": draws, "size": size,
           "heldout_eval_train": False, "union_dir": union_dir}
    return heldout_evaluation(model, None, job)


def animals_miou(scored: dict, classes: list[str], key: str = "msrc_v2_val") -> float:
    """Mean IoU of ``classes`` that have pixels in ``scored[key]`` (NaN when none has)."""
    r = scored[key]
    present = [c for c in classes if r["per_class_pixels"].get(c)]
    return float(np.mean([r["per_class_iou"][c] for c in present])) if present else float("nan")


def main(argv: list[str] | None = None) -> dict:
    from bench.claims.plan import HELD_OUT
    from prolab.novel_prior import PriorSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=str(ROOT / "runs" / "bench" / "paper_claims_quick" / "heldout_s0"))
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--size", type=int, default=192, help="inference short side (paper_claims --quick: 192)")
    p.add_argument("--draws", type=int, default=3, help="random-sentence control draws")
    p.add_argument("--union-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N val images only")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    scored = rescore(args.run, args.data_root, args.size, args.draws, args.union_dir, args.limit)
    summary = {}
    for mode in ("credit", "plain"):
        summary[mode] = {"projected": animals_miou(scored[f"projected_{mode}"], list(HELD_OUT)),
                         "control": float(np.mean([animals_miou(c, list(HELD_OUT)) for c in scored[f"control_{mode}"]]))}
        print(f"{mode}: animals {100 * summary[mode]['projected']:.1f}, control {100 * summary[mode]['control']:.1f}")
    result = {"run": args.run, "size": args.size, "draws": args.draws,
              "open_set_credit": dataclasses.asdict(PriorSettings()), "summary": summary, "scored": scored}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
