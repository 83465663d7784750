"""The Edit tab's own views: what changed in the descriptions."""
from __future__ import annotations


def changes_rows(changes) -> list[list]:
    """``[class, status, added, removed]`` rows of the Edit tab's changes table."""
    return [[c.name, c.status, " • ".join(c.added), " • ".join(c.removed)] for c in changes]
