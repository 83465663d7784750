"""Export: index mask PNG, coloured overlay PNG, property maps, the label space, descriptions."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from app.components import ExportUI
from app.handlers import Ctx, handler, on
from app.inputs import as_int, as_opacity
from app.views import common
from app.views import export as view
from prolab.errors import ProLabError
from prolab.explore import image_top_properties
from prolab.predict import save_mask, unknown_value
from prolab.edit_session import Segmentation


def layout() -> ExportUI:
    gr.Markdown(
        "- **Index mask**: one value per pixel = class index in the label set (255 = unknown; 16-bit "
        "PNG when there are more than 255 classes). The class names are stored in the PNG's `classes` "
        "text field and in the accompanying JSON.\n"
        "- **Overlay**: the image with the coloured class map, as shown.\n"
        "- **Property maps**: a zip with PNG heatmaps of the top properties, every activation map "
        "(`activations.npy`, K x h x w float16) and `properties.json`.\n"
        "- **Label space**: a zip of the saved label space directory (`labelspace.json` + "
        "`labelspace.safetensors`), loadable with `LabelSpace.load`.")
    with gr.Row():
        mask, overlay, props, space, desc = (gr.Button(text) for text in (
            "Index mask PNG", "Overlay PNG", "Property maps (zip)", "Label space (zip)", "Descriptions JSON"))
    files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="pl-exports")
    return ExportUI(mask_btn=mask, overlay_btn=overlay, props_btn=props, space_btn=space, desc_btn=desc,
                    files=files)


def _need_result(ctx: Ctx) -> Segmentation:
    if ctx.edit.last is None:
        raise ProLabError("Segment an image first.")
    return ctx.edit.last


def _stem(ctx: Ctx) -> str:
    name = ctx.edit.image_name
    return Path(name).stem if name else "image"


def _files(ctx: Ctx, paths: list) -> dict:
    return {ctx.ui.export.files: [str(p) for p in paths]}


def _outputs(ui) -> list:
    return [ui.export.files]


# ---------------------------------------------------------------------------- handlers
@handler(outputs=_outputs,
         events=lambda ui: [on(ui.export.mask_btn.click, api_name="export_mask")])
def export_mask(ctx: Ctx) -> dict:
    """Index mask PNG (+ class list JSON) of the last segmentation."""
    seg, d, stem = _need_result(ctx), ctx.export_folder(), _stem(ctx)
    mask = save_mask(seg.labels.astype(np.int64), seg.class_names, d / f"{stem}_mask.png")
    legend = d / f"{stem}_classes.json"
    legend.write_text(json.dumps({"classes": seg.class_names, "unknown": unknown_value(len(seg.class_names)),
                                  "palette": seg.palette.tolist()}, indent=1, ensure_ascii=False))
    return _files(ctx, [mask, legend])


@handler(outputs=_outputs,
         events=lambda ui: [on(ui.export.overlay_btn.click, api_name="export_overlay")])
def export_overlay(ctx: Ctx, opacity) -> dict:
    """The coloured overlay PNG as shown (and the class colours alone)."""
    seg, d, stem = _need_result(ctx), ctx.export_folder(), _stem(ctx)
    ov = d / f"{stem}_overlay.png"
    Image.fromarray(common.overlay(ctx.edit.image, seg, as_opacity(opacity))).save(ov)
    col = d / f"{stem}_colors.png"
    Image.fromarray(view.mask_image(seg)).save(col)
    return _files(ctx, [ov, col])


def _property_maps_zip(path: Path, image, seg: Segmentation, n) -> Path:
    """Zip: top-n property heatmaps (PNG), all activations (npy) and the property names."""
    top = image_top_properties(seg.activations, as_int(n, "The number of property maps", 1, 64, default=6))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k in top.indices:
            buf = io.BytesIO()
            Image.fromarray(common.heat_overlay(image, seg.activations[k], 1.0)).save(buf, "PNG")
            z.writestr(f"property_{k:03d}.png", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, seg.activations.astype(np.float16))
        z.writestr("activations.npy", buf.getvalue())
        z.writestr("properties.json", json.dumps(
            {"property_names": seg.property_names, "top": top.indices,
             "top_mean_activation": top.values}, indent=1, ensure_ascii=False))
    return path


@handler(outputs=_outputs, inputs=lambda ui: {"n": ui.properties.top_n},
         events=lambda ui: [on(ui.export.props_btn.click, api_name="export_property_maps")])
def export_property_maps(ctx: Ctx, n) -> dict:
    """Zip: top-n property heatmaps (PNG), all activations (npy) and the property names."""
    seg = _need_result(ctx)
    if seg.activations is None:
        raise ProLabError("This model has no property maps (category-supervised).")
    path = ctx.export_folder() / f"{_stem(ctx)}_property_maps.zip"
    return _files(ctx, [_property_maps_zip(path, ctx.edit.image, seg, n)])


@handler(outputs=_outputs,
         events=lambda ui: [on(ui.export.space_btn.click, api_name="export_label_space")])
def export_label_space(ctx: Ctx) -> dict:
    """The label space in use (edits and novel categories included), zipped."""
    space = ctx.required_space()
    d = ctx.export_folder()
    space.save(d / "labelspace")
    return _files(ctx, [shutil.make_archive(str(d / f"labelspace_{ctx.edit.choice.key}"), "zip", d / "labelspace")])


@handler(outputs=_outputs,
         events=lambda ui: [on(ui.export.desc_btn.click, api_name="export_descriptions_file")])
def export_all_descriptions(ctx: Ctx) -> dict:
    """The descriptions in use (edits and novel categories included) as JSON."""
    return _files(ctx, [ctx.descriptions_file()])
