"""``labelspace build|show|project``."""
from __future__ import annotations

import argparse
import json
import sys

from prolab.commands import descriptions_arg
from prolab.encoder import DEFAULT_ENCODER, DEFAULT_TEMPLATE, TextEncoder


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    """Encoder flags shared by every command that encodes sentences."""
    p.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help="sentence-transformers id or local path (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help="'plain' (lower-cased sentence), 'prolab' (which is/which/which has ...) "
                        "or a format string with {}")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default ~/.cache/prolab)")


def make_encoder(args: argparse.Namespace):
    return TextEncoder(args.encoder, template=args.template, cache_dir=args.cache_dir)


def register(sub) -> None:
    p = sub.add_parser("labelspace", help="build, inspect and project property label spaces")
    lsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = lsub.add_parser("build", help="cluster description sentences into K properties")
    b.add_argument("--descriptions", required=True, help="the classes' sentences: a descriptions JSON {class: [sentences]} "
                                                        "or a shipped label set key (ade20k_150, ...)")
    b.add_argument("--k", type=int, default=256, help="number of properties (default 256)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="output directory")
    add_encoder_args(b)
    b.set_defaults(handler=cmd_build)

    s = lsub.add_parser("show", help="print a readable summary of a label space")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(handler=cmd_show)

    pr = lsub.add_parser("project", help="map new categories onto an existing space's properties")
    pr.add_argument("dir")
    pr.add_argument("--descriptions", required=True, help="the new categories: a descriptions JSON file or a "
                                                         "shipped label set key")
    pr.add_argument("--cache-dir", default=None)
    pr.set_defaults(handler=cmd_project)


def cmd_build(args: argparse.Namespace) -> int:
    from prolab.labelspace import LabelSpace

    ds = descriptions_arg(args.descriptions)
    space = LabelSpace.build(ds, make_encoder(args), k=args.k, seed=args.seed, show_progress=sys.stderr.isatty())
    space.save(args.out)
    print(f"Built {space.k} properties from {len(space.sentences)} sentences of "
          f"{space.num_classes} classes -> {args.out}")
    _print_warnings(space)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from prolab.labelspace import LabelSpace

    space = LabelSpace.load(args.dir)
    props = space.properties()
    if args.json:
        print(json.dumps({"encoder_id": space.encoder_id, "template": space.template, "k": space.k,
                          "classes": space.class_names,
                          "properties": [p.__dict__ | {"classes": list(p.classes)} for p in props],
                          "duplicates": space.duplicate_groups()}, indent=1))
        return 0
    print(f"Label space {args.dir}: {space.num_classes} classes, {len(space.sentences)} sentences, "
          f"K={space.k}, encoder={space.encoder_id}, template={space.template!r}")
    for p in props:
        classes = ", ".join(p.classes[:8]) + (f", ... (+{len(p.classes) - 8})" if len(p.classes) > 8 else "")
        print(f"  [{p.index:3d}] {p.name!r}  size={p.size}  classes: {classes}")
    _print_warnings(space)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from prolab.labelspace import LabelSpace

    space = LabelSpace.load(args.dir)
    encoder = TextEncoder(space.encoder_id, template=space.template, cache_dir=args.cache_dir)
    proj = space.project(descriptions_arg(args.descriptions), encoder)
    for i, name in enumerate(proj.class_names):
        props = sorted(set(proj.sentence_property[name]))
        print(f"{name}: {len(props)} properties")
        for k in props:
            print(f"  [{k:3d}] {space.property_names[k]!r}  (soft {proj.soft[i, k]:.2f})")
    return 0


def _print_warnings(space) -> None:
    for w in space.warnings:
        print(f"warning: {w}")
