"""What the user sees: overlays, legends, tables and plotly figures built from library results.

Pure presentation: every function turns arrays / label spaces computed by ``prolab`` into an image,
HTML, a table (list of rows) or a plotly figure.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from prolab.alignment import explain_class
from prolab.colorize import blend, colorize, heatmap, make_palette, resize_map
from prolab.explore import class_areas, image_top_properties, pixel_top

MAX_HOVER = 90


def escape(s: str) -> str:
    """Every user- or file-derived string shown as HTML, Markdown, a toast or a plotly label goes
    through this (quotes stay readable; attribute values use :func:`_attr`)."""
    return html.escape(str(s), quote=False)


_esc = escape


def _attr(s: str) -> str:
    """A string safe inside a double-quoted HTML attribute."""
    return html.escape(str(s), quote=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 class"``, ``"2 classes"``: a count with its noun in the right number."""
    return f"{n} {word if n == 1 else (many or word + ('es' if word.endswith('s') else 's'))}"


def _short(s: str, n: int = MAX_HOVER) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _plural(n: int) -> str:
    return "category" if n == 1 else "categories"


def rgb_hex(c: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in c[:3]))


def text_on(c: Sequence[int]) -> str:
    """Black or white, whichever reads better on colour ``c``."""
    r, g, b = (int(v) for v in c[:3])
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


# ------------------------------------------------------------------------ segmentation
def overlay(image: np.ndarray, seg, opacity: float) -> np.ndarray:
    """The image with the class map blended on top."""
    return blend(image, colorize(seg.labels, seg.palette), opacity)


def resized_note(original: tuple[int, int], shape: tuple) -> str:
    """Says that an upload was shrunk, and that results and exports have the smaller size."""
    return (f"Resized from {original[0]} x {original[1]} to {shape[1]} x {shape[0]} px to keep it fast; results "
            "and exported masks have this size.")


