"""Training loop for property (ProLab) and category-supervised segmenters.

One script for one CPU, one GPU, or many (``torchrun`` sets ``WORLD_SIZE``/``RANK``; the loop then
uses DistributedDataParallel and a DistributedSampler). AdamW with linear warmup and a poly
schedule, bf16/fp16 autocast only on GPU, a checkpoint every N steps (``--resume`` continues
exactly where it stopped), a tqdm progress bar and a JSONL metrics log. On CPU the same seed gives
the same run: data order and augmentation depend only on ``(seed, epoch, index)``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from prolab.data import AugmentConfig, SegmentationDataset, read_source
from prolab.data.union import load_union, space_from_classes
from prolab.descriptions import load_descriptions, write_text_atomic
from prolab.distributed import DistInfo, barrier, close_distributed, init_distributed
from prolab.encoder import DEFAULT_ENCODER, DEFAULT_TEMPLATE, TextEncoder
from prolab.errors import ProLabError
from prolab.feature_bank import FeatureBank
from prolab.limits import read_text
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig
from prolab.scoring import anchor_loss, point_samples, prolab_loss, prolab_point_loss, weighted_mean

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"
CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
MAPPING_FILE = "dataset_mapping.json"
DEFAULT_SOURCES = ("msrc_v2", "camvid", "coco128", "indoor")
#: SegmenterConfig fields :func:`build_model` fills in; a config's ``model`` section may not set them.
TRAINER_SET_MODEL_KEYS = ("supervision", "embed_dim", "encoder_id", "template", "input_size", "num_classes",
                          "class_names")


@dataclass
class TrainConfig:
    """Every setting of a training run; loaded from YAML/JSON and overridden by flags."""

    out_dir: str = "runs/prolab"
    data_root: str | None = None  # folder of the shared datasets; default $PROLAB_DATA
    sources: list[Any] = field(default_factory=lambda: list(DEFAULT_SOURCES))
    split: str = "train"
    # Target classes: "union" (assets/descriptions union of all datasets) or a descriptions JSON
    # whose class names match the sources' classes (e.g. a user's own folder).
    label_space: str = "union"
    # Target classes left out of training altogether: removed from the label space, and their pixels
    # (ground truth and teacher pseudo-labels alike) ignored. For unseen-category experiments.
    exclude_classes: list[str] = field(default_factory=list)
    descriptions_dir: str | None = None
    k: int = 256
    encoder: str | None = None
    template: str | None = None
    embedding_cache_dir: str | None = None
    supervision: str = "property"  # or "category"
    use_teacher: bool = True
    teacher_threshold: float = 0.5
    short_side: int = 256
    # The default inference short side written to the model (config.json input_size). None: a fine-tune
    # (init_from) keeps its starting model's, which was chosen on val; a new model takes short_side
    # rounded up to a multiple of 32.
    input_size: int | None = None
    crop_size: int = 256
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    jitter: float = 0.25
    # Probability that a training image is first rendered by a simulated other camera (white balance,
    # tone curve, sensor resolution, blur, noise, JPEG, vignetting; ranges: prolab.data.transforms.CameraShift),
    # for images from another camera or drive than the training set's. 0: off.
    camera_shift: float = 0.0
    data_cache_dir: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # SegmenterConfig fields
    steps: int = 2000
    batch_size: int = 8  # per process
    lr: float = 2e-3
    # Learning rate of the backbone relative to ``lr`` (e.g. 0.1 when fine-tuning a pretrained encoder).
    backbone_lr_mult: float = 1.0
    # {parameter-name prefix: learning-rate multiplier}, replacing backbone_lr_mult for the parameters it names
    # (the longest prefix wins; on the command line --set 'lr_mults={decode_head.detail.: 20}'). For a branch
    # added to a trained model from a zero start: at a fine-tune's lr it moves too little to matter
    # (docs/RESULTS.md part 6, stage 18).
    lr_mults: dict[str, float] = field(default_factory=dict)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    poly_power: float = 0.9
    aux_weight: float = 0.4
    # > 0: weight pixels by (pixels of their class in the batch) ** -class_balance, so rare
    # classes count more (0.5 = inverse square root; 0 = plain mean, the paper's loss).
    class_balance: float = 0.0
    # Where the loss is scored: "output" (the head's stride-4 grid, labels nearest-sampled; cheap on a
    # CPU) or "input" (the head's output bilinearly upsampled to the crop, as inference upsamples it),
    # which keeps one- or two-pixel structures (poles, sign posts) that stride-4 sampling drops, or
    # "points": the input resolution scored on ``loss_points`` pixels per image drawn class-balanced
    # (``class_balance``), so thin classes are scored at full resolution at a CPU's cost (the
    # auxiliary head stays at its own grid).
    loss_resolution: str = "output"
    loss_points: int = 8192
    # > 0 ("points" only): add this weight x cross-entropy over class_ce_scale x the class scores
    # cos(p, m_c), which also pushes a pixel away from the classes it is confused with.
    class_ce_weight: float = 0.0
    class_ce_scale: float = 16.0
    # true: that cross-entropy's softmax runs over the classes labelled in the batch's points only (a pixel
    # competes with what shares its images, not with near-synonyms from other datasets in the union).
    class_ce_present: bool = False
    # > 0 (property models): add this weight x 1 - cos(activations, the starting model's activations) over
    # every output pixel (prolab.scoring.anchor_loss). The starting model (init_from or the model passed
    # in) is kept frozen beside the trained one; a counterweight to losses that move the property
    # activations off the descriptions of classes the model never trained on (docs/RESULTS.md part 6).
    anchor_weight: float = 0.0
    # Train the decode and auxiliary heads only, on frozen-backbone features computed once per image
    # variant (prolab.feature_bank): each source's images at ``head_scales`` (a source entry may set its
    # own ``head_scales``), mirrored too with ``flip``; crops of ``crop_size`` are cut from the cached
    # maps, so there is no colour jitter and no scale between the listed ones. On 2 CPU threads a step of
    # 8 crops at 2,048 points takes 1.05-1.1 s (the whole network at 8,192 points: 3.5-4.5 s). Kept in
    # memory (float16) and, with ``data_cache_dir``, on disk. One process only.
    head_only: bool = False
    head_scales: list[float] = field(default_factory=lambda: [1.0])
    grad_clip: float | None = 5.0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    seed: int = 0
    threads: int | None = None
    num_workers: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    resume: bool = False
    stop_after: int | None = None  # end early at this step (after its checkpoint); resume later
    init_from: str | None = None  # start from a saved model (fine-tuning / a second stage)
    progress: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProLabError(f"Unknown training config keys: {', '.join(unknown)}.")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        self._check_types()
        if self.supervision not in ("property", "category"):
            raise ProLabError(f"supervision must be property or category, got {self.supervision!r}.")
        if self.loss_resolution not in ("output", "input", "points"):
            raise ProLabError(f"loss_resolution must be output, input or points, got {self.loss_resolution!r}.")
        if self.class_ce_weight and self.loss_resolution != "points":
            raise ProLabError("class_ce_weight needs loss_resolution: points.")
        if self.anchor_weight < 0 or (self.anchor_weight > 0 and self.supervision != "property"):
            raise ProLabError(f"anchor_weight must be >= 0 and needs property supervision, got "
                              f"{self.anchor_weight!r} with {self.supervision} supervision.")
        if self.loss_points < 1 or not self.class_ce_scale > 0:
            raise ProLabError("loss_points must be >= 1 and class_ce_scale > 0.")
        for spec in [{"head_scales": self.head_scales}] + [x for x in self.sources if isinstance(x, dict)]:
            scales = spec.get("head_scales", [1.0])
            if (not isinstance(scales, list) or not scales
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 8 for v in scales)):
                raise ProLabError(f"head_scales must be a non-empty list of numbers in (0, 8], got {scales!r}.")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ProLabError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}.")
        for name in ("steps", "batch_size", "crop_size", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ProLabError(f"{name} must be >= 1, got {getattr(self, name)!r}.")
        if self.crop_size % 32:
            raise ProLabError(f"crop_size must be a multiple of 32, got {self.crop_size}.")
        if self.input_size is not None and (self.input_size < 32 or self.input_size % 32):
            raise ProLabError(f"input_size must be a multiple of 32 (>= 32), got {self.input_size!r}.")
        if not self.sources:
            raise ProLabError("No training sources given.")
        if not self.backbone_lr_mult >= 0:
            raise ProLabError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult!r}.")
        if not isinstance(self.lr_mults, dict) or not all(
                isinstance(k, str) and k and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and v >= 0 for k, v in self.lr_mults.items()):
            raise ProLabError("lr_mults maps parameter-name prefixes (e.g. decode_head.detail.) to numbers >= 0, "
                              f"got {self.lr_mults!r}.")
        if self.class_balance < 0:
            raise ProLabError(f"class_balance must be >= 0, got {self.class_balance!r}.")
        if not 0 < self.scale_min <= self.scale_max:
            raise ProLabError("Need 0 < scale_min <= scale_max.")
        if not self.lr > 0:
            raise ProLabError(f"lr must be > 0, got {self.lr!r}.")
        if not 0 <= self.camera_shift <= 1:
            raise ProLabError(f"camera_shift is a probability between 0 and 1, got {self.camera_shift!r}.")
        if self.head_only and self.camera_shift:
            raise ProLabError("head_only trains on features cached from the unchanged images: set camera_shift: 0.")
        for name in ("weight_decay", "warmup_steps", "poly_power", "aux_weight", "jitter", "num_workers"):
            if getattr(self, name) < 0:
                raise ProLabError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if not 0 <= self.teacher_threshold <= 1:
            raise ProLabError(f"teacher_threshold must be between 0 and 1, got {self.teacher_threshold!r}.")
        for name in ("threads", "stop_after", "k", "short_side"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ProLabError(f"{name} must be >= 1, got {getattr(self, name)!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ProLabError(f"grad_clip must be > 0 (or null: off), got {self.grad_clip!r}.")
        self._check_model_options()

    def _check_types(self) -> None:
        """Numbers must be finite numbers of the field's kind (``--set steps=abc``, ``--lr nan`` are
        mistakes, not crashes later on)."""
        kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
        for f in dataclasses.fields(self):
            base, optional = f.type.split(" | ")[0], f.type.endswith("| None")
            value = getattr(self, f.name)
            if base not in kinds or (value is None and optional):
                continue
            ok = isinstance(value, kinds[base]) and (base == "bool" or not isinstance(value, bool))
            if ok and isinstance(value, float) and not math.isfinite(value):
                ok = False
            if not ok:
                what = {"float": "a finite number", "int": "a whole number", "bool": "true or false",
                        "str": "a string"}[base]
                raise ProLabError(f"{f.name} must be {what}{' or null' if optional else ''}, got {value!r}.")

    def _check_model_options(self) -> None:
        """``model`` holds SegmenterConfig fields the trainer does not set itself, with valid values."""
        if not isinstance(self.model, dict):
            raise ProLabError(f"model must be a mapping of model settings, got {self.model!r}.")
        reserved = sorted(set(self.model) & set(TRAINER_SET_MODEL_KEYS))
        if reserved:
            hint = " (the inference size is the config's top-level input_size)" if reserved[0] == "input_size" else ""
            raise ProLabError(f"model.{reserved[0]} is set by the trainer (from the label space, supervision "
                              f"and crop size); remove it{hint}.")
        for f in dataclasses.fields(SegmenterConfig):  # a plain-typed setting must have its default's type
            value, default = self.model.get(f.name), f.default
            if f.name in self.model and isinstance(default, (bool, int, float, str)):
                kinds = (int, float) if isinstance(default, float) else (type(default),)
                if not isinstance(value, kinds) or (isinstance(value, bool) and not isinstance(default, bool)):
                    what = {"bool": "true or false", "int": "a whole number", "float": "a number",
                            "str": "a string"}[type(default).__name__]
                    raise ProLabError(f"model.{f.name} must be {what}, got {value!r}.")
        SegmenterConfig.from_dict(dict(self.model))  # unknown keys and bad values: a ProLabError


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                **explicit: Any) -> TrainConfig:
    """Config file (YAML or JSON) + ``key=value`` overrides (values parsed as YAML) + explicit kwargs.

    Dotted keys reach into dict fields, e.g. ``model.decoder_channels=64``.
    """
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ProLabError(f"Training config not found: {p}")
        try:
            data = yaml.safe_load(read_text(p, "The training config")) or {}
        except yaml.YAMLError as exc:
            raise ProLabError(f"{p} is not valid YAML/JSON: {exc}") from None
        except RecursionError:
            raise ProLabError(f"{p} is nested too deeply to be read.") from None
        except UnicodeDecodeError as exc:
            raise ProLabError(f"{p} is not UTF-8 text: {exc}") from None
        if not isinstance(data, dict):
            raise ProLabError(f"{p} must hold a mapping of settings.")
    for item in overrides or []:
        if "=" not in item:
            raise ProLabError(f"Override {item!r} must look like key=value.")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError):
            parsed = value
        target = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ProLabError(f"Override {item!r}: {part} is not a mapping.")
        target[leaf] = parsed
    data.update({k: v for k, v in explicit.items() if v is not None})
    return TrainConfig.from_dict(data)


# ---------------------------------------------------------------------------- data and targets
def build_target_space(cfg: TrainConfig, sources):
    """The target classes (UnionSpace) the labels are mapped into, without ``cfg.exclude_classes``."""
    space = _target_space(cfg, sources)
    return space.without(list(cfg.exclude_classes)) if cfg.exclude_classes else space


def _target_space(cfg: TrainConfig, sources):
    if cfg.label_space == "union":
        return load_union(cfg.descriptions_dir)
    path = Path(cfg.label_space)
    if path.is_file():
        ds = load_descriptions(path)
        return space_from_classes(ds.categories, ds)
    if cfg.label_space == "classes":
        names = sources[0].classes
        if any(s.classes != names for s in sources):
            raise ProLabError("label_space 'classes' needs sources with identical class lists.")
        return space_from_classes(names)
    raise ProLabError(f"label_space must be 'union', 'classes' or a descriptions JSON, got {cfg.label_space!r}.")


def build_dataset(cfg: TrainConfig, space=None):
    """Sources -> one cached, augmented :class:`SegmentationDataset` in the target space."""
    sources = [read_source(s, cfg.data_root, cfg.split, teacher=cfg.use_teacher) for s in cfg.sources]
    space = space or build_target_space(cfg, sources)
    aug = AugmentConfig(cfg.crop_size, cfg.scale_min, cfg.scale_max, cfg.flip, cfg.jitter, cfg.jitter, cfg.jitter,
                        camera_prob=cfg.camera_shift)
    repeats = [int(s.get("repeat", 1)) if isinstance(s, dict) else 1 for s in cfg.sources]
    ds = SegmentationDataset(sources, space, aug, short_side=cfg.short_side,
                             teacher_threshold=cfg.teacher_threshold, use_teacher=cfg.use_teacher,
                             seed=cfg.seed, cache_dir=cfg.data_cache_dir, workers=max(1, cfg.threads or 2),
                             repeats=repeats)
    return ds, space


def head_scales(cfg: TrainConfig) -> list[list[float]]:
    """Each source's ``head_scales`` (its own entry's, else the config's)."""
    return [[float(v) for v in (s.get("head_scales", cfg.head_scales) if isinstance(s, dict) else cfg.head_scales)]
            for s in cfg.sources]


