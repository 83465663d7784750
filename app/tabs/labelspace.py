"""Label-space explorer: sentence map, properties table, class x property matrix, class details, K."""
from __future__ import annotations

import gradio as gr

from app import views
from app.common import apply_label_set, as_int, bind, current_space, ensure_session, required_space
from app.components import UI, SpaceUI
from app.resegment import resegment
from app.state import Resources, Session, user_errors
from prolab.errors import ProLabError


def layout() -> SpaceUI:
    summary_md = gr.Markdown("Open this tab after choosing a label set.", elem_id="pl-space-summary")
    with gr.Row():
        k = gr.Number(label="K (number of properties)", value=64, precision=0, minimum=2, maximum=1024, scale=1)
        rebuild_btn = gr.Button("Rebuild with this K (K-Means over the label set's sentences)",
                                variant="primary", scale=2)
        use_model_btn = gr.Button("Use the model's properties (recommended)", scale=2)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                layout_method = gr.Radio(["umap", "pca"], value="umap", label="Map",
                                         info="UMAP: shipped label sets open at once (precomputed maps); an edited or "
                                              "custom set takes about a minute the first time (cached after), "
                                              "PCA is shown until then.")
                color_by = gr.Radio(["property", "class"], value="property", label="Colour by")
                map_btn = gr.Button("Draw the sentence map")
            sentence_plot = gr.Plot(label="Description sentences (hover for the sentence and its class)",
                                    elem_id="pl-sentence-map")
        with gr.Column(scale=2):
            class_name = gr.Dropdown([], label="Class detail", filterable=True, allow_custom_value=True,
                                     info="Its sentences, the properties they map to and the trained classes it aligns "
                                          "to, with their similarity; highlighted on the map.")
            class_md = gr.Markdown("")
            class_rows = gr.Dataframe(headers=["sentence", "#", "property", "similarity"], interactive=False,
                                      wrap=True, max_height=380, column_widths=["38%", "10%", "34%", "18%"])
    prop_query = gr.Textbox(label="Search properties (name, class or number)", elem_id="pl-prop-search")
    with gr.Row():
        prop_table = gr.Dataframe(headers=views.PROPERTY_HEADERS, interactive=False, wrap=True,
                                  column_widths=["7%", "43%", "12%", "10%", "28%"], max_height=420,
                                  label="Properties (click a row for details)", elem_id="pl-prop-table", scale=3)
        with gr.Column(scale=2):
            with gr.Row():
                prop_index = gr.Number(label="Property #", value=0, precision=0, minimum=0, scale=2)
                prop_show = gr.Button("Show", scale=1)
            prop_md = gr.Markdown("Click a row (or type a number) to see the property's sentences.")
    with gr.Accordion("Class × property matrix", open=False):
        matrix_btn = gr.Button("Draw the matrix")
        matrix_plot = gr.Plot()
    return SpaceUI(summary_md=summary_md, k=k, rebuild_btn=rebuild_btn, use_model_btn=use_model_btn,
                   layout_method=layout_method, color_by=color_by, map_btn=map_btn, sentence_plot=sentence_plot,
                   class_name=class_name, class_md=class_md, class_rows=class_rows, prop_query=prop_query,
                   prop_table=prop_table, prop_index=prop_index, prop_show=prop_show, prop_md=prop_md,
                   matrix_btn=matrix_btn, matrix_plot=matrix_plot)


def _summary(ui: UI, s: Session) -> dict:
    """Summary, properties table, class list and K of the label space in use."""
    from prolab.workbench import suggested_k

    wb, sp = s.workbench, ui.space
    space = required_space(s, "This model is category-supervised: it has no label space to explore.")
    hint = (f"In use: K = {space.k}. Rule of thumb (about one property per 7 sentences): "
            f"K ≈ {suggested_k(wb.descriptions.num_sentences)}.")
    return {sp.summary_md: views.space_summary(space, wb.mode, wb.label_set.name, len(wb.novel)),
            sp.prop_table: views.properties_rows(space), sp.class_name: gr.update(choices=space.class_names),
            sp.k: gr.update(value=space.k, info=hint)}


