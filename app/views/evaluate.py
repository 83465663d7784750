"""The Evaluate tab's views: what an evaluation measured, comparisons of two, per-class IoU and confusions."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from app.views.common import escape, short


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
    return ", ".join(f"{escape(r.name)} {_pct(r.a)} → {_pct(r.b)}" for r in rows)


def evaluation_summary(record, cache, seconds: float, built: bool, previous=None, comparison=None,
                       unscored: Sequence[str] = (), untrained: Sequence[str] = ()) -> str:
    """What an evaluation measured, its change against the ``previous`` record, and how it was computed."""
    m = record.metrics
    lines = [f"**{escape(cache.name)} {escape(cache.split)}** ({len(cache)} images) · label set "
             f"**{escape(record.note)}** · evaluation **v{record.version}**",
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
        lines.append(f"Not in the label set, so never predicted (IoU 0): {escape(', '.join(unscored))}.")
    absent = [n for n, c in m.get("per_class_pixels", {}).items() if c == 0 and n not in unscored]
    if absent:
        lines.append(f"No pixels of {escape(', '.join(absent))} in this set's ground truth: an IoU of 0 there only "
                     "means the class was predicted somewhere, not that it is missed.")
    if untrained:
        lines.append(f"Outside the model's training classes: {escape(', '.join(untrained))}. They get the "
                     "open-set credit, as in the Segment tab and `prolab evaluate`.")
    return "  \n".join(lines)


def comparison_summary(a, b, comparison) -> str:
    """Evaluation record ``b`` against record ``a``."""
    return (f"**v{a.version} → v{b.version}** ({escape(a.note)} → {escape(b.note)}): mIoU "
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
        props = " • ".join(short(n, 48) for n in p.shared_properties[:max_properties])
        more = len(p.shared_properties) - max_properties
        rows.append([f"{p.a} ↔ {p.b}", p.pixels, p.a_as_b, p.b_as_a,
                     (props + (f" (+{more} more)" if more > 0 else "")) or "none"])
    return rows


def version_choices(records) -> list[tuple[str, str]]:
    """Dropdown entries ``(label, version)`` for kept evaluations, the latest first."""
    return [(f"v{r.version} · {short(r.note, 40)} · mIoU {_pct(r.metrics['miou'])}", str(r.version))
            for r in reversed(records)]


def class_iou_figure(scores, title: str, names: tuple[str, str] = ("previous", "this evaluation")):
    """Horizontal bars of per-class IoU (:func:`prolab.eval_report.class_ious` rows), with the
    previous evaluation's IoU beside each where there is one."""
    labels = [escape(s.name) + ("" if s.scored else " (not in the label set)") for s in scores][::-1]
    fig = go.Figure()
    if any(s.previous is not None for s in scores):
        fig.add_trace(go.Bar(x=[100 * (s.previous or 0.0) for s in scores][::-1], y=labels, orientation="h",
                             name=escape(names[0]), marker_color="#c9c6e8",
                             hovertemplate="%{y}: %{x:.1f}<extra>" + escape(names[0]) + "</extra>"))
    fig.add_trace(go.Bar(x=[100 * (s.iou or 0.0) for s in scores][::-1], y=labels, orientation="h",
                         name=escape(names[1]), marker_color="#6d5dfc",
                         text=[_pct(s.iou) for s in scores][::-1], textposition="auto",
                         customdata=[f"{s.pixels:,} ground-truth pixels" for s in scores][::-1],
                         hovertemplate="%{y}: IoU %{x:.1f}<br>%{customdata}<extra></extra>"))
    per_class = 34 if len(fig.data) > 1 else 22
    fig.update_layout(title=escape(title), barmode="group", height=110 + per_class * len(scores),
                      margin=dict(l=4, r=8, t=64, b=36), template="plotly_white",
                      xaxis=dict(title="IoU (%)", range=[0, 100]), yaxis=dict(automargin=True),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


KEPT_HEADERS = ["class", "sentences in", "sentences out", "source", "Δ mIoU search half", "Δ mIoU guard half"]


def _sentences(items: Sequence[str], top: int = 3) -> str:
    """Up to ``top`` sentences, one a line, and how many more."""
    lines = [f"• {short(s, 90)}" for s in items[:top]]
    if len(items) > top:
        lines.append(f"(+{len(items) - top} more)")
    return "\n".join(lines) or "–"


def kept_rows(kept) -> list[list]:
    """One row per kept change (:class:`prolab.description_search.KeptChange`): the class, its sentences in
    and out, where they came from and the step's mIoU change on each half (points)."""
    return [[k.class_name, _sentences(k.added), _sentences(k.removed),
             k.source + (f" (one step, {k.joint} classes)" if k.joint > 1 else ""),
             _signed(k.search_delta), _signed(k.guard_delta)] for k in kept]


def search_summary(run) -> str:
    """What a description search (:class:`app.services.description_search.SearchRun`) found, and what next."""
    r = run.result
    steps = len({k.step for k in r.kept})
    classes = sorted({k.class_name for k in r.kept})
    head = (f"**Cancelled** after {r.proposals} proposals" if r.cancelled
            else f"**{r.proposals} proposals** tried in {r.seconds:.1f} s ({r.stop_reason})")
    lines = [f"{head} on **{escape(run.set_name)}** · label set **{escape(run.label_set_name)}**",
             f"Search half ({r.search_before['images']} images): mIoU {_pct(r.search_before['miou'])} → "
             f"{_pct(r.search_after['miou'])} · guard half ({r.guard_before['images']} images): "
             f"{_pct(r.guard_before['miou'])} → {_pct(r.guard_after['miou'])}"]
    if steps:
        lines.append(f"Kept {steps} change{'s' if steps > 1 else ''} to {escape(', '.join(classes))} (below). "
                     "**Apply** makes them your edits of this label set: the Edit tab shows them, **Reset all** "
                     "undoes them, **Evaluate** measures them on the whole set.")
    else:
        lines.append("No change raised the search half's mIoU without lowering the guard half's: nothing to apply. "
                     "A larger budget tries more proposals.")
    lines += [f"Skipped: {escape(s)}" for s in r.skipped[:3]]
    return "  \n".join(lines)