def build_model(cfg: TrainConfig, space, encoder=None):
    """A fresh segmenter for the target space (property: a K-Means label space is built first)."""
    enc_id, template = cfg.encoder or DEFAULT_ENCODER, cfg.template or DEFAULT_TEMPLATE
    options = dict(cfg.model)
    if cfg.supervision == "property":
        encoder = encoder or TextEncoder(enc_id, template=template, cache_dir=cfg.embedding_cache_dir)
        k = min(cfg.k, space.descriptions.num_sentences)
        labelspace = LabelSpace.build(space.descriptions, encoder, k=k, seed=cfg.seed)
        mcfg = SegmenterConfig(supervision="property", embed_dim=labelspace.dim,
                               encoder_id=labelspace.encoder_id, template=labelspace.template,
                               input_size=_input_size(cfg), **options)
        return PropertySegmenter(mcfg, label_space=labelspace)
    mcfg = SegmenterConfig(supervision="category", num_classes=space.num_targets,
                           class_names=space.class_names, input_size=_input_size(cfg), **options)
    return PropertySegmenter(mcfg)


def load_initial_model(cfg: TrainConfig, space):
    """A saved model to continue training from; its classes must be the target classes in order.

    The config's ``model`` settings apply on top of the saved model's where a fine-tune may change them
    (``detail_channels``, whose new branch starts at zero so the outputs stay the saved model's until
    training moves it, and ``backbone_options`` ``freeze_stages`` / ``freeze_bn``); other changes are refused
    (:func:`_with_model_settings`).
    """
    model = PropertySegmenter.from_pretrained(cfg.init_from, score_offsets=False)
    if cfg.model:
        model = _with_model_settings(model, cfg.model, cfg.init_from)
    if model.config.supervision != cfg.supervision:
        raise ProLabError(f"init_from {cfg.init_from} is a {model.config.supervision} model, but the "
                          f"config trains {cfg.supervision} supervision.")
    if space is not None and [c.casefold() for c in model.class_names] != [c.casefold() for c in space.class_names]:
        raise ProLabError(f"The classes of {cfg.init_from} differ from the training label space; "
                          "build a new model instead of init_from.")
    if cfg.input_size is not None:
        model.config.input_size = _input_size(cfg)
    return model  # loaded without score offsets: they were fitted for the starting weights