def _properties_changed(ui: UI, s: Session, threshold, opacity) -> dict:
    """After the properties changed: re-segment (or, with nothing segmented yet, offer the new
    properties in the property picker), and the new summary."""
    choices = views.property_choices(s.workbench.space())
    return {ui.properties.property: gr.update(choices=choices), **resegment(ui, s, threshold, opacity),
            **_summary(ui, s)}


# ---------------------------------------------------------------------------- handlers
@user_errors
def label_space_summary(res: Resources, ui: UI, state: Session | None, label_set, custom_file) -> dict:
    """Summary, properties table and class list of the label space in use."""
    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        return {ui.state: s, **_summary(ui, s)}


@user_errors
def quick_sentence_map(res: Resources, ui: UI, state: Session | None, color_by, highlight) -> dict:
    """The sentence map without waiting: the cached UMAP if there is one, else PCA."""
    from prolab.explore import cached_layout, sentence_layout

    s = ensure_session(state, res)
    with s.lock:
        space = current_space(s)
    if space is None:
        return {ui.state: s, ui.space.sentence_plot: None}
    xy = cached_layout(space.sentence_embeddings, "umap", cache_dir=res.cache_dir())
    method = "umap" if xy is not None else "pca"
    if xy is None:
        xy = sentence_layout(space.sentence_embeddings, "pca")
    return {ui.state: s, ui.space.sentence_plot: views.sentence_map_figure(space, xy, color_by, highlight or None,
                                                                          method)}


@user_errors
def rebuild(res: Resources, ui: UI, state: Session | None, label_set, custom_file, k, threshold, opacity,
            progress=gr.Progress()) -> dict:
    """K-Means over the label set's sentences with K properties, then re-segment (no forward pass)."""
    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        progress(0.05, desc="Rebuilding the label space")
        s.workbench.rebuild(as_int(k, "K"), progress=lambda f, d: progress(f, desc=d))
        progress(0.9, desc="Re-segmenting")
        return _properties_changed(ui, s, threshold, opacity)


@user_errors
def use_model_properties(res: Resources, ui: UI, state: Session | None, label_set, custom_file, threshold,
                         opacity) -> dict:
    """Score the label set with the model's training properties again."""
    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        s.workbench.use_model_properties()
        return _properties_changed(ui, s, threshold, opacity)


@user_errors
def sentence_map(res: Resources, ui: UI, state: Session | None, label_set, custom_file, method, color_by,
                 highlight, progress=gr.Progress()) -> dict:
    """2-D map (UMAP or PCA) of every description sentence, coloured by property or class."""
    from prolab.explore import sentence_layout

    s = ensure_session(state, res)
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        space = required_space(s, "This model has no label space to map.")
    progress(0.2, desc=f"{method.upper()} of {len(space.sentences)} sentences "
                       "(shipped sets: precomputed; edited ones: about a minute the first time)")
    xy = sentence_layout(space.sentence_embeddings, method=method, cache_dir=res.cache_dir())
    return {ui.state: s, ui.space.sentence_plot: views.sentence_map_figure(space, xy, color_by, highlight or None,
                                                                          method)}


@user_errors
def refresh_views(res: Resources, ui: UI, state: Session | None, color_by, name) -> dict:
    """After the properties changed (rebuild with another K, the model's properties): the views drawn
    from the old ones (sentence map, class detail, property search and detail, matrix) are redrawn or
    cleared, never left showing properties that no longer exist."""
    sp = ui.space
    out = quick_sentence_map(res, ui, state, color_by, name)
    s = out[ui.state]
    with s.lock:
        space = current_space(s)
        known = space is not None and name in space.class_names
        md, rows = views.class_detail(space, s.workbench.alignment(space), name) if known else ("", [])
    return {**out, sp.class_md: md, sp.class_rows: rows, sp.prop_query: "", sp.matrix_plot: None,
            sp.prop_md: "Click a row (or type a number) to see the property's sentences."}


