"""Property maps: one property's per-pixel activation as a heatmap, and the top properties side by side."""
from __future__ import annotations

import gradio as gr

from app import views
from app.common import as_int, ensure_session
from app.state import Resources, user_errors
from prolab.errors import ProLabError


def layout(ui: dict) -> None:
    gr.Markdown("Each property is a cluster of description sentences; its activation "
                "sigmoid(⟨pixel embedding, centre⟩ / T) shows where the model sees it. "
                "Type in the box to search properties by name.")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                ui["property"] = gr.Dropdown([], label="Property (searchable)", filterable=True,
                                             allow_custom_value=True, elem_id="pl-property", scale=4)
                ui["stretch"] = gr.Checkbox(value=True, label="Stretch colours to each map's range", scale=1)
            ui["heat"] = gr.Image(label="Activation heatmap", type="numpy", format="png", interactive=False,
                                  height=460, elem_id="pl-heat")
            ui["colorbar"] = gr.HTML(views.colorbar_html())
            ui["heat_md"] = gr.Markdown("", elem_id="pl-heat-md")
        with gr.Column(scale=2):
            ui["top_n"] = gr.Slider(2, 12, value=6, step=1, label="How many top properties")
            ui["top_btn"] = gr.Button("Show the top properties side by side")
            ui["top_gallery"] = gr.Gallery(label="Most active properties in the image", columns=2,
                                           height=560, object_fit="contain", elem_id="pl-top-gallery")


def resolve_property(space, value) -> int:
    """A property index from a dropdown value, an index or (part of) a property name."""
    text = str(value if value is not None else "").strip()
    if not text:
        raise ProLabError("Pick a property.")
    head = text.split("·")[0].strip()
    if head.isdigit():
        k = int(head)
        if not 0 <= k < space.k:
            raise ProLabError(f"Property {k} does not exist (K = {space.k}).")
        return k
    q = text.casefold()
    for k, n in enumerate(space.property_names):
        if q in n.casefold():
            return k
    raise ProLabError(f"No property name contains {text!r}.")


def wire(ui: dict, res: Resources) -> None:
    def _result(s):
        seg = s.workbench.last
        if seg is None or seg.activations is None:
            raise ProLabError("Segment an image first (property maps need a property model).")
        return seg

    def _heat(s, seg, k: int, stretch: bool):
        a = seg.activations[k]
        lo, hi = views.map_range(a, stretch)
        img = views.heat_overlay(s.workbench.image, a, vmin=lo, vmax=hi)
        md = (f"**Property {k}**: {views.escape(seg.space.property_names[k])}  \n"
              f"mean {a.mean():.3f} · min {a.min():.3f} · max {a.max():.3f} · used by "
              f"{int(seg.space.multihot[:, k].sum())} classes")
        return img, views.colorbar_html(lo, hi), md

    def _gallery(s, seg, n: int, stretch: bool):
        from prolab.explore import image_top_properties

        top = image_top_properties(seg.activations, as_int(n, "The number of top properties", 1, 64, default=6))
        items = []
        for k, v in zip(top.indices, top.values):
            lo, hi = views.map_range(seg.activations[k], stretch)
            items.append((views.heat_overlay(s.workbench.image, seg.activations[k], vmin=lo, vmax=hi),
                          f"{k} · {seg.space.property_names[k]} (mean {v:.2f})"))
        return items, top.indices

    @user_errors
    def property_map(state, prop, stretch=True):
        """Heatmap of one property's activation over the current image."""
        s = ensure_session(state, res)
        with s.lock:
            seg = _result(s)
            img, bar, md = _heat(s, seg, resolve_property(seg.space, prop), bool(stretch))
        return s, img, bar, md

    heat_out = [ui["state"], ui["heat"], ui["colorbar"], ui["heat_md"]]
    ui["property"].input(property_map, [ui["state"], ui["property"], ui["stretch"]], heat_out,
                         api_name="property_map")
    ui["stretch"].input(property_map, [ui["state"], ui["property"], ui["stretch"]], heat_out,
                        api_name="property_map_stretch")

    @user_errors
    def top_property_maps(state, n, stretch=True):
        """Heatmaps of the n most active properties of the image."""
        s = ensure_session(state, res)
        with s.lock:
            items, _ = _gallery(s, _result(s), n, bool(stretch))
        return s, items

    ui["top_btn"].click(top_property_maps, [ui["state"], ui["top_n"], ui["stretch"]],
                        [ui["state"], ui["top_gallery"]], api_name="top_property_maps")

    @user_errors
    def property_maps_overview(state, prop, n, stretch=True):
        """What the tab shows when opened: the chosen (else the most active) property and the top n."""
        s = ensure_session(state, res)
        with s.lock:
            seg = s.workbench.last
            if seg is None or seg.activations is None:
                return (s, gr.update(), gr.update(), "Segment an image first; its property maps appear here.",
                        gr.update(), gr.update())
            items, top = _gallery(s, seg, n, bool(stretch))
            try:
                k = resolve_property(seg.space, prop) if prop else top[0]
            except ProLabError:
                k = top[0]
            img, bar, md = _heat(s, seg, k, bool(stretch))
        return s, img, bar, md, items, str(k)

    ui["properties_tab"].select(property_maps_overview, [ui["state"], ui["property"], ui["top_n"], ui["stretch"]],
                                heat_out + [ui["top_gallery"], ui["property"]], api_name="property_maps_overview")
