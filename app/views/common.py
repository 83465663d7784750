"""What several tabs draw: the escaping every shown string goes through, the class overlay and its legend,
the status line, the top-properties figure, property choices, heatmaps, the page's CSS, and the result
panels every re-segmenting handler shows (:func:`result_panels`).

Views are pure: library results in (arrays, label spaces, segmentations), images, HTML, tables and plotly
figures out; no gradio, no handler context, no session state (``tests/test_structure_views.py``).
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go

from prolab.colorize import blend, colorize, heatmap, resize_map
from prolab.explore import class_areas, image_top_properties
from prolab.images import LUMA


MAX_HOVER = 90


def escape(s: str) -> str:
    """Every user- or file-derived string shown as HTML, Markdown, a toast or a plotly label goes
    through this (quotes stay readable; attribute values use :func:`_attr`)."""
    return html.escape(str(s), quote=False)


def _attr(s: str) -> str:
    """A string safe inside a double-quoted HTML attribute."""
    return html.escape(str(s), quote=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 class"``, ``"2 classes"``: a count with its noun in the right number."""
    return f"{n} {word if n == 1 else (many or word + ('es' if word.endswith('s') else 's'))}"


def short(s: str, n: int = MAX_HOVER) -> str:
    """``s`` cut to ``n`` characters (an ellipsis marks the cut): hover texts and table cells stay short."""
    return s if len(s) <= n else s[: n - 1] + "…"


def rgb_hex(c: Sequence[int]) -> str:
    """``#rrggbb`` of an RGB colour."""
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in c[:3]))


def text_on(c: Sequence[int]) -> str:
    """Black or white, whichever reads better on colour ``c``."""
    r, g, b = (int(v) for v in c[:3])
    return "#111" if LUMA[0] * r + LUMA[1] * g + LUMA[2] * b > 150 else "#fff"


def overlay(image: np.ndarray, seg, opacity: float) -> np.ndarray:
    """The image with the class map blended on top."""
    return blend(image, colorize(seg.labels, seg.palette), opacity)


