"""Precompute the UMAP sentence maps of the shipped label sets, so the explorer opens them instantly.

Writes ``assets/layouts/``: one ``<name>-<key>.npz`` per map (``xy`` float16 ``(S, 2)`` and the
per-sentence ``fingerprint`` float32 ``(S, 4)`` that :func:`prolab.explore.shipped_layout` matches
embeddings with) and ``index.json`` listing them with their content key: a hash of the encoder, the
encoder's input texts and the UMAP settings (:func:`prolab.explore.layout_key`).

Maps are made for every shipped label set (``assets/datasets`` with ``assets/descriptions``) scored
with the default model's encoder, as the app does, and for each shipped model's own label space
(the app's "model's training classes"). Edited and custom label sets are computed by the app on
demand and cached per user machine.

    python -m tools.make_layouts            # compute the missing or stale maps, drop unused ones
    python -m tools.make_layouts --check    # only report whether they are up to date (exit 1 if not)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prolab import labelsets
from prolab.assets import DEFAULT_MODEL_DIR, LAYOUTS_DIR, MODELS_DIR
from prolab.descriptions import write_text_atomic
from prolab.encoder import apply_template
from prolab.explore import SHIPPED_INDEX, layout_fingerprint, layout_key, layout_settings
from prolab.labelspace import LabelSpace

FORMAT = {"format": "prolab-layouts", "version": 1}
SEED = 0  # the app's map seed (sentence_layout's default)


@dataclass
class Target:
    """One map to ship: where its sentences come from and how to get their embeddings."""

    name: str  # file name stem: the label set key, or "model-<folder>"
    source: str
    sentences: list[str]
    encoder_id: str
    template: str
    space: LabelSpace  # the default model's space (label sets) or the model's own (models)
    own: bool

    @property
    def settings(self) -> dict:
        return layout_settings(len(self.sentences), "umap", SEED)

    @property
    def key(self) -> str:
        texts = [apply_template(s, self.template) for s in self.sentences]
        return layout_key(texts, self.encoder_id, self.settings)

    @property
    def file(self) -> str:
        return f"{self.name}-{self.key[:16]}.npz"

    def embeddings(self, encoders: dict) -> np.ndarray:
        """The sentence embeddings the app maps for this target."""
        if self.own:
            return self.space.sentence_embeddings
        from prolab.encoder import TextEncoder

        enc = encoders.setdefault((self.encoder_id, self.template), TextEncoder(self.encoder_id, self.template))
        return self.space.edited(labelsets.load(self.name).descriptions, enc).sentence_embeddings


def targets(default_model: Path = DEFAULT_MODEL_DIR, models_dir: Path = MODELS_DIR) -> list[Target]:
    """Every map to ship, label sets first (their order in the app), then the models' own spaces."""
    default = LabelSpace.load(Path(default_model) / "labelspace")
    out = []
    for key, name in labelsets.available():
        ds = labelsets.load(key).descriptions
        sentences = [s for c in ds for s in ds[c]]
        out.append(Target(key, f"label set {name} with the {Path(default_model).name} model's encoder",
                          sentences, default.encoder_id, default.template, default, own=False))
    for folder in sorted(p for p in Path(models_dir).iterdir() if (p / "labelspace").is_dir()):
        space = default if folder.resolve() == Path(default_model).resolve() else LabelSpace.load(folder / "labelspace")
        out.append(Target(f"model-{folder.name}", f"the {folder.name} model's training classes", list(space.sentences),
                          space.encoder_id, space.template, space, own=True))
    return out


def read_index(layouts_dir: Path = LAYOUTS_DIR) -> list[dict]:
    path = Path(layouts_dir) / SHIPPED_INDEX
    return json.loads(path.read_text(encoding="utf-8"))["layouts"] if path.is_file() else []


def problems(layouts_dir: Path = LAYOUTS_DIR, wanted: list[Target] | None = None) -> list[str]:
    """What is missing, stale or unused in ``layouts_dir`` (empty when up to date); never encodes."""
    wanted = targets() if wanted is None else wanted
    index = {e["key"]: e for e in read_index(layouts_dir)}
    out = [f"{t.name}: no up-to-date map (its sentences, encoder or UMAP settings changed)"
           for t in wanted if t.key not in index or not (Path(layouts_dir) / index[t.key]["file"]).is_file()]
    keys = {t.key for t in wanted}
    out += [f"{e['file']}: no shipped label set uses it" for k, e in index.items() if k not in keys]
    listed = {e["file"] for e in index.values()}
    out += [f"{p.name}: not in {SHIPPED_INDEX}" for p in sorted(Path(layouts_dir).glob("*.npz"))
            if p.name not in listed]
    return out


def make(layouts_dir: Path = LAYOUTS_DIR, force: bool = False, log=print) -> list[dict]:
    """Compute the missing maps, write the index, remove files no map uses; the index entries."""
    from prolab.explore import umap_2d

    layouts_dir = Path(layouts_dir)
    layouts_dir.mkdir(parents=True, exist_ok=True)
    old = {e["key"]: e for e in read_index(layouts_dir)}
    encoders: dict = {}
    entries = []
    for t in targets():
        entry = {"name": t.name, "source": t.source, "file": t.file, "key": t.key, "encoder_id": t.encoder_id,
                 "template": t.template, "sentences": len(t.sentences), "dim": t.space.dim, "settings": t.settings}
        if not force and t.key in old and (layouts_dir / old[t.key]["file"]).is_file():
            entries.append({**entry, "file": old[t.key]["file"]})
            log(f"{t.name}: up to date")
            continue
        emb = t.embeddings(encoders)
        start = time.perf_counter()
        xy = umap_2d(np.ascontiguousarray(emb, np.float32), SEED)
        tmp = layouts_dir / f".{t.file}.tmp.npz"
        np.savez_compressed(tmp, xy=xy.astype(np.float16), fingerprint=layout_fingerprint(emb))
        tmp.replace(layouts_dir / t.file)
        entries.append(entry)
        log(f"{t.name}: {len(t.sentences)} sentences, UMAP in {time.perf_counter() - start:.1f} s -> {t.file}")
    write_text_atomic(layouts_dir / SHIPPED_INDEX,
                      json.dumps({**FORMAT, "layouts": entries}, indent=1, ensure_ascii=False) + "\n")
    used = {e["file"] for e in entries}
    for p in layouts_dir.glob("*.npz"):
        if p.name not in used:
            p.unlink()
            log(f"removed {p.name}")
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=LAYOUTS_DIR, help="layouts folder (default assets/layouts)")
    ap.add_argument("--check", action="store_true", help="only report what is missing or stale (exit 1 if any)")
    ap.add_argument("--force", action="store_true", help="recompute every map")
    args = ap.parse_args(argv)
    if args.check:
        found = problems(args.out)
        for line in found:
            print(line)
        return 1 if found else 0
    entries = make(args.out, force=args.force)
    size = sum((args.out / e["file"]).stat().st_size for e in entries)
    print(f"{len(entries)} maps, {sum(e['sentences'] for e in entries)} sentences, {size / 1024:.0f} KiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
