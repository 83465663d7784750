"""Model: what is loaded, its model card, loading another one; and how scoring works (help)."""
from __future__ import annotations

import gradio as gr

from app.common import bind, ensure_session
from app.components import UI, ModelUI
from app.state import (ModelEntry, Resources, Session, new_session, shipped_model_dir, shipped_models,
                       shipped_name, user_errors)
from app.views import escape
from prolab.errors import ProLabError

HELP = """
### How any label set is scored with one model
The model outputs, for every pixel, an embedding in the **sentence-embedding space** of its text
encoder. A label space turns descriptions into **K properties** (K-Means centres of the description
sentences); a pixel's property activations are `sigmoid(<e, c_k/|c_k|> / T)` and a class's score is
the cosine between those activations and the class's multi-hot property vector.

* **Label sets (ADE20K, COCO-Stuff, Pascal-Context, Cityscapes, MSRC, CamVid, custom)** are scored
  with the **model's own training properties** by default: each description sentence of the set is
  assigned to its nearest training property, giving every class a multi-hot vector over the
  properties the model learned. Nothing is retrained and no forward pass is repeated.
* **Aligned with the trained classes.** Each class is also compared, sentence by sentence, with the
  model's training classes (`prolab/alignment.py`): a class that means a trained class under another
  name (pedestrian / person, pavement / sidewalk) receives that class's score, and a trained class the
  label set lacks lends its pixels to the nearest class (a cat under ADE20K-150 is an "animal"). Only
  sentences are compared, never names. The Label space tab's class detail and the Novel categories
  table show each class's trained classes and properties with their similarity.
* **Rebuild with K** (Label space tab) clusters the set's own sentences instead. The pixel
  embeddings live in the same sentence space, so these centres can be scored too, but the model was
  never trained on them: use it to explore K, prefer the model's properties for accuracy.
* **Novel categories** are projected onto the properties in use the same way. Classes whose sentences
  no trained class explains (their *novelty*, from the same comparison) also get an **open-set
  credit** where no trained class explains a pixel, split among them by what the backbone's ImageNet
  classifier sees there (`prolab/novel_prior.py`; without it they almost never win a pixel). That
  small classifier runs once per image.
* **Unknown threshold**: a pixel whose best class score is below it is shown as *unknown* instead
  of being forced into the closest class.
* Everything the UI does is also an API endpoint (see "Use via API" at the bottom of the page).
"""


def describe(entry: ModelEntry) -> str:
    m = entry.model
    cfg = m.config
    space = m.label_space
    lines = [f"**Model:** {escape(entry.title)} (<code>{escape(entry.name)}</code>)"
             + (" — ⚠ **untrained (random weights)**" if entry.untrained else ""),
             f"- backbone `{cfg.backbone}`, {m.num_parameters(include_aux=False) / 1e6:.2f} M parameters, "
             f"{cfg.supervision} supervision, {cfg.out_channels}-d output, input short side {cfg.input_size}",
             f"- temperature T = {cfg.temperature}, text encoder `{cfg.encoder_id}` (template `{cfg.template}`)"]
    if space is not None:
        lines.append(f"- training label space: {space.num_classes} classes, K = {space.k} properties")
    elif cfg.supervision == "category":
        lines.append(f"- category-supervised baseline: {len(m.class_names)} fixed classes (no properties, "
                     "no novel categories or other label sets)")
    return "\n".join(lines)


def banner(entry: ModelEntry) -> str:
    if entry.untrained:
        return ('<div class="pl-banner-warn" id="pl-model-banner">⚠ <b>Untrained random model</b>: '
                "no trained model was found at <code>assets/models/default/</code>, so segmentations are "
                "meaningless (the app is fully usable otherwise). Load a trained model in the "
                "<i>Model</i> tab.</div>")
    return (f'<div id="pl-model-banner"><small>Model: <b>{escape(entry.title)}</b> '
            f'(<code>{escape(entry.name)}</code>)</small></div>')


def layout(res: Resources) -> ModelUI:
    info_md = gr.Markdown("", elem_id="pl-model-info")
    shipped = gr.Dropdown(shipped_models(), value=shipped_name(res.default_model_source),
                          label="Shipped models (pick one to load it)", elem_id="pl-shipped-models")
    with gr.Row():
        source = gr.Textbox(label="Load a model: local directory or Hugging Face id (owner/name)",
                            placeholder="assets/models/default", scale=4)
        load_btn = gr.Button("Load", variant="primary", scale=1)
    with gr.Accordion("Model card", open=False):  # long: folded, so the loading controls and help show
        card = gr.Markdown("")
    gr.Markdown(HELP)
    return ModelUI(info_md=info_md, shipped=shipped, source=source, load_btn=load_btn, card=card)


def _shown(ui: UI, s: Session) -> dict:
    entry = s.model_entry
    return {ui.state: s, ui.model.info_md: describe(entry), ui.model.card: entry.card, ui.banner: banner(entry)}


def _switch_model(res: Resources, s: Session, entry: ModelEntry) -> None:
    """Give the session ``entry``'s workbench, keeping its label set, edits, novel categories and image.
    Checked first: an error leaves the session as it was."""
    old = s.workbench
    wb, key = res.workbench(entry, s.label_key, old.label_set)
    if wb.is_property_model:
        if old.descriptions is not old.label_set.descriptions and key != "model":
            wb.set_descriptions(old.descriptions)
        wb.set_novel(old.novel)
        wb.space()  # fail here (encoder mismatch, ...) before replacing the user's session
    if old.image is not None:
        wb.set_image(old.image)
    s.workbench, s.model_entry, s.label_key = wb, entry, key
    if key == "model" and s.custom_set:
        s.custom_set = None
    if s.quality != "default":  # the new model runs at the session's speed/quality step too
        from app.common import apply_quality

        apply_quality(s, res, s.quality)


# ---------------------------------------------------------------------------- handlers
@user_errors
def model_info(res: Resources, ui: UI, state: Session | None) -> dict:
    """Describe the session's model and show its model card."""
    return _shown(ui, ensure_session(state, res))


@user_errors
def load_model(res: Resources, ui: UI, state: Session | None, source, progress=gr.Progress()) -> dict:
    """Load another model (local directory or hub id); label set, edits and image are kept."""
    progress(0.1, desc=f"Loading {source}")
    entry = res.load_model(source or "")
    if state is None:  # a first action needs no start-up model (which may be the broken one)
        s = new_session(res, entry)
        res.track(s)
    else:
        s = state
        res.track(s)
        with s.lock:
            _switch_model(res, s, entry)
    return {**_shown(ui, s), ui.controls.label_set: s.label_key}


def load_shipped_model(res: Resources, ui: UI, state: Session | None, name, progress=gr.Progress()) -> dict:
    """Load a shipped model by name (the picker's value); label set, edits and image are kept."""
    try:
        folder = str(shipped_model_dir(name or ""))
    except ProLabError as exc:
        raise gr.Error(escape(str(exc)), print_exception=False) from None
    return load_model(res, ui, state, folder, progress)


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    m = ui.model
    outs = [ui.state, m.info_md, m.card, ui.banner]
    ui.model_tab.select(bind(model_info, res, ui), [ui.state], outs, api_name="model_info")
    m.load_btn.click(bind(load_model, res, ui), [ui.state, m.source], outs + [ui.controls.label_set],
                     api_name="load_model")
    m.shipped.input(bind(load_shipped_model, res, ui), [ui.state, m.shipped], outs + [ui.controls.label_set],
                    api_name="load_shipped_model")
