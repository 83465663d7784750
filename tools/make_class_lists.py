"""Write assets/datasets/<key>.json: class names (dataset order) and a display palette.

Run once by developers (``python -m tools.make_class_lists [SHARED_DATASETS_DIR]``); the outputs are
committed. Class names for MSRC-v2, CamVid, COCO-80 and ADE20K-150 are read from the shared datasets
folder so that they match the data exactly.
"""
from __future__ import annotations

import colorsys
import json
import sys
from pathlib import Path

from prolab.assets import DATASETS_DIR

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "datasets")

COCO_STUFF_91 = (
    "banner blanket branch bridge building-other bush cabinet cage cardboard carpet ceiling-other "
    "ceiling-tile cloth clothes clouds counter cupboard curtain desk-stuff dirt door-stuff fence "
    "floor-marble floor-other floor-stone floor-tile floor-wood flower fog food-other fruit "
    "furniture-other grass gravel ground-other hill house leaves light mat metal mirror-stuff moss "
    "mountain mud napkin net paper pavement pillow plant-other plastic platform playingfield railing "
    "railroad river road rock roof rug salad sand sea shelf sky-other skyscraper snow solid-other "
    "stairs stone straw structural-other table tent textile-other towel tree vegetable wall-brick "
    "wall-concrete wall-other wall-panel wall-stone wall-tile wall-wood water-other waterdrops "
    "window-blind window-other wood"
).split()
PASCAL_CONTEXT_59 = [
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
]
#: The official ADE20K-150 names (objectInfo150.txt, first synonym of each row) where the shared
#: teacher's classes.txt shortens them.
ADE_OFFICIAL_NAMES = {"television": "television receiver"}
CITYSCAPES_19 = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]
CAMVID_PALETTE = [  # SegNet-Tutorial colours
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
    [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
]


def generated_palette(n: int) -> list[list[int]]:
    """Distinct colours by stepping the hue with the golden ratio and cycling value/saturation."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        s = (0.55, 0.75, 0.95)[i % 3]
        v = (0.95, 0.75, 0.6)[(i // 3) % 3]
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        out.append([round(r * 255), round(g * 255), round(b * 255)])
    return out


def read_classes(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def main() -> None:
    coco80 = read_classes(DATA / "coco128" / "classes.txt")
    sets = {
        "ade20k_150": ("ADE20K-150", [ADE_OFFICIAL_NAMES.get(c, c) for c in
                                      read_classes(DATA / "teacher_ade150" / "classes.txt")[1:]], None,
                       "ADE20K SceneParse150 (objectInfo150.txt, first synonym of each row)"),
        "coco_stuff_171": ("COCO-Stuff-171", coco80 + COCO_STUFF_91, None,
                           "COCO-Stuff 164k: 80 thing classes then 91 stuff classes"),
        "pascal_context_59": ("Pascal-Context-59", PASCAL_CONTEXT_59, None,
                              "PASCAL-Context 59 most frequent classes"),
        "cityscapes_19": ("Cityscapes-19", CITYSCAPES_19, CITYSCAPES_PALETTE,
                          "Cityscapes 19 evaluation classes (trainId order)"),
        "coco_80": ("COCO-80", coco80, None, "MS COCO 80 thing classes"),
        "msrc_23": ("MSRC-v2-23", read_classes(DATA / "msrc_v2" / "classes.txt"), None,
                    "MSRC-v2, 23-class cleaned annotations (Malisiewicz and Efros)"),
        "camvid_11": ("CamVid-11", read_classes(DATA / "camvid" / "classes.txt"), CAMVID_PALETTE,
                      "CamVid, 11-class SegNet version"),
    }
    out_dir = DATASETS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, (name, classes, palette, source) in sets.items():
        assert len(set(classes)) == len(classes), key
        palette = palette or generated_palette(len(classes))
        doc = {"key": key, "name": name, "source": source, "ignore_index": 255,
               "classes": classes, "palette": palette}
        (out_dir / f"{key}.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(key, len(classes))


if __name__ == "__main__":
    main()
