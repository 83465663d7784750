"""Evaluate: measure the label set being edited on a labelled set (mIoU, per-class IoU, the most confused
pairs), re-scored from cached model outputs after every edit; compare any two evaluations and restore
the descriptions of an earlier one."""
from __future__ import annotations

import gradio as gr

from app.components import EvaluateUI
from app.config import AppConfig
from app.handlers import Ctx, handler, on
from app.inputs import as_choice, as_int
from app.services.eval_history import EvalHistory, EvalRecord
from app.services.evaluation import UPLOAD, NothingToEvaluate, no_sets_hint
from app.views import common
from app.views import evaluate as view
from prolab.data.readers import MAX_CLASSES, MAX_MASK_PIXELS
from prolab.edit_session import UseDescriptions
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
    return EvaluateUI(eval_set=eval_set, upload=upload, folder=folder, evaluate_btn=evaluate_btn, summary=summary,
                      chart=chart, deltas=deltas, confused=confused, version_a=version_a, version_b=version_b,
                      compare_btn=compare_btn, restore_btn=restore_btn, status=status)


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
                     "class_name": ui.edit.class_name}


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
