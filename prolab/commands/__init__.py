"""CLI command groups; each module exposes ``register(subparsers)``.

``prolab --help`` imports every command module to build its parser, so these modules import only the
standard library and the light ``prolab.errors`` / ``prolab.assets`` / ``prolab.encoder`` at the top; the
library modules a command runs (which load torch, PIL, tqdm, ...) are imported inside its handler.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from prolab.errors import ProLabError


#: What every ``--descriptions`` accepts (resolved by :func:`descriptions_arg`).
DESCRIPTIONS_VALUE = "a shipped label set key (ade20k_150, cityscapes_19, msrc_23, ...) or a descriptions JSON file"


def descriptions_arg(spec: str, model=None):
    """The :class:`~prolab.descriptions.DescriptionSet` a ``--descriptions`` names: a shipped key, ``model``
    (``model``'s training classes) or a JSON file; the app resolves its label sets the same way."""
    from prolab import labelsets

    return labelsets.resolve(spec, model).descriptions


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`prolab.inference.embed_image` shared by ``evaluate`` and ``predict``."""
    p.add_argument("--mode", choices=("whole", "slide"), default="whole")
    p.add_argument("--size", type=int, help="short side the image is resized to (default: model input_size)")
    p.add_argument("--crop", type=int, default=512, help="sliding-window crop (mode slide)")
    p.add_argument("--stride", type=int, default=341, help="sliding-window stride (mode slide)")
    p.add_argument("--flip", action="store_true",
                   help="also run the mirrored image and average (test-time augmentation, 2x slower)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--backend", choices=("torch", "onnx"),
                   help="run the network in eager PyTorch (default) or ONNX Runtime (the graph `prolab export "
                        "--format onnx` wrote next to the model, else one exported once into the cache)")
    p.add_argument("--guided-upsampling", action=argparse.BooleanOptionalAction, default=None,
                   help="upsample the class scores with a guided filter on the image (boundaries follow its "
                        "edges; a little slower: docs/RESULTS.md, part 6) or, with --no-guided-upsampling, "
                        "bilinearly (default: as the --quality step does: guided for default and accurate, "
                        "bilinear for fast)")
    p.add_argument("--no-score-offsets", action="store_true",
                   help="score without the model's per-class score offsets (score_offsets.json, fitted by "
                        "`prolab calibrate`; the file is not read). The offsets shift class scores, so "
                        "--unknown-threshold compares scores that include them")
    p.add_argument("--quality", choices=("fast", "default", "accurate"),
                   help="speed/quality dial (prolab.quality): fast = ONNX at a smaller input, accurate = "
                        "multi-scale + flip + guided upsampling; --size, --flip and --backend given explicitly "
                        "take precedence")


def inference_kwargs(args: argparse.Namespace) -> dict:
    """Apply ``--threads`` and return the keyword arguments for ``embed_image`` (and the functions that
    forward them) from the other flags."""
    import torch

    from prolab.inference import check_inference_options

    check_inference_options(args.size, args.mode, args.crop, args.stride)
    if args.threads is not None and args.threads < 1:
        raise ProLabError(f"--threads must be at least 1, got {args.threads}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    return {"size": args.size, "mode": args.mode, "crop": args.crop, "stride": args.stride,
            "flip": args.flip, "scales": (1.0,)}


def model_and_options(args: argparse.Namespace, model, model_dir, options: dict) -> tuple[object, dict]:
    """Apply ``--quality`` and ``--backend`` to a loaded model: the network to run (the model or its
    :class:`prolab.onnx_backend.OnnxSegmenter`) and the final ``embed_image`` keyword arguments.
    ``args.guided_upsampling`` becomes a bool: the flag's choice, else the step's (no ``--quality``: the
    default step's)."""
    from prolab.onnx_backend import with_backend
    from prolab.quality import get_quality

    options = dict(options)
    backend = args.backend or "torch"
    if args.quality:
        q = get_quality(args.quality)
        preset = q.inference_kwargs(model.config.input_size)
        options["size"] = options["size"] if options["size"] is not None else preset["size"]
        options["flip"] = options["flip"] or preset["flip"]
        options["scales"] = preset["scales"]
        backend = args.backend or q.backend
    if args.guided_upsampling is None:
        args.guided_upsampling = get_quality(args.quality).guided
    directory = Path(model_dir) if model_dir is not None and Path(model_dir).is_dir() else None
    return with_backend(model, backend, directory), options


def check_output_file(out: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written: its folder cannot be made (a part
    of the path is a file, or the place is read-only) or nothing can be created there. Nothing is left
    behind (the probe file is deleted)."""
    import tempfile

    if out.is_dir():
        raise ProLabError(f"{flag} {out} is a folder, not a file.")
    parent = out.parent
    for p in [parent, *parent.parents]:
        if p.exists() and not p.is_dir():
            raise ProLabError(f"{flag} {out}: {p} is a file, not a folder.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".prolab-probe-"):
            pass
    except OSError as exc:
        raise ProLabError(f"{flag} {out} cannot be written ({exc.strerror or exc.__class__.__name__}).") from None
