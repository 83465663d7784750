"""Property maps: one property's per-pixel activation as a heatmap, and the top properties side by side."""
from __future__ import annotations

import gradio as gr

from app.components import PropertiesUI
from app.handlers import Ctx, handler, on
from app.inputs import as_int, resolve_property
from app.views import common
from app.views import properties as view
from prolab.errors import ProLabError
from prolab.explore import image_top_properties
from prolab.edit_session import Segmentation


def layout() -> PropertiesUI:
    gr.Markdown("Each property is a cluster of description sentences; its activation "
                "sigmoid(⟨pixel embedding, centre⟩ / T) shows where the model sees it. "
                "Type in the box to search properties by name.")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                prop = gr.Dropdown([], label="Property (searchable)", filterable=True, allow_custom_value=True,
                                   elem_id="pl-property", scale=4)
                stretch = gr.Checkbox(value=True, label="Stretch colours to each map's range", scale=1)
            heat = gr.Image(label="Activation heatmap", type="numpy", format="png", interactive=False,
                            height=460, elem_id="pl-heat")
            colorbar = gr.HTML(view.colorbar_html())
            heat_md = gr.Markdown("", elem_id="pl-heat-md")
        with gr.Column(scale=2):
            top_n = gr.Slider(2, 12, value=6, step=1, label="How many top properties")
            top_btn = gr.Button("Show the top properties side by side")
            top_gallery = gr.Gallery(label="Most active properties in the image", columns=2, height=560,
                                     object_fit="contain", elem_id="pl-top-gallery")
    return PropertiesUI(property=prop, stretch=stretch, heat=heat, colorbar=colorbar, heat_md=heat_md, top_n=top_n,
                        top_btn=top_btn, top_gallery=top_gallery)


NO_PROPERTIES = ("This model is category-supervised: it has no properties, so there are no property maps. "
                 "Load a property model (Model tab) to see them.")


def _missing(ctx: Ctx) -> str | None:
    """Why there is no property map to show (None: there is one)."""
    if not ctx.edit.is_property_model:
        return NO_PROPERTIES
    seg = ctx.edit.last
    if seg is None or seg.activations is None:
        return "Segment an image first; its property maps appear here."
    return None


def _result(ctx: Ctx) -> Segmentation:
    why = _missing(ctx)
    if why is not None:
        raise ProLabError(why)
    return ctx.edit.last


def _heat(ctx: Ctx, seg: Segmentation, k: int, stretch: bool) -> dict:
    """The heatmap of property k, its colour bar and its description."""
    a = seg.activations[k]
    lo, hi = view.map_range(a, stretch)
    md = (f"**Property {k}**: {common.escape(seg.space.property_names[k])}  \n"
          f"mean {a.mean():.3f} · min {a.min():.3f} · max {a.max():.3f} · used by "
          f"{common.plural(int(seg.space.multihot[:, k].sum()), 'class')}")
    p = ctx.ui.properties
    return {p.heat: common.heat_overlay(ctx.edit.image, a, vmin=lo, vmax=hi),
            p.colorbar: view.colorbar_html(lo, hi), p.heat_md: md}


def _gallery(ctx: Ctx, seg: Segmentation, n, stretch: bool):
    """Heatmaps of the n most active properties (with captions), and their indices."""
    top = image_top_properties(seg.activations, as_int(n, "The number of top properties", 1, 64, default=6))
    image, items = ctx.edit.image, []
    for k, v in zip(top.indices, top.values):
        lo, hi = view.map_range(seg.activations[k], stretch)
        items.append((common.heat_overlay(image, seg.activations[k], vmin=lo, vmax=hi),
                      f"{k} · {seg.space.property_names[k]} (mean {v:.2f})"))
    return items, top.indices


def _heat_outputs(ui) -> list:
    return [ui.properties.heat, ui.properties.colorbar, ui.properties.heat_md]


MAP_INPUTS = lambda ui: {"prop": ui.properties.property, "stretch": ui.properties.stretch,  # noqa: E731
                         "n": ui.properties.top_n}


# ---------------------------------------------------------------------------- handlers
@handler(outputs=_heat_outputs, inputs=MAP_INPUTS,
         events=lambda ui: [on(ui.properties.property.input, api_name="property_map"),
                               on(ui.properties.stretch.input, api_name="property_map_stretch")])
def property_map(ctx: Ctx, prop, stretch=True) -> dict:
    """Heatmap of one property's activation over the current image."""
    seg = _result(ctx)
    return _heat(ctx, seg, resolve_property(seg.space, prop), bool(stretch))


@handler(outputs=lambda ui: [ui.properties.top_gallery], inputs=MAP_INPUTS,
         events=lambda ui: [on(ui.properties.top_btn.click, api_name="top_property_maps")])
def top_property_maps(ctx: Ctx, n, stretch=True) -> dict:
    """Heatmaps of the n most active properties of the image."""
    items, _ = _gallery(ctx, _result(ctx), n, bool(stretch))
    return {ctx.ui.properties.top_gallery: items}


@handler(outputs=lambda ui: _heat_outputs(ui) + [ui.properties.top_gallery, ui.properties.property], inputs=MAP_INPUTS,
         events=lambda ui: [on(ui.properties_tab.select, api_name="property_maps_overview")])
def property_maps_overview(ctx: Ctx, prop, n, stretch=True) -> dict:
    """What the tab shows when opened: the chosen (else the most active) property and the top n."""
    p = ctx.ui.properties
    why = _missing(ctx)
    if why is not None:
        return {p.heat_md: why}
    seg = ctx.edit.last
    items, top = _gallery(ctx, seg, n, bool(stretch))
    try:
        k = resolve_property(seg.space, prop) if prop else None
    except ProLabError:
        k = None
    out = {p.top_gallery: items}
    if k is None:  # the picker is written only when it named nothing usable: a pick made since stays
        k = top[0]
        out[p.property] = str(k)
    return {**_heat(ctx, seg, k, bool(stretch)), **out}
