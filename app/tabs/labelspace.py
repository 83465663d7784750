"""Label-space explorer: sentence map, properties table, class x property matrix, class details, K."""
from __future__ import annotations

import gradio as gr

from app import views
from app.common import apply_label_set, as_int, current_space, ensure_session, required_space
from app.state import Resources, user_errors
from app.tabs.segment import seg_outputs, seg_result
from prolab.errors import ProLabError


def layout(ui: dict) -> None:
    ui["space_md"] = gr.Markdown("Open this tab after choosing a label set.", elem_id="pl-space-summary")
    with gr.Row():
        ui["k"] = gr.Number(label="K (number of properties)", value=64, precision=0, minimum=2, maximum=1024,
                            scale=1)
        ui["rebuild_btn"] = gr.Button("Rebuild with this K (K-Means over the label set's sentences)",
                                      variant="primary", scale=2)
        ui["use_model_btn"] = gr.Button("Use the model's properties (recommended)", scale=2)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                ui["layout_method"] = gr.Radio(["umap", "pca"], value="umap", label="Map",
                                               info="UMAP: the first map of a label set takes about a minute (cached "
                                                    "after); PCA is shown until then.")
                ui["color_by"] = gr.Radio(["property", "class"], value="property", label="Colour by")
                ui["map_btn"] = gr.Button("Draw the sentence map")
            ui["sentence_plot"] = gr.Plot(label="Description sentences (hover for the sentence and its class)",
                                          elem_id="pl-sentence-map")
        with gr.Column(scale=2):
            ui["space_class"] = gr.Dropdown([], label="Class detail", filterable=True, allow_custom_value=True,
                                            info="Its sentences and the properties they map to; "
                                                 "highlighted on the map.")
            ui["class_md"] = gr.Markdown("")
            ui["class_rows"] = gr.Dataframe(headers=["sentence", "#", "property"], interactive=False,
                                            wrap=True, max_height=380, column_widths=["48%", "8%", "44%"])
    ui["prop_query"] = gr.Textbox(label="Search properties (name, class or number)", elem_id="pl-prop-search")
    with gr.Row():
        ui["prop_table"] = gr.Dataframe(headers=views.PROPERTY_HEADERS, interactive=False, wrap=True,
                                        column_widths=["7%", "43%", "12%", "10%", "28%"],
                                        max_height=420, label="Properties (click a row for details)",
                                        elem_id="pl-prop-table", scale=3)
        with gr.Column(scale=2):
            with gr.Row():
                ui["prop_index"] = gr.Number(label="Property #", value=0, precision=0, minimum=0, scale=2)
                ui["prop_show"] = gr.Button("Show", scale=1)
            ui["prop_md"] = gr.Markdown("Click a row (or type a number) to see the property's sentences.")
    with gr.Accordion("Class × property matrix", open=False):
        ui["matrix_btn"] = gr.Button("Draw the matrix")
        ui["matrix_plot"] = gr.Plot()