#: Model settings a fine-tune may change from its starting model's: they keep every saved tensor and its meaning
#: (a detail branch is added from a zero start; freezing only decides what trains).
FINE_TUNE_MODEL_SETTINGS = ("detail_channels",)
FINE_TUNE_BACKBONE_OPTIONS = ("freeze_stages", "freeze_bn")


def _with_model_settings(model: PropertySegmenter, settings: dict[str, Any], source: str) -> PropertySegmenter:
    """``model`` rebuilt with ``settings`` over its config (``backbone_options`` merged key by key) and its
    weights copied in. Only :data:`FINE_TUNE_MODEL_SETTINGS` and :data:`FINE_TUNE_BACKBONE_OPTIONS` may
    differ from the saved config: anything else (the input normalisation, the temperature, the
    architecture) would change what the saved weights compute."""
    current = model.config.to_dict()
    merged = {**current, **settings}
    merged["backbone_options"] = {**current.get("backbone_options", {}), **settings.get("backbone_options", {})}
    merged.setdefault("detail_channels", 0)
    before = {**current, "detail_channels": current.get("detail_channels", 0)}
    changes = {k: (before.get(k), v) for k, v in merged.items() if k != "backbone_options" and before.get(k) != v}
    options = {k: (before["backbone_options"].get(k), v) for k, v in merged["backbone_options"].items()
               if before["backbone_options"].get(k) != v}
    refused = sorted(set(changes) - set(FINE_TUNE_MODEL_SETTINGS)) + \
        sorted(f"backbone_options.{k}" for k in set(options) - set(FINE_TUNE_BACKBONE_OPTIONS))
    if refused:
        raise ProLabError(f"The config's model settings change {', '.join(refused)} of {source}; a fine-tune "
                          f"(init_from) may change only {', '.join(FINE_TUNE_MODEL_SETTINGS)} and backbone_options."
                          f"{'/'.join(FINE_TUNE_BACKBONE_OPTIONS)}: remove the others or train a new model.")
    if not changes and not options:
        return model
    new = PropertySegmenter(SegmenterConfig.from_dict(merged), model.label_space, load_backbone_weights=False)
    state, target = model.state_dict(), new.state_dict()
    if changes.get("detail_channels", (0, 0))[0]:  # an existing branch resized: its tensors would not fit
        raise ProLabError(f"{source} already has a detail branch of {changes['detail_channels'][0]} channels; "
                          "train a new model to change its width.")
    new.load_state_dict({**target, **state}, strict=True)
    log.info("init_from %s with changed model settings %s", source,
             {**changes, **{f"backbone_options.{k}": v for k, v in options.items()}})
    return new.eval()


