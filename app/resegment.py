"""One path for every change that re-scores the current result: label set, descriptions, novel
categories, the label space's properties.

The image's embeddings are cached, so a result is re-scored without a forward pass. With nothing
segmented yet (no image, or an image not segmented), nothing is computed: the status says what
changed, and the next Segment uses it.
"""
from __future__ import annotations

import gradio as gr

from app import views
from app.common import as_opacity
from app.components import UI
from app.state import Session
from prolab.errors import ProLabError


def shown(ui: UI, s: Session, opacity) -> dict:
    """The panels of :attr:`UI.result` for the session's last result: overlay, legend, status,
    top-properties figure and the property choices."""
    wb = s.workbench
    seg = wb.last
    if seg is None:
        raise ProLabError("Nothing segmented yet: press Segment first.")
    name = wb.label_set.name + (" (edited)" if wb.descriptions is not wb.label_set.descriptions else "")
    status = views.status_markdown(seg, wb.forward_seconds, wb.changed_fraction(), s.model_entry.title,
                                   name, wb.mode)
    v = ui.viewer
    s.opacity = as_opacity(opacity)  # the pixel inspector redraws the overlay with it
    if s.resized_from is not None:
        status += "  \n" + views.resized_note(s.resized_from, wb.image.shape)
    return {ui.state: s, v.image: views.overlay(wb.image, seg, s.opacity),
            v.legend: views.legend_html(seg), v.status: status,
            ui.controls.top_fig: views.top_properties_figure(seg),
            ui.properties.property: gr.update(choices=views.property_choices(seg.space))}


def resegment(ui: UI, s: Session, threshold, opacity, message: str | None = None) -> dict:
    """Re-score the last result with the label space in use now and show it; with no result yet,
    only ``message`` in the status (None: the status stays as it is)."""
    if s.workbench.last is None:
        return {ui.state: s} if message is None else {ui.state: s, ui.viewer.status: message}
    segment_now(s, threshold)
    return shown(ui, s, opacity)


def segment_now(s: Session, threshold) -> None:
    """Segment with the label space in use and ``threshold``, remembering what the result was scored with."""
    wb = s.workbench
    wb.segment(threshold)
    s.shown_with = (threshold, wb.last.space)


def already_shown(s: Session, threshold) -> bool:
    """Whether the result on screen was scored with ``threshold`` and the label space in use now: a
    repeated event (a dropdown that fires twice, a slider released where it was) then changes nothing,
    and re-scoring would only make "pixels changed since the previous result" read 0 %."""
    wb = s.workbench
    if wb.last is None or s.shown_with is None or s.shown_with[0] != threshold:
        return False
    return s.shown_with[1] is (wb.space() if wb.is_property_model else None)
