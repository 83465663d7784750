"""CLI command groups; each module exposes ``register(subparsers)``."""
from __future__ import annotations

import argparse


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`prolab.inference.embed_image` shared by ``evaluate`` and ``predict``."""
    p.add_argument("--mode", choices=("whole", "slide"), default="whole")
    p.add_argument("--size", type=int, help="short side the image is resized to (default: model input_size)")
    p.add_argument("--crop", type=int, default=512, help="sliding-window crop (mode slide)")
    p.add_argument("--stride", type=int, default=341, help="sliding-window stride (mode slide)")
    p.add_argument("--flip", action="store_true",
                   help="also run the mirrored image and average (test-time augmentation, 2x slower)")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def inference_kwargs(args: argparse.Namespace) -> dict:
    """Apply ``--threads`` and return the keyword arguments for ``embed_image`` (and the functions that
    forward them) from the other flags."""
    import torch

    from prolab.errors import ProLabError
    from prolab.inference import check_inference_options

    check_inference_options(args.size, args.mode, args.crop, args.stride)
    if args.threads is not None and args.threads < 1:
        raise ProLabError(f"--threads must be at least 1, got {args.threads}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    return {"size": args.size, "mode": args.mode, "crop": args.crop, "stride": args.stride,
            "flip": args.flip}
