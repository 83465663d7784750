"""The result panels every re-segmenting handler shows: overlay, legend, status, the top-properties
figure and the property choices (:attr:`app.components.UI.result`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app import views
from app.inputs import as_opacity
from prolab.edit_session import Segmentation

if TYPE_CHECKING:  # the handlers call this module: it only reads what they pass
    from app.handlers import Ctx


def result(ctx: Ctx, seg: Segmentation | None, opacity, message: str | None = None) -> dict:
    """The panels of ``seg``; with nothing segmented yet (None), only ``message`` in the status (None: the
    status stays as it is)."""
    if seg is None:
        return {} if message is None else {ctx.ui.viewer.status: message}
    s, ui, edit = ctx.session, ctx.ui, ctx.edit
    s.opacity = as_opacity(opacity)  # the pixel inspector redraws the overlay with it
    status = views.status_markdown(seg, edit.forward_seconds, edit.changed_fraction(), s.model_entry.title,
                                   edit.name, edit.mode)
    if edit.source_size is not None:
        status += "  \n" + views.resized_note(edit.source_size, edit.image.shape)
    v = ui.viewer
    return {v.image: views.overlay(edit.image, seg, s.opacity), v.legend: views.legend_html(seg), v.status: status,
            ui.controls.top_fig: views.top_properties_figure(seg),
            ui.properties.property: gr.update(choices=views.property_choices(seg.space))}
