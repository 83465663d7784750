"""The Novel categories tab's views: how each novel category maps to trained classes and properties."""
from __future__ import annotations

from prolab.alignment import explain_class


NOVEL_HEADERS = ["category", "maps to", "name", "similarity", "note"]


def category_text(data: dict) -> str:
    """Descriptions ``{name: [sentences]}`` as the editor shows them (:func:`app.inputs.category_blocks`)."""
    return "\n\n".join("\n".join([name, *[str(x) for x in sentences]]) for name, sentences in data.items()
                       if isinstance(sentences, list))


def novel_rows(space, alignment, num_novel: int) -> list[list]:
    """For each novel category, the trained classes it aligns to and the properties its sentences map to,
    each with its similarity (:func:`prolab.alignment.explain_class`)."""
    rows = []
    for i in range(space.num_classes - num_novel, space.num_classes):
        rows += explanation_rows(explain_class(space, alignment, i), space)
    return rows


def explanation_rows(ex, space) -> list[list]:
    """``[class, maps to, name, similarity, note]`` rows of a :class:`prolab.alignment.ClassExplanation`:
    first the trained classes (note: the share of their score the class receives), then the properties
    (note: its own sentences there: the property's name is the model's, from its training sentences)."""
    rows = [[ex.name, "trained class", t, round(sim, 2), f"receives {w:.0%} of its score" if w > 0 else
             "not received (another class matches it better)"] for t, sim, w in ex.trained]
    rows += [[ex.name, f"property {k}", name, round(sim, 2), own_sentences(space, ex.name, k)]
             for k, name, sim, n in ex.properties]
    return rows


def own_sentences(space, name: str, k: int) -> str:
    """``2 sentences: “…” · “…”``: what class ``name`` says in property ``k`` (whose name is the model's)."""
    own = space.class_sentences(name, k)
    return f"{len(own)} sentence{'s' if len(own) != 1 else ''}: " + " · ".join(f"“{x}”" for x in own)