def wire(ui: dict, res: Resources) -> None:
    sel = [ui["state"], ui["label_set"], ui["custom_file"]]
    summary_out = [ui["state"], ui["space_md"], ui["prop_table"], ui["space_class"], ui["k"]]

    def _summary(s):
        from prolab.workbench import suggested_k

        wb = s.workbench
        space = required_space(s, "This model is category-supervised: it has no label space to explore.")
        md = views.space_summary(space, wb.mode, wb.label_set.name, len(wb.novel))
        hint = (f"In use: K = {space.k}. Rule of thumb (about one property per 7 sentences): "
                f"K ≈ {suggested_k(wb.descriptions.num_sentences)}.")
        return md, views.properties_rows(space), gr.update(choices=space.class_names), gr.update(
            value=space.k, info=hint)

    @user_errors
    def label_space_summary(state, label_set, custom_file):
        """Summary, properties table and class list of the label space in use."""
        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            return (s, *_summary(s))

    @user_errors
    def quick_sentence_map(state, color_by, highlight):
        """The sentence map without waiting: the cached UMAP if there is one, else PCA."""
        from prolab.explore import cached_layout, sentence_layout

        s = ensure_session(state, res)
        with s.lock:
            space = current_space(s)
        if space is None:
            return s, None
        xy = cached_layout(space.sentence_embeddings, "umap", cache_dir=res.cache_dir())
        method = "umap" if xy is not None else "pca"
        if xy is None:
            xy = sentence_layout(space.sentence_embeddings, "pca")
        return s, views.sentence_map_figure(space, xy, color_by, highlight or None, method)

    ui["space_tab"].select(label_space_summary, sel, summary_out, api_name="label_space_summary").then(
        quick_sentence_map, [ui["state"], ui["color_by"], ui["space_class"]], [ui["state"], ui["sentence_plot"]],
        api_name="quick_sentence_map")

    @user_errors
    def rebuild(state, label_set, custom_file, k, threshold, opacity, progress=gr.Progress()):
        """K-Means over the label set's sentences with K properties, then re-segment (no forward pass)."""
        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            wb = s.workbench
            progress(0.05, desc="Rebuilding the label space")
            wb.rebuild(as_int(k, "K"), progress=lambda f, d: progress(f, desc=d))
            progress(0.9, desc="Re-segmenting")
            if wb.image is not None and wb.last is not None:
                wb.segment(threshold)
                seg = seg_result(s, opacity)
            else:
                seg = (s, gr.update(), gr.update(), gr.update(), gr.update(),
                       gr.update(choices=views.property_choices(wb.space())))
            return (*seg, *_summary(s))

    ui["rebuild_btn"].click(rebuild, sel + [ui["k"], ui["threshold"], ui["opacity"]],
                            seg_outputs(ui) + summary_out[1:], api_name="rebuild_label_space")

    @user_errors
    def use_model_properties(state, label_set, custom_file, threshold, opacity):
        """Score the label set with the model's training properties again."""
        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            wb = s.workbench
            wb.use_model_properties()
            if wb.image is not None and wb.last is not None:
                wb.segment(threshold)
                seg = seg_result(s, opacity)
            else:
                seg = (s, gr.update(), gr.update(), gr.update(), gr.update(),
                       gr.update(choices=views.property_choices(wb.space())))
            return (*seg, *_summary(s))

    ui["use_model_btn"].click(use_model_properties, sel + [ui["threshold"], ui["opacity"]],
                              seg_outputs(ui) + summary_out[1:], api_name="use_model_properties")

    @user_errors
    def sentence_map(state, label_set, custom_file, method, color_by, highlight, progress=gr.Progress()):
        """2-D map (UMAP or PCA) of every description sentence, coloured by property or class."""
        from prolab.explore import sentence_layout

        s = ensure_session(state, res)
        with s.lock:
            apply_label_set(s, res, label_set, custom_file)
            space = required_space(s, "This model has no label space to map.")
        progress(0.2, desc=f"{method.upper()} of {len(space.sentences)} sentences "
                           "(the first UMAP in a process compiles code: about a minute)")
        xy = sentence_layout(space.sentence_embeddings, method=method, cache_dir=res.cache_dir())
        return s, views.sentence_map_figure(space, xy, color_by, highlight or None, method)

    ui["map_btn"].click(sentence_map, sel + [ui["layout_method"], ui["color_by"], ui["space_class"]],
                        [ui["state"], ui["sentence_plot"]], api_name="sentence_map")

    @user_errors
    def search_properties(state, query):
        """Rows of the properties table whose name, classes or number match the query."""
        s = ensure_session(state, res)
        with s.lock:
            space = required_space(s)
            return s, views.properties_rows(space, query or "")

    ui["prop_query"].submit(search_properties, [ui["state"], ui["prop_query"]], [ui["state"], ui["prop_table"]],
                            api_name="search_properties")

    @user_errors
    def property_detail(state, k):
        """Sentences and classes of property k."""
        s = ensure_session(state, res)
        with s.lock:
            space = current_space(s)
            k = as_int(k, "The property number")
            if space is None or not 0 <= k < space.k:
                raise ProLabError(f"No property {k} in this label space.")
            return s, views.property_detail(space, k), str(k)

    def pick_property(state, evt: gr.SelectData):
        row = evt.row_value if evt.row_value is not None else None
        if not row:
            raise gr.Error("Click a row of the table.")
        return property_detail(state, row[0])

    ui["prop_table"].select(pick_property, [ui["state"]], [ui["state"], ui["prop_md"], ui["property"]],
                            api_name="pick_property")
    ui["prop_show"].click(property_detail, [ui["state"], ui["prop_index"]],
                          [ui["state"], ui["prop_md"], ui["property"]], api_name="property_detail")

    @user_errors
    def class_detail(state, name):
        """One class: its sentences and the property each one maps to."""
        s = ensure_session(state, res)
        with s.lock:
            space = required_space(s)
            md, rows = views.class_detail(space, name or "")
        return s, md, rows

    ui["space_class"].input(class_detail, [ui["state"], ui["space_class"]],
                            [ui["state"], ui["class_md"], ui["class_rows"]], api_name="class_detail")

    @user_errors
    def class_matrix(state):
        """Heatmap of the class x property matrix."""
        s = ensure_session(state, res)
        with s.lock:
            space = required_space(s)
            return s, views.class_matrix_figure(space)

    ui["matrix_btn"].click(class_matrix, [ui["state"]], [ui["state"], ui["matrix_plot"]], api_name="class_matrix")
