"""Limits on the size of what users hand in, checked before any work is done on it, and the readers that
enforce them (the app and the CLI read every JSON and text file through these).

Memory and time grow with the number of classes and sentences (one embedding per sentence, one score
map per class), so a few kilobytes of JSON could otherwise take a server down; a file's size is capped
while it is read (a 1 GB ``classes.txt`` is refused after its first megabyte, not read and split).
The numbers are in :data:`LIMITS` (a frozen :class:`Limits`); the README has the table.
"""
from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from prolab.errors import ProLabError


@dataclass(frozen=True)
class Limits:
    """The largest inputs accepted (the shipped sets use at most 206 classes, 15 sentences per class,
    2,473 sentences, 95 characters per sentence and 19 per name, and 116 KB of JSON)."""

    max_classes: int = 300  # per label set, novel categories included
    max_sentences_per_class: int = 200  # (a category may pool the sentences of several)
    max_sentences: int = 5000  # per label set
    max_name_chars: int = 100
    max_sentence_chars: int = 500
    max_json_bytes: int = 4 * 2 ** 20  # descriptions, novel categories, label-space and model metadata
    max_text_bytes: int = 2 ** 20  # classes.txt, a categories file, a training config
    max_list_bytes: int = 16 * 2 ** 20  # a dataset's train.txt / val.txt (one stem per line)
    max_video_frames: int = 3600  # e.g. 60 s at 60 fps, 120 s at 30 fps


LIMITS = Limits()


# ---------------------------------------------------------------------------- names and sentences
def control_character(text: str) -> str | None:
    """The first control character in ``text`` (NUL, escape, ... but not tab/newline, which are spacing),
    as ``U+XXXX``; None when there is none."""
    for ch in text:
        if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\u200d\u200c":
            return f"U+{ord(ch):04X}"
    return None


def check_name(name: str, what: str = "A class name", limits: Limits = LIMITS) -> None:
    """Refuse a name that is too long or holds a control character (it would be sent back in every view)."""
    if len(name) > limits.max_name_chars:
        raise ProLabError(f"{what} has {len(name):,} characters; the limit is {limits.max_name_chars}. "
                          "Use a short name and put the details in its sentences.")
    bad = control_character(name)
    if bad:
        raise ProLabError(f"{what} holds a control character ({bad}); names must be plain text.")


def check_sentence(sentence: str, name: str, limits: Limits = LIMITS) -> None:
    """Refuse a sentence that is too long or holds a control character."""
    if len(sentence) > limits.max_sentence_chars:
        raise ProLabError(f"A sentence of {short(name)!r} has {len(sentence):,} characters; the limit is "
                          f"{limits.max_sentence_chars}. Split it into short sentences, one property each.")
    bad = control_character(sentence)
    if bad:
        raise ProLabError(f"A sentence of {short(name)!r} holds a control character ({bad}).")


def check_counts(classes: int, sentences: int, limits: Limits = LIMITS, what: str = "The label set") -> None:
    """Refuse more classes or sentences than a label set may hold."""
    if classes > limits.max_classes:
        raise ProLabError(f"{what} has {classes:,} or more classes; the limit is {limits.max_classes}.")
    if sentences > limits.max_sentences:
        raise ProLabError(f"{what} has {sentences:,} or more sentences; the limit is {limits.max_sentences:,}.")


def check_class_sentences(name: str, count: int, limits: Limits = LIMITS) -> None:
    """Refuse more sentences for one class than allowed."""
    if count > limits.max_sentences_per_class:
        raise ProLabError(f"{short(name)!r} has {count:,} or more sentences; the limit is "
                          f"{limits.max_sentences_per_class} per class.")


def short(text: str, n: int = 40) -> str:
    """``text`` cut to ``n`` characters (an over-long name is quoted in a message, not echoed whole)."""
    return text if len(text) <= n else text[:n] + "..."


