"""Export: index mask PNG, coloured overlay PNG, property maps, the label space, descriptions."""
from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np

from app import views
from app.common import as_int, as_opacity, bind, ensure_session, required_space
from app.components import UI, ExportUI
from app.state import Resources, Session, user_errors
from prolab.errors import ProLabError
from prolab.predict import save_mask, unknown_value


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


def _outdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="prolab-export-"))


def _need_result(s):
    if s.workbench.last is None:
        raise ProLabError("Segment an image first.")
    return s.workbench.last


def _stem(s) -> str:
    return Path(s.image_name).stem if s.image_name else "image"


def _files(ui: UI, s: Session, paths: list) -> dict:
    return {ui.state: s, ui.export.files: [str(p) for p in paths]}


# ---------------------------------------------------------------------------- handlers
@user_errors
def export_mask(res: Resources, ui: UI, state: Session | None) -> dict:
    """Index mask PNG (+ class list JSON) of the last segmentation."""
    s = ensure_session(state, res)
    with s.lock:
        seg = _need_result(s)
        d = _outdir()
        mask = save_mask(seg.labels.astype(np.int64), seg.class_names, d / f"{_stem(s)}_mask.png")
        legend = d / f"{_stem(s)}_classes.json"
        legend.write_text(json.dumps({"classes": seg.class_names, "unknown": unknown_value(len(seg.class_names)),
                                      "palette": seg.palette.tolist()}, indent=1, ensure_ascii=False))
        return _files(ui, s, [mask, legend])


@user_errors
def export_overlay(res: Resources, ui: UI, state: Session | None, opacity) -> dict:
    """The coloured overlay PNG as shown (and the class colours alone)."""
    from PIL import Image

    s = ensure_session(state, res)
    with s.lock:
        seg = _need_result(s)
        d = _outdir()
        ov = d / f"{_stem(s)}_overlay.png"
        Image.fromarray(views.overlay(s.workbench.image, seg, as_opacity(opacity))).save(ov)
        col = d / f"{_stem(s)}_colors.png"
        Image.fromarray(views.mask_image(seg)).save(col)
        return _files(ui, s, [ov, col])


def _property_maps_zip(path: Path, image, seg, n) -> Path:
    """Zip: top-n property heatmaps (PNG), all activations (npy) and the property names."""
    from PIL import Image

    from prolab.explore import image_top_properties

    top = image_top_properties(seg.activations, as_int(n, "The number of property maps", 1, 64, default=6))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k in top.indices:
            buf = io.BytesIO()
            Image.fromarray(views.heat_overlay(image, seg.activations[k], 1.0)).save(buf, "PNG")
            z.writestr(f"property_{k:03d}.png", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, seg.activations.astype(np.float16))
        z.writestr("activations.npy", buf.getvalue())
        z.writestr("properties.json", json.dumps(
            {"property_names": seg.property_names, "top": top.indices,
             "top_mean_activation": top.values}, indent=1, ensure_ascii=False))
    return path


@user_errors
def export_property_maps(res: Resources, ui: UI, state: Session | None, n) -> dict:
    """Zip: top-n property heatmaps (PNG), all activations (npy) and the property names."""
    s = ensure_session(state, res)
    with s.lock:
        seg = _need_result(s)
        if seg.activations is None:
            raise ProLabError("This model has no property maps (category-supervised).")
        path = _outdir() / f"{_stem(s)}_property_maps.zip"
        return _files(ui, s, [_property_maps_zip(path, s.workbench.image, seg, n)])


@user_errors
def export_label_space(res: Resources, ui: UI, state: Session | None) -> dict:
    """The label space in use (edits and novel categories included), zipped."""
    s = ensure_session(state, res)
    with s.lock:
        space = required_space(s)
        d = _outdir()
        space.save(d / "labelspace")
        return _files(ui, s, [shutil.make_archive(str(d / f"labelspace_{s.label_key}"), "zip", d / "labelspace")])


@user_errors
def export_all_descriptions(res: Resources, ui: UI, state: Session | None) -> dict:
    """The descriptions in use (edits and novel categories included) as JSON."""
    from prolab.descriptions import save_descriptions

    s = ensure_session(state, res)
    with s.lock:
        wb = s.workbench
        ds = wb.descriptions.merged(wb.novel) if len(wb.novel) else wb.descriptions
        return _files(ui, s, [save_descriptions(ds, _outdir() / f"descriptions_{s.label_key}.json")])


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    x, v = ui.export, ui.viewer
    outs = [ui.state, x.files]
    x.mask_btn.click(bind(export_mask, res, ui), [ui.state], outs, api_name="export_mask")
    x.overlay_btn.click(bind(export_overlay, res, ui), [ui.state, v.opacity], outs, api_name="export_overlay")
    x.props_btn.click(bind(export_property_maps, res, ui), [ui.state, ui.properties.top_n], outs,
                      api_name="export_property_maps")
    x.space_btn.click(bind(export_label_space, res, ui), [ui.state], outs, api_name="export_label_space")
    x.desc_btn.click(bind(export_all_descriptions, res, ui), [ui.state], outs, api_name="export_descriptions_file")
