"""Small objects several test modules build."""
from __future__ import annotations

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
