"""``train``: train a property (ProLab) or category segmenter from a config file + overrides."""
from __future__ import annotations

import argparse
import os

from prolab.errors import ProLabError


def register(sub) -> None:
    p = sub.add_parser("train", help="train a segmenter (single process, or under torchrun for DDP)",
                       description="Train from a YAML/JSON config; flags and --set key=value override it. "
                                   "Launch with torchrun --nproc_per_node N -m prolab train ... for DDP.")
    p.add_argument("--config", help="training config (YAML or JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (YAML-parsed; dotted keys for model.*), repeatable")
    p.add_argument("--out", dest="out_dir", help="output folder (model, checkpoint/, metrics.jsonl)")
    p.add_argument("--data-root", help="shared datasets folder (default $PROLAB_DATA)")
    p.add_argument("--supervision", choices=("property", "category"))
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--k", type=int, help="number of properties (property supervision)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--init-from", help="start from a saved model directory (fine-tuning / second stage)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue from <out>/checkpoint if it exists")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from prolab.train import load_config, train

    if not args.config and not args.overrides:  # the defaults alone are a 2,000-step run on every dataset
        raise ProLabError("Give a training config, e.g. --config configs/default_property.yaml "
                          "(or spell the settings out with --set key=value).")
    cfg = load_config(args.config, args.overrides, out_dir=args.out_dir, data_root=args.data_root,
                      supervision=args.supervision, steps=args.steps, batch_size=args.batch_size,
                      lr=args.lr, k=args.k, seed=args.seed, threads=args.threads, resume=args.resume,
                      progress=args.progress, init_from=args.init_from)
    out = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"Model saved to {out}")
    return 0
