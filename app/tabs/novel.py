"""Novel categories: names -> descriptions (LLM or by hand) -> re-segment without a forward pass."""
from __future__ import annotations

import json

import gradio as gr

from app.components import NovelUI
from app.config import AppConfig
from app.handlers import Ctx, handler, on
from app.inputs import category_blocks
from app.views import novel as view
from prolab.descriptions import parse_descriptions, parse_json
from prolab.edit_session import SetNovel
from prolab.errors import ProLabError
from prolab.limits import check_counts
from prolab.llm import generate_descriptions

PLACEHOLDER = "Write 5 to 15 short visual phrases, e.g. 'Covered in black and white stripes'"
#: Bounds on what one click may ask the LLM (on a shared server the operator's key pays): one request
#: per name, and a name's length goes into every prompt.
MAX_NAMES = 20
MAX_NAME_CHARS = 60


def parse_names(text: str) -> list[str]:
    """The typed category names (comma or line separated, duplicates dropped), at most :data:`MAX_NAMES`
    of at most :data:`MAX_NAME_CHARS` characters each."""
    if len(text or "") > MAX_NAMES * (MAX_NAME_CHARS + 2) * 4:  # far beyond any valid list: not split at all
        raise ProLabError(f"That is too much text for category names: at most {MAX_NAMES} names of "
                          f"{MAX_NAME_CHARS} characters.")
    names = [" ".join(n.split()) for chunk in (text or "").splitlines() for n in chunk.split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ProLabError("Type at least one category name (comma or line separated).")
    if len(names) > MAX_NAMES:
        raise ProLabError(f"{len(names)} category names; at most {MAX_NAMES} at a time.")
    long = next((n for n in names if len(n) > MAX_NAME_CHARS), None)
    if long is not None:
        raise ProLabError(f"Category names may have at most {MAX_NAME_CHARS} characters; "
                          f"{long[:20]!r}... has {len(long)}.")
    return names


def layout(config: AppConfig) -> NovelUI:
    cfg = config.llm_config()
    if cfg.is_configured:
        llm = f"LLM: **{cfg.model}** at `{cfg.endpoint}`."
    else:
        llm = ("**No LLM is configured**, so write the sentences yourself (press *Start by hand*). "
               "To generate them, start the app with an OpenAI-compatible endpoint: set "
               "`OPENAI_API_KEY` (hosted API) or `OPENAI_BASE_URL` (a local server such as vLLM, Ollama "
               "or llama.cpp), or pass `--llm-base-url`, `--llm-model` and `--llm-api-key-env`.")
    gr.Markdown("Add categories the label set does not have. Their descriptions are mapped onto the "
                "existing properties, so the image is re-segmented **without a new forward pass**; where "
                "no trained class fits a pixel, they share an open-set credit guided by the backbone's "
                "ImageNet classifier (Model & help tab).")
    names = gr.Textbox(label="Category names (comma or line separated)", placeholder="zebra, fire hydrant",
                       elem_id="pl-novel-names")
    llm_md = gr.Markdown(llm, elem_id="pl-llm-status")
    with gr.Row():
        gen_btn = gr.Button("Generate descriptions with the LLM", interactive=cfg.is_configured)
        template_btn = gr.Button("Start by hand")
    editor = gr.Textbox(label="Descriptions: a category's name on a line, then one sentence per line; a blank "
                             "line before the next category", lines=10, max_lines=30, elem_id="pl-novel-editor",
                         placeholder="zebra\nCovered in black and white stripes\nA horse-like animal on grass\n\n"
                                     "fire hydrant\nA short red metal post on the pavement")
    with gr.Accordion("The same as JSON (to copy, paste or import)", open=True):
        descriptions = gr.Code(value="{}", language="json", lines=8, max_lines=24,
                               label='Descriptions (JSON: {"category": ["sentence", ...]})',
                               elem_id="pl-novel-json", interactive=True)
    with gr.Row():
        segment_btn = gr.Button("Segment with these categories", variant="primary", elem_id="pl-novel-btn")
        clear_btn = gr.Button("Remove novel categories")
    table = gr.Dataframe(headers=view.NOVEL_HEADERS, interactive=False, wrap=True,
                         column_widths=["19%", "16%", "20%", "18%", "27%"],
                         label="Which trained classes and properties each novel category maps to, with their "
                               "similarity", elem_id="pl-novel-table")
    return NovelUI(names=names, llm_md=llm_md, gen_btn=gen_btn, template_btn=template_btn,
                   descriptions=descriptions, segment_btn=segment_btn, clear_btn=clear_btn, table=table,
                   editor=editor)


# ---------------------------------------------------------------------------- handlers
def _json_object(text: str | None) -> dict:
    """The descriptions box as a dict; anything else (broken JSON, a list) is a :class:`ProLabError`, so
    that nothing is written over what the user typed."""
    if not (text or "").strip():
        return {}
    try:
        data = parse_json(text, "The descriptions box")
        if not isinstance(data, dict):
            raise ProLabError('The descriptions box must hold a JSON object {"category": ["sentence", ...]}.')
    except ProLabError as exc:
        raise ProLabError(f"{exc} Fix or clear the box first: it is left as it is.") from None
    return data


def _box(ui) -> list:
    return [ui.novel.descriptions]


NAMES = lambda ui: {"names": ui.novel.names, "current": ui.novel.descriptions}  # noqa: E731


@handler(outputs=_box, inputs=NAMES, session=False,
         events=lambda ui: [on(ui.novel.template_btn.click, api_name="novel_template", then=json_to_editor)])
def template(ctx: Ctx, names: str, current: str) -> dict:
    """A JSON skeleton for the typed names, keeping sentences already written."""
    data = _json_object(current)
    for n in parse_names(names):
        data.setdefault(n, [PLACEHOLDER])
    return {ctx.ui.novel.descriptions: json.dumps(data, indent=1, ensure_ascii=False)}


@handler(outputs=_box, inputs=NAMES, session=False,
         events=lambda ui: [on(ui.novel.gen_btn.click, api_name="generate_descriptions", then=json_to_editor)])
def generate(ctx: Ctx, names: str, current: str, progress=gr.Progress()) -> dict:
    """Describe the categories with the configured LLM (cached answers are reused)."""
    cats = parse_names(names)
    data = _json_object(current)  # checked before asking: what the user typed is never replaced
    written = {k for k, v in data.items() if isinstance(v, list) and v and v != [PLACEHOLDER]}
    todo = [n for n in cats if n not in written]  # the user's own sentences are kept, not regenerated
    if not todo:
        raise ProLabError("Every category typed already has sentences in the box; nothing to generate.")
    cfg = ctx.services.config.llm_config()
    if not cfg.is_configured:
        raise ProLabError(cfg.how_to_configure)
    progress(0, desc=f"Asking {cfg.model} about {len(todo)} categories")
    ds = generate_descriptions(
        todo, cfg, progress=lambda done, total, name: progress((done, total), desc=f"described {name}"))
    data.update(ds.to_dict())
    return {ctx.ui.novel.descriptions: json.dumps(data, indent=1, ensure_ascii=False)}


@handler(outputs=_box, inputs=lambda ui: {"text": ui.novel.editor}, session=False,
         events=lambda ui: [on(ui.novel.editor.input, api_visibility="private", queue=False)])
def editor_to_json(ctx: Ctx, text) -> dict:
    """The editor's categories written to the JSON box (what Segment reads, imports and exports)."""
    return {ctx.ui.novel.descriptions: json.dumps(category_blocks(text), indent=1, ensure_ascii=False)}


@handler(outputs=lambda ui: [ui.novel.editor], inputs=lambda ui: {"text": ui.novel.descriptions,
                                                                   "shown": ui.novel.editor}, session=False,
         events=lambda ui: [on(ui.novel.descriptions.input, api_visibility="private")])
def json_to_editor(ctx: Ctx, text, shown) -> dict:
    """The JSON box (typed or pasted there, a template or the LLM's answer) shown in the editor; left alone
    when it already says the same or is not valid JSON yet. Never on the editor's own writes to the box
    (an echo while the user types would overwrite newer keystrokes)."""
    try:
        data = _json_object(text)
    except ProLabError:
        return {}
    return {} if category_blocks(shown) == data else {ctx.ui.novel.editor: view.category_text(data)}


def _outputs(ui) -> list:
    return ui.result_panels + [ui.novel.table]


@handler(outputs=_outputs, inputs=lambda ui: {"text": ui.novel.descriptions},
         events=lambda ui: [on(ui.novel.segment_btn.click, api_name="segment_novel", show_progress_on=ui.novel.table)])
def segment_novel(ctx: Ctx, text, threshold, opacity) -> dict:
    """Add the novel categories to the label set and re-segment (cached embeddings)."""
    novel = parse_descriptions(text or "{}", source="The novel categories")
    bad = [n for n in novel if any(x == PLACEHOLDER for x in novel[n])]
    if bad:
        raise ProLabError(f"Replace the placeholder sentence of: {', '.join(bad)}.")
    edit = ctx.edit
    base = edit.descriptions  # the label set and its novel categories are scored together: limited together
    check_counts(len(base) + len(novel), base.num_sentences + novel.num_sentences,
                 what="The label set with these novel categories")
    with ctx.services.sessions.building():
        seg = edit.apply(SetNovel(novel), threshold=threshold)  # the box keeps the text either way
    then = "press **Segment**." if edit.image is not None else "upload an image and press **Segment**."
    space = edit.space()
    return {**ctx.result(seg, opacity, f"Novel categories added; {then}"),
            ctx.ui.novel.table: view.novel_rows(space, edit.alignment(space), len(novel))}


@handler(outputs=_outputs,
         events=lambda ui: [on(ui.novel.clear_btn.click, api_name="clear_novel", show_progress_on=ui.novel.table)])
def clear_novel(ctx: Ctx, threshold, opacity) -> dict:
    """Remove the novel categories (the text box keeps them) and re-segment."""
    seg = ctx.edit.apply(SetNovel(), threshold=threshold)
    return {**ctx.result(seg, opacity, "Novel categories removed."), ctx.ui.novel.table: []}
