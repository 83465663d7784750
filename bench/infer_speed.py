"""Inference speed on CPU: forward latency at 512 x 512 and re-scoring of cached embeddings.

    python bench/infer_speed.py [--model DIR] [--runs 7] [--threads N]

Without ``--model`` the default model in assets/models/default is used when present, else an untrained
compact-cnn (speed does not depend on the weights). Re-scoring uses a synthetic 150-class, K=256 label
space with fresh centres, i.e. a label space the model has never seen: activations + class scores +
a full-resolution label map from the cached (D, 128, 128) embeddings.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prolab.inference import embed_image, score_embeddings, segment  # noqa: E402
from prolab.labelspace import LabelSpace  # noqa: E402
from prolab.model import PropertySegmenter, SegmenterConfig  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "default"


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


def timed(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


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
    fwd, emb = timed(lambda: embed_image(model, image, size=512), args.runs)
    print(f"forward 512x512 (whole, incl. pre-processing): median {fwd * 1000:.0f} ms over {args.runs} runs "
          f"-> output {tuple(emb.shape)}")
    slide, _ = timed(lambda: embed_image(model, image, size=512, mode="slide"), max(3, args.runs // 2))
    print(f"forward 512x512 (slide 512/341): median {slide * 1000:.0f} ms")

    if model.config.supervision != "property":
        print("category model: re-scoring against new label spaces does not apply")
        return
    space = synthetic_label_space(emb.shape[0])
    score_embeddings(emb, space, model.config.temperature)  # warm-up
    t_score, (_, scores) = timed(lambda: score_embeddings(emb, space, model.config.temperature), args.runs * 3)
    t_seg, labels = timed(lambda: segment(scores, (512, 512), unknown_threshold=0.2), args.runs * 3)
    t_all, _ = timed(lambda: segment(score_embeddings(emb, space, model.config.temperature)[1], (512, 512)),
                     args.runs * 3)
    print(f"re-score cached embeddings, 150 classes, K=256: scores median {t_score * 1000:.1f} ms, "
          f"full-res label map {t_seg * 1000:.1f} ms, total median {t_all * 1000:.1f} ms "
          f"(labels {labels.shape}, {len(np.unique(labels))} distinct)")


if __name__ == "__main__":
    main()