def mark_pixel(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """A copy of ``image`` with a crosshair ring at pixel (x, y): where the pixel inspector looked. Drawn
    in white on black so that it shows on any colour; sized to the image."""
    out = image.copy()
    h, w = out.shape[:2]
    r = max(4, round(min(h, w) / 60))
    yy, xx = np.ogrid[:h, :w]
    d2 = (yy - y) ** 2 + (xx - x) ** 2
    ring_outer, ring_inner = (d2 <= (r + 2) ** 2) & (d2 >= (r - 2) ** 2), (d2 <= (r + 1) ** 2) & (d2 >= (r - 1) ** 2)
    cross = ((np.abs(yy - y) <= 1) & (np.abs(xx - x) >= r + 2) & (np.abs(xx - x) <= 2 * r + 2)) | \
            ((np.abs(xx - x) <= 1) & (np.abs(yy - y) >= r + 2) & (np.abs(yy - y) <= 2 * r + 2))
    out[ring_outer | cross] = 0
    out[ring_inner] = 255
    return out


def mask_image(seg) -> np.ndarray:
    """Class colours only (no photo), for export."""
    return colorize(seg.labels, seg.palette)


def legend_html(seg, max_items: int = 40) -> str:
    """Chips for the classes present, largest first, with their share of the image."""
    areas, unknown = class_areas(seg.labels, len(seg.class_names))
    order = [int(i) for i in np.argsort(-areas, kind="stable") if areas[i] > 0]
    n_base = len(seg.class_names) - seg.num_novel
    chips = []
    for i in order[:max_items]:
        c = seg.palette[i]
        star = ' <span class="pl-new" title="novel category">★ new</span>' if i >= n_base else ""
        chips.append(
            f'<span class="pl-chip" data-class="{_attr(seg.class_names[i])}" '
            f'style="background:{rgb_hex(c)};color:{text_on(c)}">'
            f'{_esc(seg.class_names[i])} <b>{areas[i] * 100:.1f}%</b>{star}</span>')
    if unknown > 0:
        chips.append(f'<span class="pl-chip pl-unknown" data-class="unknown">unknown '
                     f'<b>{unknown * 100:.1f}%</b></span>')
    more = len(order) - max_items
    tail = f'<span class="pl-more">+{more} smaller classes</span>' if more > 0 else ""
    n = len(order)
    title = (f'<div class="pl-legend-title">{n} {"class" if n == 1 else "classes"} present'
             f'{f" · {seg.num_novel} novel {_plural(seg.num_novel)} in the label set" if seg.num_novel else ""}'
             '</div>')
    return f'<div id="pl-legend" class="pl-legend">{title}{"".join(chips)}{tail}</div>'


def error_markdown(message: str) -> str:
    return f'<div class="pl-error" id="pl-error">⚠ {_esc(message)}</div>'


def empty_legend(message: str = "Segment an image to see its classes here.") -> str:
    return f'<div class="pl-legend pl-empty">{_esc(message)}</div>'


def status_markdown(seg, forward_seconds: float, changed: float | None, model_title: str,
                    label_set_name: str, mode: str) -> str:
    s = seg.seconds
    fwd = (f"forward pass {forward_seconds:.2f} s" if s.get("forward") else
           "forward pass: cached (not recomputed)")
    parts = [f"**{_esc(label_set_name)}** · {plural(len(seg.class_names), 'class')}"]
    if seg.space is not None:
        source = "the model's properties" if mode == "model" else "own K-Means properties"
        parts.append(f"K = {seg.space.k} ({source})")
    parts += [fwd, f"re-scoring {1000 * (s.get('rescore', 0) + s.get('label_space', 0)):.0f} ms"]
    if changed is not None:
        parts.append(f"{changed * 100:.1f}% of pixels changed since the previous result")
    return " · ".join(parts) + f"  \n<small>model: {_esc(model_title)}</small>"


def top_properties_figure(seg, k: int = 12):
    """Horizontal bars: the properties with the highest mean activation in the image."""
    if seg.activations is None:
        return None
    top = image_top_properties(seg.activations, k)
    # plotly renders tags in tick labels and hover text: names come from user descriptions
    labels = [f"{i} · {_esc(_short(seg.property_names[i], 34))}" for i in top.indices]
    full = [f"property {i}: {_esc(seg.property_names[i])}" for i in top.indices]
    fig = go.Figure(go.Bar(x=list(top.values[::-1]), y=labels[::-1], orientation="h",
                           marker_color="#6d5dfc", customdata=full[::-1],
                           text=[f"{v:.2f}" for v in top.values[::-1]], textposition="auto",
                           hovertemplate="%{customdata}<br>mean activation %{x:.3f}<extra></extra>"))
    fig.update_layout(height=80 + 24 * len(labels), margin=dict(l=4, r=8, t=40, b=36),
                      xaxis=dict(title="mean activation over the image", range=[0, 1]),
                      yaxis=dict(automargin=True, tickfont=dict(size=11)), template="plotly_white")
    return fig


def property_choices(space) -> list[tuple[str, str]]:
    """Dropdown entries ``(label, value)`` for every property, searchable by name."""
    if space is None:
        return []
    return [(f"{k} · {_short(n, 80)}", str(k)) for k, n in enumerate(space.property_names)]


def heat_overlay(image: np.ndarray, values: np.ndarray, opacity: float = 0.65,
                 vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A property's activation map (upsampled to the image) as an inferno heatmap over the image."""
    v = resize_map(values, image.shape[:2])
    return blend(image, heatmap(v, vmin, vmax), opacity)


def colorbar_html(vmin: float = 0.0, vmax: float = 1.0) -> str:
    return (f'<div class="pl-colorbar"><span>{vmin:.3f}</span><div class="pl-cbar"></div>'
            f'<span>{vmax:.3f}</span><small>activation sigmoid(⟨e, c_k⟩/T)</small></div>')


def map_range(values: np.ndarray, stretch: bool) -> tuple[float, float]:
    """Colour range of a heatmap: the map's own range (stretch) or the full 0..1."""
    if not stretch:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (0.0, 1.0)


def pixel_tables(seg, class_scores: np.ndarray, row: int, col: int, k: int = 8) -> tuple[list[list], list[list]]:
    """Top classes (of ``seg``'s ``class_scores``) and top properties at one cell of the score maps."""
    top_c = pixel_top(class_scores, row, col, k)
    classes = [[seg.class_names[i], round(v, 4)] for i, v in zip(top_c.indices, top_c.values)]
    props: list[list] = []
    if seg.activations is not None:
        top_p = pixel_top(seg.activations, row, col, k)
        props = [[i, seg.property_names[i], round(v, 4)] for i, v in zip(top_p.indices, top_p.values)]
    return classes, props


# ------------------------------------------------------------------------ label space
def space_summary(space, mode: str, label_set_name: str, num_novel: int) -> str:
    if space is None:
        return "This model is category-supervised: it has no property label space."
    how = ("the **model's training properties** (each sentence assigned to its nearest property)"
           if mode == "model" else f"**its own K-Means properties** (K = {space.k})")
    novel = f" ({num_novel} novel)" if num_novel else ""
    lines = [f"**{_esc(label_set_name)}**: {space.num_classes} classes{novel}, "
             f"{len(space.sentences)} sentences, K = {space.k} properties, encoder "
             f"<code>{_esc(space.encoder_id)}</code> (template <code>{_esc(space.template)}</code>). "
             f"Scored with {how}."]
    for g in space.duplicate_groups()[:8]:
        lines.append(f"- ⚠ identical property signatures (cannot be told apart): {_esc(', '.join(g))}")
    return "\n".join(lines)


def properties_rows(space, query: str = "") -> list[list]:
    """Rows ``[index, name, size, #classes, classes]`` of the properties table."""
    q = query.strip().casefold()
    rows = []
    for p in space.properties():
        classes = ", ".join(p.classes)
        if q and q not in p.name.casefold() and q not in classes.casefold() and q != str(p.index):
            continue
        rows.append([p.index, p.name, p.size, len(p.classes), _short(classes, 200)])
    return rows


PROPERTY_HEADERS = ["#", "property (sentence nearest its centre)", "sentences", "classes", "used by"]


def property_detail(space, k: int) -> str:
    sents = [(s, space.class_names[c]) for s, c, p in
             zip(space.sentences, space.sentence_class, space.sentence_property) if p == k]
    users = [space.class_names[c] for c in np.flatnonzero(space.multihot[:, k])]
    lines = [f"#### Property {k}: {_esc(space.property_names[k])}",
             f"Used by {plural(len(users), 'class')}: {_esc(', '.join(users)) or '—'}", "",
             f"{plural(len(sents), 'member sentence')}:"]
    lines += [f"- {_esc(s)} <small>({_esc(c)})</small>" for s, c in sents[:60]]
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
    md = (f"#### {_esc(space.class_names[i])}\n{len(rows)} sentences, {len(ex.properties)} properties: "
          + ", ".join(f"`{k}` ({sim:.2f})" for k, _, sim, _ in ex.properties))
    if ex.trained:
        md += ("\n\nAligns to trained classes (sentence similarity, share of their score received): "
               + ", ".join(f"**{_esc(t)}** {sim:.2f} ({w:.0%})" for t, sim, w in ex.trained)
               + f"; {novelty_note(ex)}.")
    return md, rows


def sentence_map_figure(space, xy: np.ndarray, color_by: str = "property", highlight: str | None = None,
                        method: str = "umap"):
    """Scatter of every description sentence (UMAP / PCA), coloured by property or class."""
    groups = space.sentence_property if color_by == "property" else space.sentence_class
    n = space.k if color_by == "property" else space.num_classes
    pal = make_palette(n)
    colors = [rgb_hex(pal[g]) for g in groups]
    hover = [f"<b>{_esc(_short(s))}</b><br>class: {_esc(space.class_names[c])}<br>"
             f"property {p}: {_esc(_short(space.property_names[p], 60))}"
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
                            f"{_esc(color_by)}",
                      height=560, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      xaxis=dict(showticklabels=False, zeroline=False),
                      yaxis=dict(showticklabels=False, zeroline=False))
    return fig


def class_matrix_figure(space, max_classes: int = 200):
    """Class x property heatmap of the (multi-hot or soft) class matrix."""
    m = space.class_matrix[:max_classes]
    names = [_esc(n) for n in space.class_names[:max_classes]]
    fig = go.Figure(go.Heatmap(
        z=m.tolist(), x=list(range(space.k)), y=names, colorscale="Blues", showscale=False,
        hovertemplate="class %{y}<br>property %{x}<extra></extra>"))
    fig.update_layout(title="Class × property matrix (which properties each class uses)",
                      height=max(360, 14 * len(names) + 80), margin=dict(l=10, r=10, t=40, b=30),
                      xaxis_title="property", yaxis=dict(autorange="reversed", automargin=True),
                      template="plotly_white")
    return fig


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


def novelty_note(ex) -> str:
    """One line on how novel a class is (whether it gets the open-set credit)."""
    if ex.novelty <= 0:
        return "explained by the trained classes (no open-set credit)"
    return f"novelty {ex.novelty:.2f}: gets {'the' if ex.novelty >= 1 else 'part of the'} open-set credit"


NOVEL_HEADERS = ["category", "maps to", "name", "similarity", "note"]


def changes_rows(changes) -> list[list]:
    return [[c.name, c.status, " • ".join(c.added), " • ".join(c.removed)] for c in changes]


# ------------------------------------------------------------------------ evaluation
DELTA_HEADERS = ["class", "A IoU %", "B IoU %", "change"]
CONFUSED_HEADERS = ["classes (a ↔ b)", "pixels mixed up", "a as b", "b as a", "properties both use"]


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _signed(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:+.1f}"


def largest_changes(comparison, top: int = 4) -> str:
    """``"cat 26.9 → 31.2, dog 0.2 → 4.0"``: the classes whose IoU changed most (IoU in percent)."""
    rows = [r for r in comparison.rows if r.delta is not None and round(100 * r.delta, 1) != 0][:top]
    if not rows:
        return "no class's IoU changed"
    return ", ".join(f"{_esc(r.name)} {_pct(r.a)} → {_pct(r.b)}" for r in rows)


def evaluation_summary(record, cache, seconds: float, built: bool, previous=None, comparison=None,
                       unscored: Sequence[str] = (), untrained: Sequence[str] = ()) -> str:
    """What an evaluation measured, its change against the ``previous`` record, and how it was computed."""
    m = record.metrics
    lines = [f"**{_esc(cache.name)} {_esc(cache.split)}** ({len(cache)} images) · label set "
             f"**{_esc(record.note)}** · evaluation **v{record.version}**",
             f"**mIoU {_pct(m['miou'])}** · pixel accuracy {_pct(m['pixel_accuracy'])} · mean accuracy "
             f"{_pct(m['mean_accuracy'])}"]
    if comparison is not None:
        lines[-1] += f" · against v{previous.version}: mIoU {_signed(comparison.miou_delta)}"
        lines.append(f"Largest changes: {largest_changes(comparison)}.")
    else:
        lines.append("No earlier evaluation of this set: edit the descriptions (Segment & edit → Edit) and "
                     "evaluate again to see each class's change.")
    lines.append(f"Ran the model once per image: {len(cache)} forward passes in {cache.build_seconds:.1f} s "
                 f"(cache {cache.nbytes / 2 ** 20:.1f} MB, kept for the next evaluations); scored in {seconds:.2f} s."
                 if built else
                 f"Re-evaluated from the cache in {seconds:.2f} s (no forward pass).")
    if unscored:
        lines.append(f"Not in the label set, so never predicted (IoU 0): {_esc(', '.join(unscored))}.")
    absent = [n for n, c in m.get("per_class_pixels", {}).items() if c == 0 and n not in unscored]
    if absent:
        lines.append(f"No pixels of {_esc(', '.join(absent))} in this set's ground truth: an IoU of 0 there only "
                     "means the class was predicted somewhere, not that it is missed.")
    if untrained:
        lines.append(f"Outside the model's training classes: {_esc(', '.join(untrained))}. They get the "
                     "open-set credit, as in the Segment tab and `prolab evaluate`.")
    return "  \n".join(lines)


def comparison_summary(a, b, comparison) -> str:
    """Evaluation record ``b`` against record ``a``."""
    return (f"**v{a.version} → v{b.version}** ({_esc(a.note)} → {_esc(b.note)}): mIoU "
            f"{_pct(comparison.miou[0])} → {_pct(comparison.miou[1])} ({_signed(comparison.miou_delta)}), "
            f"pixel accuracy {_pct(comparison.pixel_accuracy[0])} → {_pct(comparison.pixel_accuracy[1])}  \n"
            f"Largest changes: {largest_changes(comparison)}.")


def delta_rows(comparison) -> list[list]:
    """``[class, A IoU, B IoU, change]`` (percent, as text), largest change first."""
    if comparison is None:
        return []
    return [[r.name, _pct(r.a), _pct(r.b), _signed(r.delta)] for r in comparison.rows
            if r.a is not None or r.b is not None]


def confused_rows(pairs, max_properties: int = 6) -> list[list]:
    """One row per confused class pair: pixels, each direction and the properties both classes use."""
    rows = []
    for p in pairs:
        props = " • ".join(_short(n, 48) for n in p.shared_properties[:max_properties])
        more = len(p.shared_properties) - max_properties
        rows.append([f"{p.a} ↔ {p.b}", p.pixels, p.a_as_b, p.b_as_a,
                     (props + (f" (+{more} more)" if more > 0 else "")) or "none"])
    return rows


def version_choices(records) -> list[tuple[str, str]]:
    """Dropdown entries ``(label, version)`` for kept evaluations, the latest first."""
    return [(f"v{r.version} · {_short(r.note, 40)} · mIoU {_pct(r.metrics['miou'])}", str(r.version))
            for r in reversed(records)]


def class_iou_figure(scores, title: str, names: tuple[str, str] = ("previous", "this evaluation")):
    """Horizontal bars of per-class IoU (:func:`prolab.eval_report.class_ious` rows), with the
    previous evaluation's IoU beside each where there is one."""
    labels = [_esc(s.name) + ("" if s.scored else " (not in the label set)") for s in scores][::-1]
    fig = go.Figure()
    if any(s.previous is not None for s in scores):
        fig.add_trace(go.Bar(x=[100 * (s.previous or 0.0) for s in scores][::-1], y=labels, orientation="h",
                             name=_esc(names[0]), marker_color="#c9c6e8",
                             hovertemplate="%{y}: %{x:.1f}<extra>" + _esc(names[0]) + "</extra>"))
    fig.add_trace(go.Bar(x=[100 * (s.iou or 0.0) for s in scores][::-1], y=labels, orientation="h",
                         name=_esc(names[1]), marker_color="#6d5dfc",
                         text=[_pct(s.iou) for s in scores][::-1], textposition="auto",
                         customdata=[f"{s.pixels:,} ground-truth pixels" for s in scores][::-1],
                         hovertemplate="%{y}: IoU %{x:.1f}<br>%{customdata}<extra></extra>"))
    per_class = 34 if len(fig.data) > 1 else 22
    fig.update_layout(title=_esc(title), barmode="group", height=110 + per_class * len(scores),
                      margin=dict(l=4, r=8, t=64, b=36), template="plotly_white",
                      xaxis=dict(title="IoU (%)", range=[0, 100]), yaxis=dict(automargin=True),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


# ------------------------------------------------------------------------ live: webcam and video
def live_status(frame, frames: int, property_index: int | None) -> str:
    """One line under the webcam result: frame rate, time per frame, what is shown."""
    if property_index is not None:
        what = f"property {property_index}"
    else:
        ids = [i for i in np.unique(frame.labels) if i >= 0]
        names = ", ".join(_esc(frame.class_names[i]) for i in ids[:6]) + (" ..." if len(ids) > 6 else "")
        what = names or "no class"
    return (f"**{frame.fps:.1f} frames/s** · {1000 * frame.seconds:.0f} ms per frame · {frames} segmented, "
            f"{frame.dropped} dropped while busy · showing: {what}")


def video_status(result, quality: str | None) -> str:
    return (f"{result.frames} frames ({result.info.width} x {result.info.height}) segmented in "
            f"{result.seconds:.1f} s: **{result.fps:.1f} frames/s** ({_esc(quality or 'default')}).")


def shares_over_time_figure(times: Sequence[float], table: dict[str, list[float]], class_names: list[str],
                            palette: np.ndarray, max_classes: int = 12):
    """Lines: each class's share of every frame over time (the classes with the largest mean share)."""
    order = sorted(table, key=lambda n: -float(np.mean(table[n])))[:max_classes]
    index = {n: i for i, n in enumerate(class_names)}
    fig = go.Figure()
    for name in order:
        color = rgb_hex(palette[index[name]]) if name in index else "#141414"
        fig.add_trace(go.Scatter(x=list(times), y=[100 * v for v in table[name]], mode="lines", name=_esc(name),
                                 line=dict(color=color, width=2),
                                 hovertemplate="%{x:.2f} s: %{y:.1f} %<extra>" + _esc(name) + "</extra>"))
    fig.update_layout(height=340, margin=dict(l=4, r=8, t=30, b=36), template="plotly_white",
                      xaxis=dict(title="time (s)"), yaxis=dict(title="share of the frame (%)", range=[0, 100]),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


CSS = """
.pl-legend {display:flex; flex-wrap:wrap; gap:6px; align-items:center; padding:6px 2px;}
.pl-legend-title {width:100%; font-weight:600; font-size:0.9em; opacity:0.8;}
.pl-chip {padding:3px 9px; border-radius:12px; font-size:0.88em; border:1px solid rgba(0,0,0,0.15);}
.pl-chip b, .pl-chip span {color:inherit;}
.pl-unknown {background:#141414; color:#fff;}
.pl-new {font-size:0.8em; margin-left:3px;}
.pl-more {font-size:0.85em; opacity:0.7;}
.pl-empty {opacity:0.6; font-style:italic;}
.pl-error {background:#fdecec; border:1px solid #e05252; border-radius:8px; padding:6px 12px; color:#8a1c1c;}
.pl-banner-warn {background:#fff4e5; border:1px solid #f0a040; border-radius:8px; padding:6px 12px;}
/* table headers wrap between words, never inside one ("chang e") */
th, th span, th div {word-break:normal !important; overflow-wrap:normal !important; hyphens:none !important;}
.pl-colorbar {display:flex; align-items:center; gap:8px; font-size:0.85em;}
.pl-cbar {flex:1; height:12px; border-radius:6px; max-width:320px;
  background:linear-gradient(90deg,#000004,#1f0c48,#550f6d,#88226a,#ba3655,#e35933,#f98c0a,#f9c932,#fcffa4);}
"""
