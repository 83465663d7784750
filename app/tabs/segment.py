"""The viewer (image, overlay, legend) and the Segment / Pixel inspector panels."""
from __future__ import annotations

import gradio as gr

from app import views
from app.common import apply_label_set, as_int, as_opacity, ensure_session, load_image_file, render
from app.state import Resources, user_errors
from prolab.assets import EXAMPLES_DIR
from prolab.errors import ProLabError

EXAMPLE_FILES = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def layout_viewer(ui: dict) -> None:
    """Left column: input, examples, the result image with its legend and status."""
    with gr.Row(equal_height=True):
        ui["file"] = gr.File(label="Your image", file_types=["image"],
                             type="filepath", height=130, scale=2, elem_id="pl-upload")
        ui["examples"] = gr.Gallery(value=[(str(p), p.stem) for p in EXAMPLE_FILES],
                                    label="Examples (public domain / CC0, click one)", columns=4,
                                    height=130, allow_preview=False, scale=3, elem_id="pl-examples",
                                    interactive=False)
    ui["image"] = gr.Image(label="Result: click a pixel to inspect it", type="numpy", format="png",
                           interactive=False, height=520, elem_id="pl-result",
                           buttons=["download", "fullscreen"])
    ui["legend"] = gr.HTML(views.empty_legend(), elem_id="pl-legend-box")
    ui["status"] = gr.Markdown("Upload an image or pick an example, then press **Segment**.",
                               elem_id="pl-status")
    ui["opacity"] = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity")


def layout_controls(ui: dict, res: Resources) -> None:
    """Right column, first panel: label set, unknown threshold and the Segment button."""
    choices = res.label_set_choices()
    default = res.config.label_set if res.config.label_set in {v for _, v in choices} else choices[0][1]
    ui["label_set"] = gr.Dropdown(choices, value=default, label="Label set",
                                  info="Classes to segment with; any set works with the same model.",
                                  elem_id="pl-label-set")
    ui["custom_file"] = gr.File(label="Custom label set: descriptions JSON {class: [sentences]}",
                                file_types=[".json"], type="filepath", visible=default == "custom",
                                height=90)
    ui["threshold"] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Unknown threshold",
                                info="Pixels whose best class score (cosine) is below this show as "
                                     "'unknown' instead of being forced into a class. 0 = off.")
    ui["segment_btn"] = gr.Button("Segment", variant="primary", elem_id="pl-segment-btn")
    ui["top_fig"] = gr.Plot(label="Most active properties in the image", elem_id="pl-top-props")


def layout_inspector(ui: dict) -> None:
    gr.Markdown("Click the result image, or type a position (pixels of the shown image).")
    with gr.Row():
        ui["px"] = gr.Number(label="x", value=0, precision=0, minimum=0)
        ui["py"] = gr.Number(label="y", value=0, precision=0, minimum=0)
        ui["inspect_btn"] = gr.Button("Inspect", scale=0)
    ui["inspect_md"] = gr.Markdown("")
    ui["px_classes"] = gr.Dataframe(headers=["class", "score (cosine)"], label="Top classes at the pixel",
                                    interactive=False, elem_id="pl-px-classes")
    ui["px_props"] = gr.Dataframe(headers=["#", "property", "activation"], wrap=True,
                                  column_widths=["10%", "70%", "20%"],
                                  label="Top properties at the pixel", interactive=False)


def seg_outputs(ui: dict) -> list:
    return [ui["state"], ui["image"], ui["legend"], ui["status"], ui["top_fig"], ui["property"]]


def seg_result(s, opacity: float) -> tuple:
    """Values for :func:`seg_outputs` after a (re-)segmentation."""
    img, legend, status, fig = render(s, opacity)
    space = s.workbench.last.space
    choices = views.property_choices(space)
    return s, img, legend, status, fig, gr.update(choices=choices)