def _input_size(cfg: TrainConfig) -> int:
    if cfg.input_size is not None:
        return int(cfg.input_size)
    return max(32, int(math.ceil(cfg.short_side / 32) * 32))


# ---------------------------------------------------------------------------- loss
class LossTargets:
    """What the loss needs besides the network output: the property space (property models)."""

    def __init__(self, model, device: torch.device, class_balance: float = 0.0, points: int = 8192,
                 class_ce_weight: float = 0.0, class_ce_scale: float = 16.0, class_ce_present: bool = False):
        self.supervision = model.config.supervision
        self.class_balance = class_balance
        self.points, self.class_ce_weight, self.class_ce_scale = points, class_ce_weight, class_ce_scale
        self.class_ce_present = class_ce_present
        self.temperature = model.config.temperature
        self.centers = self.multihot = None
        if self.supervision == "property":
            if model.label_space is None:
                raise ProLabError("A property model needs a label space to train.")
            self.centers = torch.as_tensor(model.label_space.centers, dtype=torch.float32, device=device)
            self.multihot = torch.as_tensor(model.label_space.class_matrix, dtype=torch.float32, device=device)


def compute_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, targets: LossTargets,
                 aux_weight: float = 0.4, resolution: str = "output") -> torch.Tensor:
    """Main loss (+ ``aux_weight`` x auxiliary loss), scored at ``resolution`` (see TrainConfig).

    Property models: :func:`prolab.scoring.prolab_loss`; category models: cross-entropy (255 ignored).
    """
    loss = _single_loss(outputs["out"], labels, targets, resolution)
    if outputs.get("aux") is not None and aux_weight > 0:
        aux_resolution = "output" if resolution == "points" else resolution
        loss = loss + aux_weight * _single_loss(outputs["aux"], labels, targets, aux_resolution)
    return loss


