"""Label-space explorer: sentence map, properties table, class x property matrix, class details, K."""
from __future__ import annotations

import gradio as gr

from app.components import SpaceUI
from app.handlers import Ctx, handler, on
from app.inputs import as_choice, as_int
from app.views import common
from app.views import labelspace as view
from prolab.edit_session import Rebuild, UseModelProperties
from prolab.errors import ProLabError
from prolab.explore import cached_layout, sentence_layout
from prolab.labelspace import LabelSpace, suggested_k
from prolab.edit_session import Segmentation

#: The sentence map's methods (:func:`prolab.explore.sentence_layout`).
MAP_METHODS = ("umap", "pca")


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
                layout_method = gr.Radio(list(MAP_METHODS), value="umap", label="Map",
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
        prop_table = gr.Dataframe(headers=view.PROPERTY_HEADERS, interactive=False, wrap=True,
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


def _summary(ctx: Ctx, query: str = "", k_value: bool = True) -> dict:
    """Summary, properties table (filtered by ``query``, the search box's), class list and K of the label
    space in use (``k_value=False``: only the hint under the K box, whose value the user may have typed)."""
    edit, sp = ctx.edit, ctx.ui.space
    space = ctx.required_space("This model is category-supervised: it has no label space to explore.")
    hint = (f"In use: K = {space.k}. Rule of thumb (about one property per 7 sentences): "
            f"K ≈ {suggested_k(edit.descriptions.num_sentences)}.")
    return {sp.summary_md: view.space_summary(space, edit.mode, edit.label_set.name, len(edit.novel)),
            sp.prop_table: view.properties_rows(space, query), sp.class_name: gr.update(choices=space.class_names),
            sp.k: gr.update(value=space.k, info=hint) if k_value else gr.update(info=hint)}


def _properties_changed(ctx: Ctx, seg: Segmentation | None, opacity) -> dict:
    """After the properties changed: the result re-scored (with nothing segmented yet, the new properties
    offered in the property picker), and the new summary."""
    choices = common.property_choices(ctx.edit.space())
    return {ctx.ui.properties.property: gr.update(choices=choices), **ctx.result(seg, opacity),
            **_summary(ctx)}


def _summary_outputs(ui) -> list:
    sp = ui.space
    return [sp.summary_md, sp.prop_table, sp.class_name, sp.k]


def _map(ctx: Ctx, space: LabelSpace | None, xy, color_by, highlight, method: str) -> dict:
    figure = None if space is None else view.sentence_map_figure(space, xy, color_by, highlight or None, method)
    return {ctx.ui.space.sentence_plot: figure}


MAP_INPUTS = lambda ui: {"color_by": ui.space.color_by, "highlight": ui.space.class_name,  # noqa: E731
                         "name": ui.space.class_name, "method": ui.space.layout_method, "k": ui.space.k,
                         "query": ui.space.prop_query}


# ---------------------------------------------------------------------------- handlers
@handler(outputs=_summary_outputs, inputs=lambda ui: {"query": ui.space.prop_query},
         events=lambda ui: [on(ui.space_tab.select, api_name="label_space_summary", then=quick_sentence_map,
                               then_options={"api_name": "quick_sentence_map", "api_visibility": "public"})])
def label_space_summary(ctx: Ctx, label_set, custom_file, query=None) -> dict:
    """Summary, properties table (as the search box filters it) and class list of the label space in use;
    the K box keeps what the user typed (its hint names the K in use)."""
    ctx.edit.select(as_choice(label_set, custom_file))
    return _summary(ctx, query or "", k_value=False)


@handler(outputs=lambda ui: [ui.space.sentence_plot], inputs=MAP_INPUTS, lock=False)
def quick_sentence_map(ctx: Ctx, color_by, highlight, method=None) -> dict:
    """The sentence map without waiting: PCA when the user chose PCA, else the cached UMAP if there is one,
    else PCA."""
    space = ctx.read(lambda s: s.edit.space())
    if space is None:
        return _map(ctx, None, None, color_by, highlight, "")
    xy = None if method == "pca" else cached_layout(space.sentence_embeddings, "umap",
                                                    cache_dir=ctx.services.text.cache_dir())
    method = "umap" if xy is not None else "pca"
    if xy is None:
        xy = sentence_layout(space.sentence_embeddings, "pca")
    return _map(ctx, space, xy, color_by, highlight, method)


@handler(outputs=lambda ui: ui.result_panels + _summary_outputs(ui), inputs=MAP_INPUTS,
         events=lambda ui: [on(ui.space.rebuild_btn.click, then=refresh_views, api_name="rebuild_label_space")])
def rebuild(ctx: Ctx, label_set, custom_file, k, threshold, opacity, progress=gr.Progress()) -> dict:
    """K-Means over the label set's sentences with K properties, then re-segment (no forward pass)."""
    ctx.report(0.05, "Rebuilding the label space")
    seg = ctx.edit.apply(Rebuild(as_int(k, "K"), progress=ctx.report), on=as_choice(label_set, custom_file),
                         threshold=threshold, progress=ctx.report)
    return _properties_changed(ctx, seg, opacity)


@handler(outputs=lambda ui: ui.result_panels + _summary_outputs(ui),
         events=lambda ui: [on(ui.space.use_model_btn.click, then=refresh_views, api_name="use_model_properties")])
def use_model_properties(ctx: Ctx, label_set, custom_file, threshold, opacity) -> dict:
    """Score the label set with the model's training properties again."""
    seg = ctx.edit.apply(UseModelProperties(), on=as_choice(label_set, custom_file), threshold=threshold)
    return _properties_changed(ctx, seg, opacity)


@handler(outputs=lambda ui: [ui.space.sentence_plot], inputs=MAP_INPUTS, lock=False,
         events=lambda ui: [on(ui.space.map_btn.click, api_name="sentence_map")])
def sentence_map(ctx: Ctx, label_set, custom_file, method, color_by, highlight, progress=gr.Progress()) -> dict:
    """2-D map (UMAP or PCA) of every description sentence, coloured by property or class."""
    def chosen(s):
        s.edit.select(as_choice(label_set, custom_file))
        return s.edit.space()

    if method not in MAP_METHODS:
        raise ProLabError(f"Choose a map method: {' or '.join(MAP_METHODS)}.")
    space = ctx.read(chosen)
    if space is None:
        raise ProLabError("This model has no label space to map.")
    ctx.report(0.2, f"{method.upper()} of {len(space.sentences)} sentences "
                    "(shipped sets: precomputed; edited ones: about a minute the first time)")
    xy = sentence_layout(space.sentence_embeddings, method=method, cache_dir=ctx.services.text.cache_dir())
    return _map(ctx, space, xy, color_by, highlight, method)


def _refresh_outputs(ui) -> list:
    sp = ui.space
    return [sp.sentence_plot, sp.class_md, sp.class_rows, sp.prop_query, sp.matrix_plot, sp.prop_md]


@handler(outputs=_refresh_outputs, inputs=MAP_INPUTS, lock=False)
def refresh_views(ctx: Ctx, color_by, name) -> dict:
    """After the properties changed (rebuild with another K, the model's properties): the views drawn
    from the old ones (sentence map, class detail, property search and detail, matrix) are redrawn or
    cleared, never left showing properties that no longer exist."""
    sp = ctx.ui.space
    out = quick_sentence_map(ctx, color_by, name)

    def detail(s):
        space = s.edit.space()
        known = space is not None and name in space.class_names
        return view.class_detail(space, s.edit.alignment(space), name) if known else ("", [])

    md, rows = ctx.read(detail)
    return {**out, sp.class_md: md, sp.class_rows: rows, sp.prop_query: "", sp.matrix_plot: None,
            sp.prop_md: "Click a row (or type a number) to see the property's sentences."}


@handler(outputs=lambda ui: [ui.space.prop_table], inputs=MAP_INPUTS,
         events=lambda ui: [on(ui.space.prop_query.submit, api_name="search_properties")])
def search_properties(ctx: Ctx, query) -> dict:
    """Rows of the properties table whose name, classes or number match the query."""
    return {ctx.ui.space.prop_table: view.properties_rows(ctx.required_space(), query or "")}


def _detail_outputs(ui) -> list:
    return [ui.space.prop_md, ui.properties.property]


@handler(outputs=_detail_outputs, inputs=lambda ui: {"k": ui.space.prop_index},
         events=lambda ui: [on(ui.space.prop_show.click, api_name="property_detail"),
                            on(ui.space.prop_index.submit, api_visibility="private")])  # Enter in the box
def property_detail(ctx: Ctx, k) -> dict:
    """Sentences and classes of property k."""
    space = ctx.edit.space()
    k = as_int(k, "The property number")
    if space is None or not 0 <= k < space.k:
        raise ProLabError(f"No property {k} in this label space.")
    return {ctx.ui.space.prop_md: view.property_detail(space, k), ctx.ui.properties.property: str(k)}


@handler(outputs=_detail_outputs,
         events=lambda ui: [on(ui.space.prop_table.select, api_name="pick_property")])
def pick_property(ctx: Ctx, evt: gr.SelectData) -> dict:
    row = getattr(evt, "row_value", None)  # through the API a client may send no event at all
    if not row:
        raise ProLabError("Click a row of the table.")
    return property_detail(ctx, row[0])


@handler(outputs=lambda ui: [ui.space.class_md, ui.space.class_rows], inputs=MAP_INPUTS,
         events=lambda ui: [on(ui.space.class_name.input, api_name="class_detail")])
def class_detail(ctx: Ctx, name) -> dict:
    """One class: its sentences, the property each one maps to (with its similarity) and the trained
    classes the class aligns to."""
    space = ctx.required_space()
    md, rows = view.class_detail(space, ctx.edit.alignment(space), name or "")
    return {ctx.ui.space.class_md: md, ctx.ui.space.class_rows: rows}


@handler(outputs=lambda ui: [ui.space.matrix_plot],
         events=lambda ui: [on(ui.space.matrix_btn.click, api_name="class_matrix")])
def class_matrix(ctx: Ctx) -> dict:
    """Heatmap of the class x property matrix."""
    return {ctx.ui.space.matrix_plot: view.class_matrix_figure(ctx.required_space())}
