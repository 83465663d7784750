"""Dataset readers: folders on disk -> a :class:`SegSource` (class names + list of samples).

Supported layouts (all paths come from the caller; nothing is hard-coded):

- the shared format (``images/<stem>.jpg``, ``labels/<stem>.png`` with 255 = ignore,
  ``classes.txt``, ``train.txt``/``val.txt``) used by MSRC-v2, CamVid, COCO128-seg and the
  unlabeled indoor photos, optionally with the ADE20K-150 teacher pseudo-labels
  ``teacher_ade150/<dataset>/<stem>.png`` and ``<stem>_conf.png``;
- the standard ADE20K layout ``ADEChallengeData2016/images|annotations/training|validation``
  (annotations 0 = other, 1..150 = classes);
- a generic folder ``images/`` + ``masks/`` (index PNGs, 255 = ignore) + ``classes.txt`` with
  optional ``train.txt``/``val.txt``, for users' own data, or a ``.zip`` of it.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from prolab.assets import ASSETS_DIR
from prolab.errors import ProLabError
from prolab.limits import LIMITS, check_name, mb, read_lines, read_text, short

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Shared dataset folder -> the key of its class list / descriptions in ``assets/``.
SHARED_DATASETS = {"msrc_v2": "msrc_23", "camvid": "camvid_11", "coco128": "coco_80", "indoor": None}
ADE_KEY = "ade20k_150"
TEACHER_DIR = "teacher_ade150"
REPO_ASSETS = ASSETS_DIR
#: The most classes a class list may hold: masks are 8-bit index PNGs with 255 = ignore (indices 0..254).
#: It also bounds what evaluation allocates per class (a classes x classes confusion matrix, class scores).
MAX_CLASSES = 255
#: Largest mask of a user's labelled set (``read_folder``), in pixels (4096 x 4096 = 16.8 MP). Scoring one
#: image takes about 40 bytes per mask pixel at its peak, so one image of an upload stays under 0.7 GB.
MAX_MASK_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class SegSample:
    """One image with its optional ground truth and optional teacher (ADE-150) labels."""

    stem: str
    image: Path
    label: Path | None = None
    teacher: Path | None = None
    teacher_conf: Path | None = None


@dataclass
class SegSource:
    """A labelled image collection: its name, its class list (GT index order) and samples.

    ``label_key`` names the class list in ``assets/descriptions`` / the union mapping
    (e.g. ``"camvid_11"``); ``None`` for sources with no ground truth or user data.
    """

    name: str
    classes: list[str]
    samples: list[SegSample]
    label_key: str | None = None
    split: str = "train"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_gt(self) -> bool:
        return any(s.label is not None for s in self.samples)

    @property
    def has_teacher(self) -> bool:
        return any(s.teacher is not None for s in self.samples)


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The datasets folder: ``path`` if given, else ``$PROLAB_DATA``; a clear error if neither."""
    root = path or os.environ.get("PROLAB_DATA")
    if not root:
        raise ProLabError("No datasets folder given: pass --data-root or set PROLAB_DATA.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ProLabError(f"Datasets folder not found: {root}")
    return root


def find_data_root(path: str | os.PathLike | None = None) -> Path | None:
    """The datasets folder if there is one: ``path`` if given, else ``$PROLAB_DATA``, else
    ``shared/datasets`` beside the repository checkout (``../shared/datasets``); None when that is
    not a folder."""
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    root = Path(path or os.environ.get("PROLAB_DATA") or beside).expanduser()
    return root if root.is_dir() else None


def labelled_sets(root: str | os.PathLike, split: str = "val") -> list[tuple[str, int]]:
    """``(dataset folder, number of images)`` for every dataset under ``root`` in the shared format
    with ground truth (``labels/``, ``classes.txt``) and a ``<split>.txt``: what
    ``read_shared(root, name, split)`` reads with labels. Sorted by name."""
    found = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        stems = read_split(folder, split)
        if stems and (folder / "labels").is_dir() and (folder / "classes.txt").is_file():
            found.append((folder.name, len(stems)))
    return found


def read_classes(path: Path) -> list[str]:
    """One class name per line (blank trailing lines ignored); at most :data:`MAX_CLASSES`.

    Read line by line (:func:`prolab.limits.read_lines`): a file with more lines or bytes than allowed is
    refused after its first ones, never read whole. UTF-8 (with or without a byte-order mark) is expected; a
    file that is not UTF-8 is read as Latin-1, the usual encoding of older tools' class lists, rather than
    refused."""
    if not path.is_file():
        raise ProLabError(f"Class list not found: {path}")
    names = read_lines(path, "The class list", MAX_CLASSES, unit="classes",
                       hint=" (masks are 8-bit PNGs and 255 means ignore)")
    if not names or any(not n for n in names):
        raise ProLabError(f"{path} must list one non-empty class name per line.")
    for n in names:
        check_name(n, f"Class name {short(n)!r} in {path.name}")
    return names


def read_split(folder: Path, split: str) -> list[str] | None:
    """Stems listed in ``<folder>/<split>.txt``, or None when the file does not exist."""
    path = folder / f"{split}.txt"
    if not path.is_file():
        return None
    return [s for s in read_text(path, "The split file", LIMITS.max_list_bytes).split() if s]


def ade_classes() -> list[str]:
    """The 150 ADE20K class names (index 0 = ADE label 1) from ``assets/datasets``."""
    return list(json.loads((REPO_ASSETS / "datasets" / f"{ADE_KEY}.json").read_text())["classes"])


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def read_shared(root: str | os.PathLike, name: str, split: str = "train",
                teacher: bool = True) -> SegSource:
    """A dataset in the shared format, e.g. ``read_shared(root, "camvid", "val")``.

    ``root`` is the folder holding the dataset folders (and ``teacher_ade150/``). With ``teacher``
    the teacher pseudo-label and confidence files are attached where they exist. A folder
    without ``labels/`` (the indoor photos) gives samples with no ground truth.
    """
    root = Path(root)
    folder = root / name
    if not folder.is_dir():
        raise ProLabError(f"Dataset folder not found: {folder}")
    stems = read_split(folder, split)
    if stems is None:
        raise ProLabError(f"{folder} has no {split}.txt split file.")
    has_labels = (folder / "labels").is_dir()
    classes = read_classes(folder / "classes.txt") if has_labels else []
    tdir = root / TEACHER_DIR / name
    samples = []
    for stem in stems:
        img = _find_image(folder / "images", stem)
        if img is None:
            raise ProLabError(f"{folder}: image for {stem!r} listed in {split}.txt not found.")
        lab = folder / "labels" / f"{stem}.png" if has_labels else None
        if lab is not None and not lab.is_file():
            raise ProLabError(f"{folder}: label {lab.name} listed in {split}.txt not found.")
        t = tdir / f"{stem}.png" if teacher else None
        tc = tdir / f"{stem}_conf.png" if teacher else None
        samples.append(SegSample(stem, img, lab,
                                 t if t is not None and t.is_file() else None,
                                 tc if tc is not None and tc.is_file() else None))
    if not has_labels and not any(s.teacher for s in samples):
        raise ProLabError(f"{folder} has neither labels/ nor teacher labels in {tdir}.")
    return SegSource(name, classes, samples, SHARED_DATASETS.get(name), split)


def read_ade20k(root: str | os.PathLike, split: str = "train") -> SegSource:
    """The standard ``ADEChallengeData2016`` layout (``root`` may be that folder or its parent).

    ADE annotations use 0 = other and 1..150 for classes; samples keep the raw file, and the
    reader's ``meta["offset"] = 1`` tells the label mapper to shift by one (0 -> ignore).
    """
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    sub = {"train": "training", "training": "training", "val": "validation",
           "validation": "validation"}.get(split)
    if sub is None:
        raise ProLabError(f"ADE20K split must be train or val, got {split!r}.")
    img_dir, ann_dir = root / "images" / sub, root / "annotations" / sub
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise ProLabError(f"{root} is not an ADEChallengeData2016 folder (needs images/{sub} and "
                          f"annotations/{sub}).")
    samples = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        ann = ann_dir / f"{img.stem}.png"
        if ann.is_file():
            samples.append(SegSample(img.stem, img, ann))
    if not samples:
        raise ProLabError(f"No annotated images in {img_dir}.")
    return SegSource("ade20k", ade_classes(), samples, ADE_KEY, "val" if sub == "validation" else "train",
                     meta={"offset": 1})


def read_folder(root: str | os.PathLike, split: str | None = None,
                extract_to: str | os.PathLike | None = None) -> SegSource:
    """A generic folder: ``images/``, ``masks/`` (index PNGs, 255 = ignore) and ``classes.txt``.

    With ``split`` the stems come from ``<split>.txt``; without, every image with a mask is used.
    ``root`` may also be a ``.zip`` of that layout (at its top level or inside one folder): it is
    extracted safely (:func:`extract_zip`) into ``extract_to``, or a new temporary folder, recorded as
    ``meta["extracted_to"]``, which the caller deletes when done with the source.
    """
    root = Path(root)
    if root.is_file():
        dest = Path(extract_to) if extract_to is not None else Path(tempfile.mkdtemp(prefix="prolab-data-"))
        try:
            source = read_folder(extract_zip(root, dest), split)
        except BaseException as exc:
            # the extraction is ours: deleted on any failure, and never named (the user gave a zip)
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, ProLabError):
                raise ProLabError(_inside_zip(str(exc), dest, root.name)) from None
            raise
        source.name = root.stem
        source.meta["extracted_to"] = str(dest)
        return source
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise ProLabError(f"{root} needs images/ and masks/ folders (and classes.txt).")
    classes = read_classes(root / "classes.txt")
    stems = read_split(root, split) if split else None
    if split and stems is None:
        raise ProLabError(f"{root} has no {split}.txt split file.")
    if stems is None:
        stems = sorted(p.stem for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS
                       and (mask_dir / f"{p.stem}.png").is_file())
    samples = []
    for stem in stems:
        img = _find_image(img_dir, stem)
        mask = mask_dir / f"{stem}.png"
        if img is None or not mask.is_file():
            raise ProLabError(f"{root}: image or mask for {stem!r} not found.")
        check_mask_size(img, mask)
        samples.append(SegSample(stem, img, mask))
    if not samples:
        raise ProLabError(f"No image/mask pairs found in {root}.")
    return SegSource(root.name, classes, samples, None, split or "all")


