"""The viewer (image, overlay, legend) and the Segment / Pixel inspector panels."""
from __future__ import annotations

import gradio as gr

from app import views
from app.common import apply_label_set, as_int, as_opacity, bind, ensure_session, load_image_file
from app.components import UI, ControlsUI, InspectorUI, ViewerUI
from app.resegment import already_shown, resegment, segment_now, shown
from app.state import Resources, Session, user_errors
from prolab.assets import EXAMPLES_DIR
from prolab.errors import ProLabError
from prolab.quality import QUALITIES

EXAMPLE_FILES = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def layout_viewer() -> ViewerUI:
    """Left column: input, examples, the result image with its legend and status."""
    with gr.Row(equal_height=True):
        file = gr.File(label="Your image", file_types=["image"],
                       type="filepath", height=130, scale=2, elem_id="pl-upload")
        examples = gr.Gallery(value=[(str(p), p.stem) for p in EXAMPLE_FILES],
                              label="Examples (public domain / CC0, click one)", columns=4,
                              height=130, allow_preview=False, scale=3, elem_id="pl-examples",
                              interactive=False)
    image = gr.Image(label="Result: click a pixel to inspect it", type="numpy", format="png",
                     interactive=False, height=520, elem_id="pl-result", buttons=["download", "fullscreen"])
    legend = gr.HTML(views.empty_legend(), elem_id="pl-legend-box")
    status = gr.Markdown("Upload an image or pick an example, then press **Segment**.", elem_id="pl-status")
    opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity")
    return ViewerUI(file=file, examples=examples, image=image, legend=legend, status=status, opacity=opacity)


def layout_controls(res: Resources) -> ControlsUI:
    """Right column, first panel: label set, unknown threshold and the Segment button."""
    choices = res.label_set_choices()
    default = res.config.label_set if res.config.label_set in {v for _, v in choices} else choices[0][1]
    return ControlsUI(
        label_set=gr.Dropdown(choices, value=default, label="Label set",
                              info="Classes to segment with; any set works with the same model.",
                              elem_id="pl-label-set"),
        custom_file=gr.File(label="Custom label set: descriptions JSON {class: [sentences]}",
                            file_types=[".json"], type="filepath", visible=default == "custom", height=90),
        threshold=gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Unknown threshold",
                            info="Pixels whose best class score (cosine) is below this show as "
                                 "'unknown' instead of being forced into a class. 0 = off."),
        quality=gr.Radio([q.name for q in QUALITIES.values()], value="default", label="Speed / quality",
                         info="fast: ONNX Runtime at a smaller input; accurate: 4 scales, each mirrored "
                              "(about 10x slower; docs/RESULTS.md). Also used by the Live tab.",
                         elem_id="pl-segment-quality"),
        segment_btn=gr.Button("Segment", variant="primary", elem_id="pl-segment-btn"),
        top_fig=gr.Plot(label="Most active properties in the image", elem_id="pl-top-props"))


def layout_inspector() -> InspectorUI:
    gr.Markdown("Click the result image, or type a position (pixels of the shown image).")
    with gr.Row():
        px = gr.Number(label="x", value=0, precision=0, minimum=0)
        py = gr.Number(label="y", value=0, precision=0, minimum=0)
        inspect_btn = gr.Button("Inspect", scale=0)
    inspect_md = gr.Markdown("")
    px_classes = gr.Dataframe(headers=["class", "score (cosine)"], label="Top classes at the pixel",
                              interactive=False, elem_id="pl-px-classes")
    px_props = gr.Dataframe(headers=["#", "property", "activation"], wrap=True,
                            column_widths=["10%", "70%", "20%"],
                            label="Top properties at the pixel", interactive=False)
    return InspectorUI(px=px, py=py, inspect_btn=inspect_btn, inspect_md=inspect_md, px_classes=px_classes,
                       px_props=px_props)


