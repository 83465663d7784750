"""The app's components, one typed holder per panel, gathered in :class:`UI`.

The layout functions (``app/tabs/*.py``) create the components and return their panel's holder;
:func:`app.main.build_ui` gathers them; the wiring reads attributes (never string keys), and a
handler returns ``{component: value}`` for just the components it changes. A test builds the real
holder inside ``gr.Blocks()`` and calls any handler without a server.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

HOLDER = dataclass(frozen=True, eq=False)  # compared and hashed by identity, like the components


@HOLDER
class ViewerUI:
    """Left column of the first tab: input, examples, the result with its legend and status."""

    file: gr.File
    examples: gr.Gallery
    image: gr.Image
    legend: gr.HTML
    status: gr.Markdown
    opacity: gr.Slider


@HOLDER
class ControlsUI:
    """The Segment panel: label set, unknown threshold, the Segment button, the top properties."""

    label_set: gr.Dropdown
    custom_file: gr.File
    threshold: gr.Slider
    quality: gr.Radio
    segment_btn: gr.Button
    top_fig: gr.Plot


@HOLDER
class InspectorUI:
    """The pixel inspector."""

    px: gr.Number
    py: gr.Number
    inspect_btn: gr.Button
    inspect_md: gr.Markdown
    px_classes: gr.Dataframe
    px_props: gr.Dataframe


@HOLDER
class NovelUI:
    """Novel categories: names, their descriptions (LLM or by hand) and where they map."""

    names: gr.Textbox
    llm_md: gr.Markdown
    gen_btn: gr.Button
    template_btn: gr.Button
    descriptions: gr.Code
    segment_btn: gr.Button
    clear_btn: gr.Button
    table: gr.Dataframe
    editor: gr.Textbox  # the same descriptions as name + sentence lines (the JSON box is what the API reads)


@HOLDER
class EditUI:
    """Editing the label set's descriptions."""

    class_name: gr.Dropdown
    text: gr.Textbox
    apply_btn: gr.Button
    reset_class_btn: gr.Button
    reset_all_btn: gr.Button
    changes: gr.Dataframe
    import_file: gr.UploadButton
    export_btn: gr.Button
    desc_file: gr.File


@HOLDER
class PropertiesUI:
    """The Property maps tab."""

    property: gr.Dropdown
    stretch: gr.Checkbox
    heat: gr.Image
    colorbar: gr.HTML
    heat_md: gr.Markdown
    top_n: gr.Slider
    top_btn: gr.Button
    top_gallery: gr.Gallery


@HOLDER
class SpaceUI:
    """The Label space tab."""

    summary_md: gr.Markdown
    k: gr.Number
    rebuild_btn: gr.Button
    use_model_btn: gr.Button
    layout_method: gr.Radio
    color_by: gr.Radio
    map_btn: gr.Button
    sentence_plot: gr.Plot
    class_name: gr.Dropdown
    class_md: gr.Markdown
    class_rows: gr.Dataframe
    prop_query: gr.Textbox
    prop_table: gr.Dataframe
    prop_index: gr.Number
    prop_show: gr.Button
    prop_md: gr.Markdown
    matrix_btn: gr.Button
    matrix_plot: gr.Plot


@HOLDER
class EvaluateUI:
    """The Evaluate tab: a labelled set, the scores of the label set in use, A/B and restore."""

    eval_set: gr.Dropdown
    upload: gr.File
    folder: gr.Textbox
    evaluate_btn: gr.Button
    summary: gr.Markdown
    chart: gr.Plot
    deltas: gr.Dataframe
    confused: gr.Dataframe
    version_a: gr.Dropdown
    version_b: gr.Dropdown
    compare_btn: gr.Button
    restore_btn: gr.Button
    status: gr.Markdown
    improve: "ImproveUI"


@HOLDER
class ImproveUI:
    """The Evaluate tab's "Improve these descriptions": budget, run, cancel, the kept changes, Apply."""

    budget: gr.Number
    unit: gr.Radio
    run_btn: gr.Button
    cancel_btn: gr.Button
    status: gr.Markdown
    kept: gr.Dataframe
    apply_btn: gr.Button


@HOLDER
class ExportUI:
    """The Export tab: one button a file kind, one file list."""

    mask_btn: gr.Button
    overlay_btn: gr.Button
    props_btn: gr.Button
    space_btn: gr.Button
    desc_btn: gr.Button
    files: gr.File


@HOLDER
class LiveUI:
    """The Live tab: the speed/quality dial, what to show, the webcam stream and the video panel."""

    quality: gr.Radio
    show: gr.Dropdown
    opacity: gr.Slider
    camera: gr.Image
    live_image: gr.Image
    live_status: gr.Markdown
    video_in: gr.Video
    video_btn: gr.Button
    video_out: gr.Video
    shares: gr.Plot
    video_status: gr.Markdown


@HOLDER
class ModelUI:
    """The Model & help tab."""

    info_md: gr.Markdown
    shipped: gr.Dropdown
    source: gr.Textbox
    load_btn: gr.Button
    card: gr.Markdown


@HOLDER
class WorkspaceUI:
    """This browser's workspace: its id in local storage (None with ``--no-state``), the line saying what
    is kept, "Forget my work" and the page's load event (when the id is read)."""

    browser: gr.BrowserState | None
    note: gr.Markdown
    forget_btn: gr.Button
    page_load: object


@HOLDER
class UI:
    """Every component of the app: the user's session state, the page-level parts and the panels."""

    state: gr.State
    banner: gr.HTML
    right_tabs: gr.Tabs
    properties_tab: gr.Tab
    space_tab: gr.Tab
    model_tab: gr.Tab
    viewer: ViewerUI
    controls: ControlsUI
    inspector: InspectorUI
    novel: NovelUI
    edit: EditUI
    properties: PropertiesUI
    space: SpaceUI
    evaluate: EvaluateUI
    export: ExportUI
    model: ModelUI
    live: LiveUI
    workspace: WorkspaceUI

    @property
    def result_panels(self) -> list:
        """What a (re-)segmentation updates, in the order the API returns them: overlay, legend, status,
        top-properties figure and the property choices."""
        return [self.viewer.image, self.viewer.legend, self.viewer.status, self.controls.top_fig,
                self.properties.property]

    @property
    def result(self) -> list:
        """The session state and :attr:`result_panels`: what a re-segmenting event returns."""
        return [self.state, *self.result_panels]
