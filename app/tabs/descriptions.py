"""Edit the label set's descriptions, rebuild, re-segment, see what changed; import / export JSON."""
from __future__ import annotations

import gradio as gr

from app.components import EditUI
from app.handlers import Ctx, handler, on
from app.inputs import as_choice, sentences
from app.views.common import escape
from prolab.descriptions import load_descriptions, normalise_sentence
from prolab.edit_session import EditClass, ResetClass, ResetDescriptions, UseDescriptions
from prolab.errors import ProLabError

CHANGE_HEADERS = ["class", "change", "sentences added", "sentences removed"]


def layout() -> EditUI:
    gr.Markdown("Fix wrong senses (e.g. ADE's *earth* described as the planet) or weak sentences. "
                "One sentence per line. Edits are kept per label set, for this browser.")
    class_name = gr.Dropdown([], label="Class", allow_custom_value=True,
                             info="Pick a class, or type a new name to add a class.", elem_id="pl-edit-class")
    text = gr.Textbox(lines=8, max_lines=20, label="Sentences (one per line)", elem_id="pl-edit-text")
    with gr.Row():
        apply_btn = gr.Button("Apply and re-segment", variant="primary")
        reset_class_btn = gr.Button("Reset this class")
        reset_all_btn = gr.Button("Reset all")
    changes = gr.Dataframe(headers=CHANGE_HEADERS, interactive=False, wrap=True,
                           column_widths=["16%", "12%", "36%", "36%"],
                           label="What changed compared with the shipped descriptions", elem_id="pl-edit-changes")
    with gr.Row():
        import_file = gr.UploadButton("Import descriptions JSON…", file_types=[".json"], type="filepath")
        export_btn = gr.Button("Export descriptions JSON")
    desc_file = gr.File(label="Exported descriptions", interactive=False, height=80)
    return EditUI(class_name=class_name, text=text, apply_btn=apply_btn, reset_class_btn=reset_class_btn,
                  reset_all_btn=reset_all_btn, changes=changes, import_file=import_file, export_btn=export_btn,
                  desc_file=desc_file)


def _outputs(ui) -> list:
    return ui.result_panels + [ui.edit.changes, ui.edit.class_name, ui.edit.text]


def _badge(ui) -> dict:
    """Progress and error badges on the changes table: a mistake leaves the last good result on screen."""
    return {"show_progress_on": ui.edit.changes}


# ---------------------------------------------------------------------------- handlers
def _stash_draft(ctx: Ctx, text) -> None:
    """Keep the box's sentences as a draft of the class it shows when they differ from that class's (the
    user moves to another class without applying them); a box that says what is applied leaves none."""
    s = ctx.session
    if s.edit_box is None or text is None or s.edit_box[0] != ctx.edit.choice.key:
        return  # nothing shown yet, or a class of another label set (the box is not compared across sets)
    key, ds = s.edit_box, ctx.edit.descriptions
    found = ds.find(key[1])
    applied = [normalise_sentence(x) for x in ds[found]] if found else []
    if [normalise_sentence(x) for x in sentences(text)] != applied:
        s.edit_drafts[key] = text
        gr.Info(f"Your unapplied sentences of “{escape(key[1])}” are kept: pick it again to go on with them.")
    else:
        s.edit_drafts.pop(key, None)


@handler(outputs=lambda ui: [ui.edit.class_name, ui.edit.text],
         inputs=lambda ui: {"name": ui.edit.class_name, "text": ui.edit.text},
         events=lambda ui: [on(ui.edit.class_name.input, api_name="class_sentences")])
def show_class(ctx: Ctx, label_set, custom_file, name, text=None) -> dict:
    """The sentences of one class of the current label set (with edits; a draft left unapplied when the user
    moved on, if any). The class the box shows already leaves it alone: gradio's dropdown sends a pick again
    when it loses focus, and the box may hold edits not applied yet."""
    ctx.edit.select(as_choice(label_set, custom_file))
    s, ds = ctx.session, ctx.edit.descriptions
    out = {ctx.ui.edit.class_name: gr.update(choices=list(ds.categories))}
    cls = ctx.box_class(name)
    if cls is None:
        return out
    found = cls if cls in ds else None
    key = (ctx.edit.choice.key, cls)
    if key == s.edit_box:
        return out
    _stash_draft(ctx, text)
    s.edit_box = key
    draft = s.edit_drafts.pop(key, None)
    if draft is not None:
        gr.Info(f"Your unapplied sentences of “{escape(key[1])}” are back in the box; Apply uses them.")
    if found:
        out[ctx.ui.edit.class_name] = gr.update(choices=list(ds.categories), value=found)
    return {**out, ctx.ui.edit.text: draft if draft is not None else ("\n".join(ds[found]) if found else "")}


