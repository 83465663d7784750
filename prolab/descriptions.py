"""Category descriptions: a validated, ordered mapping category -> list of sentences.

The JSON shape is the one of the official ProLab descriptor files:
``{"wall": ["Vertical structure", "Made of brick, concrete or drywall", ...], ...}``.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path

from prolab.errors import ProLabError
from prolab.limits import (LIMITS, check_class_sentences, check_counts, check_name, check_sentence,
                           loads_json, read_bytes, short)


def normalise_sentence(text: str) -> str:
    """Collapse runs of whitespace and strip the ends."""
    return " ".join(text.split())


def _canonical_name(name: str) -> str:
    return " ".join(name.split()).casefold()


class DescriptionSet(Mapping[str, list[str]]):
    """An immutable, validated ``category -> sentences`` mapping that keeps insertion order.

    Whitespace is normalised and exact duplicate sentences within a category are dropped (first
    occurrence kept). Empty names, empty categories, non-string sentences and two names that differ
    only by case or whitespace are rejected with a :class:`ProLabError`.
    """

    def __init__(self, data: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]]):
        items = data.items() if isinstance(data, Mapping) else data
        clean: dict[str, list[str]] = {}
        seen: dict[str, str] = {}
        total = 0
        for raw_name, sentences in items:
            if not isinstance(raw_name, str) or not raw_name.strip():
                raise ProLabError(f"Category names must be non-empty strings, got {short(repr(raw_name))}.")
            name = " ".join(raw_name.split())
            check_name(name, f"Category name {short(name)!r}")
            check_counts(len(clean) + 1, total)  # refused at the first class too many, before any work
            key = _canonical_name(name)
            if key in seen:
                raise ProLabError(
                    f"Categories {seen[key]!r} and {raw_name!r} differ only by case or whitespace; "
                    "merge them or rename one.")
            seen[key] = raw_name
            if isinstance(sentences, str) or not isinstance(sentences, Iterable):
                raise ProLabError(f"Category {name!r}: sentences must be a list of strings.")
            if isinstance(sentences, Sized):
                check_class_sentences(name, len(sentences))
            kept: list[str] = []
            for i, s in enumerate(sentences):
                check_class_sentences(name, i + 1)
                if not isinstance(s, str):
                    raise ProLabError(
                        f"Category {name!r}: every sentence must be a string, got {short(repr(s))}.")
                s = normalise_sentence(s)
                check_sentence(s, name)
                if s and s not in kept:
                    kept.append(s)
            if not kept:
                raise ProLabError(f"Category {name!r} has no sentences; write at least one.")
            total += len(kept)
            check_counts(len(clean) + 1, total)
            clean[name] = kept
        self._data = clean

    def __getitem__(self, name: str) -> list[str]:
        return list(self._data[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"DescriptionSet({len(self)} categories, {self.num_sentences} sentences)"

    @property
    def categories(self) -> list[str]:
        return list(self._data)

    @property
    def num_sentences(self) -> int:
        return sum(len(v) for v in self._data.values())

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._data.items()}

    def find(self, name: str) -> str | None:
        """The stored spelling of ``name`` ignoring case and whitespace, or None."""
        key = _canonical_name(name)
        return next((n for n in self._data if _canonical_name(n) == key), None)

    def missing(self, names: Iterable[str]) -> list[str]:
        """The ``names`` that have no entry here (ignoring case and whitespace, as :meth:`find`), in order."""
        have = {_canonical_name(n) for n in self._data}
        return [n for n in names if _canonical_name(n) not in have]

    @classmethod
    def _validated(cls, data: dict[str, list[str]]) -> "DescriptionSet":
        """A set over classes that are already clean (taken from other sets): nothing is checked again,
        so an edit of one class of a large set costs one class's checks (the counts are checked)."""
        check_counts(len(data), sum(len(v) for v in data.values()))  # merged sets stay within the limits
        out = cls.__new__(cls)
        out._data = data
        return out

    def with_category(self, name: str, sentences: Iterable[str]) -> "DescriptionSet":
        """A copy with ``name`` added or its sentences replaced (matched ignoring case)."""
        ((clean, kept),) = DescriptionSet([(name, sentences)])._data.items()  # this class checked alone
        existing = self.find(name)
        data = {n: (kept if n == existing else v) for n, v in self._data.items()}
        if existing is None:
            data[clean] = kept
        return DescriptionSet._validated(data)

    def without(self, names: Iterable[str]) -> "DescriptionSet":
        """A copy without the given categories; unknown names are an error."""
        drop = set()
        for n in names:
            found = self.find(n)
            if found is None:
                raise ProLabError(f"Unknown category {n!r}.")
            drop.add(found)
        return DescriptionSet._validated({n: v for n, v in self._data.items() if n not in drop})

    def merged(self, other: Mapping[str, Iterable[str]], overwrite: bool = False) -> "DescriptionSet":
        """Union with ``other``; existing categories are kept unless ``overwrite``."""
        out = self
        for name, sentences in other.items():
            if overwrite or self.find(name) is None:
                out = out.with_category(name, sentences)
        return out

    def subset(self, names: Iterable[str]) -> "DescriptionSet":
        """The given categories in the given order; unknown names are an error."""
        items = []
        for n in names:
            found = self.find(n)
            if found is None:
                raise ProLabError(f"Category {n!r} has no descriptions.")
            items.append((found, self._data[found]))
        return DescriptionSet(items)


