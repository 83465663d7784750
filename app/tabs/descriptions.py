"""Edit the label set's descriptions, rebuild, re-segment, see what changed; import / export JSON."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from app import views
from app.common import apply_label_set, ensure_session, remember_edits, user_file
from app.state import Resources, user_errors
from app.tabs.segment import seg_outputs, seg_result
from prolab.errors import ProLabError

CHANGE_HEADERS = ["class", "change", "sentences added", "sentences removed"]


def layout(ui: dict) -> None:
    gr.Markdown("Fix wrong senses (e.g. ADE's *earth* described as the planet) or weak sentences. "
                "One sentence per line. Edits are kept per label set for this browser tab.")
    ui["edit_class"] = gr.Dropdown([], label="Class", allow_custom_value=True,
                                   info="Pick a class, or type a new name to add a class.",
                                   elem_id="pl-edit-class")
    ui["edit_text"] = gr.Textbox(lines=8, max_lines=20, label="Sentences (one per line)",
                                 elem_id="pl-edit-text")
    with gr.Row():
        ui["edit_apply"] = gr.Button("Apply and re-segment", variant="primary")
        ui["edit_reset_class"] = gr.Button("Reset this class")
        ui["edit_reset_all"] = gr.Button("Reset all")
    ui["changes"] = gr.Dataframe(headers=CHANGE_HEADERS, interactive=False, wrap=True,
                                 column_widths=["16%", "12%", "36%", "36%"],
                                 label="What changed compared with the shipped descriptions")
    with gr.Row():
        ui["import_file"] = gr.UploadButton("Import descriptions JSON…", file_types=[".json"], type="filepath")
        ui["export_desc_btn"] = gr.Button("Export descriptions JSON")
    ui["desc_file"] = gr.File(label="Exported descriptions", interactive=False, height=80)


def _changes(s):
    from prolab.workbench import description_changes

    wb = s.workbench
    return views.changes_rows(description_changes(wb.label_set.descriptions, wb.descriptions))


def _class_choices(s) -> list[str]:
    return list(s.workbench.descriptions.categories)


def _use_descriptions(wb, descriptions) -> None:
    """Switch to ``descriptions`` only if a label space can be derived from them; otherwise keep the
    previous ones (the user's earlier work) and re-raise the error."""
    before = wb.descriptions
    wb.set_descriptions(descriptions)
    try:
        wb.space()
    except Exception:
        wb.set_descriptions(before)
        raise


def _resegment(s, threshold, opacity, extra):
    """Re-segment when there is an image, else only refresh the panels."""
    if s.workbench.image is None or s.workbench.last is None:
        return (s, gr.update(), gr.update(), "Descriptions updated.", gr.update(), gr.update(), *extra)
    s.workbench.segment(threshold)
    return (*seg_result(s, opacity), *extra)


def wire(ui: dict, res: Resources) -> None:
    outs = seg_outputs(ui) + [ui["changes"], ui["edit_class"], ui["edit_text"]]

    @user_errors
    def show_class(state, label_set, custom_file, name):
        """The sentences of one class of the current label set (with edits)."""
        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            ds = s.workbench.descriptions
            found = ds.find(name or "")
            text = "\n".join(ds[found]) if found else ""
            return s, gr.update(choices=_class_choices(s)), text

    ui["edit_class"].input(show_class, [ui["state"], ui["label_set"], ui["custom_file"], ui["edit_class"]],
                           [ui["state"], ui["edit_class"], ui["edit_text"]], api_name="class_sentences")
    ui["edit_class"].focus(show_class, [ui["state"], ui["label_set"], ui["custom_file"], ui["edit_class"]],
                           [ui["state"], ui["edit_class"], ui["edit_text"]], api_visibility="private")

    @user_errors
    def edit(state, label_set, custom_file, name, text, threshold, opacity):
        """Replace (or add) a class's sentences, rebuild the label space and re-segment."""
        s = ensure_session(state, res)
        name = " ".join((name or "").split())
        if not name:
            raise ProLabError("Pick or type a class name first.")
        sentences = [line for line in (text or "").splitlines() if line.strip()]
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            wb = s.workbench
            _use_descriptions(wb, wb.descriptions.with_category(name, sentences))
            remember_edits(s)
            found = wb.descriptions.find(name)
            return _resegment(s, threshold, opacity, (_changes(s), gr.update(choices=_class_choices(s),
                              value=found), "\n".join(wb.descriptions[found])))

    ui["edit_apply"].click(edit, [ui["state"], ui["label_set"], ui["custom_file"], ui["edit_class"],
                                  ui["edit_text"], ui["threshold"], ui["opacity"]], outs,
                           api_name="edit_class")

    @user_errors
    def reset(state, name, threshold, opacity, everything: bool):
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
            remember_edits(s)
            ds = wb.descriptions
            found = ds.find(name or "")
            return _resegment(s, threshold, opacity, (_changes(s), gr.update(choices=_class_choices(s)),
                                                       "\n".join(ds[found]) if found else ""))

    def reset_class(state, name, threshold, opacity):
        """Restore one class's shipped sentences (a class added by hand is removed)."""
        return reset(state, name, threshold, opacity, False)

    def reset_all(state, name, threshold, opacity):
        """Restore every shipped description of the label set."""
        return reset(state, name, threshold, opacity, True)

    ins = [ui["state"], ui["edit_class"], ui["threshold"], ui["opacity"]]
    ui["edit_reset_class"].click(reset_class, ins, outs, api_name="reset_class")
    ui["edit_reset_all"].click(reset_all, ins, outs, api_name="reset_descriptions")

    @user_errors
    def import_descriptions(state, label_set, custom_file, path, threshold, opacity):
        """Use a descriptions JSON for the current label set (its classes become the label set's)."""
        from prolab.descriptions import load_descriptions

        s = ensure_session(state, res)
        if not path:
            raise ProLabError("Choose a descriptions JSON file to import.")
        with user_file(path):
            ds = load_descriptions(path)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            wb = s.workbench
            _use_descriptions(wb, ds)
            remember_edits(s)
            return _resegment(s, threshold, opacity, (_changes(s), gr.update(choices=_class_choices(s)),
                                                       gr.update()))

    ui["import_file"].upload(import_descriptions, [ui["state"], ui["label_set"], ui["custom_file"],
                                                   ui["import_file"], ui["threshold"], ui["opacity"]],
                             outs, api_name="import_descriptions")

    @user_errors
    def export_descriptions(state, label_set, custom_file):
        """The current descriptions (edits and novel categories included) as a JSON file."""
        from prolab.descriptions import save_descriptions

        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            wb = s.workbench
            ds = wb.descriptions.merged(wb.novel) if len(wb.novel) else wb.descriptions
            out = Path(tempfile.mkdtemp(prefix="prolab-")) / f"descriptions_{s.label_key}.json"
            save_descriptions(ds, out)
            return s, str(out)

    ui["export_desc_btn"].click(export_descriptions, [ui["state"], ui["label_set"], ui["custom_file"]],
                                [ui["state"], ui["desc_file"]], api_name="export_descriptions")