# Focus only lists the classes: it must not touch the sentences box, where the user may have typed unapplied
# edits, and its reply can arrive after the pick's (gradio runs the two events concurrently).
@handler(outputs=lambda ui: [ui.edit.class_name],
         events=lambda ui: [on(ui.edit.class_name.focus, api_visibility="private")])
def list_classes(ctx: Ctx, label_set, custom_file) -> dict:
    """The class list of the current label set (with edits)."""
    ctx.edit.select(as_choice(label_set, custom_file))
    return {ctx.ui.edit.class_name: gr.update(choices=list(ctx.edit.descriptions.categories))}


@handler(outputs=_outputs, inputs=lambda ui: {"name": ui.edit.class_name, "text": ui.edit.text},
         events=lambda ui: [on(ui.edit.apply_btn.click, api_name="edit_class", **_badge(ui))])
def edit(ctx: Ctx, label_set, custom_file, name, text, threshold, opacity) -> dict:
    """Replace (or add) a class's sentences, rebuild the label space and re-segment."""
    with ctx.services.sessions.building():
        seg = ctx.edit.apply(EditClass(name or "", sentences(text)), on=as_choice(label_set, custom_file),
                             threshold=threshold)
    ctx.drop_drafts(name or "")
    return ctx.edited(seg, opacity, " ".join((name or "").split()), select=True)


@handler(outputs=_outputs, inputs=lambda ui: {"name": ui.edit.class_name},
         events=lambda ui: [on(ui.edit.reset_class_btn.click, api_name="reset_class", **_badge(ui))])
def reset_class(ctx: Ctx, name, threshold, opacity) -> dict:
    """Restore one class's shipped sentences (a class added by hand is removed)."""
    seg = ctx.edit.apply(ResetClass(name or ""), threshold=threshold)
    ctx.drop_drafts(name or "")
    return ctx.edited(seg, opacity, name or "")


@handler(outputs=_outputs, inputs=lambda ui: {"name": ui.edit.class_name},
         events=lambda ui: [on(ui.edit.reset_all_btn.click, api_name="reset_descriptions", **_badge(ui))])
def reset_all(ctx: Ctx, name, threshold, opacity) -> dict:
    """Restore every shipped description of the label set."""
    seg = ctx.edit.apply(ResetDescriptions(), threshold=threshold)
    ctx.drop_drafts()
    return ctx.edited(seg, opacity, name or "")


@handler(outputs=_outputs, inputs=lambda ui: {"path": ui.edit.import_file},
         events=lambda ui: [on(ui.edit.import_file.upload, api_name="import_descriptions", **_badge(ui))])
def import_descriptions(ctx: Ctx, label_set, custom_file, path, threshold, opacity) -> dict:
    """Use a descriptions JSON for the current label set (its classes become the label set's)."""
    if not path:
        raise ProLabError("Choose a descriptions JSON file to import.")
    with ctx.services.sessions.building():
        seg = ctx.edit.apply(UseDescriptions(load_descriptions(path)), on=as_choice(label_set, custom_file),
                             threshold=threshold)
    ctx.drop_drafts()
    box = ctx.session.edit_box  # the box shows the imported sentences of its class: an Apply must not undo them
    return ctx.edited(seg, opacity, box[1] if box and box[0] == ctx.edit.choice.key else None)


@handler(outputs=lambda ui: [ui.edit.desc_file],
         events=lambda ui: [on(ui.edit.export_btn.click, api_name="export_descriptions")])
def export_descriptions(ctx: Ctx, label_set, custom_file) -> dict:
    """The current descriptions (edits and novel categories included) as a JSON file."""
    ctx.edit.select(as_choice(label_set, custom_file))
    return {ctx.ui.edit.desc_file: str(ctx.descriptions_file())}