# ---------------------------------------------------------------------------- handlers
@user_errors
def load_image(res: Resources, ui: UI, state: Session | None, file) -> dict:
    """Show an uploaded image (checked and converted to RGB) before segmenting it."""
    s = ensure_session(state, res)
    v = ui.viewer
    if not file:
        return {ui.state: s, v.legend: views.empty_legend(), v.status: "Upload an image or pick an example."}
    with s.lock:
        try:
            load_image_file(s, file)
        except ProLabError as exc:  # shown in place (and as a toast); the previous image stays
            gr.Warning(views.escape(str(exc)))
            return {ui.state: s, v.status: views.error_markdown(str(exc))}
        img = s.workbench.image
    note = f" {views.resized_note(s.resized_from, img.shape)}" if s.resized_from is not None else ""
    return {ui.state: s, v.image: img, v.legend: views.empty_legend("Press Segment to see the classes."),
            v.status: f"Image loaded ({img.shape[1]} x {img.shape[0]} px).{note} Press **Segment**."}


def pick_example(ui: UI, evt: gr.SelectData) -> dict:
    return {ui.viewer.file: str(EXAMPLE_FILES[evt.index])}


@user_errors
def segment(res: Resources, ui: UI, state: Session | None, file, label_set, custom_file, threshold, opacity,
            progress=gr.Progress()) -> dict:
    """Segment the image with the chosen label set (one forward pass per image, then cached)."""
    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        load_image_file(s, file)
        if not s.workbench.has_embeddings:
            progress(0.3, desc="Forward pass (once per image)")
        segment_now(s, threshold)
        return shown(ui, s, opacity)


@user_errors
def set_label_set(res: Resources, ui: UI, state: Session | None, label_set, custom_file, threshold,
                  opacity) -> dict:
    """Switch label set; re-segments the current image without a new forward pass."""
    s = ensure_session(state, res)
    visible = {ui.controls.custom_file: gr.update(visible=label_set == "custom")}
    with s.lock:
        if label_set == "custom" and not custom_file:
            return {ui.state: s, ui.viewer.status: "Upload a descriptions JSON for the custom label set.",
                    **visible}
        if not apply_label_set(s, res, label_set, custom_file):  # the dropdown fires twice per pick:
            # the second time nothing changed, so the result is shown again, not re-scored
            return {**(shown(ui, s, opacity) if s.workbench.last is not None else {ui.state: s}), **visible}
        message = f"Label set: **{views.escape(s.workbench.label_set.name)}**."
        return {**resegment(ui, s, threshold, opacity, message), **visible}


@user_errors
def set_quality(res: Resources, ui: UI, state: Session | None, quality, threshold, opacity,
                progress=gr.Progress()) -> dict:
    """Switch the speed/quality step (both tabs' radios show it); re-segments the current image."""
    from app.common import apply_quality

    s = ensure_session(state, res)
    with s.lock:
        if s.workbench.image is not None:
            progress(0.3, desc=f"Forward pass ({quality})")
        apply_quality(s, res, quality)
        s.live.reset()
        radios = {ui.controls.quality: s.quality, ui.live.quality: s.quality}
        return {**resegment(ui, s, threshold, opacity, f"Speed / quality: **{s.quality}**."), **radios}


@user_errors
def rescore(res: Resources, ui: UI, state: Session | None, threshold, opacity) -> dict:
    """Re-segment the current image (cached embeddings) with the current label space and threshold."""
    s = ensure_session(state, res)
    with s.lock:
        if s.workbench.image is None:
            raise ProLabError("No image yet: upload one or pick an example.")
        if not already_shown(s, threshold):  # a slider released where it was: shown again, not re-scored
            segment_now(s, threshold)
        return shown(ui, s, opacity)


@user_errors
def set_opacity(res: Resources, ui: UI, state: Session | None, opacity) -> dict:
    """Redraw the overlay with another opacity (no re-scoring)."""
    s = ensure_session(state, res)
    with s.lock:
        s.opacity = as_opacity(opacity)
        if s.workbench.last is None:
            return {ui.state: s}
        return {ui.state: s, ui.viewer.image: views.overlay(s.workbench.image, s.workbench.last, s.opacity)}


