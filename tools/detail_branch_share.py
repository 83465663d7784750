"""How much a model's detail branch adds to the decode head's features: the RMS of the branch's output
against the RMS of the features it is added to, on a few images (docs/RESULTS.md part 6, stage 18).

    python -m tools.detail_branch_share --model assets/models/default \
        --images "$PROLAB_DATA/camvid/images/0016E5_07*.jpg" --limit 3

Each image is resized to 416 x 544 (CamVid's 4:3 at the shipped input size, a multiple of 32) and run once.
"""
from __future__ import annotations

import argparse
import glob

import torch

import prolab  # noqa: F401  (thread policy before torch work)
from prolab.images import load_image
from prolab.model import PropertySegmenter


def branch_share(model: PropertySegmenter, image: torch.Tensor) -> tuple[float, float]:
    """(RMS of the detail branch's output, RMS of the features it joins) for one (3, H, W) uint8 image."""
    head = model.decode_head
    if head.detail is None:
        raise SystemExit("This model has no detail branch (detail_channels is 0).")
    seen: dict[str, torch.Tensor] = {}
    hooks = [head.detail.register_forward_hook(lambda m, i, o: seen.__setitem__("branch", o)),
             head.refine.register_forward_hook(lambda m, i, o: seen.__setitem__("features", i[0]))]
    try:
        x = torch.nn.functional.interpolate(image[None].float(), size=(416, 544), mode="bilinear")
        with torch.no_grad():
            model(model.normalize(x / 255.0))
    finally:
        for h in hooks:
            h.remove()
    # refine's input is the sum, so the features the branch joins are that sum minus the branch
    joined = seen["features"] - seen["branch"]
    return float(seen["branch"].pow(2).mean().sqrt()), float(joined.pow(2).mean().sqrt())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/default")
    ap.add_argument("--images", required=True, help="a glob of image files (sorted; the first --limit are used)")
    ap.add_argument("--limit", type=int, default=3)
    args = ap.parse_args(argv)
    model = PropertySegmenter.from_pretrained(args.model)
    paths = sorted(glob.glob(args.images))[:args.limit]
    if not paths:
        raise SystemExit(f"No images match {args.images}.")
    for path in paths:
        image = torch.from_numpy(load_image(path)).permute(2, 0, 1)
        branch, features = branch_share(model, image)
        print(f"{path.split('/')[-1]}: branch RMS {branch:.4f}, features RMS {features:.4f} "
              f"({100 * branch / features:.1f} %)")
    print(f"mean |weight| of the branch's last conv: {float(model.decode_head.detail.expand.weight.detach().abs().mean()):.4f}")


if __name__ == "__main__":
    main()
