"""Helpers shared by the tabs: binding handlers, the user's session, label-set switching, UI numbers."""
from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from pathlib import Path

from app.state import Resources, Session, evicted_message, new_session
from prolab.errors import ProLabError
from prolab.workbench import finite_number


def bind(fn, *first):
    """``fn`` with its first arguments (the shared resources, the UI) filled in: what an event calls.
    Gradio reads the rest of ``fn``'s signature (the inputs, ``gr.Progress``, ``gr.SelectData``) and
    its docstring (the API description)."""
    bound = functools.partial(fn, *first)

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        return bound(*args, **kwargs)

    handler.__signature__ = inspect.signature(bound)
    return handler


def ensure_session(state: Session | None, res: Resources) -> Session:
    """The user's session, created on their first action."""
    if state is None:
        state = new_session(res)  # a model that cannot load raises a readable ProLabError here
    res.track(state)
    if state.evicted:  # said once; the session goes on afresh from the next action
        state.evicted = False
        raise ProLabError(evicted_message(res.config.max_sessions))
    return state


def apply_label_set(s: Session, res: Resources, key: str | None, custom_file: str | None = None) -> bool:
    """Switch the session to label set ``key`` (``"custom"`` reads ``custom_file``). Returns whether
    anything changed. Edited descriptions of every set are remembered and restored."""
    from prolab import labelsets

    key = key or s.label_key
    wb = s.workbench
    custom_path = str(custom_file) if custom_file else None
    if key == s.label_key and (key != "custom" or custom_path in (None, s.custom_set)):
        return False
    if key == "custom":
        if not custom_path:
            raise ProLabError("A custom label set needs a descriptions JSON file: upload one "
                              '({"class name": ["sentence", ...], ...}).')
        with user_file(custom_path):
            ls = labelsets.custom(Path(custom_path), name=f"Custom ({Path(custom_path).name})")
    elif key == "model":
        ls = res.model_label_set(s.model_entry)
    else:
        ls = res.label_set(key)
    wb.set_label_set(ls)
    s.label_key, s.custom_set = key, custom_path if key == "custom" else None
    saved = s.edits.get(key)
    if saved is not None and key != "custom":
        wb.set_descriptions(saved)
    return True


def apply_quality(s: Session, res: Resources, name: str | None) -> None:
    """Put the session's workbench on speed/quality step ``name`` (:mod:`prolab.quality`): the network's
    backend, its input size (``--inference-size`` wins when given) and the test-time augmentation."""
    from prolab.onnx_backend import with_backend
    from prolab.quality import get_quality

    q = get_quality(name)
    entry, wb = s.model_entry, s.workbench
    wb.model = with_backend(entry.model, q.backend, entry.directory)
    wb.inference_size = res.config.inference_size or q.size(entry.model.config.input_size)
    wb.inference_options = {"scales": q.scales, "flip": q.flip}
    s.quality = q.name


@contextmanager
def user_file(path: str):
    """Errors about an uploaded file name the user's file, never the server's upload folder
    (``/tmp/gradio/<hash>/...``)."""
    try:
        yield
    except ProLabError as exc:
        p = Path(path)
        text = str(exc)
        forms = {str(p), str(p.resolve()), str(p.parent), str(p.parent.resolve())} - {"/", ".", ""}
        for form in sorted(forms, key=len, reverse=True):  # never "/" or ".": "images/" stays "images/"
            text = text.replace(form + "/", "").replace(form, p.name or str(p))
        raise ProLabError(text) from None


def as_number(value, what: str, lo: float | None = None, hi: float | None = None, default=None) -> float:
    """A finite number from a UI field (``None`` or "" -> ``default``, else a readable error)."""
    x = finite_number(value, what)
    if x is None:
        if default is None:
            raise ProLabError(f"{what} is empty: type a number.")
        return default
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        bounds = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else
                  f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        raise ProLabError(f"{what} must be {bounds}, got {x:g}.")
    return x


def as_int(value, what: str, lo: int | None = None, hi: int | None = None, default=None) -> int:
    """:func:`as_number`, which must also be a whole number."""
    x = as_number(value, what, lo, hi, default)
    if x != int(x):
        raise ProLabError(f"{what} must be a whole number, got {x:g}.")
    return int(x)


def as_opacity(value) -> float:
    """The overlay opacity (0..1; empty = the default 0.55)."""
    return as_number(value, "The overlay opacity", 0.0, 1.0, default=0.55)


def remember_edits(s: Session) -> None:
    wb = s.workbench
    if wb.descriptions is wb.label_set.descriptions:
        s.edits.pop(s.label_key, None)
    else:
        s.edits[s.label_key] = wb.descriptions


def load_image_file(s: Session, path: str | None) -> bool:
    """Make ``path`` the current image (a no-op for the same file). Returns whether it changed."""
    if not path:
        if s.workbench.image is None:
            raise ProLabError("No image yet: upload one or pick an example.")
        return False
    path = str(path)
    if path == s.image_name and s.workbench.image is not None:
        return False
    with user_file(path):
        s.workbench.set_image(path)
    s.image_name, s.resized_from = path, _size_before_resizing(path, s.workbench.image.shape)
    return True


def _size_before_resizing(path: str, shape: tuple) -> tuple[int, int] | None:
    """The file's (width, height) when the workbench shrank it (big uploads are worked on, and exported,
    at a smaller size), else None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # it was just read successfully; a header that cannot be re-read is no reason to fail
        return None
    return (w, h) if max(w, h) > max(shape[:2]) else None


def current_space(s: Session):
    """The label space in use now (edits and novel categories included); None for a category model."""
    wb = s.workbench
    return wb.space() if wb.is_property_model else None


def required_space(s: Session, message: str = "This model has no label space."):
    """:func:`current_space`, or a readable error for a category model."""
    space = current_space(s)
    if space is None:
        raise ProLabError(message)
    return space