def wire(ui: dict, res: Resources) -> None:
    @user_errors
    def load_image(state, file):
        """Show an uploaded image (checked and converted to RGB) before segmenting it."""
        s = ensure_session(state, res)
        if not file:
            return s, gr.update(), views.empty_legend(), "Upload an image or pick an example."
        with s.lock:
            try:
                load_image_file(s, file)
            except ProLabError as exc:  # shown in place (and as a toast); the previous image stays
                gr.Warning(views.escape(str(exc)))
                return s, gr.update(), gr.update(), views.error_markdown(str(exc))
            img = s.workbench.image
        return (s, img, views.empty_legend("Press Segment to see the classes."),
                f"Image loaded ({img.shape[1]} x {img.shape[0]} px). Press **Segment**.")

    ui["file"].upload(load_image, [ui["state"], ui["file"]],
                      [ui["state"], ui["image"], ui["legend"], ui["status"]], api_name="load_image")

    def pick_example(evt: gr.SelectData):
        return str(EXAMPLE_FILES[evt.index])

    ui["examples"].select(pick_example, None, ui["file"], api_name="pick_example").then(
        load_image, [ui["state"], ui["file"]], [ui["state"], ui["image"], ui["legend"], ui["status"]],
        api_visibility="private")

    @user_errors
    def segment(state, file, label_set, custom_file, threshold, opacity, progress=gr.Progress()):
        """Segment the image with the chosen label set (one forward pass per image, then cached)."""
        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            load_image_file(s, file)
            if not s.workbench.has_embeddings:
                progress(0.3, desc="Forward pass (once per image)")
            s.workbench.segment(threshold)
            return seg_result(s, opacity)

    ui["segment_btn"].click(segment, [ui["state"], ui["file"], ui["label_set"], ui["custom_file"],
                                      ui["threshold"], ui["opacity"]], seg_outputs(ui), api_name="segment")

    @user_errors
    def set_label_set(state, label_set, custom_file, threshold, opacity):
        """Switch label set; re-segments the current image without a new forward pass."""
        s = ensure_session(state, res)
        visible = gr.update(visible=label_set == "custom")
        with s.lock:
            if label_set == "custom" and not custom_file:
                return (s, gr.update(), gr.update(), "Upload a descriptions JSON for the custom label set.",
                        gr.update(), gr.update(), visible)
            apply_label_set(s, res, label_set, custom_file)
            if s.workbench.image is None or s.workbench.last is None:
                return (s, gr.update(), gr.update(), f"Label set: **{s.workbench.label_set.name}**.",
                        gr.update(), gr.update(), visible)
            s.workbench.segment(threshold)
            return (*seg_result(s, opacity), visible)

    ui["label_set"].input(set_label_set, [ui["state"], ui["label_set"], ui["custom_file"], ui["threshold"],
                                          ui["opacity"]], seg_outputs(ui) + [ui["custom_file"]],
                          api_name="set_label_set")
    ui["custom_file"].upload(set_label_set, [ui["state"], ui["label_set"], ui["custom_file"], ui["threshold"],
                                             ui["opacity"]], seg_outputs(ui) + [ui["custom_file"]],
                             api_name="load_custom_label_set")

    @user_errors
    def rescore(state, threshold, opacity):
        """Re-segment the current image (cached embeddings) with the current label space and threshold."""
        s = ensure_session(state, res)
        with s.lock:
            if s.workbench.image is None:
                raise ProLabError("No image yet: upload one or pick an example.")
            s.workbench.segment(threshold)
            return seg_result(s, opacity)

    ui["threshold"].release(rescore, [ui["state"], ui["threshold"], ui["opacity"]], seg_outputs(ui),
                            api_name="rescore")
    ui["rescore_fn"] = rescore

    @user_errors
    def set_opacity(state, opacity):
        """Redraw the overlay with another opacity (no re-scoring)."""
        s = ensure_session(state, res)
        with s.lock:
            if s.workbench.last is None:
                return s, gr.update()
            return s, views.overlay(s.workbench.image, s.workbench.last, as_opacity(opacity))

    ui["opacity"].release(set_opacity, [ui["state"], ui["opacity"]], [ui["state"], ui["image"]],
                          api_name="overlay")

    inspect_out = [ui["state"], ui["px"], ui["py"], ui["inspect_md"], ui["px_classes"], ui["px_props"],
                   ui["right_tabs"]]

    @user_errors
    def inspect_pixel(state, x, y):
        """Top classes and properties (with scores) at pixel (x, y) of the shown image."""
        from prolab.explore import image_to_grid

        s = ensure_session(state, res)
        with s.lock:
            seg = s.workbench.last
            if seg is None:
                raise ProLabError("Segment an image first, then click it to inspect a pixel.")
            x, y = as_int(x, "x", 0, default=0), as_int(y, "y", 0, default=0)
            row, col = image_to_grid(x, y, s.workbench.image.shape[:2], seg.grid_shape)
            classes, props = views.pixel_tables(seg, row, col)
            label = seg.labels[y, x]
            shown = "unknown" if label < 0 else seg.class_names[label]
        md = (f"**Pixel ({x}, {y})** → shown as **{views.escape(shown)}** "
              f"(score map cell {row}, {col} of {seg.grid_shape[0]} x {seg.grid_shape[1]})")
        return s, x, y, md, classes, props, gr.Tabs(selected="inspector")

    ui["inspect_btn"].click(inspect_pixel, [ui["state"], ui["px"], ui["py"]], inspect_out,
                            api_name="inspect_pixel")

    def inspect_click(state, evt: gr.SelectData):
        x, y = evt.index
        return inspect_pixel(state, x, y)

    ui["image"].select(inspect_click, [ui["state"]], inspect_out, api_name="inspect_click")