@user_errors
def inspect_pixel(res: Resources, ui: UI, state: Session | None, x, y) -> dict:
    """Top classes and properties (with scores) at pixel (x, y) of the shown image."""
    from prolab.explore import image_to_grid

    s = ensure_session(state, res)
    with s.lock:
        seg = s.workbench.last
        if seg is None:
            raise ProLabError("Segment an image first, then click it to inspect a pixel.")
        h, w = s.workbench.image.shape[:2]
        x, y = as_int(x, "x", 0, default=0), as_int(y, "y", 0, default=0)  # image_to_grid: inside the image
        row, col = image_to_grid(x, y, (h, w), seg.grid_shape)
        classes, props = views.pixel_tables(seg, row, col)
        label = seg.labels[y, x]
        shown_as = "unknown" if label < 0 else seg.class_names[label]
        marked = views.mark_pixel(views.overlay(s.workbench.image, seg, s.opacity), x, y)  # where it looked
    md = (f"**Pixel ({x}, {y})** → shown as **{views.escape(shown_as)}** "
          f"(score map cell {row}, {col} of {seg.grid_shape[0]} x {seg.grid_shape[1]})")
    i = ui.inspector
    return {ui.state: s, i.px: x, i.py: y, i.inspect_md: md, i.px_classes: classes, i.px_props: props,
            ui.right_tabs: gr.Tabs(selected="inspector"), ui.viewer.image: marked}


def inspect_click(res: Resources, ui: UI, state: Session | None, evt: gr.SelectData) -> dict:
    x, y = evt.index
    return inspect_pixel(res, ui, state, x, y)


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    v, c, i = ui.viewer, ui.controls, ui.inspector
    image_out = [ui.state, v.image, v.legend, v.status]
    v.file.upload(bind(load_image, res, ui), [ui.state, v.file], image_out, api_name="load_image")
    v.examples.select(bind(pick_example, ui), None, v.file, api_name="pick_example").then(
        bind(load_image, res, ui), [ui.state, v.file], image_out, api_visibility="private")
    c.segment_btn.click(bind(segment, res, ui), [ui.state, v.file, c.label_set, c.custom_file, c.threshold,
                                                 v.opacity], ui.result, api_name="segment")
    label_in = [ui.state, c.label_set, c.custom_file, c.threshold, v.opacity]
    c.label_set.input(bind(set_label_set, res, ui), label_in, ui.result + [c.custom_file],
                      api_name="set_label_set")
    c.custom_file.upload(bind(set_label_set, res, ui), label_in, ui.result + [c.custom_file],
                          api_name="load_custom_label_set", show_progress_on=c.custom_file)  # a bad file: badge there
    quality_out = ui.result + [c.quality, ui.live.quality]
    for radio in (c.quality, ui.live.quality):
        radio.input(bind(set_quality, res, ui), [ui.state, radio, c.threshold, v.opacity], quality_out,
                    api_name="set_quality" if radio is c.quality else None,
                    api_visibility="public" if radio is c.quality else "private")
    c.threshold.release(bind(rescore, res, ui), [ui.state, c.threshold, v.opacity], ui.result,
                        api_name="rescore")
    v.opacity.release(bind(set_opacity, res, ui), [ui.state, v.opacity], [ui.state, v.image], api_name="overlay")
    inspect_out = [ui.state, i.px, i.py, i.inspect_md, i.px_classes, i.px_props, ui.right_tabs, v.image]
    i.inspect_btn.click(bind(inspect_pixel, res, ui), [ui.state, i.px, i.py], inspect_out,
                        api_name="inspect_pixel")
    v.image.select(bind(inspect_click, res, ui), [ui.state], inspect_out, api_name="inspect_click")
