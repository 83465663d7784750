"""``SegmenterConfig``: everything needed to rebuild a :class:`PropertySegmenter`, stored as config.json."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from prolab.encoder import DEFAULT_ENCODER, DEFAULT_TEMPLATE
from prolab.errors import ProLabError
from prolab.limits import read_json
from prolab.scoring import DEFAULT_TEMPERATURE

CONFIG_FILE = "config.json"
CONFIG_VERSION = 1
COMPACT_CNN = "compact-cnn"
SUPERVISIONS = ("property", "category")
#: ImageNet statistics on the 0..1 scale; ``PropertySegmenter.normalize`` divides uint8 input by 255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegmenterConfig:
    """Architecture, output space and preprocessing of a segmenter.

    ``backbone`` is ``"compact-cnn"`` (defined in :mod:`prolab.model.backbones`) or a Hugging Face id /
    local path of any ``transformers`` vision backbone. ``backbone_options`` are passed to the backbone
    (compact CNN: ``width``; transformers: ``out_features``, ``pretrained``). ``backbone_config`` is filled
    in when a transformers backbone is first built so that saved models reload offline.
    """

    backbone: str = COMPACT_CNN
    backbone_options: dict[str, Any] = field(default_factory=dict)
    backbone_config: dict[str, Any] | None = None
    embed_dim: int = 384
    supervision: str = "property"
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    temperature: float = DEFAULT_TEMPERATURE
    encoder_id: str = DEFAULT_ENCODER
    template: str = DEFAULT_TEMPLATE
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 512
    decoder_channels: int = 96
    ppm: bool = True
    aux_head: bool = True
    # > 0: a detail branch of this width adds the backbone's stride-2 map (pixel-unshuffled to stride 4) to
    # the decode head's stride-4 features before its last convs, for structures a pixel or two wide
    # (EfficientNet-Lite only; 0: off, and then left out of config.json so that older ProLab reads the file).
    detail_channels: int = 0
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)
        self.pixel_std = tuple(float(v) for v in self.pixel_std)
        self.class_names = list(self.class_names)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ProLabError` for inconsistent settings."""
        if self.supervision not in SUPERVISIONS:
            raise ProLabError(f"supervision must be one of {SUPERVISIONS}, got {self.supervision!r}.")
        if self.supervision == "category":
            if self.num_classes < 1:
                raise ProLabError("A category model needs num_classes >= 1.")
            if self.class_names and len(self.class_names) != self.num_classes:
                raise ProLabError(
                    f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}.")
        if not isinstance(self.embed_dim, int) or self.embed_dim < 1:
            raise ProLabError(f"embed_dim must be a positive integer, got {self.embed_dim!r}.")
        if not self.temperature > 0:
            raise ProLabError(f"temperature must be > 0, got {self.temperature!r}.")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ProLabError("pixel_mean and pixel_std need 3 values each (std > 0).")
        if self.input_size < 32 or self.input_size % 32:
            raise ProLabError(f"input_size must be a multiple of 32, got {self.input_size}.")
        if self.decoder_channels < 8:
            raise ProLabError(f"decoder_channels must be >= 8, got {self.decoder_channels}.")
        if not isinstance(self.detail_channels, int) or isinstance(self.detail_channels, bool) \
                or self.detail_channels < 0:
            raise ProLabError(f"detail_channels must be a whole number >= 0, got {self.detail_channels!r}.")
        if self.version > CONFIG_VERSION:
            raise ProLabError(f"This model config is version {self.version}; this ProLab reads up to "
                              f"{CONFIG_VERSION}. Update ProLab.")

    @property
    def out_channels(self) -> int:
        """Channels of the main output: D (property) or C (category)."""
        return self.embed_dim if self.supervision == "property" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pixel_mean"], d["pixel_std"] = list(self.pixel_mean), list(self.pixel_std)
        if not d["detail_channels"]:
            del d["detail_channels"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmenterConfig":
        if not isinstance(data, dict):
            raise ProLabError("A model config must be a JSON object.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProLabError(f"Unknown model config keys: {', '.join(unknown)}.")
        try:
            return cls(**data)
        except ProLabError:
            raise
        except (TypeError, ValueError) as exc:
            raise ProLabError(f"Invalid model config: {exc}") from None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "SegmenterConfig":
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise ProLabError(f"{directory} has no {CONFIG_FILE}; it is not a ProLab model directory.")
        data = read_json(path, "This model directory's configuration")
        if not isinstance(data, dict):
            raise ProLabError(f"This model directory's {CONFIG_FILE} must hold a JSON object of settings.")
        return cls.from_dict(data)
