"""Turn an LLM's answer into a clean list of description sentences.

The prompt asks for a JSON list of strings, but models (local ones especially) also answer with
the list inside a ``` fence, wrapped in an object, or as a "- bullet" / "1." numbered list, often
with a lead-in line. This module accepts all of those and nothing looser.
"""
from __future__ import annotations

import json
import re

from prolab.descriptions import normalise_sentence

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013]|\d{1,2}[.)]|\(\d{1,2}\))\s+(.*\S)\s*$")
_HEADING = re.compile(r"^\s*(?:#+\s|\*\*[^*]+\*\*:?\s*$|[^:]{0,60}:\s*$)")
#: Sentences longer than this are prose, not descriptors; they are dropped.
MAX_SENTENCE_CHARS = 200


def parse_sentences(text: str) -> list[str]:
    """Extract description sentences from an LLM answer.

    Accepted forms, tried in order: a JSON list of strings (or an object holding exactly one such
    list), optionally inside a ``` fence or after a lead-in sentence; then "- ", "* ", "• ",
    "1." and "1)" list items; then, if the answer has no list markers at all, its non-empty
    lines. Each sentence is whitespace-normalised and stripped of wrapping quotes and a trailing
    full stop; empty, overlong and duplicate (ignoring case) sentences are dropped.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    items = _from_json(text)
    if items is None:
        items = _from_lines(text)
    return _clean(items)


def _from_json(text: str) -> list[str] | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        cand = cand.strip()
        for chunk in (cand, _outer_brackets(cand)):
            if not chunk:
                continue
            try:
                data = json.loads(chunk)
            except json.JSONDecodeError:
                continue
            items = _json_items(data)
            if items is not None:
                return items
    return None


def _outer_brackets(text: str) -> str | None:
    """The span from the first '[' to the last ']' (a JSON list after a lead-in line)."""
    start, end = text.find("["), text.rfind("]")
    return text[start:end + 1] if 0 <= start < end else None


def _json_items(data: object) -> list[str] | None:
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(x, str) for x in lists[0]):
            return lists[0]
    return None


def _from_lines(text: str) -> list[str]:
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    body = "\n".join(fenced) if fenced else text
    lines = [ln for ln in body.splitlines() if ln.strip()]
    bullets = [m.group(1) for ln in lines if (m := _BULLET.match(ln))]
    if bullets:
        return bullets
    # No list markers: take plain lines, skipping headings such as "Zebra:" or "## Zebra".
    return [ln for ln in lines if not _HEADING.match(ln)]


def _clean(items: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for raw in items:
        s = normalise_sentence(raw)
        s = s.strip("\"'`\u201c\u201d").rstrip(",;").strip()
        s = re.sub(r"^\*\*(.+)\*\*$", r"\1", s)
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        key = s.casefold()
        if not s or len(s) > MAX_SENTENCE_CHARS or key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out
