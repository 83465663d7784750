"""What the UI's fields hold, read into the values the library takes, with a readable error for anything
else; and error messages that name the user's files, never the server's upload folder."""
from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from prolab.edit_session import LabelSetChoice
from prolab.errors import ProLabError, finite_number


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


def as_choice(key: str | None, custom_file: str | None) -> LabelSetChoice | None:
    """The label-set dropdown and the custom descriptions file as a choice (None: keep the one in use)."""
    if not key:
        return None
    return LabelSetChoice(key, str(custom_file) if custom_file else None)


def sentences(text: str | None) -> list[str]:
    """One sentence per non-blank line."""
    return [line for line in (text or "").splitlines() if line.strip()]


def category_blocks(text: str | None) -> dict[str, list[str]]:
    """The novel-category editor's text: blocks apart by a blank line, each a category's name on its first
    line and one sentence per line after it (a name without sentences keeps an empty list)."""
    blocks: dict[str, list[str]] = {}
    for block in "\n".join(line.strip() for line in (text or "").splitlines()).split("\n\n"):
        lines = [line for line in block.splitlines() if line]
        if lines:
            blocks.setdefault(lines[0], []).extend(lines[1:])
    return blocks


def name_files(text: str, paths: Iterable[str]) -> str:
    """``text`` with every form of each path (as given, resolved, its folder) replaced by the file's name."""
    for path in paths:
        p = Path(path)
        forms = {str(p), str(p.resolve()), str(p.parent), str(p.parent.resolve())} - {"/", ".", ""}
        for form in sorted(forms, key=len, reverse=True):  # never "/" or ".": "images/" stays "images/"
            text = text.replace(form + "/", "").replace(form, p.name or str(p))
    return text


def name_uploads(text: str, upload_folder: str) -> str:
    """``text`` with any path inside ``upload_folder`` (where gradio keeps uploads, one sub-folder per file)
    shortened to the file's name."""
    return re.sub(re.escape(upload_folder.rstrip("/")) + r"/[^\s'\"]*/([^/\s'\"]+)", r"\1", text)


@contextmanager
def user_file(path: str):
    """Errors raised inside name the user's file ``path``, never the server's upload folder."""
    try:
        yield
    except ProLabError as exc:
        raise ProLabError(name_files(str(exc), [path])) from None


def resolve_property(space, value) -> int:
    """A property index from a dropdown value, an index or (part of) a property name."""
    text = str(value if value is not None else "").strip()
    if not text:
        raise ProLabError("Pick a property.")
    head = text.split("·")[0].strip()
    if head.isdigit():
        k = int(head)
        if not 0 <= k < space.k:
            raise ProLabError(f"Property {k} does not exist (K = {space.k}).")
        return k
    q = text.casefold()
    for k, n in enumerate(space.property_names):
        if q in n.casefold():
            return k
    raise ProLabError(f"No property name contains {text!r}.")
