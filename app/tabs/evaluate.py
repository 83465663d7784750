"""Evaluate: measure the label set being edited on a labelled set (mIoU, per-class IoU, the most confused
pairs), re-scored from cached model outputs after every edit; compare any two evaluations and restore
the descriptions of an earlier one; improve the descriptions with a search guided by that set's mIoU
(:mod:`prolab.description_search`) and apply what it kept as the user's edits."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import gradio as gr

from app.components import EvaluateUI, ImproveUI
from app.config import AppConfig
from app.handlers import Ctx, handler, on
from app.inputs import as_choice, as_int, as_number
from app.services.description_search import SearchRun, SearchState
from app.services.eval_history import EvalHistory, EvalRecord
from app.services.evaluation import UPLOAD, NothingToEvaluate, no_sets_hint
from app.views import common
from app.views import evaluate as view
from prolab.data.readers import MAX_CLASSES, MAX_MASK_PIXELS
from prolab.description_search import SearchSettings, improve_descriptions as search_descriptions
from prolab.edit_session import LabelSetChoice, UseDescriptions
from prolab.errors import ProLabError
from prolab.eval_cache import DEFAULT_MAX_BYTES
from prolab.eval_report import class_ious, compare

UPLOAD_LABEL = "Uploaded zip / folder (below)"
HELP = f"""Measure the label set you are editing (Segment & edit: label set, Edit tab) on a labelled set:
mIoU, pixel accuracy, each class's IoU and the class pairs mixed up most, with the properties they share.
The **first** evaluation of a set runs the model once per image and keeps its outputs; every later one
(edited sentences, classes added or removed, another label set) only **re-scores** them: no forward pass,
about a second for MSRC-v2's 59 val images. Each evaluation is kept: the next one shows each class's
change, any two can be compared, and an earlier version's descriptions restored.