def _single_loss(out: torch.Tensor, labels: torch.Tensor, targets: LossTargets,
                 resolution: str = "output") -> torch.Tensor:
    out = out.float()
    if resolution == "points":
        if targets.supervision == "property":
            return prolab_point_loss(out, labels, targets.centers, targets.multihot, targets.temperature,
                                     targets.points, targets.class_balance, targets.class_ce_weight,
                                     targets.class_ce_scale, targets.class_ce_present)
        logits, y = point_samples(out, labels, targets.points, targets.class_balance)
        return F.cross_entropy(logits, y) if len(y) else out.sum() * 0.0
    if resolution == "input" and targets.supervision == "property":
        return prolab_loss(out, labels, targets.centers, targets.multihot, targets.temperature,
                           class_balance=targets.class_balance, upsample=True)
    if resolution == "input" and out.shape[-2:] != labels.shape[-2:]:
        out = F.interpolate(out, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if out.shape[-2:] != labels.shape[-2:]:
        # Scoring at the output resolution (stride 4) with nearest-sampled labels keeps the
        # per-pixel K-way sigmoid cheap on a CPU; ignore stays ignore.
        labels = F.interpolate(labels[:, None].float(), size=out.shape[-2:], mode="nearest")[:, 0].long()
    if targets.supervision == "category":
        valid = labels != 255
        if not bool(valid.any()):
            return out.sum() * 0.0
        per_pixel = F.cross_entropy(out, labels, ignore_index=255, reduction="none")[valid]
        return weighted_mean(per_pixel, labels[valid], targets.class_balance)
    return prolab_loss(out, labels, targets.centers, targets.multihot, targets.temperature,
                       class_balance=targets.class_balance)


# ---------------------------------------------------------------------------- optimiser
def parameter_groups(model, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weights but not on biases / norms; the backbone's learning rate
    scaled by ``backbone_lr_mult``, any parameter's by the longest ``lr_mults`` prefix of its name.
    Frozen parameters are left out. The first group is the head's."""
    groups: dict[tuple[float, bool], list] = {}
    unused = set(cfg.lr_mults)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = cfg.backbone_lr_mult if name.startswith("backbone.") else 1.0
        prefixes = [k for k in cfg.lr_mults if name.startswith(k)]
        if prefixes:
            prefix = max(prefixes, key=len)
            mult = float(cfg.lr_mults[prefix])
            unused.difference_update(prefixes)
        groups.setdefault((mult, p.ndim > 1), []).append(p)
    if unused:  # a typo would otherwise train at the plain rate without a word
        raise ProLabError(f"lr_mults names no trainable parameter: {', '.join(sorted(unused))}.")
    order = sorted(groups, key=lambda key: (key[0] != 1.0, not key[1]))
    return [{"params": groups[key], "lr_mult": key[0], "weight_decay": cfg.weight_decay if key[1] else 0.0}
            for key in order]


# ---------------------------------------------------------------------------- schedule
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then poly decay ``(1 - t)^power`` to 0 at ``cfg.steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return max(0.0, 1.0 - t) ** cfg.poly_power


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, indices: list[int]):
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(directory: Path, model, optimizer, scaler, step: int, cfg: TrainConfig,
                    seconds: float = 0.0) -> None:
    """Model (save_pretrained) + optimizer, scaler, RNG, step and the seconds trained so far (every chunk),
    written via a temp folder."""
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    m = model.module if hasattr(model, "module") else model
    m.save_pretrained(tmp)
    state = {"step": torch.tensor(step), "seconds": torch.tensor(seconds, dtype=torch.float64),
             "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(),
             "config": json.dumps(cfg.to_dict())}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    torch.save(state, tmp / STATE_FILE)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)


