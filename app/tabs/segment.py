"""The viewer (image, overlay, legend) and the Segment / Pixel inspector panels."""
from __future__ import annotations

import gradio as gr

from app.components import ControlsUI, InspectorUI, ViewerUI
from app.handlers import Ctx, handler, on
from app.inputs import as_choice, as_int, as_opacity, user_file
from app.services.text import TextService
from app.views import common
from app.views import segment as view
from prolab.assets import EXAMPLES_DIR
from prolab.edit_session import SetQuality
from prolab.errors import ProLabError
from prolab.explore import image_to_grid
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
    legend = gr.HTML(common.empty_legend(), elem_id="pl-legend-box")
    status = gr.Markdown("Upload an image or pick an example, then press **Segment**.", elem_id="pl-status")
    opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity")
    return ViewerUI(file=file, examples=examples, image=image, legend=legend, status=status, opacity=opacity)


def layout_controls(default_label_set: str) -> ControlsUI:
    """Right column, first panel: label set, unknown threshold and the Segment button."""
    choices = TextService.label_set_choices()
    default = default_label_set if default_label_set in {v for _, v in choices} else choices[0][1]
    return ControlsUI(
        label_set=gr.Dropdown(choices, value=default, label="Label set",
                              info="Classes to segment with; any set works with the same model.",
                              elem_id="pl-label-set"),
        custom_file=gr.File(label="Custom label set: descriptions JSON {class: [sentences]}",
                            file_types=[".json"], type="filepath", visible=default == "custom", height=90),
        threshold=gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Unknown threshold", elem_id="pl-threshold",
                            elem_classes=["pl-enter-commits"],
                            info="Pixels whose best class score (cosine plus the model's score offset) is below this show as "
                                 "'unknown' instead of being forced into a class. 0 = off."),
        quality=gr.Radio([q.name for q in QUALITIES.values()], value="default", label="Speed / quality",
                         info="fast: ONNX Runtime at a smaller input, plain upsampling; default: boundaries on the "
                              "image's edges; accurate: that and 4 scales, each mirrored (about 10x slower; "
                              "docs/RESULTS.md). Also used by the Live tab.",
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
    px_classes = gr.Dataframe(headers=["class", "score (cosine + offset)"], label="Top classes at the pixel",
                              interactive=False, elem_id="pl-px-classes")
    px_props = gr.Dataframe(headers=["#", "property", "activation"], wrap=True,
                            column_widths=["10%", "70%", "20%"],
                            label="Top properties at the pixel", interactive=False)
    return InspectorUI(px=px, py=py, inspect_btn=inspect_btn, inspect_md=inspect_md, px_classes=px_classes,
                       px_props=px_props)


# ---------------------------------------------------------------------------- handlers
@handler(outputs=lambda ui: [ui.viewer.image, ui.viewer.legend, ui.viewer.status],
         inputs=lambda ui: {"file": ui.viewer.file},
         events=lambda ui: [on(ui.viewer.file.upload, api_name="load_image")])
def load_image(ctx: Ctx, file) -> dict:
    """Show an uploaded image (checked and converted to RGB) before segmenting it."""
    v = ctx.ui.viewer
    if not file:
        return {v.legend: common.empty_legend(), v.status: "Upload an image or pick an example."}
    edit = ctx.edit
    try:  # a bad image is reported in the status, where the image would be, not only as a toast
        with user_file(file):
            ctx.edit.open_image(file)
    except ProLabError as exc:  # the previous image stays
        gr.Warning(common.escape(str(exc)))
        return {v.status: common.error_markdown(str(exc))}
    img = edit.image
    note = f" {common.resized_note(edit.source_size, img.shape)}" if edit.source_size is not None else ""
    return {v.image: img, v.legend: common.empty_legend("Press Segment to see the classes."),
            v.status: f"Image loaded ({img.shape[1]} x {img.shape[0]} px).{note} Press **Segment**."}


@handler(outputs=lambda ui: [ui.viewer.file], session=False,
         events=lambda ui: [on(ui.viewer.examples.select, then=load_image, api_name="pick_example")])
def pick_example(ctx: Ctx, evt: gr.SelectData) -> dict:
    return {ctx.ui.viewer.file: str(EXAMPLE_FILES[evt.index])}


@handler(outputs=lambda ui: ui.result_panels, inputs=lambda ui: {"file": ui.viewer.file},
         events=lambda ui: [on(ui.controls.segment_btn.click, api_name="segment")])
def segment(ctx: Ctx, file, label_set, custom_file, threshold, opacity, progress=gr.Progress()) -> dict:
    """Segment the image with the chosen label set (one forward pass per image, then cached)."""
    seg = ctx.edit.segment(file or None, on=as_choice(label_set, custom_file), threshold=threshold,
                           progress=ctx.report)
    return ctx.result(seg, opacity)


@handler(outputs=lambda ui: ui.result_panels + [ui.controls.custom_file, ui.controls.label_set],
         events=lambda ui: [on(ui.controls.label_set.input, api_name="set_label_set"),
                               # a bad file: the progress and error badge there
                               on(ui.controls.custom_file.upload, api_name="load_custom_label_set",
                                  show_progress_on=ui.controls.custom_file)])
def set_label_set(ctx: Ctx, label_set, custom_file, threshold, opacity) -> dict:
    """Switch label set; re-segments the current image without a new forward pass."""
    visible = {ctx.ui.controls.custom_file: gr.update(visible=label_set == "custom")}
    if label_set == "custom" and not custom_file:
        return {ctx.ui.viewer.status: "Upload a descriptions JSON for the custom label set.", **visible}
    try:
        with ctx.services.sessions.building():  # a custom set is built from the user's descriptions
            seg = ctx.edit.apply(on=as_choice(label_set, custom_file), threshold=threshold)
    except ProLabError as exc:
        if label_set == "custom":  # a bad file: its error badge on the file box
            raise
        # e.g. a category model offered another label set: one message, no error badge on every panel, and
        # the dropdown shows again the label set the result is on
        in_use = ctx.edit.choice.key
        ctx.warn(str(exc))
        return {ctx.ui.viewer.status: common.error_markdown(str(exc)), ctx.ui.controls.label_set: in_use,
                ctx.ui.controls.custom_file: gr.update(visible=in_use == "custom")}
    message = f"Label set: **{common.escape(ctx.edit.label_set.name)}**."
    return {**ctx.result(seg, opacity, message), **visible, ctx.ui.controls.label_set: ctx.edit.choice.key}


@handler(outputs=lambda ui: ui.result_panels + [ui.controls.quality, ui.live.quality],
         events=lambda ui: [on(ui.controls.quality.input, {"quality": ui.controls.quality}, api_name="set_quality"),
                               on(ui.live.quality.input, {"quality": ui.live.quality}, api_name=None,
                                  api_visibility="private")])
def set_quality(ctx: Ctx, quality, threshold, opacity, progress=gr.Progress()) -> dict:
    """Switch the speed/quality step (both tabs' radios show it); re-segments the current image."""
    seg = ctx.edit.apply(SetQuality(quality), threshold=threshold, progress=ctx.report)
    ctx.session.live.reset()
    radios = {ctx.ui.controls.quality: ctx.edit.quality, ctx.ui.live.quality: ctx.edit.quality}
    return {**ctx.result(seg, opacity, f"Speed / quality: **{ctx.edit.quality}**."), **radios}


@handler(outputs=lambda ui: ui.result_panels,
         events=lambda ui: [on(ui.controls.threshold.release, api_name="rescore")])
def rescore(ctx: Ctx, threshold, opacity) -> dict:
    """Re-segment the current image (cached embeddings) with the current label space and threshold."""
    if ctx.edit.image is None:  # the threshold is kept for the first image: no error toast for it
        ctx.edit.apply(threshold=threshold)
        return ctx.result(None, opacity, f"Unknown threshold {ctx.edit.threshold or 0:.2f}; upload an image or "
                                         "pick an example, then press **Segment**.")
    # a slider released where it was: the result is shown again, not re-scored
    return ctx.result(ctx.edit.segment(threshold=threshold, again=False), opacity)


@handler(outputs=lambda ui: [ui.viewer.image],
         events=lambda ui: [on(ui.viewer.opacity.release, api_name="overlay")])
def set_opacity(ctx: Ctx, opacity) -> dict:
    """Redraw the overlay with another opacity (no re-scoring)."""
    s = ctx.session
    s.opacity = as_opacity(opacity)
    edit = ctx.edit
    return {} if edit.last is None else {ctx.ui.viewer.image: common.overlay(edit.image, edit.last, s.opacity)}


def _inspect_outputs(ui) -> list:
    i = ui.inspector
    return [i.px, i.py, i.inspect_md, i.px_classes, i.px_props, ui.right_tabs, ui.viewer.image]


@handler(outputs=_inspect_outputs, inputs=lambda ui: {"x": ui.inspector.px, "y": ui.inspector.py},
         events=lambda ui: [on(ui.inspector.inspect_btn.click, api_name="inspect_pixel"),
                            on(ui.inspector.px.submit, api_visibility="private"),  # Enter in either box
                            on(ui.inspector.py.submit, api_visibility="private")])
def inspect_pixel(ctx: Ctx, x, y) -> dict:
    """Top classes and properties (with scores) at pixel (x, y) of the shown image."""
    s = ctx.session
    edit = ctx.edit
    seg = edit.last
    if seg is None:
        raise ProLabError("Segment an image first, then click it to inspect a pixel.")
    h, w = edit.image.shape[:2]
    x, y = as_int(x, "x", 0, default=0), as_int(y, "y", 0, default=0)  # image_to_grid: inside the image
    row, col = image_to_grid(x, y, (h, w), seg.grid_shape)
    classes, props = view.pixel_tables(seg, edit.class_scores(), row, col)
    label = seg.labels[y, x]
    shown_as = "unknown" if label < 0 else seg.class_names[label]
    marked = view.mark_pixel(common.overlay(edit.image, seg, s.opacity), x, y)  # where it looked
    md = (f"**Pixel ({x}, {y})** → shown as **{common.escape(shown_as)}** "
          f"(score map cell {row}, {col} of {seg.grid_shape[0]} x {seg.grid_shape[1]})")
    i, ui = ctx.ui.inspector, ctx.ui
    return {i.px: x, i.py: y, i.inspect_md: md, i.px_classes: classes, i.px_props: props,
            ui.right_tabs: gr.Tabs(selected="inspector"), ui.viewer.image: marked}


@handler(outputs=_inspect_outputs,
         events=lambda ui: [on(ui.viewer.image.select, api_name="inspect_click")])
def inspect_click(ctx: Ctx, evt: gr.SelectData) -> dict:
    index = getattr(evt, "index", None)  # through the API a client may send no event at all
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise ProLabError("Click a point of the result image (or type x and y and press Inspect).")
    x, y = index
    return inspect_pixel(ctx, x, y)