Scored: the label set in use with your edits, over the properties in use, cut down to the set's classes
(by name, or the model's dataset mapping). Classes the set does not have, novel categories included, are
not scored; a class of the set that the label set lacks is never predicted (IoU 0).
Your own set: a **.zip** of `images/`, `masks/` (index PNGs, 255 = ignore; each the size of its image, at
most {MAX_MASK_PIXELS / 1e6:.1f} MP) and `classes.txt` (one class per line, line 1 = index 0; at most
{MAX_CLASSES}).

**Memory**: the shared datasets' cached outputs serve every user, at most {{shared_caches}} kept
(the least recently used is dropped), each at most {DEFAULT_MAX_BYTES // 2 ** 20} MiB (MSRC-v2 val takes
86 MB, CamVid val 144 MB). An uploaded set's are this session's own, one set at a time, at most
{DEFAULT_MAX_BYTES // 2 ** 20} MiB (a larger set is refused before any forward pass), freed with the
session."""


def set_choices(eval_sets: list[tuple[str, int]]) -> list[tuple[str, str]]:
    return [(f"{name} · val · {n} images", name) for name, n in eval_sets] + [(UPLOAD_LABEL, UPLOAD)]


def layout(config: AppConfig, eval_sets: list[tuple[str, int]]) -> EvaluateUI:
    gr.Markdown(HELP.format(shared_caches=config.caches.shared_eval_caches))
    choices = set_choices(eval_sets)
    with gr.Row():
        eval_set = gr.Dropdown(choices, value=choices[0][1], label="Labelled set", elem_id="pl-eval-set", scale=2)
        upload = gr.File(label="Your labelled set (.zip)", file_types=[".zip"], type="filepath", height=120,
                         elem_id="pl-eval-upload", scale=2)
        folder = gr.Textbox(label="… or a folder on this computer", placeholder="/path/to/my_set",
                            visible=not config.is_shared, elem_id="pl-eval-folder", scale=2)
    evaluate_btn = gr.Button("Evaluate the label set in use", variant="primary", elem_id="pl-eval-btn")
    summary = gr.Markdown("Pick a labelled set and press **Evaluate**." if eval_sets else no_sets_hint(),
                          elem_id="pl-eval-summary")
    with gr.Row():
        chart = gr.Plot(label="Per-class IoU", elem_id="pl-eval-chart", scale=3)
        with gr.Column(scale=2):
            deltas = gr.Dataframe(headers=view.DELTA_HEADERS, interactive=False, wrap=True, max_height=520,
                                  label="Each class's change (B against A, largest first)", elem_id="pl-eval-deltas")
    confused = gr.Dataframe(headers=view.CONFUSED_HEADERS, interactive=False, wrap=True,
                            column_widths=["20%", "12%", "11%", "11%", "46%"], elem_id="pl-eval-confused",
                            label="Class pairs mixed up most (latest evaluation), with the properties both use")
    with gr.Accordion("Compare or restore evaluations", open=True):
        with gr.Row():
            version_a = gr.Dropdown([], label="A (before)", elem_id="pl-eval-a")
            version_b = gr.Dropdown([], label="B (after)", elem_id="pl-eval-b")
        with gr.Row():
            compare_btn = gr.Button("Compare A and B")
            restore_btn = gr.Button("Restore A's descriptions (and re-segment)", elem_id="pl-eval-restore")
        status = gr.Markdown("", elem_id="pl-eval-status")
    improve = layout_improve()
    return EvaluateUI(eval_set=eval_set, upload=upload, folder=folder, evaluate_btn=evaluate_btn, summary=summary,
                      chart=chart, deltas=deltas, confused=confused, version_a=version_a, version_b=version_b,
                      compare_btn=compare_btn, restore_btn=restore_btn, status=status, improve=improve)


IMPROVE_HELP = """Search for better sentences on the labelled set chosen above. The set is split in two halves; the
search tries one-class edits (sentences of the model's trained classes, of every shipped label set, of the
properties that separate a class from the one it is mixed up with), the classes that lose most first, and keeps
a change only when the **search half**'s mIoU rises and the **guard half**'s does not fall. It re-scores the
cached model outputs: no forward pass after the set's first evaluation. **Cancel** stops it and keeps what it
found so far."""


def layout_improve() -> ImproveUI:
    """The compact "Improve these descriptions" panel under the evaluation."""
    with gr.Accordion("Improve these descriptions", open=False, elem_id="pl-improve"):
        gr.Markdown(IMPROVE_HELP)
        with gr.Row():
            budget = gr.Number(value=40, minimum=1, precision=0, label="Budget", elem_id="pl-improve-budget",
                               scale=1, min_width=120)
            unit = gr.Radio(["proposals", "seconds"], value="proposals", label="Budget counted in",
                            elem_id="pl-improve-unit", scale=1, min_width=260)
            run_btn = gr.Button("Improve these descriptions", variant="primary", elem_id="pl-improve-btn", scale=2)
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="pl-improve-cancel", scale=1, min_width=100)
        status = gr.Markdown("", elem_id="pl-improve-status")
        kept = gr.Dataframe(headers=view.KEPT_HEADERS, interactive=False, wrap=True, max_height=420,
                            column_widths=["12%", "29%", "29%", "16%", "7%", "7%"], elem_id="pl-improve-kept",
                            label="Kept changes (mIoU change of each step, in points)")
        apply_btn = gr.Button("Apply: make these my edits (and re-segment)", elem_id="pl-improve-apply")
    return ImproveUI(budget=budget, unit=unit, run_btn=run_btn, cancel_btn=cancel_btn, status=status, kept=kept,
                     apply_btn=apply_btn)


def _record(ctx: Ctx, version, which: str) -> EvalRecord:
    """The kept evaluation ``version`` (a dropdown's value) of the set evaluated last."""
    history = ctx.session.evaluation.current()
    if version in (None, ""):
        raise ProLabError(f"Pick {which} first: each evaluation is kept as a version (v1, v2, ...).")
    return history.get(as_int(version, which))


def _versions(ctx: Ctx, history: EvalHistory, a, b) -> dict:
    choices, e = view.version_choices(history.records), ctx.ui.evaluate
    return {e.version_a: gr.update(choices=choices, value=str(a) if a else None),
            e.version_b: gr.update(choices=choices, value=str(b) if b else None)}


def _shown(ui) -> list:
    e = ui.evaluate
    return [e.summary, e.chart, e.deltas]


INPUTS = lambda ui: {"eval_set": ui.evaluate.eval_set, "upload": ui.evaluate.upload,  # noqa: E731
                     "folder": ui.evaluate.folder, "version_a": ui.evaluate.version_a,
                     "version_b": ui.evaluate.version_b, "version": ui.evaluate.version_a,
                     "class_name": ui.edit.class_name, "budget": ui.evaluate.improve.budget,
                     "unit": ui.evaluate.improve.unit}


# ---------------------------------------------------------------------------- handlers
@handler(outputs=lambda ui: _shown(ui) + [ui.evaluate.confused, ui.evaluate.version_a, ui.evaluate.version_b,
                                          ui.evaluate.status], inputs=INPUTS,
         events=lambda ui: [on(ui.evaluate.evaluate_btn.click, api_name="evaluate")])
def evaluate(ctx: Ctx, label_set, custom_file, eval_set, upload, folder, progress=gr.Progress()) -> dict:
    """Score the label set in use (edits included) on a labelled set: mIoU, pixel accuracy, per-class IoU,
    the most confused pairs, and each class's change against the previous evaluation of that set. The
    first evaluation of a set runs the model once per image; later ones re-score its cached outputs."""
    try:
        ev = ctx.services.evaluation.evaluate(ctx.session, as_choice(label_set, custom_file), eval_set, upload,
                                              folder, ctx.report)
    except NothingToEvaluate as exc:  # one message (a toast and the status), no error badge on every panel
        return {ctx.ui.evaluate.status: ctx.warn(str(exc))}
    record, previous, e = ev.record, ev.previous, ctx.ui.evaluate
    title = f"Per-class IoU, v{record.version}" + (f" against v{previous.version}" if previous else "")
    versions = (f"v{previous.version}" if previous else "", f"v{record.version}")
    return {e.chart: view.class_iou_figure(ev.scores, title, versions),
            e.summary: view.evaluation_summary(record, ev.cache, ev.seconds, ev.built, previous, ev.comparison,
                                               ev.unscored, ev.untrained),
            e.deltas: view.delta_rows(ev.comparison), e.confused: view.confused_rows(ev.pairs),
            **_versions(ctx, ev.history, previous.version if previous else None, record.version), e.status: ""}


@handler(outputs=lambda ui: _shown(ui) + [ui.evaluate.status], inputs=INPUTS,
         events=lambda ui: [on(ui.evaluate.compare_btn.click, api_name="compare_evaluations")])
def compare_evaluations(ctx: Ctx, version_a, version_b) -> dict:
    """Each class's IoU in evaluation B against evaluation A (version numbers of the set evaluated last)."""
    a, b = _record(ctx, version_a, "version A"), _record(ctx, version_b, "version B")
    comparison = compare(a.metrics, b.metrics)
    scores = class_ious(b.metrics, previous=a.metrics)
    figure = view.class_iou_figure(scores, f"Per-class IoU, v{b.version} against v{a.version}",
                                   (f"v{a.version}", f"v{b.version}"))
    e = ctx.ui.evaluate
    return {e.summary: view.comparison_summary(a, b, comparison), e.chart: figure,
            e.deltas: view.delta_rows(comparison), e.status: ""}


@handler(outputs=lambda ui: ui.result_panels + [ui.edit.changes, ui.edit.class_name, ui.edit.text,
                                                ui.controls.label_set, ui.evaluate.status], inputs=INPUTS,
         events=lambda ui: [on(ui.evaluate.restore_btn.click, api_name="restore_evaluation")])
def restore_evaluation(ctx: Ctx, version, class_name, threshold, opacity) -> dict:
    """Put back the label set and descriptions of an earlier evaluation (of the set evaluated last): the
    Edit tab shows them and the current result is re-segmented (no forward pass)."""
    record = _record(ctx, version, "the version to restore (A)")
    seg = ctx.edit.apply(UseDescriptions(record.descriptions), on=record.meta["choice"],
                         threshold=threshold)
    message = (f"Restored the descriptions of **v{record.version}** ({common.escape(record.note)}); the Edit tab "
               "shows them. Press **Evaluate** to measure them again.")
    return {**ctx.edited(seg, opacity, class_name or ""), ctx.ui.controls.label_set: ctx.edit.choice.key,
            ctx.ui.evaluate.status: message}


@handler(outputs=lambda ui: [ui.evaluate.eval_set], session=False,
         events=lambda ui: [on(ui.evaluate.upload.upload, api_visibility="private"),
                               on(ui.evaluate.folder.input, api_visibility="private")])
def use_upload(ctx: Ctx) -> dict:
    """An uploaded zip or a typed folder is the set to evaluate."""
    return {ctx.ui.evaluate.eval_set: UPLOAD}


# ---------------------------------------------------------------------------- improve these descriptions
@dataclass(frozen=True)
class _SearchJob:
    """What a search reads from the session (under its lock) before it runs without it."""

    model: object
    encoder: object
    descriptions: object
    cache: object
    choice: LabelSetChoice
    label_set_name: str
    set_name: str
    state: SearchState
    cancel: threading.Event


def _settings(budget, unit) -> SearchSettings:
    if unit == "seconds":
        return SearchSettings(budget=None, seconds=as_number(budget, "The time budget (seconds)", 1, 3600))
    return SearchSettings(budget=as_int(budget, "The budget (proposals)", 1, 10_000))


def _search_job(ctx: Ctx, label_set, custom_file, eval_set, upload, folder):
    """Under the session's lock: the label set chosen, its descriptions (edits included) and the labelled
    set's cached outputs (built on its first use); the run is registered last, so nothing can fail after."""
    def read(s) -> _SearchJob:
        edit = s.edit
        edit.select(as_choice(label_set, custom_file))
        if not edit.is_property_model:
            raise ProLabError("This model has fixed classes and no sentences to improve: load a property model "
                              "(Model & help tab) to search its descriptions.")
        _, cache, _ = ctx.services.evaluation.labelled_set(s, eval_set, upload, folder, ctx.report)
        return _SearchJob(edit.model, edit.encoder, edit.descriptions, cache, edit.choice, edit.name,
                          f"{cache.name} {cache.split}", s.evaluation.search, s.evaluation.search.start())
    return ctx.read(read)


@handler(outputs=lambda ui: [ui.evaluate.improve.status, ui.evaluate.improve.kept],
         events=lambda ui: [on(ui.evaluate.improve.run_btn.click, api_visibility="private",
                               then=improve_descriptions,
                               then_options={"api_name": "improve_descriptions", "api_visibility": "public"})])
def improve_started(ctx: Ctx) -> dict:
    """Before the search: the user's session exists (Cancel reaches the search through it)."""
    ctx.session  # noqa: B018 - created on a first action, and returned to the page before the search starts
    im = ctx.ui.evaluate.improve
    return {im.status: "Searching… (**Cancel** stops it and keeps what it found so far)", im.kept: []}


@handler(outputs=lambda ui: [ui.evaluate.improve.status, ui.evaluate.improve.kept], inputs=INPUTS, lock=False)
def improve_descriptions(ctx: Ctx, label_set, custom_file, eval_set, upload, folder, budget, unit,
                         progress=gr.Progress()) -> dict:
    """Search the label set's descriptions (edits included) on the chosen labelled set for one-class edits that
    raise one half's mIoU without lowering the other's; runs without the session's lock (Cancel stops it) and
    keeps the result in the session for Apply."""
    settings = _settings(budget, unit)
    job = _search_job(ctx, label_set, custom_file, eval_set, upload, folder)
    run = None
    with ctx.services.sessions.working(ctx.session):  # neither expiry nor the session cap releases it meanwhile
        try:
            ctx.report(0.0, f"Searching on {job.set_name}")
            result = search_descriptions(job.model, job.cache, job.descriptions, job.encoder, settings,
                                         progress=ctx.report, cancel=job.cancel)
            run = SearchRun(result, job.choice, job.label_set_name, job.set_name)
        finally:
            job.state.finish(run)
    im = ctx.ui.evaluate.improve
    return {im.status: view.search_summary(run), im.kept: view.kept_rows(run.result.kept)}


@handler(outputs=lambda ui: [ui.evaluate.improve.status], lock=False,
         events=lambda ui: [on(ui.evaluate.improve.cancel_btn.click, api_name="cancel_improvement")])
def cancel_improvement(ctx: Ctx) -> dict:
    """Stop the session's running search after its current proposal (what it kept so far stays)."""
    stopping = ctx.session.evaluation.search.cancel()
    return {ctx.ui.evaluate.improve.status: "Cancelling: the search stops after the proposal it is trying…"
            if stopping else "No search is running."}


@handler(outputs=lambda ui: ui.result_panels + [ui.edit.changes, ui.edit.class_name, ui.edit.text,
                                                ui.controls.label_set, ui.evaluate.improve.status], inputs=INPUTS,
         events=lambda ui: [on(ui.evaluate.improve.apply_btn.click, api_name="apply_improvement")])
def apply_improvement(ctx: Ctx, class_name, threshold, opacity) -> dict:
    """Make the last search's descriptions the user's edits of the label set it searched: the Edit tab shows
    them, Reset all undoes them, Evaluate measures them (the result on screen is re-scored)."""
    search = ctx.session.evaluation.search
    if search.running:
        raise ProLabError("The search is still running: wait for it to end (or press Cancel), then Apply.")
    run = search.last
    if run is None:
        raise ProLabError("Nothing to apply yet: press Improve these descriptions first.")
    if not run.result.kept:
        raise ProLabError("The last search kept no change, so there is nothing to apply.")
    seg = ctx.edit.apply(UseDescriptions(run.result.descriptions), on=run.choice, threshold=threshold)
    classes = list(dict.fromkeys(k.class_name for k in run.result.kept))
    message = (f"Applied the search's changes to {common.escape(', '.join(classes))}: they are your edits of "
               f"**{common.escape(ctx.edit.label_set.name)}** now (Edit tab; **Reset all** undoes them). Press "
               "**Evaluate** to measure them on the whole set.")
    return {**ctx.edited(seg, opacity, classes[0], select=True), ctx.ui.controls.label_set: ctx.edit.choice.key,
            ctx.ui.evaluate.improve.status: message}
