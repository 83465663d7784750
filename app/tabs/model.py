"""Model: what is loaded, its model card, loading another one; and how scoring works (help)."""
from __future__ import annotations

import gradio as gr

from app.components import ModelUI
from app.handlers import Ctx, handler, on
from app.services.models import shipped_model_dir, shipped_models, shipped_name
from app.views import common
from app.views import model as view
from prolab.edit_session import SwitchModel

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


def layout(default_source: str | None) -> ModelUI:
    info_md = gr.Markdown("", elem_id="pl-model-info")
    shipped = gr.Dropdown(shipped_models(), value=shipped_name(default_source),
                          label="Shipped models (pick one to load it)", elem_id="pl-shipped-models")
    with gr.Row():
        source = gr.Textbox(label="Load a model: local directory or Hugging Face id (owner/name)",
                            placeholder="assets/models/default", scale=4)
        load_btn = gr.Button("Load", variant="primary", scale=1)
    with gr.Accordion("Model card", open=False):  # long: folded, so the loading controls and help show
        card = gr.Markdown("")
    gr.Markdown(HELP)
    return ModelUI(info_md=info_md, shipped=shipped, source=source, load_btn=load_btn, card=card)


def _shown(ctx: Ctx) -> dict:
    entry, m = ctx.session.model_entry, ctx.ui.model
    return {m.info_md: view.describe(entry), m.card: entry.card, ctx.ui.banner: view.banner(entry)}


def _outputs(ui) -> list:
    return [ui.model.info_md, ui.model.card, ui.banner]


def _load_outputs(ui) -> list:
    return _outputs(ui) + [ui.controls.label_set] + ui.result_panels + [ui.model.shipped]


# ---------------------------------------------------------------------------- handlers
@handler(outputs=_outputs,
         events=lambda ui: [on(ui.model_tab.select, api_name="model_info")])
def model_info(ctx: Ctx) -> dict:
    """Describe the session's model and show its model card."""
    return _shown(ctx)


def _load(ctx: Ctx, source: str) -> dict:
    ctx.report(0.1, f"Loading {source}")
    entry = ctx.services.models.load(source)  # before the session's lock: the user's other actions go on
    s = ctx.open_session(entry)  # a first action needs no start-up model (which may be the broken one)
    seg = None
    if s.model_entry is not entry:
        # the result on screen is segmented again with the new model (same threshold and opacity); a
        # failure leaves the session on the old model, result included
        seg = s.edit.apply(SwitchModel(entry.model, ctx.services.text.encoder_for(entry.model), entry.directory),
                           progress=ctx.report)
        s.model_entry = entry
    message = f"Model: **{common.escape(entry.title)}**. Press **Segment**." if s.edit.last is None else None
    # the shipped list names the model in use, or nothing for one loaded from elsewhere: a stale name there
    # would load that model again when the list is opened and closed
    return {**_shown(ctx), ctx.ui.controls.label_set: s.edit.choice.key, **ctx.result(seg, s.opacity, message),
            ctx.ui.model.shipped: shipped_name(s.model_entry.source)}


@handler(outputs=_load_outputs, inputs=lambda ui: {"source": ui.model.source},
         events=lambda ui: [on(ui.model.load_btn.click, api_name="load_model")])
def load_model(ctx: Ctx, source, progress=gr.Progress()) -> dict:
    """Load another model (local directory or hub id); label set, edits and image are kept, and the image
    on screen is segmented again with it."""
    return _load(ctx, (source or "").strip())


@handler(outputs=_load_outputs, inputs=lambda ui: {"name": ui.model.shipped},
         events=lambda ui: [on(ui.model.shipped.input, api_name="load_shipped_model")])
def load_shipped_model(ctx: Ctx, name, progress=gr.Progress()) -> dict:
    """Load a shipped model by name (the picker's value); label set, edits and image are kept. An empty
    list (a model loaded from elsewhere is in use) loads nothing."""
    if not name:
        return _shown(ctx)
    return _load(ctx, str(shipped_model_dir(name)))