@user_errors
def search_properties(res: Resources, ui: UI, state: Session | None, query) -> dict:
    """Rows of the properties table whose name, classes or number match the query."""
    s = ensure_session(state, res)
    with s.lock:
        space = required_space(s)
        return {ui.state: s, ui.space.prop_table: views.properties_rows(space, query or "")}


@user_errors
def property_detail(res: Resources, ui: UI, state: Session | None, k) -> dict:
    """Sentences and classes of property k."""
    s = ensure_session(state, res)
    with s.lock:
        space = current_space(s)
        k = as_int(k, "The property number")
        if space is None or not 0 <= k < space.k:
            raise ProLabError(f"No property {k} in this label space.")
        return {ui.state: s, ui.space.prop_md: views.property_detail(space, k), ui.properties.property: str(k)}


def pick_property(res: Resources, ui: UI, state: Session | None, evt: gr.SelectData) -> dict:
    row = evt.row_value if evt.row_value is not None else None
    if not row:
        raise gr.Error("Click a row of the table.")
    return property_detail(res, ui, state, row[0])


@user_errors
def class_detail(res: Resources, ui: UI, state: Session | None, name) -> dict:
    """One class: its sentences, the property each one maps to (with its similarity) and the trained
    classes the class aligns to."""
    s = ensure_session(state, res)
    with s.lock:
        space = required_space(s)
        md, rows = views.class_detail(space, s.workbench.alignment(space), name or "")
    return {ui.state: s, ui.space.class_md: md, ui.space.class_rows: rows}


@user_errors
def class_matrix(res: Resources, ui: UI, state: Session | None) -> dict:
    """Heatmap of the class x property matrix."""
    s = ensure_session(state, res)
    with s.lock:
        space = required_space(s)
        return {ui.state: s, ui.space.matrix_plot: views.class_matrix_figure(space)}


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    sp, c = ui.space, ui.controls
    sel = [ui.state, c.label_set, c.custom_file]
    summary = [sp.summary_md, sp.prop_table, sp.class_name, sp.k]
    map_out = [ui.state, sp.sentence_plot]
    ui.space_tab.select(bind(label_space_summary, res, ui), sel, [ui.state] + summary,
                        api_name="label_space_summary").then(
        bind(quick_sentence_map, res, ui), [ui.state, sp.color_by, sp.class_name], map_out,
        api_name="quick_sentence_map")
    rescore_in = [c.threshold, ui.viewer.opacity]
    refresh_out = map_out + [sp.class_md, sp.class_rows, sp.prop_query, sp.matrix_plot, sp.prop_md]
    refresh_in = [ui.state, sp.color_by, sp.class_name]
    sp.rebuild_btn.click(bind(rebuild, res, ui), sel + [sp.k] + rescore_in, ui.result + summary,
                         api_name="rebuild_label_space").success(
        bind(refresh_views, res, ui), refresh_in, refresh_out, api_visibility="private")
    sp.use_model_btn.click(bind(use_model_properties, res, ui), sel + rescore_in, ui.result + summary,
                           api_name="use_model_properties").success(
        bind(refresh_views, res, ui), refresh_in, refresh_out, api_visibility="private")
    sp.map_btn.click(bind(sentence_map, res, ui), sel + [sp.layout_method, sp.color_by, sp.class_name], map_out,
                     api_name="sentence_map")
    sp.prop_query.submit(bind(search_properties, res, ui), [ui.state, sp.prop_query], [ui.state, sp.prop_table],
                         api_name="search_properties")
    detail_out = [ui.state, sp.prop_md, ui.properties.property]
    sp.prop_table.select(bind(pick_property, res, ui), [ui.state], detail_out, api_name="pick_property")
    sp.prop_show.click(bind(property_detail, res, ui), [ui.state, sp.prop_index], detail_out,
                       api_name="property_detail")
    sp.class_name.input(bind(class_detail, res, ui), [ui.state, sp.class_name], [ui.state, sp.class_md,
                                                                                  sp.class_rows],
                        api_name="class_detail")
    sp.matrix_btn.click(bind(class_matrix, res, ui), [ui.state], [ui.state, sp.matrix_plot], api_name="class_matrix")