def load_checkpoint(directory: Path, model, optimizer, scaler) -> tuple[int, float]:
    """Restore model weights, optimizer, scaler and RNG; returns the step to continue from and the seconds
    trained before it (0 for checkpoints written before they were recorded)."""
    if not (directory / STATE_FILE).is_file():
        raise ProLabError(f"No checkpoint to resume from in {directory}.")
    m = model.module if hasattr(model, "module") else model
    saved = PropertySegmenter.from_pretrained(directory)
    m.load_state_dict(saved.state_dict())
    try:
        state = torch.load(directory / STATE_FILE, weights_only=True)
    except Exception as exc:
        raise ProLabError(f"Corrupt training state {directory / STATE_FILE}: {exc}") from None
    fresh = [g["lr_mult"] for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:  # other parameter groups: lr_mults, backbone_lr_mult or freezing changed
        raise ProLabError(f"The checkpoint in {directory} was trained with other learning-rate groups than this "
                          f"config gives ({exc}); resume with the config it was started with.") from None
    for group, mult in zip(optimizer.param_groups, fresh):  # torch restores the saved groups' settings
        if group.get("lr_mult") != mult:
            raise ProLabError(f"The checkpoint in {directory} was trained with other learning-rate multipliers "
                              "(lr_mults, backbone_lr_mult) than this config gives; resume with the config it "
                              "was started with.")
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if "seconds" not in state:
        log.warning("the checkpoint in %s predates the time count: train_summary.json's seconds will cover only "
                    "the chunks from here on", directory)
    return int(state["step"]), float(state.get("seconds", 0.0))


# ---------------------------------------------------------------------------- main loop
def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.precision == "fp32":
        return None
    if cfg.precision == "fp16":
        return torch.float16
    return torch.bfloat16


def train(cfg: TrainConfig, model=None, dataset=None) -> Path:
    """Run (or resume) training; returns the output folder holding the final model.

    ``model`` and ``dataset`` may be passed in (tests); otherwise they are built from ``cfg``.
    """
    cfg.validate()
    if cfg.anchor_weight > 0 and model is None and not cfg.init_from:
        raise ProLabError("anchor_weight keeps a fine-tune near its starting model; set init_from (a new model's "
                          "random weights are no reference).")
    device, dist_info = _start(cfg)
    out = Path(cfg.out_dir)
    model, dataset = _prepare(cfg, model, dataset, out, dist_info)
    model.drop_score_offsets()  # fitted for other weights (prolab.calibration); the trained model has none
    model.to(device).train()
    run = _Run(cfg, model, dataset, device, dist_info, out)
    try:
        run.loop()
    finally:
        run.close()
    if dist_info.main:
        _finish(cfg, model, dataset, device, dist_info, out, run.step, run.seconds(), time.time() - run.t0)
    barrier(dist_info)
    close_distributed(dist_info)
    return out


def _start(cfg: TrainConfig) -> tuple[torch.device, DistInfo]:
    """Threads, device, process group and seed."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels once
    dist_info = init_distributed(device)
    torch.manual_seed(cfg.seed + dist_info.rank)
    return device, dist_info


def _prepare(cfg: TrainConfig, model, dataset, out: Path, dist_info: DistInfo):
    """The dataset and the model (fresh, ``init_from``, or given), with the run's config and mapping saved."""
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    space = None
    if dataset is None:
        dataset, space = build_dataset(cfg)
    if model is None:
        model = load_initial_model(cfg, space) if cfg.init_from else build_model(cfg, space)
    if space is not None and space.mapping and dist_info.main:
        # Evaluation maps each dataset's classes into the model's classes with this table.
        (out / MAPPING_FILE).write_text(json.dumps(space.mapping, indent=1, ensure_ascii=False))
    return model, dataset


def _trim_metrics(path: Path, through_step: int) -> None:
    """Keep only the log lines up to ``through_step``: a run killed after its last checkpoint had already logged
    the steps it redoes on ``--resume``. A fresh run (``through_step`` 0) moves an old log aside to
    ``metrics.jsonl.prev`` rather than appending to it or deleting it."""
    if not path.is_file() or not path.stat().st_size:
        return
    if through_step == 0:
        prev = path.with_name(path.name + ".prev")
        os.replace(path, prev)
        log.warning("a fresh run in %s: the old loss log is kept as %s", path.parent, prev.name)
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            dropped += 1  # a line cut off by the kill
            continue
        if isinstance(step, (int, float)) and step > through_step:
            dropped += 1
            continue
        kept.append(line + "\n")
    if dropped:
        log.info("resuming at step %d: %d log lines written after the checkpoint dropped", through_step, dropped)
    write_text_atomic(path, "".join(kept))


class _Run:
    """One training run's moving parts: wrapped model, loss targets, optimiser, sampler, logs."""

    def __init__(self, cfg: TrainConfig, model, dataset, device: torch.device, dist_info: DistInfo, out: Path):
        self.cfg, self.model, self.dataset, self.device, self.dist = cfg, model, dataset, device, dist_info
        self.bank = None
        if cfg.head_only:
            if dist_info.world > 1:
                raise ProLabError("head_only training runs in one process; start it without torchrun.")
            if model.config.detail_channels:  # its feature cache is keyed without the stride-2 map, and that map
                # alone is larger than the four pyramid maps together
                raise ProLabError("head_only does not support a model with a detail branch (detail_channels): "
                                  "train the whole network (head_only: false).")
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        self.targets = LossTargets(model, device, cfg.class_balance, cfg.loss_points, cfg.class_ce_weight,
                                   cfg.class_ce_scale, cfg.class_ce_present)
        self.ddp_model = model
        if dist_info.world > 1:
            self.ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)
        self.amp_dtype = _autocast_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ckpt = out / CHECKPOINT_DIR
        self.anchor = _frozen_copy(model) if cfg.anchor_weight > 0 else None  # before a resume loads weights
        self.step, self.seconds_before = self._resume()
        if cfg.head_only:  # after the resume: the features are those of the checkpoint's backbone
            self.bank = FeatureBank.build(model, dataset, head_scales(cfg), cfg.flip, cfg.data_cache_dir)
            log.info("head_only: %d feature variants", len(self.bank))
        self.sampler = DistributedSampler(dataset, num_replicas=dist_info.world, rank=dist_info.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.per_epoch = len(self.sampler) // cfg.batch_size
        if self.per_epoch < 1:
            raise ProLabError(f"Too few images ({len(dataset)}) for batch size {cfg.batch_size} x "
                              f"{dist_info.world} processes.")
        self.bar = None
        if dist_info.main and cfg.progress:
            self.bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                            mininterval=1.0 if sys.stderr.isatty() else 30.0)
        self.metrics = None
        if dist_info.main:
            _trim_metrics(out / METRICS_FILE, self.step)
            self.metrics = open(out / METRICS_FILE, "a", encoding="utf-8")
        self.t0, self.run_loss, self.n_loss, self.run_anchor = time.time(), 0.0, 0, 0.0

    def _resume(self) -> tuple[int, float]:
        if self.cfg.resume and (self.ckpt / STATE_FILE).is_file():
            step, seconds = load_checkpoint(self.ckpt, self.model, self.optimizer, self.scaler)
            log.info("resumed from %s at step %d", self.ckpt, step)
            return step, seconds
        if self.cfg.resume:
            log.warning("--resume: no checkpoint in %s, starting from scratch", self.ckpt)
        return 0, 0.0

    def seconds(self) -> float:
        """Seconds trained over every chunk of the run: the checkpoint's count plus this process's."""
        return self.seconds_before + time.time() - self.t0

    def _done(self) -> bool:
        cfg = self.cfg
        return self.step >= cfg.steps or bool(cfg.stop_after and self.step >= cfg.stop_after)

    def loop(self) -> None:
        """Epochs of batches until ``steps`` (or ``stop_after``); a resumed run draws the same batches."""
        cfg = self.cfg
        while self.bank is not None and not self._done():
            # One generator per step: a resumed run cuts exactly the crops an uninterrupted one would.
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
            feats, labels = self.bank.batch(cfg.batch_size, cfg.crop_size, gen)
            self._train_step(feats, labels)
            self._log(self.step // max(1, len(self.bank) // cfg.batch_size))
            self._checkpoint()
        while not self._done():
            epoch, offset = divmod(self.step, self.per_epoch)
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            indices = list(self.sampler)[offset * cfg.batch_size: self.per_epoch * cfg.batch_size]
            # Own generator: creating a loader must not consume the global RNG (dropout), so a
            # resumed run draws exactly what an uninterrupted one would.
            loader = torch.utils.data.DataLoader(self.dataset, batch_size=cfg.batch_size,
                                                 sampler=_ListSampler(indices), drop_last=True,
                                                 num_workers=cfg.num_workers,
                                                 generator=torch.Generator().manual_seed(cfg.seed + epoch))
            for images, labels in loader:
                self._train_step(images, labels)
                self._log(epoch)
                self._checkpoint()
                if self._done():
                    break

    def _train_step(self, images: torch.Tensor | list[torch.Tensor], labels: torch.Tensor) -> None:
        """One optimiser step on a batch of images, or (head_only) of cached backbone features."""
        cfg, opt = self.cfg, self.optimizer
        for g in opt.param_groups:
            g["lr"] = cfg.lr * g.get("lr_mult", 1.0) * lr_factor(self.step, cfg)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            if isinstance(images, list):
                images = [f.to(self.device) for f in images]
                outputs = self.model.decode(images, tuple(labels.shape[-2:]), return_aux=True)
            else:
                images = self.model.normalize(images.to(self.device, non_blocking=True))
                outputs = self.ddp_model(images, return_aux=True)
            if self.anchor is not None:
                with torch.no_grad():
                    reference = (self.anchor.decode(images, tuple(labels.shape[-2:])) if isinstance(images, list)
                                 else self.anchor(images))["out"]
        loss = compute_loss(outputs, labels, self.targets, cfg.aux_weight, cfg.loss_resolution)
        anchor_value = None
        if self.anchor is not None:
            anchor_term = anchor_loss(outputs["out"].float(), reference.float(), self.targets.centers,
                                      self.targets.temperature)
            loss, anchor_value = loss + cfg.anchor_weight * anchor_term, float(anchor_term.detach())
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        self.step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ProLabError(f"Loss became {value} at step {self.step}; lower the learning rate.")
        self.run_loss, self.n_loss = self.run_loss + value, self.n_loss + 1
        if anchor_value is not None:
            self.run_anchor += anchor_value
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{value:.4f}")

    def _log(self, epoch: int) -> None:
        cfg = self.cfg
        if self.metrics is None or not (self.step % cfg.log_every == 0 or self.step == cfg.steps):
            return
        line = {"step": self.step, "epoch": epoch, "loss": self.run_loss / self.n_loss,
                "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": round(self.seconds(), 2)}
        if self.anchor is not None:  # the unweighted anchor term, part of "loss": how far the activations moved
            line["anchor"] = self.run_anchor / self.n_loss
        self.metrics.write(json.dumps(line) + "\n")
        self.metrics.flush()
        self.run_loss, self.n_loss, self.run_anchor = 0.0, 0, 0.0

    def _checkpoint(self) -> None:
        cfg = self.cfg
        if self.step % cfg.checkpoint_every == 0 or self.step in (cfg.steps, cfg.stop_after):
            if self.dist.main:
                save_checkpoint(self.ckpt, self.model, self.optimizer, self.scaler, self.step, cfg, self.seconds())
            barrier(self.dist)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics is not None:
            self.metrics.close()


def _frozen_copy(model: PropertySegmenter) -> PropertySegmenter:
    """The starting model, frozen: the reference of the anchor loss.

    It runs in the trained model's mode (batch-norm layers that train use the batch's statistics, frozen ones
    their running statistics) with dropout off: an eval-mode copy would differ from identical weights by the
    batch-norm regime alone (1 - cos about 0.1 on the shipped model), more than a whole fine-tune's drift."""
    reference = copy.deepcopy(model).train()
    for m in reference.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def _finish(cfg: TrainConfig, model, dataset, device: torch.device, dist_info: DistInfo, out: Path,
            step: int, seconds: float, last_chunk_seconds: float) -> None:
    """Save the final model and a summary of the run (steps, time over every --resume chunk, hardware)."""
    model.eval()
    model.save_pretrained(out)
    with open(out / "train_summary.json", "w") as fh:
        json.dump({"steps": step, "world_size": dist_info.world, "seconds": round(seconds, 1),
                   "last_chunk_seconds": round(last_chunk_seconds, 1),
                   "device": str(device), "threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count(), "torch": torch.__version__,
                   "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                   "images": len(dataset)}, fh, indent=1)

