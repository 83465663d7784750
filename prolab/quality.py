"""The speed/quality dial: one setting (``fast`` / ``default`` / ``accurate``) shared by the CLI
(``--quality``) and the app, turned into a backend and the keyword arguments of
:func:`prolab.inference.embed_image`.

The steps were chosen from ``python -m bench.quality_dial`` (mIoU and ms per image on MSRC-v2 and
CamVid val, docs/RESULTS.md): *fast* runs the ONNX graph at a smaller input, *default* the eager model at
its trained input size, *accurate* averages four scales (0.75x-1.5x the input size), each with its mirror
image: the candidate with the largest CamVid gain (thin street classes gain most from the larger scales);
*default* and *accurate* upsample the class scores with the image as guide (a fast guided filter: class
boundaries on the image's edges; on CamVid val +0.62 mIoU at *default*, MSRC-v2 -0.12, about 10 % more time per
image, docs/RESULTS.md); *fast* keeps bilinear upsampling. Every scorer without an explicit choice
(:func:`prolab.evaluate.evaluate`, :class:`prolab.eval_cache.EvalCache`, ``prolab predict``, the app) takes the
default step's (:func:`default_guided`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from prolab.errors import ProLabError
from prolab.model.segmenter import SIZE_DIVISOR


@dataclass(frozen=True)
class Quality:
    """One step of the dial. ``size_factor`` scales the model's ``input_size`` (the result rounded to a
    multiple of 32); ``scales`` and ``flip`` are :func:`prolab.inference.embed_image`'s test-time
    augmentation; ``guided`` upsamples the class scores with the image as guide
    (:func:`prolab.inference.segment`)."""

    name: str
    backend: str = "torch"
    size_factor: float = 1.0
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    guided: bool = False
    description: str = field(default="", compare=False)

    def size(self, input_size: int) -> int:
        """The short side of the network input for a model trained at ``input_size``."""
        return max(SIZE_DIVISOR, int(round(input_size * self.size_factor / SIZE_DIVISOR)) * SIZE_DIVISOR)

    def inference_kwargs(self, input_size: int) -> dict:
        """Keyword arguments for :func:`prolab.inference.embed_image` (and the functions passing them on)."""
        return {"size": self.size(input_size), "scales": self.scales, "flip": self.flip}


QUALITIES: dict[str, Quality] = {q.name: q for q in (
    Quality("fast", backend="onnx", size_factor=0.75,
            description="ONNX Runtime, input short side 3/4 of the model's (320 px for the default model), "
                        "bilinear upsampling"),
    Quality("default", guided=True,
            description="eager PyTorch at the model's input size (416 px); class boundaries follow the image's "
                        "edges (guided upsampling)"),
    Quality("accurate", scales=(0.75, 1.0, 1.25, 1.5), flip=True, guided=True,
            description="eager PyTorch, scales 0.75, 1, 1.25 and 1.5 of the input size, each with its mirror; "
                        "class boundaries follow the image's edges (guided upsampling)"),
)}
DEFAULT_QUALITY = "default"


def get_quality(name: str | Quality | None) -> Quality:
    """The dial step called ``name`` (None: the default; a :class:`Quality` is returned as it is), or
    :class:`ProLabError` naming the choices."""
    if isinstance(name, Quality):
        return name
    name = DEFAULT_QUALITY if name is None else str(name).strip().lower()
    if name not in QUALITIES:
        raise ProLabError(f"quality must be one of {', '.join(QUALITIES)}, got {name!r}.")
    return QUALITIES[name]


def default_guided(guided: bool | None = None) -> bool:
    """``guided`` if given, else whether the default step upsamples with the image as guide: the one place
    the scorers (evaluate, EvalCache, predict) take their upsampling from when not told."""
    return QUALITIES[DEFAULT_QUALITY].guided if guided is None else bool(guided)
