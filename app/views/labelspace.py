"""The Label space tab's views: its summary, properties table, class details, sentence map and class matrix."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from app.views.common import escape, plural, short, rgb_hex
from prolab.alignment import explain_class
from prolab.colorize import make_palette


def space_summary(space, mode: str, label_set_name: str, num_novel: int) -> str:
    """What the label space in use is: classes, sentences, K, encoder, how it is scored, duplicate signatures."""
    if space is None:
        return "This model is category-supervised: it has no property label space."
    how = ("the **model's training properties** (each sentence assigned to its nearest property)"
           if mode == "model" else f"**its own K-Means properties** (K = {space.k})")
    novel = f" ({num_novel} novel)" if num_novel else ""
    lines = [f"**{escape(label_set_name)}**: {space.num_classes} classes{novel}, "
             f"{len(space.sentences)} sentences, K = {space.k} properties, encoder "
             f"<code>{escape(space.encoder_id)}</code> (template <code>{escape(space.template)}</code>). "
             f"Scored with {how}."]
    for g in space.duplicate_groups()[:8]:
        lines.append(f"- ⚠ identical property signatures (cannot be told apart): {escape(', '.join(g))}")
    return "\n".join(lines)


PROPERTY_HEADERS = ["#", "property (sentence nearest its centre)", "sentences", "classes", "used by"]


def properties_rows(space, query: str = "") -> list[list]:
    """Rows ``[index, name, size, #classes, classes]`` of the properties table."""
    q = query.strip().casefold()
    rows = []
    for p in space.properties():
        classes = ", ".join(p.classes)
        if q and q not in p.name.casefold() and q not in classes.casefold() and q != str(p.index):
            continue
        rows.append([p.index, p.name, p.size, len(p.classes), short(classes, 200)])
    return rows


def property_detail(space, k: int) -> str:
    """Markdown of property ``k``: its name, the classes using it and its member sentences."""
    sents = [(s, space.class_names[c]) for s, c, p in
             zip(space.sentences, space.sentence_class, space.sentence_property) if p == k]
    users = [space.class_names[c] for c in np.flatnonzero(space.multihot[:, k])]
    lines = [f"#### Property {k}: {escape(space.property_names[k])}",
             f"Used by {plural(len(users), 'class')}: {escape(', '.join(users)) or '—'}", "",
             f"{plural(len(sents), 'member sentence')}:"]
    lines += [f"- {escape(s)} <small>({escape(c)})</small>" for s, c in sents[:60]]
    if len(sents) > 60:
        lines.append(f"- … {len(sents) - 60} more")
    return "\n".join(lines)


def class_detail(space, alignment, name: str) -> tuple[str, list[list]]:
    """Markdown summary and ``[sentence, #, property, similarity]`` rows of one class, with the trained
    classes it aligns to (``alignment``: :class:`prolab.alignment.Alignment`, or None)."""
    i = space.class_index(name)
    cn = space.normalised_centers
    rows = [[s, int(p), space.property_names[int(p)], round(float(e @ cn[int(p)]), 3)] for s, c, p, e in
            zip(space.sentences, space.sentence_class, space.sentence_property, space.sentence_embeddings) if c == i]
    ex = explain_class(space, alignment, i)
    md = f"#### {escape(space.class_names[i])}\n{len(rows)} sentences, {len(ex.properties)} properties:\n\n"
    md += "\n".join(property_line(space, space.class_names[i], k, sim) for k, _, sim, _ in ex.properties)
    if ex.trained:
        md += ("\n\nAligns to trained classes (sentence similarity, share of their score received): "
               + ", ".join(f"**{escape(t)}** {sim:.2f} ({w:.0%})" for t, sim, w in ex.trained)
               + f"; {novelty_note(ex)}.")
    return md, rows


def property_line(space, name: str, k: int, sim: float) -> str:
    """``- property k (name, similarity): "own sentence" · ...``: a property whose name comes from the
    model's training sentences, with what class ``name`` itself says there."""
    own = " · ".join(f"“{escape(x)}”" for x in space.class_sentences(name, k))
    return f"- `{k}` *{escape(short(space.property_names[k], 60))}* ({sim:.2f}): {own}"


def novelty_note(ex) -> str:
    """One line on how novel a class is (whether it gets the open-set credit)."""
    if ex.novelty <= 0:
        return "explained by the trained classes (no open-set credit)"
    return f"novelty {ex.novelty:.2f}: gets {'the' if ex.novelty >= 1 else 'part of the'} open-set credit"


def sentence_map_figure(space, xy: np.ndarray, color_by: str = "property", highlight: str | None = None,
                        method: str = "umap"):
    """Scatter of every description sentence (UMAP / PCA), coloured by property or class."""
    groups = space.sentence_property if color_by == "property" else space.sentence_class
    n = space.k if color_by == "property" else space.num_classes
    pal = make_palette(n)
    colors = [rgb_hex(pal[g]) for g in groups]
    hover = [f"<b>{escape(short(s))}</b><br>class: {escape(space.class_names[c])}<br>"
             f"property {p}: {escape(short(space.property_names[p], 60))}"
             for s, c, p in zip(space.sentences, space.sentence_class, space.sentence_property)]
    size = np.full(len(groups), 7.0)
    if highlight:
        try:
            hi = space.class_index(highlight)
            size[space.sentence_class == hi] = 13.0
        except Exception:  # an unknown name just means nothing is highlighted
            pass
    fig = go.Figure(go.Scatter(x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), mode="markers",
                                 marker=dict(color=colors, size=size.tolist(), line=dict(width=0.5, color="#333")),
                                 text=hover, hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=f"{method.upper()} of {len(space.sentences)} description sentences, coloured by "
                            f"{escape(color_by)}",
                      height=560, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      xaxis=dict(showticklabels=False, zeroline=False),
                      yaxis=dict(showticklabels=False, zeroline=False))
    return fig


def class_matrix_figure(space, max_classes: int = 200):
    """Class x property heatmap of the (multi-hot or soft) class matrix."""
    m = space.class_matrix[:max_classes]
    names = [escape(n) for n in space.class_names[:max_classes]]
    fig = go.Figure(go.Heatmap(
        z=m.tolist(), x=list(range(space.k)), y=names, colorscale="Blues", showscale=False,
        hovertemplate="class %{y}<br>property %{x}<extra></extra>"))
    fig.update_layout(title="Class × property matrix (which properties each class uses)",
                      height=max(360, 14 * len(names) + 80), margin=dict(l=10, r=10, t=40, b=30),
                      xaxis_title="property", yaxis=dict(autorange="reversed", automargin=True),
                      template="plotly_white")
    return fig
