"""Edit the label set's descriptions, rebuild, re-segment, see what changed; import / export JSON."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from app import views
from app.common import apply_label_set, bind, ensure_session, remember_edits, user_file
from app.components import UI, EditUI
from app.resegment import resegment
from app.state import Resources, Session, user_errors
from prolab.errors import ProLabError

CHANGE_HEADERS = ["class", "change", "sentences added", "sentences removed"]


def layout() -> EditUI:
    gr.Markdown("Fix wrong senses (e.g. ADE's *earth* described as the planet) or weak sentences. "
                "One sentence per line. Edits are kept per label set for this browser tab.")
    class_name = gr.Dropdown([], label="Class", allow_custom_value=True,
                             info="Pick a class, or type a new name to add a class.", elem_id="pl-edit-class")
    text = gr.Textbox(lines=8, max_lines=20, label="Sentences (one per line)", elem_id="pl-edit-text")
    with gr.Row():
        apply_btn = gr.Button("Apply and re-segment", variant="primary")
        reset_class_btn = gr.Button("Reset this class")
        reset_all_btn = gr.Button("Reset all")
    changes = gr.Dataframe(headers=CHANGE_HEADERS, interactive=False, wrap=True,
                           column_widths=["16%", "12%", "36%", "36%"],
                           label="What changed compared with the shipped descriptions")
    with gr.Row():
        import_file = gr.UploadButton("Import descriptions JSON…", file_types=[".json"], type="filepath")
        export_btn = gr.Button("Export descriptions JSON")
    desc_file = gr.File(label="Exported descriptions", interactive=False, height=80)
    return EditUI(class_name=class_name, text=text, apply_btn=apply_btn, reset_class_btn=reset_class_btn,
                  reset_all_btn=reset_all_btn, changes=changes, import_file=import_file, export_btn=export_btn,
                  desc_file=desc_file)


def _class_choices(s: Session) -> list[str]:
    return list(s.workbench.descriptions.categories)


def use_descriptions(wb, descriptions) -> None:
    """Switch to ``descriptions`` only if a label space can be derived from them; otherwise keep the
    previous ones (the user's earlier work) and re-raise the error."""
    before = wb.descriptions
    wb.set_descriptions(descriptions)
    try:
        wb.space()
    except Exception:
        wb.set_descriptions(before)
        raise


def descriptions_changed(ui: UI, s: Session, threshold, opacity, text: str | None = None,
                         **class_update) -> dict:
    """After the descriptions changed: remember them, re-segment, show what changed, the classes
    (``class_update``: more for the class dropdown, e.g. ``value=``) and ``text`` as the sentences."""
    from prolab.workbench import description_changes

    remember_edits(s)
    wb, e = s.workbench, ui.edit
    out = {**resegment(ui, s, threshold, opacity, "Descriptions updated."),
           e.changes: views.changes_rows(description_changes(wb.label_set.descriptions, wb.descriptions)),
           e.class_name: gr.update(choices=_class_choices(s), **class_update)}
    if text is not None:
        out[e.text] = text
    return out


# ---------------------------------------------------------------------------- handlers
@user_errors
def show_class(res: Resources, ui: UI, state: Session | None, label_set, custom_file, name) -> dict:
    """The sentences of one class of the current label set (with edits)."""
    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        ds = s.workbench.descriptions
        found = ds.find(name or "")
        text = "\n".join(ds[found]) if found else ""
        return {ui.state: s, ui.edit.class_name: gr.update(choices=_class_choices(s)), ui.edit.text: text}


@user_errors
def edit(res: Resources, ui: UI, state: Session | None, label_set, custom_file, name, text, threshold,
         opacity) -> dict:
    """Replace (or add) a class's sentences, rebuild the label space and re-segment."""
    s = ensure_session(state, res)
    name = " ".join((name or "").split())
    if not name:
        raise ProLabError("Pick or type a class name first.")
    sentences = [line for line in (text or "").splitlines() if line.strip()]
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        wb = s.workbench
        use_descriptions(wb, wb.descriptions.with_category(name, sentences))
        found = wb.descriptions.find(name)
        return descriptions_changed(ui, s, threshold, opacity, "\n".join(wb.descriptions[found]), value=found)


@user_errors
def _reset(res: Resources, ui: UI, state: Session | None, name, threshold, opacity, everything: bool) -> dict:
    s = ensure_session(state, res)
    with s.lock:
        wb = s.workbench
        original = wb.label_set.descriptions
        if everything:
            wb.reset_descriptions()
        else:
            found = wb.descriptions.find(name or "")
            if found is None:
                raise ProLabError("Pick a class to reset.")
            orig = original.find(found)
            wb.set_descriptions(wb.descriptions.with_category(found, original[orig]) if orig
                                else wb.descriptions.without([found]))
            if wb.descriptions.to_dict() == original.to_dict():  # the last edit undone: the shipped set
                wb.reset_descriptions()  # again (status without "(edited)", the shared label space reused)
        ds = wb.descriptions
        found = ds.find(name or "")
        return descriptions_changed(ui, s, threshold, opacity, "\n".join(ds[found]) if found else "")


def reset_class(res: Resources, ui: UI, state: Session | None, name, threshold, opacity) -> dict:
    """Restore one class's shipped sentences (a class added by hand is removed)."""
    return _reset(res, ui, state, name, threshold, opacity, False)


def reset_all(res: Resources, ui: UI, state: Session | None, name, threshold, opacity) -> dict:
    """Restore every shipped description of the label set."""
    return _reset(res, ui, state, name, threshold, opacity, True)


@user_errors
def import_descriptions(res: Resources, ui: UI, state: Session | None, label_set, custom_file, path, threshold,
                        opacity) -> dict:
    """Use a descriptions JSON for the current label set (its classes become the label set's)."""
    from prolab.descriptions import load_descriptions

    s = ensure_session(state, res)
    if not path:
        raise ProLabError("Choose a descriptions JSON file to import.")
    with user_file(path):
        ds = load_descriptions(path)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        use_descriptions(s.workbench, ds)
        return descriptions_changed(ui, s, threshold, opacity)


@user_errors
def export_descriptions(res: Resources, ui: UI, state: Session | None, label_set, custom_file) -> dict:
    """The current descriptions (edits and novel categories included) as a JSON file."""
    from prolab.descriptions import save_descriptions

    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        wb = s.workbench
        ds = wb.descriptions.merged(wb.novel) if len(wb.novel) else wb.descriptions
        out = Path(tempfile.mkdtemp(prefix="prolab-")) / f"descriptions_{s.label_key}.json"
        save_descriptions(ds, out)
        return {ui.state: s, ui.edit.desc_file: str(out)}


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    e, c, v = ui.edit, ui.controls, ui.viewer
    outs = ui.result + [e.changes, e.class_name, e.text]
    show_in = [ui.state, c.label_set, c.custom_file, e.class_name]
    show_out = [ui.state, e.class_name, e.text]
    e.class_name.input(bind(show_class, res, ui), show_in, show_out, api_name="class_sentences")
    e.class_name.focus(bind(show_class, res, ui), show_in, show_out, api_visibility="private")
    # progress and error badges on the changes table: a mistake leaves the last good result on screen
    own = {"show_progress_on": e.changes}
    e.apply_btn.click(bind(edit, res, ui), [ui.state, c.label_set, c.custom_file, e.class_name, e.text,
                                            c.threshold, v.opacity], outs, api_name="edit_class", **own)
    reset_in = [ui.state, e.class_name, c.threshold, v.opacity]
    e.reset_class_btn.click(bind(reset_class, res, ui), reset_in, outs, api_name="reset_class", **own)
    e.reset_all_btn.click(bind(reset_all, res, ui), reset_in, outs, api_name="reset_descriptions", **own)
    e.import_file.upload(bind(import_descriptions, res, ui), [ui.state, c.label_set, c.custom_file, e.import_file,
                                                              c.threshold, v.opacity], outs,
                         api_name="import_descriptions", **own)
    e.export_btn.click(bind(export_descriptions, res, ui), [ui.state, c.label_set, c.custom_file],
                       [ui.state, e.desc_file], api_name="export_descriptions")
