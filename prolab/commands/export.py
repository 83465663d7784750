"""``export``: write a model's network in another format (today ONNX, for ``--backend onnx``)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from prolab.assets import DEFAULT_MODEL_DIR
from prolab.commands import check_output_file
from prolab.errors import ProLabError


def register(sub) -> None:
    p = sub.add_parser("export", help="export the network (ONNX, dynamic height/width) next to the model",
                       description="Writes the network's forward pass as an ONNX graph with dynamic batch, height "
                                   "and width (default: model.onnx inside the model directory, where "
                                   "--backend onnx and the app's fast setting look for it), then checks it "
                                   "against eager PyTorch on one input.")
    p.add_argument("--model", default=None, help="model directory (default: the shipped assets/models/default)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    p.add_argument("--out", help="output file (default: MODEL/model.onnx)")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from prolab.model import PropertySegmenter
    from prolab.onnx_backend import ONNX_FILE, OnnxSegmenter, export_onnx

    source = args.model or str(DEFAULT_MODEL_DIR)
    if args.out:
        out = Path(args.out)
    elif Path(source).is_dir():
        out = Path(source) / ONNX_FILE
    else:
        raise ProLabError(f"{source} is not a local model directory; give --out.")
    if out.is_dir():
        raise ProLabError(f"--out {out} is a folder; give a file name such as {out / ONNX_FILE}.")
    check_output_file(out)  # before the export (about a minute), not after it
    model = PropertySegmenter.from_pretrained(source)
    t = time.perf_counter()
    export_onnx(model, out)
    seconds = time.perf_counter() - t
    x = torch.randn(1, 3, 224, 288)  # another size than the export's example: dynamic shapes at work
    with torch.no_grad():
        want = model(x)["out"]
    got = OnnxSegmenter(model, out)(x)["out"]
    diff = float((want - got).abs().max())
    if diff > 1e-3:
        raise ProLabError(f"The exported graph differs from the model by {diff:.2g} (max abs); not usable.")
    print(f"Wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB) in {seconds:.1f} s; "
          f"max abs difference to eager PyTorch {diff:.1e}")
    return 0
