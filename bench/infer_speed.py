"""Inference speed on CPU: forward latency at 512 x 512 and re-scoring of cached embeddings.

    python -m bench.infer_speed [--model DIR] [--runs 7] [--threads N]

Without ``--model`` the default model in assets/models/default is used when present, else an untrained
compact-cnn (speed does not depend on the weights). Re-scoring uses a synthetic 150-class, K=256 label
space whose centres change on every run (nothing reusable): activations + class scores + a full-resolution
label map from cached (D, 128, 128) embeddings shaped like a trained model's (8 regions). It also times
the common edit that keeps the centres (classes added or edited without re-clustering).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import timed
from prolab.assets import DEFAULT_MODEL_DIR as DEFAULT_MODEL
from prolab.inference import (embed_image, embed_image_factored, embedding_activations, inverse_norms,
                              rescore_activations, score_embeddings, segment)
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig


def synthetic_label_space(dim: int, classes: int = 150, k: int = 256, seed: int = 0) -> LabelSpace:
    """Random centres and multi-hot rows (about 10 properties per class), shaped like ADE-150 at K=256."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim)).astype(np.float32)
    matrix = np.zeros((classes, k), np.float32)
    for c in range(classes):
        matrix[c, rng.choice(k, size=10, replace=False)] = 1.0
    return LabelSpace(class_names=[f"class {i}" for i in range(classes)], sentences=[],
                      sentence_class=np.zeros(0, np.int64), sentence_embeddings=np.zeros((0, dim), np.float32),
                      sentence_property=np.zeros(0, np.int64), centers=centers, class_matrix=matrix,
                      property_names=[f"property {i}" for i in range(k)], encoder_id="synthetic",
                      template="plain", k=k, seed=seed)


def structured_embeddings(space: LabelSpace, h: int = 128, w: int = 128, n_regions: int = 8,
                          seed: int = 0) -> torch.Tensor:
    """A (D, h, w) map shaped like a trained model's output: a few regions, each pointing at one class's
    properties, plus noise (random noise alone would make every class a near-tie everywhere)."""
    rng = np.random.default_rng(seed)
    centers = space.normalised_centers
    classes = rng.choice(space.num_classes, size=n_regions, replace=False)
    region = (np.arange(h)[:, None] * n_regions // h + np.arange(w)[None, :] * 2 // w) % n_regions
    proto = np.stack([space.class_matrix[c] @ centers for c in classes])  # n D
    proto = 0.3 * proto / np.linalg.norm(proto, axis=1, keepdims=True)
    emb = proto[region] + 0.005 * rng.standard_normal((h, w, centers.shape[1]))
    return torch.from_numpy(emb.astype(np.float32)).permute(2, 0, 1).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model or (DEFAULT_MODEL if (DEFAULT_MODEL / "model.safetensors").is_file() else None)
    model = PropertySegmenter.from_pretrained(path) if path else PropertySegmenter(SegmenterConfig()).eval()
    name = str(path) if path else "untrained compact-cnn"
    print(f"model: {name} | backbone {model.config.backbone} | supervision {model.config.supervision}")
    print(f"parameters: {model.num_parameters():,} ({model.num_parameters(include_aux=False):,} without aux head)")
    print(f"torch threads: {torch.get_num_threads()}")

    image = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    embed_image(model, image, size=512)  # warm-up
    t = timed(lambda: embed_image(model, image, size=512), args.runs)
    emb = t.result
    print(f"forward 512x512 (whole, incl. pre-processing): median {t.median_s * 1000:.0f} ms wall, "
          f"{t.median_cpu_s * 1000:.0f} ms CPU over {args.runs} runs -> output {tuple(emb.shape)}")
    t = timed(lambda: embed_image(model, image, size=512, mode="slide"), max(3, args.runs // 2))
    print(f"forward 512x512 (slide 512/341): median {t.median_s * 1000:.0f} ms wall, "
          f"{t.median_cpu_s * 1000:.0f} ms CPU")

    if model.config.supervision != "property":
        print("category model: re-scoring against new label spaces does not apply")
        return
    space = synthetic_label_space(emb.shape[0])
    cached = structured_embeddings(space, *emb.shape[1:])
    temp = model.config.temperature
    n = args.runs * 3
    # Fresh centres every run (as after re-clustering): nothing can be reused from an earlier call.
    def recluster(i: int) -> LabelSpace:
        noise = np.random.default_rng(i).standard_normal(space.centers.shape).astype(np.float32)
        return replace(space, centers=space.centers + 0.05 * noise * np.abs(space.centers).mean())

    fresh = iter([recluster(i + 1) for i in range(2 * n + 2)])
    score_embeddings(cached, next(fresh), temp)  # warm-up
    # ``factors`` are the head's low-rank factors of a real forward pass (the app's path);
    # ``cached`` is a synthetic map with realistic class structure and no factors (full D-dim product).
    emb, factors = embed_image_factored(model, image, size=512)
    low_rank = factors if factors is not None else emb
    t0 = timed(lambda: score_embeddings(low_rank, next(fresh), temp), n)
    t1 = timed(lambda: score_embeddings(cached, next(fresh), temp), n)
    scores = t1.result[1]
    t2 = timed(lambda: segment(scores, (512, 512), unknown_threshold=0.2), n)
    labels = t2.result
    fresh = iter([recluster(100 + i) for i in range(n)])
    t3 = timed(lambda: segment(score_embeddings(low_rank, next(fresh), temp)[1], (512, 512)), n)
    (w0, c0), (w1, c1), (w2, c2), (w3, c3) = ((t.median_s, t.median_cpu_s) for t in (t0, t1, t2, t3))
    print(f"re-score cached {tuple(cached.shape)} embeddings against a new 150-class K=256 label space "
          f"(median of {n}):")
    print(f"  activations + class scores (embed_image output, low-rank path): "
          f"{w0 * 1000:.1f} ms wall, {c0 * 1000:.1f} ms CPU")
    print(f"  activations + class scores (map without factors, full product): "
          f"{w1 * 1000:.1f} ms wall, {c1 * 1000:.1f} ms CPU")
    print(f"  full-res 512x512 label map: {w2 * 1000:.1f} ms wall, {c2 * 1000:.1f} ms CPU "
          f"({len(np.unique(labels[labels >= 0]))} classes in the map)")
    print(f"  total (new centres):        {w3 * 1000:.1f} ms wall, {c3 * 1000:.1f} ms CPU")
    # Classes edited, centres kept (LabelSpace.edited / extended): the caller (the app's workbench)
    # keeps the activations and their norms and only re-scores the classes.
    edits = [replace(space, class_matrix=np.roll(space.class_matrix, i, axis=1)) for i in range(n + 1)]
    it = iter(edits)
    act = embedding_activations(low_rank, next(it), temp)
    inv = inverse_norms(act)
    t4 = timed(lambda: segment(rescore_activations(act, next(it), inv), (512, 512)), n)
    w4, c4 = t4.median_s, t4.median_cpu_s
    print(f"  total (same centres, classes edited): {w4 * 1000:.1f} ms wall, {c4 * 1000:.1f} ms CPU")

if __name__ == "__main__":
    main()
