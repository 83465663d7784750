"""The Novel categories tab's views: how each novel category maps to trained classes and properties."""
from __future__ import annotations

from prolab.alignment import explain_class


NOVEL_HEADERS = ["category", "maps to", "name", "similarity", "note"]


def novel_rows(space, alignment, num_novel: int) -> list[list]:
    """For each novel category, the trained classes it aligns to and the properties its sentences map to,
    each with its similarity (:func:`prolab.alignment.explain_class`)."""
    rows = []
    for i in range(space.num_classes - num_novel, space.num_classes):
        rows += explanation_rows(explain_class(space, alignment, i))
    return rows


def explanation_rows(ex) -> list[list]:
    """``[class, maps to, name, similarity, note]`` rows of a :class:`prolab.alignment.ClassExplanation`:
    first the trained classes (note: the share of their score the class receives), then the properties
    (note: how many of its sentences)."""
    rows = [[ex.name, "trained class", t, round(sim, 3), f"receives {w:.0%} of its score" if w > 0 else
             "not received (another class matches it better)"] for t, sim, w in ex.trained]
    rows += [[ex.name, f"property {k}", name, round(sim, 3), f"{n} sentence{'s' if n != 1 else ''}"]
             for k, name, sim, n in ex.properties]
    return rows
