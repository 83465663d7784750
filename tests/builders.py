"""Small objects several test modules build."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from prolab.labelspace import LabelSpace


def random_label_space(dim: int, k: int = 10, classes: int = 5, seed: int = 0) -> LabelSpace:
    """A valid label space with random centres: each class uses 3 distinct properties."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim)).astype(np.float32)
    matrix = np.zeros((classes, k), np.float32)
    owner, prop = [], []
    for c in range(classes):
        for p in rng.choice(k, size=3, replace=False):
            matrix[c, p] = 1.0
            owner.append(c)
            prop.append(p)
    emb = rng.standard_normal((len(owner), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return LabelSpace(class_names=[f"class{c}" for c in range(classes)],
                      sentences=[f"sentence {i}" for i in range(len(owner))],
                      sentence_class=np.asarray(owner, np.int64), sentence_embeddings=emb,
                      sentence_property=np.asarray(prop, np.int64), centers=centers, class_matrix=matrix,
                      property_names=[f"p{i}" for i in range(k)], encoder_id="test-encoder",
                      template="plain", k=k, seed=seed)


def write_labelled_folder(root: Path, classes: list[str], n: int = 4, seed: int = 0, shared: bool = False) -> Path:
    """A tiny labelled set: textured images, each with a flat block per class on class 0's background,
    and the top 3 rows ignored (255). ``images/ + masks/ + classes.txt`` (what ``read_folder`` reads), or
    with ``shared`` the shared datasets' format (``labels/``, ``classes.txt``, every image in ``val.txt``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    masks = root / ("labels" if shared else "masks")
    (root / "images").mkdir(parents=True)
    masks.mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i in range(n):
        h, w = 48 + 8 * i, 64
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for c in range(len(classes)):
            y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
            mask[y:y + 16, x:x + 20] = c
            img[y:y + 16, x:x + 20] = rng.integers(0, 255, 3)  # a flat patch per class
        mask[:3] = 255
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(masks / f"im{i}.png")
    if shared:
        (root / "val.txt").write_text("".join(f"im{i}\n" for i in range(n)))
    return root


def dropped_after_one_read(cls, names: set[str]):
    """``cls`` whose fields ``names`` are dropped (set to None) right after each read: what the owner's thread
    may do while another thread reads the object without its lock."""
    class Vanishing(cls):
        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if name in names and value is not None:
                object.__setattr__(self, name, None)
            return value
    return Vanishing
