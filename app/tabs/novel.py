"""Novel categories: names -> descriptions (LLM or by hand) -> re-segment without a forward pass."""
from __future__ import annotations

import json

import gradio as gr

from app import views
from app.common import ensure_session
from app.state import Resources, user_errors
from app.tabs.segment import seg_outputs, seg_result
from prolab.errors import ProLabError

PLACEHOLDER = "Write 5 to 15 short visual phrases, e.g. 'Covered in black and white stripes'"


def parse_names(text: str) -> list[str]:
    names = [" ".join(n.split()) for chunk in (text or "").splitlines() for n in chunk.split(",")]
    names = [n for n in names if n]
    if not names:
        raise ProLabError("Type at least one category name (comma or line separated).")
    return list(dict.fromkeys(names))


def layout(ui: dict, res: Resources) -> None:
    cfg = res.config.llm_config()
    if cfg.is_configured:
        llm = f"LLM: **{cfg.model}** at `{cfg.endpoint}`."
    else:
        llm = ("**No LLM is configured**, so write the sentences yourself (press *Start by hand*). "
               "To generate them, start the app with an OpenAI-compatible endpoint: set "
               "`OPENAI_API_KEY` (hosted API) or `OPENAI_BASE_URL` (a local server such as vLLM, Ollama "
               "or llama.cpp), or pass `--llm-base-url`, `--llm-model` and `--llm-api-key-env`.")
    gr.Markdown("Add categories the label set does not have. Their descriptions are mapped onto the "
                "existing properties, so the image is re-segmented **without a new forward pass**.")
    ui["novel_names"] = gr.Textbox(label="Category names (comma or line separated)",
                                   placeholder="zebra, fire hydrant", elem_id="pl-novel-names")
    ui["llm_md"] = gr.Markdown(llm, elem_id="pl-llm-status")
    with gr.Row():
        ui["gen_btn"] = gr.Button("Generate descriptions with the LLM", interactive=cfg.is_configured)
        ui["template_btn"] = gr.Button("Start by hand")
    ui["novel_json"] = gr.Code(value="{}", language="json", lines=10, max_lines=24,
                               label='Descriptions (JSON: {"category": ["sentence", ...]}); edit freely',
                               elem_id="pl-novel-json", interactive=True)
    with gr.Row():
        ui["novel_btn"] = gr.Button("Segment with these categories", variant="primary",
                                    elem_id="pl-novel-btn")
        ui["clear_novel_btn"] = gr.Button("Remove novel categories")
    ui["novel_table"] = gr.Dataframe(headers=views.NOVEL_HEADERS, interactive=False, wrap=True,
                                     column_widths=["18%", "9%", "38%", "10%", "25%"],
                                     label="Which properties each novel category maps to",
                                     elem_id="pl-novel-table")


def wire(ui: dict, res: Resources) -> None:
    def template(names: str, current: str):
        """A JSON skeleton for the typed names, keeping sentences already written."""
        try:
            data = json.loads(current or "{}")
            data = data if isinstance(data, dict) else {}
        except json.JSONDecodeError:
            raise gr.Error("The descriptions box is not valid JSON; fix or clear it first.") from None
        try:
            for n in parse_names(names):
                data.setdefault(n, [PLACEHOLDER])
        except ProLabError as exc:
            raise gr.Error(views.escape(str(exc))) from None
        return json.dumps(data, indent=1, ensure_ascii=False)

    ui["template_btn"].click(template, [ui["novel_names"], ui["novel_json"]], ui["novel_json"],
                             api_name="novel_template")

    @user_errors
    def generate(names: str, current: str, progress=gr.Progress()):
        """Describe the categories with the configured LLM (cached answers are reused)."""
        from prolab.llm import generate_descriptions

        cats = parse_names(names)
        cfg = res.config.llm_config()
        if not cfg.is_configured:
            raise ProLabError(cfg.how_to_configure)
        progress(0, desc=f"Asking {cfg.model} about {len(cats)} categories")
        ds = generate_descriptions(
            cats, cfg, progress=lambda done, total, name: progress((done, total), desc=f"described {name}"))
        try:
            data = json.loads(current or "{}")
            data = data if isinstance(data, dict) else {}
        except json.JSONDecodeError:
            data = {}
        data.update(ds.to_dict())
        return json.dumps(data, indent=1, ensure_ascii=False)

    ui["gen_btn"].click(generate, [ui["novel_names"], ui["novel_json"]], ui["novel_json"],
                        api_name="generate_descriptions")

    @user_errors
    def segment_novel(state, text, threshold, opacity):
        """Add the novel categories to the label set and re-segment (cached embeddings)."""
        from prolab.descriptions import parse_descriptions

        s = ensure_session(state, res)
        novel = parse_descriptions(text or "{}", source="The novel categories")
        bad = [n for n in novel if any(x == PLACEHOLDER for x in novel[n])]
        if bad:
            raise ProLabError(f"Replace the placeholder sentence of: {', '.join(bad)}.")
        with s.lock:
            wb = s.workbench
            previous = wb.novel
            wb.set_novel(novel)
            try:
                space = wb.space()
            except Exception:
                wb.set_novel(previous)  # keep the session usable; the text box keeps the user's work
                raise
            rows = views.novel_rows(space, len(novel))
            if wb.image is None:
                return (s, gr.update(), gr.update(), "Novel categories added; upload an image and press "
                        "**Segment**.", gr.update(), gr.update(), rows)
            wb.segment(threshold)
            return (*seg_result(s, opacity), rows)

    ui["novel_btn"].click(segment_novel, [ui["state"], ui["novel_json"], ui["threshold"], ui["opacity"]],
                          seg_outputs(ui) + [ui["novel_table"]], api_name="segment_novel")

    @user_errors
    def clear_novel(state, threshold, opacity):
        """Remove the novel categories (the text box keeps them) and re-segment."""
        from prolab.descriptions import DescriptionSet

        s = ensure_session(state, res)
        with s.lock:
            s.workbench.set_novel(DescriptionSet({}))
            if s.workbench.last is None:
                return s, gr.update(), gr.update(), "Novel categories removed.", gr.update(), gr.update(), []
            s.workbench.segment(threshold)
            return (*seg_result(s, opacity), [])

    ui["clear_novel_btn"].click(clear_novel, [ui["state"], ui["threshold"], ui["opacity"]],
                                seg_outputs(ui) + [ui["novel_table"]], api_name="clear_novel")