def load_descriptions(path: str | os.PathLike) -> DescriptionSet:
    """Read a descriptions JSON file (at most ``LIMITS.max_json_bytes``), with a clear error for missing,
    over-large or malformed files."""
    path = Path(path)
    data = read_bytes(path, "Descriptions file", LIMITS.max_json_bytes)
    return parse_descriptions(data, source=str(path))


def parse_descriptions(text: str | bytes, source: str = "descriptions") -> DescriptionSet:
    """Parse descriptions from JSON text (a leading UTF-8 byte-order mark is ignored)."""
    data = parse_json(text, source)
    if not isinstance(data, dict):
        raise ProLabError(f"{source} must be a JSON object mapping category -> list of sentences.")
    return DescriptionSet(data)


def parse_json(text: str | bytes, source: str = "The text") -> object:
    """JSON a user supplied, read by :func:`prolab.limits.loads_json`: size-capped, a leading byte-order
    mark dropped (editors on Windows write one); duplicate keys, malformed or absurdly nested JSON are a
    :class:`ProLabError`."""
    return loads_json(text, source)


def save_descriptions(descriptions: Mapping[str, Iterable[str]], path: str | os.PathLike) -> Path:
    """Write descriptions as pretty JSON atomically (a crash never leaves a half-written file)."""
    ds = descriptions if isinstance(descriptions, DescriptionSet) else DescriptionSet(descriptions)
    return write_text_atomic(path, json.dumps(ds.to_dict(), indent=1, ensure_ascii=False) + "\n")


def _umask() -> int:
    """The process umask: from /proc on Linux (thread-safe), else by setting it and setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open()`` would (0666 minus the umask): ``mkstemp`` and
    safetensors create files 0600, which other users and tools (web servers, backups) cannot read."""
    os.chmod(path, 0o666 & ~_umask())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class DescriptionChange:
    """How one class's sentences differ between two description sets."""

    name: str
    added: list[str]
    removed: list[str]
    status: str  # "edited", "added" or "removed"


def description_changes(before: DescriptionSet, after: DescriptionSet) -> list[DescriptionChange]:
    """Per-class differences, in the order of ``after`` then classes only in ``before``."""
    out = []
    for name in after:
        old = before.find(name)
        if old is None:
            out.append(DescriptionChange(name, after[name], [], "added"))
            continue
        a, b = after[name], before[old]
        added, removed = [s for s in a if s not in b], [s for s in b if s not in a]
        if added or removed:
            out.append(DescriptionChange(name, added, removed, "edited"))
    for name in before:
        if after.find(name) is None:
            out.append(DescriptionChange(name, [], before[name], "removed"))
    return out