def heat_overlay(image: np.ndarray, values: np.ndarray, opacity: float = 0.65,
                 vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A property's activation map (upsampled to the image) as an inferno heatmap over the image."""
    v = resize_map(values, image.shape[:2])
    return blend(image, heatmap(v, vmin, vmax), opacity)


def resized_note(original: tuple[int, int], shape: tuple) -> str:
    """Says that an upload was shrunk, and that results and exports have the smaller size."""
    return (f"Resized from {original[0]} x {original[1]} to {shape[1]} x {shape[0]} px to keep it fast; results "
            "and exported masks have this size.")


#: Classes covering less of the image are not listed in the legend (they would show as "0.0%").
MIN_LEGEND_SHARE = 0.0005


def legend_html(seg, max_items: int = 40) -> str:
    """Chips for the classes present, largest first, with their share of the image."""
    areas, unknown = class_areas(seg.labels, len(seg.class_names))
    order = [int(i) for i in np.argsort(-areas, kind="stable") if areas[i] >= MIN_LEGEND_SHARE]
    specks = int((areas > 0).sum()) - len(order)  # a few stray pixels would read "0.0%"
    n_base = len(seg.class_names) - seg.num_novel
    chips = []
    for i in order[:max_items]:
        c = seg.palette[i]
        star = ' <span class="pl-new" title="novel category">★ new</span>' if i >= n_base else ""
        chips.append(
            f'<span class="pl-chip" data-class="{_attr(seg.class_names[i])}" '
            f'style="background:{rgb_hex(c)};color:{text_on(c)}">'
            f'{escape(seg.class_names[i])} <b>{areas[i] * 100:.1f}%</b>{star}</span>')
    if unknown > 0:
        chips.append(f'<span class="pl-chip pl-unknown" data-class="unknown">unknown '
                     f'<b>{unknown * 100:.1f}%</b></span>')
    more = len(order) - max_items
    tail = f'<span class="pl-more">+{more} smaller classes</span>' if more > 0 else ""
    if specks:
        tail += (f'<span class="pl-more">+{specks} {"class" if specks == 1 else "classes"} under '
                 f'{100 * MIN_LEGEND_SHARE:.2f}% not listed</span>')
    n = len(order)
    title = (f'<div class="pl-legend-title">{n} {"class" if n == 1 else "classes"} present'
             f'{f" · {seg.num_novel} novel {_categories(seg.num_novel)} in the label set" if seg.num_novel else ""}'
             '</div>')
    return f'<div id="pl-legend" class="pl-legend">{title}{"".join(chips)}{tail}</div>'


def _categories(n: int) -> str:
    return "category" if n == 1 else "categories"


def error_markdown(message: str) -> str:
    """A visible error box (the message escaped)."""
    return f'<div class="pl-error" id="pl-error">⚠ {escape(message)}</div>'


def empty_legend(message: str = "Segment an image to see its classes here.") -> str:
    """The legend's placeholder before anything is segmented."""
    return f'<div class="pl-legend pl-empty">{escape(message)}</div>'


def status_markdown(seg, forward_seconds: float, changed: float | None, model_title: str,
                    label_set_name: str, mode: str) -> str:
    """One line under the result: label set, classes, K, forward pass and re-scoring times, pixels changed, model."""
    s = seg.seconds
    fwd = (f"forward pass {forward_seconds:.2f} s" if s.get("forward") else
           "forward pass: cached (not recomputed)")
    parts = [f"**{escape(label_set_name)}** · {plural(len(seg.class_names), 'class')}"]
    if seg.space is not None:
        source = "the model's properties" if mode == "model" else "own K-Means properties"
        parts.append(f"K = {seg.space.k} ({source})")
    parts += [fwd, f"re-scoring {1000 * (s.get('rescore', 0) + s.get('label_space', 0)):.0f} ms"]
    if changed is not None:
        parts.append(f"{changed * 100:.1f}% of pixels changed since the previous result")
    return " · ".join(parts) + f"  \n<small>model: {escape(model_title)}</small>"


def top_properties_figure(seg, k: int = 12):
    """Horizontal bars: the properties with the highest mean activation in the image."""
    if seg.activations is None:
        return None
    top = image_top_properties(seg.activations, k)
    # plotly renders tags in tick labels and hover text: names come from user descriptions
    labels = [f"{i} · {escape(short(seg.property_names[i], 34))}" for i in top.indices]
    full = [f"property {i}: {escape(seg.property_names[i])}" for i in top.indices]
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
    return [(f"{k} · {short(n, 80)}", str(k)) for k, n in enumerate(space.property_names)]


class ResultPanels(NamedTuple):
    """The panels every re-segmenting handler shows (:attr:`app.components.UI.result_panels`)."""

    overlay: np.ndarray
    legend: str
    status: str
    top_properties: object  # a plotly figure, None without property activations
    property_choices: list[tuple[str, str]]


def result_panels(image: np.ndarray, seg, opacity: float, *, forward_seconds: float, changed: float | None,
                  model_title: str, label_set_name: str, mode: str,
                  source_size: tuple[int, int] | None = None) -> ResultPanels:
    """Overlay, legend, status (with a note when the upload was shrunk from ``source_size``), the
    top-properties figure and the property choices of ``seg`` over ``image``."""
    status = status_markdown(seg, forward_seconds, changed, model_title, label_set_name, mode)
    if source_size is not None:
        status += "  \n" + resized_note(source_size, image.shape)
    return ResultPanels(overlay(image, seg, opacity), legend_html(seg), status, top_properties_figure(seg),
                        property_choices(seg.space))


#: Page script: Enter in a slider's number box (class pl-enter-commits) commits the typed value as leaving
#: the box does (gradio's slider sends its "release" event on blur only; a slider has no submit event).
HEAD = """<script>
document.addEventListener("keydown", (e) => {
  const box = e.target;
  if (e.key === "Enter" && box instanceof HTMLInputElement && box.type === "number"
      && box.closest(".pl-enter-commits")) { e.preventDefault(); box.blur(); }
}, true);
</script>"""

CSS = """
.pl-legend {display:flex; flex-wrap:wrap; gap:6px; align-items:center; padding:6px 2px;}
.pl-legend-title {width:100%; font-weight:600; font-size:0.9em; opacity:0.8;}
.pl-chip {padding:3px 9px; border-radius:12px; font-size:0.88em; border:1px solid rgba(0,0,0,0.15);}
.pl-chip b, .pl-chip span {color:inherit;}
.pl-unknown {background:#141414; color:#fff;}
.pl-new {font-size:0.8em; margin-left:3px;}
.pl-more {font-size:0.85em; opacity:0.7;}
#pl-novel-table td *, #pl-novel-table th * {word-break: normal !important; overflow-wrap: break-word;}
.pl-empty {opacity:0.6; font-style:italic;}
.pl-error {background:#fdecec; border:1px solid #e05252; border-radius:8px; padding:6px 12px; color:#8a1c1c;}
.pl-banner-warn {background:#fff4e5; border:1px solid #f0a040; border-radius:8px; padding:6px 12px;}
/* table headers wrap between words, never inside one ("chang e") */
th, th span, th div {word-break:normal !important; overflow-wrap:normal !important; hyphens:none !important;}
.pl-colorbar {display:flex; align-items:center; gap:8px; font-size:0.85em;}
.pl-cbar {flex:1; height:12px; border-radius:6px; max-width:320px;
  background:linear-gradient(90deg,#000004,#1f0c48,#550f6d,#88226a,#ba3655,#e35933,#f98c0a,#f9c932,#fcffa4);}
"""
