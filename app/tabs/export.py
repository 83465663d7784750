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
from app.common import as_int, as_opacity, ensure_session, required_space
from app.state import Resources, user_errors
from prolab.errors import ProLabError
from prolab.predict import save_mask, unknown_value


def layout(ui: dict) -> None:
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
        ui["exp_mask"] = gr.Button("Index mask PNG")
        ui["exp_overlay"] = gr.Button("Overlay PNG")
        ui["exp_props"] = gr.Button("Property maps (zip)")
        ui["exp_space"] = gr.Button("Label space (zip)")
        ui["exp_desc"] = gr.Button("Descriptions JSON")
    ui["exp_files"] = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="pl-exports")


def _outdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="prolab-export-"))


def _need_result(s):
    if s.workbench.last is None:
        raise ProLabError("Segment an image first.")
    return s.workbench.last


def _stem(s) -> str:
    return Path(s.image_name).stem if s.image_name else "image"


def wire(ui: dict, res: Resources) -> None:
    outs = [ui["state"], ui["exp_files"]]

    @user_errors
    def export_mask(state):
        """Index mask PNG (+ class list JSON) of the last segmentation."""
        s = ensure_session(state, res)
        with s.lock:
            seg = _need_result(s)
            d = _outdir()
            mask = save_mask(seg.labels.astype(np.int64), seg.class_names, d / f"{_stem(s)}_mask.png")
            legend = d / f"{_stem(s)}_classes.json"
            legend.write_text(json.dumps({"classes": seg.class_names, "unknown": unknown_value(len(seg.class_names)),
                                          "palette": seg.palette.tolist()}, indent=1, ensure_ascii=False))
            return s, [str(mask), str(legend)]

    ui["exp_mask"].click(export_mask, [ui["state"]], outs, api_name="export_mask")

    @user_errors
    def export_overlay(state, opacity):
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
            return s, [str(ov), str(col)]

    ui["exp_overlay"].click(export_overlay, [ui["state"], ui["opacity"]], outs, api_name="export_overlay")

    @user_errors
    def export_property_maps(state, n):
        """Zip: top-n property heatmaps (PNG), all activations (npy) and the property names."""
        from PIL import Image

        from prolab.explore import image_top_properties

        s = ensure_session(state, res)
        with s.lock:
            seg = _need_result(s)
            if seg.activations is None:
                raise ProLabError("This model has no property maps (category-supervised).")
            d = _outdir()
            path = d / f"{_stem(s)}_property_maps.zip"
            top = image_top_properties(seg.activations, as_int(n, "The number of property maps", 1, 64, default=6))
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                for k in top.indices:
                    buf = io.BytesIO()
                    Image.fromarray(views.heat_overlay(s.workbench.image, seg.activations[k], 1.0)).save(buf, "PNG")
                    z.writestr(f"property_{k:03d}.png", buf.getvalue())
                buf = io.BytesIO()
                np.save(buf, seg.activations.astype(np.float16))
                z.writestr("activations.npy", buf.getvalue())
                z.writestr("properties.json", json.dumps(
                    {"property_names": seg.property_names, "top": top.indices,
                     "top_mean_activation": top.values}, indent=1, ensure_ascii=False))
            return s, [str(path)]

    ui["exp_props"].click(export_property_maps, [ui["state"], ui["top_n"]], outs, api_name="export_property_maps")

    @user_errors
    def export_label_space(state):
        """The label space in use (edits and novel categories included), zipped."""
        s = ensure_session(state, res)
        with s.lock:
            space = required_space(s)
            d = _outdir()
            space.save(d / "labelspace")
            archive = shutil.make_archive(str(d / f"labelspace_{s.label_key}"), "zip", d / "labelspace")
            return s, [archive]

    ui["exp_space"].click(export_label_space, [ui["state"]], outs, api_name="export_label_space")

    @user_errors
    def export_all_descriptions(state):
        """The descriptions in use (edits and novel categories included) as JSON."""
        from prolab.descriptions import save_descriptions

        s = ensure_session(state, res)
        with s.lock:
            wb = s.workbench
            ds = wb.descriptions.merged(wb.novel) if len(wb.novel) else wb.descriptions
            path = save_descriptions(ds, _outdir() / f"descriptions_{s.label_key}.json")
            return s, [str(path)]

    ui["exp_desc"].click(export_all_descriptions, [ui["state"]], outs, api_name="export_descriptions_file")