def _inside_zip(message: str, dest: Path, zip_name: str) -> str:
    """``message`` with paths inside the extraction folder ``dest`` written as ``zip_name: path``."""
    for form in sorted({str(dest), str(dest.resolve())}, key=len, reverse=True):
        message = message.replace(form + "/", f"{zip_name}: ").replace(form, zip_name)
    return message


def check_mask_size(image: Path, mask: Path, max_pixels: int = MAX_MASK_PIXELS) -> None:
    """Refuse a mask that is not the size of its image (as shown: EXIF orientation applied), with a word
    when it is the image's size transposed, or that is larger than ``max_pixels``. Headers only."""
    try:
        with Image.open(image) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 degrees when shown
                w, h = h, w
        with Image.open(mask) as m:
            mw, mh = m.size
            mode = m.mode
    except Image.DecompressionBombError:
        raise ProLabError(f"{mask.name} or its image is far too large; masks may have at most "
                          f"{max_pixels / 1e6:.1f} MP.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ProLabError(f"Cannot read {image.name} or its mask {mask.name}: {exc}") from None
    if mode not in ("L", "P"):  # 16-bit or colour masks would be misread as class indices
        kind = {"RGB": "a colour (RGB) image", "RGBA": "a colour (RGBA) image", "I;16": "a 16-bit image",
                "I": "a 32-bit image", "1": "a black-and-white image"}.get(mode, f"a {mode} image")
        raise ProLabError(f"Mask {mask.name} is {kind}; masks must be 8-bit index PNGs (one class index per "
                          "pixel, 255 = ignore).")
    if mw * mh > max_pixels:
        raise ProLabError(f"Mask {mask.name} is {mw} x {mh} pixels; masks may have at most "
                          f"{max_pixels / 1e6:.1f} MP. Resize the image and its mask first.")
    if (mw, mh) != (w, h):
        hint = " (transposed: width and height swapped)" if (mw, mh) == (h, w) else ""
        raise ProLabError(f"Mask {mask.name} is {mw} x {mh} pixels but its image {image.name} is {w} x {h}"
                          f"{hint}; a mask must have its image's size.")


#: Limits of a labelled-set zip: total uncompressed bytes and number of files.
MAX_ZIP_BYTES = 2 ** 30
MAX_ZIP_FILES = 20_000


def _entry_cap(parts: tuple[str, ...]) -> int | None:
    """The most bytes a zip entry may unpack to: the text files' own limits (a class list, a split file);
    None for images and masks (bounded by the zip's total and the mask size limit)."""
    name = parts[-1].lower()
    if name == "classes.txt":
        return LIMITS.max_text_bytes
    if name.endswith((".txt", ".json")):
        return LIMITS.max_list_bytes
    return None


def extract_zip(path: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = MAX_ZIP_BYTES,
                max_files: int = MAX_ZIP_FILES) -> Path:
    """Extract a zip of the ``images/ + masks/ + classes.txt`` layout into ``dest``; return the folder
    that holds ``images/`` (``dest`` or the zip's one top-level folder).

    Refused with a :class:`ProLabError`, before anything is written: a file that is not a zip, an
    absolute path or a ``..`` component (path traversal), a symbolic link, more than ``max_files``
    files or more than ``max_bytes`` uncompressed (also enforced while extracting, so a lying header
    cannot exceed it). macOS ``__MACOSX/`` metadata is skipped.
    """
    path, dest = Path(path), Path(dest)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ProLabError(f"Zip file not found: {path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ProLabError(f"{path.name} is not a readable zip file ({exc}).") from None
    with zf:
        entries, total = [], 0
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise ProLabError(f"{path.name}: unsafe path {info.filename!r} (absolute or leaving the "
                                  "folder); the zip is refused.")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ProLabError(f"{path.name}: {info.filename!r} is a symbolic link; the zip is refused.")
            if info.is_dir() or not parts or parts[0] == "__MACOSX":
                continue
            cap = _entry_cap(parts)
            if cap is not None and info.file_size > cap:  # e.g. a classes.txt of 1 GB: refused unread
                raise ProLabError(f"{path.name}: {'/'.join(parts)} is {info.file_size / 2 ** 20:.0f} MB; such "
                                  f"a file may have at most {mb(cap)}.")
            entries.append((info, parts))
            total += info.file_size
        if len(entries) > max_files:
            raise ProLabError(f"{path.name} holds {len(entries)} files; the limit is {max_files}.")
        if total > max_bytes:
            raise ProLabError(f"{path.name} unpacks to {total / 2 ** 20:.0f} MB; the limit is "
                              f"{max_bytes / 2 ** 20:.0f} MB.")
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        for info, parts in entries:
            target = dest.joinpath(*parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                cap, this = _entry_cap(parts), 0
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written, this = written + len(chunk), this + len(chunk)
                        if written > max_bytes:
                            raise ProLabError(f"{path.name} unpacks to more than {max_bytes / 2 ** 20:.0f} MB "
                                              "(its headers say less); the zip is refused.")
                        if cap is not None and this > cap:
                            raise ProLabError(f"{path.name}: {'/'.join(parts)} unpacks to more than {mb(cap)} "
                                              "(its header says less); the zip is refused.")
                        out.write(chunk)
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, zlib.error) as exc:
                raise ProLabError(f"{path.name}: cannot extract {info.filename!r} ({exc}).") from None
    if (dest / "images").is_dir():
        return dest
    folders = [p for p in dest.iterdir() if p.is_dir()]
    if len(folders) == 1 and (folders[0] / "images").is_dir():
        return folders[0]
    raise ProLabError(f"{path.name} must hold images/, masks/ and classes.txt, at its top level or inside "
                      "one folder.")


def read_source(spec: str | dict, root: str | os.PathLike | None = None,
                split: str = "train", teacher: bool = True) -> SegSource:
    """Resolve a source spec from a config.

    ``spec`` is a shared dataset name (``"camvid"``, read under ``root``/``$PROLAB_DATA``), or a
    dict ``{"type": "shared"|"ade20k"|"folder", "path": ..., "name": ..., "split": ...}`` (a
    ``"repeat"`` key is used by the training dataset for oversampling and ignored here).
    """
    if isinstance(spec, str):
        spec = {"type": "shared", "name": spec}
    kind = spec.get("type", "shared")
    split = spec.get("split", split)
    if kind == "shared":
        base = Path(spec["path"]) if spec.get("path") else data_root(root)
        return read_shared(base, spec["name"], split, teacher=spec.get("teacher", teacher))
    if kind == "ade20k":
        return read_ade20k(spec.get("path") or data_root(root), split)
    if kind == "folder":
        if not spec.get("path"):
            raise ProLabError("A 'folder' data source needs a 'path'.")
        return read_folder(spec["path"], spec.get("split"))
    raise ProLabError(f"Unknown data source type {kind!r} (use shared, ade20k or folder).")