# ---------------------------------------------------------------------------- files
def _read_head(p: Path, what: str, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of ``p`` (one more tells a file over the limit); errors name the file
    (the caller's path), never a Python object."""
    try:
        with open(p, "rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise ProLabError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise ProLabError(f"{what} {p} is a folder, not a file.") from None
    except OSError as exc:
        raise ProLabError(f"Cannot read {what.lower()} {p} ({exc.strerror or exc.__class__.__name__}).") from None


def read_bytes(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """A file's bytes, refused once more than ``max_bytes`` have been read (never the whole of a huge file).
    Errors name the file (the caller's path), never a Python object."""
    p = Path(path)
    data = _read_head(p, what, max_bytes)
    if len(data) > max_bytes:
        raise ProLabError(f"{what} {p.name} is larger than {mb(max_bytes)}; the limit is {mb(max_bytes)}.")
    return data


def read_text(path: str | os.PathLike, what: str, max_bytes: int = LIMITS.max_text_bytes,
              fallback_latin1: bool = False) -> str:
    """A UTF-8 text file (a byte-order mark dropped) of at most ``max_bytes``; with ``fallback_latin1`` a
    file that is not UTF-8 is read as Latin-1 (older tools' class lists) rather than refused."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if fallback_latin1:
            return data.decode("latin-1")
        raise ProLabError(f"{what} {Path(path).name} is not UTF-8 text (byte {exc.start}).") from None


def read_lines(path: str | os.PathLike, what: str, max_lines: int, max_bytes: int = LIMITS.max_text_bytes,
               unit: str = "lines", hint: str = "") -> list[str]:
    """The lines of a text file (whitespace collapsed; trailing blank lines dropped), of which at most
    ``max_bytes`` are read: refused when it has more than ``max_lines`` non-blank lines (``unit`` and ``hint``
    word the message) or more bytes, so a huge file costs what its first megabyte costs. UTF-8, else Latin-1."""
    p = Path(path)
    data = _read_head(p, what, max_bytes)
    raw = data[:max_bytes].split(b"\n")
    if sum(1 for line in raw if line.strip()) > max_lines:
        raise ProLabError(f"{what} {p.name} lists more than {max_lines} {unit}; the limit is {max_lines}{hint}.")
    if len(data) > max_bytes:
        raise ProLabError(f"{what} {p.name} is larger than {mb(max_bytes)}; the limit is {mb(max_bytes)}.")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    lines = [" ".join(s.split()) for s in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def mb(n: int) -> str:
    """Bytes as a short size (``4 MB``, ``512 KB``)."""
    value, unit = (n / 2 ** 20, "MB") if n >= 2 ** 20 else (n / 2 ** 10, "KB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


# ---------------------------------------------------------------------------- JSON
def _no_duplicates(source: str):
    def hook(pairs: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise ProLabError(f"{source} names {short(key)!r} twice; each key may appear once (merge "
                                  "the two entries).")
            out[key] = value
        return out
    return hook


def loads_json(text: str | bytes, source: str = "The text", max_bytes: int = LIMITS.max_json_bytes) -> object:
    """``json.loads`` for what a user supplied: at most ``max_bytes``; a leading byte-order mark dropped;
    a key given twice in one object, malformed or absurdly nested JSON (Python's parser recurses) are a
    :class:`ProLabError`."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProLabError(f"{source}: {mb(size)} of JSON; the limit is {mb(max_bytes)}.")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProLabError(f"{source} is not UTF-8 text (byte {exc.start}).") from None
    try:
        return json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_no_duplicates(source))
    except json.JSONDecodeError as exc:
        raise ProLabError(f"{source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProLabError(f"{source} is nested too deeply to be read as JSON.") from None


def read_json(path: str | os.PathLike, what: str, max_bytes: int = LIMITS.max_json_bytes) -> object:
    """A JSON file of at most ``max_bytes`` (:func:`loads_json`); ``what`` names it in errors."""
    p = Path(path)
    return loads_json(read_bytes(p, what, max_bytes), f"{what} {p.name}", max_bytes)
