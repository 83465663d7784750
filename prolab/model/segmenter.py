"""``PropertySegmenter``: image -> per-pixel embeddings (property supervision) or class logits
(category baseline), with ``save_pretrained`` / ``from_pretrained`` checkpoints.

A checkpoint is a directory holding ``model.safetensors``, ``config.json`` (:class:`SegmenterConfig`)
and, for property models, ``labelspace/`` (the training :class:`~prolab.labelspace.LabelSpace`) and
optionally ``score_offsets.json`` (per-class score offsets fitted for these weights, :mod:`prolab.calibration`).
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prolab.calibration import OFFSETS_FILE, StaleOffsetsError, load_offsets, save_offsets, weights_fingerprint
from prolab.descriptions import apply_umask
from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace
from prolab.model.backbones import TransformersBackbone, build_backbone
from prolab.model.config import CONFIG_FILE, SegmenterConfig
from prolab.model.heads import AuxHead, FPNHead, resize_to

log = logging.getLogger(__name__)
WEIGHTS_FILE = "model.safetensors"
LABELSPACE_DIR = "labelspace"
OUTPUT_STRIDE = 4
SIZE_DIVISOR = 32


class PropertySegmenter(nn.Module):
    """Backbone + FPN decode head (+ optional auxiliary head).

    ``forward(x)`` takes normalised images (B, 3, H, W) with H and W multiples of 32 (see
    :meth:`normalize`) and returns ``{"out": (B, D or C, H/4, W/4)}``, plus ``"aux"``
    (B, D or C, H/16, W/16) from the stride-16 features while training or when ``return_aux=True``
    (resize the labels to each output's size, nearest, for the losses). ``return_features=True`` adds
    ``"features"``: the decode head's input to its final 1x1 conv (``out`` is an affine map of it).
    """

    def __init__(self, config: SegmenterConfig, label_space: LabelSpace | None = None,
                 load_backbone_weights: bool = True):
        super().__init__()
        config = copy.deepcopy(config)
        config.validate()
        if label_space is not None:
            if config.supervision != "property":
                raise ProLabError("A label space only applies to property-supervised models.")
            if label_space.dim != config.embed_dim:
                raise ProLabError(f"Label space dimension {label_space.dim} does not match the model's "
                                  f"embed_dim {config.embed_dim}.")
            config.encoder_id, config.template = label_space.encoder_id, label_space.template
        self.config = config
        self.label_space = label_space
        # {trained class: offset added to its score} (prolab.calibration); fitted for particular weights,
        # so training clears it (drop_score_offsets).
        self.score_offsets: dict[str, float] = {}
        self.score_offsets_note: str | None = None  # why a score_offsets.json beside the weights was not applied
        # weights_fingerprint of the weights file from_pretrained read (None: built here, or trained since)
        self.source_fingerprint: str | None = None
        self.backbone = build_backbone(config.backbone, config.backbone_options, config.backbone_config,
                                       load_weights=load_backbone_weights, stride2=config.detail_channels > 0)
        if isinstance(self.backbone, TransformersBackbone) and config.backbone_config is None:
            config.backbone_config = self.backbone.config_dict()
        channels = list(self.backbone.channels)
        self.decode_head = FPNHead(channels, config.decoder_channels, config.out_channels, ppm=config.ppm,
                                   detail_in=getattr(self.backbone, "stride2_channels", 0),
                                   detail_channels=config.detail_channels)
        self.aux_head = (AuxHead(channels[-2] if len(channels) > 1 else channels[-1], config.out_channels)
                         if config.aux_head else None)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ running
    @property
    def class_names(self) -> list[str]:
        """Training classes: the label space's (property) or the classifier's (category)."""
        if self.config.supervision == "category":
            return self.config.class_names or [f"class {i}" for i in range(self.config.num_classes)]
        return list(self.label_space.class_names) if self.label_space is not None else []

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 (0..255) or float (0..1) RGB -> the normalised input ``forward`` expects."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.pixel_mean.to(x.device)) / self.pixel_std.to(x.device)

    def forward(self, x: torch.Tensor, return_aux: bool | None = None,
                return_features: bool = False) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ProLabError(f"Expected images of shape (B, 3, H, W), got {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        if h % SIZE_DIVISOR or w % SIZE_DIVISOR:
            raise ProLabError(f"Image height and width must be multiples of {SIZE_DIVISOR}, got {h} x {w} "
                              "(pad the input; prolab.inference does this for you).")
        return self.decode(self.backbone(x), (h, w), return_aux, return_features)

    def decode(self, feats: list[torch.Tensor], image_size: tuple[int, int], return_aux: bool | None = None,
               return_features: bool = False) -> dict[str, torch.Tensor]:
        """The heads on backbone features ``feats`` of an input of ``image_size`` (H, W): what
        :meth:`forward` returns for that input. Head-only training runs it on cached features. With a
        detail branch (``config.detail_channels``) ``feats`` starts with the stride-2 map."""
        h, w = image_size
        out_size = (h // OUTPUT_STRIDE, w // OUTPUT_STRIDE)
        detail = None
        if self.config.detail_channels:
            detail, feats = feats[0], feats[1:]
        if return_features:  # the decode head's last 1x1 conv input, for low-rank re-scoring
            out, features = self.decode_head(feats, out_size, return_features=True, detail=detail)
            result = {"out": out, "features": features}
        else:
            result = {"out": self.decode_head(feats, out_size, detail=detail)}
        want_aux = self.training if return_aux is None else return_aux
        if self.aux_head is not None and want_aux:
            aux = self.aux_head(feats[-2] if len(feats) > 1 else feats[-1])
            # Single-level backbones give no stride-16 map; keep the documented aux resolution.
            result["aux"] = resize_to(aux, (h // 16, w // 16))
        return result

    def num_parameters(self, include_aux: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_aux and self.aux_head is not None:
            n -= sum(p.numel() for p in self.aux_head.parameters())
        return n

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``labelspace/`` into ``directory``.

        Files are written to a temporary folder first, so an interrupted save never leaves a
        half-written checkpoint under the final name.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=directory))
        try:
            state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            apply_umask(tmp / WEIGHTS_FILE)  # safetensors writes 0600
            self.config.save(tmp)
            if self.label_space is not None:
                self.label_space.save(tmp / LABELSPACE_DIR)
            if self.score_offsets:
                save_offsets(tmp, self.score_offsets, weights_fingerprint(state))
            if (directory / LABELSPACE_DIR).exists():
                shutil.rmtree(directory / LABELSPACE_DIR)
            # offsets fitted for weights that are no longer these must not survive the save
            (directory / OFFSETS_FILE).unlink(missing_ok=True)
            for item in tmp.iterdir():
                os.replace(item, directory / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    def drop_score_offsets(self) -> None:
        """Forget the score offsets, why a file of them was not applied and which file the weights came
        from: all describe other weights once these change (training)."""
        self.score_offsets, self.score_offsets_note, self.source_fingerprint = {}, None, None

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, device: str | torch.device = "cpu",
                        label_space: LabelSpace | None = None, score_offsets: bool = True) -> "PropertySegmenter":
        """Load a checkpoint from a local directory or a Hugging Face hub id; returns the model in eval mode.

        ``label_space`` overrides the saved one (e.g. a freshly edited space). ``score_offsets.json``, when
        present and fitted for these weights, becomes :attr:`score_offsets` (offsets of classes the label space
        lacks are dropped with a saved space passed in, refused with the model's own; a file fitted for other
        weights is not applied, with a warning and :attr:`score_offsets_note`; ``score_offsets=False`` skips the
        file, e.g. to fit it again). Missing files, corrupt or truncated weights and weights that do not fit
        the config raise :class:`ProLabError`. The first load in a process applies
        :func:`prolab.threads.apply_thread_policy` (a notebook's entry point).
        """
        ensure_thread_policy()
        directory = resolve_checkpoint(path_or_id)
        config = SegmenterConfig.load(directory)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ProLabError(f"{directory} has no {WEIGHTS_FILE}.")
        own_space = label_space is None
        if own_space and (directory / LABELSPACE_DIR).is_dir():
            label_space = LabelSpace.load(directory / LABELSPACE_DIR)
        if config.supervision == "property" and label_space is None:
            log.warning("%s has no label space; class scores need one from elsewhere.", directory)
        state = _read_weights(weights)
        model = cls(config, label_space, load_backbone_weights=False)
        _check_state(model, state, directory)
        model.load_state_dict(state, strict=True)
        model.source_fingerprint = weights_fingerprint(state)  # of the file's tensors, before any dtype cast
        if score_offsets and (directory / OFFSETS_FILE).is_file():
            names = set(model.class_names)
            try:
                offsets = load_offsets(directory, names if own_space else None, model.source_fingerprint)
            except StaleOffsetsError as exc:  # the weights work without them; say so where the model is shown
                log.warning("%s", exc)
                model.score_offsets_note, offsets = str(exc), {}
            model.score_offsets = {k: v for k, v in offsets.items() if k in names}
        return model.to(device).eval()


def ensure_thread_policy() -> None:
    """:func:`prolab.threads.apply_thread_policy` once per process (later calls keep what it set)."""
    from prolab import threads

    if not threads.applied_once():
        threads.apply_thread_policy()


def resolve_checkpoint(path_or_id: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id downloaded with ``huggingface_hub.snapshot_download``."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ProLabError(f"{path} is a file; a model is a directory with {WEIGHTS_FILE} and {CONFIG_FILE}.")
    text = str(path_or_id)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and "\\" not in text
    if not looks_like_hub_id:
        raise ProLabError(f"Model not found: {text} (not a directory, and not a Hugging Face id 'owner/name').")
    try:
        from huggingface_hub import snapshot_download  # lazy: only hub ids need it

        local = snapshot_download(repo_id=text, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, OFFSETS_FILE,
                                                                f"{LABELSPACE_DIR}/*"])
    except Exception as exc:  # network, auth, missing repo, offline mode: all are user-fixable
        raise ProLabError(f"Cannot download model {text!r} from the Hugging Face hub "
                          f"({exc.__class__.__name__}: {exc}). The CLI and app start offline (HF_HUB_OFFLINE=1): "
                          "set HF_HUB_OFFLINE=0 to download, or pass a local directory.") from None
    return Path(local)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for bad headers and short files
        raise ProLabError(f"Corrupt or truncated weights file {path}: {exc}") from None


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} tensors with wrong shapes (e.g. {'; '.join(wrong[:3])})")
    if problems:
        raise ProLabError(f"Weights in {directory} do not match its {CONFIG_FILE}: " + ", ".join(problems) + ".")
