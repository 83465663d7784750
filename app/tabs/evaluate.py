"""Evaluate: measure the label set being edited on a labelled set (mIoU, per-class IoU, the most confused
pairs), re-scored from cached model outputs after every edit; compare any two evaluations and restore
the descriptions of an earlier one."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from app import views
from app.common import apply_label_set, as_int, bind, ensure_session, user_file
from app.components import UI, EvaluateUI
from app.state import SHARED_EVAL_CACHES, Resources, Session, user_errors
from app.tabs.descriptions import descriptions_changed, use_descriptions
from prolab.errors import ProLabError
from prolab.data.readers import MAX_CLASSES, MAX_MASK_PIXELS
from prolab.eval_cache import DEFAULT_MAX_BYTES

UPLOAD = "upload"
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

**Memory**: the shared datasets' cached outputs serve every user, at most {SHARED_EVAL_CACHES} kept
(the least recently used is dropped), each at most {DEFAULT_MAX_BYTES // 2 ** 20} MiB (MSRC-v2 val takes
86 MB, CamVid val 144 MB). An uploaded set's are this session's own, one set at a time, at most
{DEFAULT_MAX_BYTES // 2 ** 20} MiB (a larger set is refused before any forward pass), freed with the
session."""


def set_choices(res: Resources) -> list[tuple[str, str]]:
    return [(f"{name} · val · {n} images", name) for name, n in res.eval_sets()] + [(UPLOAD_LABEL, UPLOAD)]


def layout(res: Resources) -> EvaluateUI:
    gr.Markdown(HELP)
    choices = set_choices(res)
    with gr.Row():
        eval_set = gr.Dropdown(choices, value=choices[0][1], label="Labelled set", elem_id="pl-eval-set", scale=2)
        upload = gr.File(label="Your labelled set (.zip)", file_types=[".zip"], type="filepath", height=120,
                         elem_id="pl-eval-upload", scale=2)
        folder = gr.Textbox(label="… or a folder on this computer", placeholder="/path/to/my_set",
                            visible=not res.config.is_shared, elem_id="pl-eval-folder", scale=2)
    evaluate_btn = gr.Button("Evaluate the label set in use", variant="primary", elem_id="pl-eval-btn")
    summary = gr.Markdown("Pick a labelled set and press **Evaluate**.", elem_id="pl-eval-summary")
    with gr.Row():
        chart = gr.Plot(label="Per-class IoU", elem_id="pl-eval-chart", scale=3)
        with gr.Column(scale=2):
            deltas = gr.Dataframe(headers=views.DELTA_HEADERS, interactive=False, wrap=True, max_height=520,
                                  label="Each class's change (B against A, largest first)", elem_id="pl-eval-deltas")
    confused = gr.Dataframe(headers=views.CONFUSED_HEADERS, interactive=False, wrap=True,
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


# ---------------------------------------------------------------------------- labelled sets
def _uploaded_cache(res: Resources, s: Session, path: str, progress) -> tuple[object, bool]:
    """``(EvalCache, built now)`` of an uploaded zip or a folder: this session's own, one at a time."""
    from prolab.data.readers import read_folder
    from prolab.eval_cache import EvalCache
    from prolab.evaluate import load_mapping

    entry, ev = s.model_entry, s.evaluation
    key = (id(entry.model), path, res.inference_size(entry))
    if ev.upload is not None and ev.upload[0] == key:
        return ev.upload[1], False
    unpacked = tempfile.mkdtemp(prefix="prolab-eval-")
    try:
        with user_file(path):
            source = read_folder(path, extract_to=unpacked)
            ev.upload = None  # a readable set: the previous one's cache is freed before this one is built
            cache = EvalCache.build(entry.model, source, size=key[2], mapping=load_mapping(entry.directory),
                                    progress=progress)
    except ProLabError as exc:  # never show the server's temporary folder
        raise ProLabError(str(exc).replace(unpacked, Path(path).name)) from None
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)  # the cache keeps what it needs
    ev.upload = (key, cache)
    return cache, True


def _labelled_set(res: Resources, s: Session, eval_set, upload, folder, progress) -> tuple[tuple, object, bool]:
    """``(history key, EvalCache, built now)`` of the chosen set."""
    report = lambda fraction, message: progress(fraction, desc=message)  # noqa: E731
    entry, size = s.model_entry, res.inference_size(s.model_entry)
    if eval_set != UPLOAD:
        cache, built = res.shared_eval_cache(entry, eval_set or "", report)
        return (entry.source, "shared", eval_set, size), cache, built
    folder = (folder or "").strip()
    if not upload and not folder:
        raise ProLabError("Upload a .zip of images/, masks/ and classes.txt (or type a folder) first.")
    if not upload and res.config.is_shared:
        raise ProLabError("This server evaluates uploaded zips only, not folders on the server.")
    path = str(upload or Path(folder).expanduser())
    cache, built = _uploaded_cache(res, s, path, report)
    return (entry.source, UPLOAD, path, size), cache, built


def _kept(metrics: dict) -> dict:
    """What a history keeps of an evaluation: everything but the confusion matrix (C x C numbers)."""
    return {k: v for k, v in metrics.items() if k != "confusion"}


def _record(s: Session, version, which: str):
    """The kept evaluation ``version`` (a dropdown's value) of the set evaluated last."""
    history = s.evaluation.current()
    if version in (None, ""):
        raise ProLabError(f"Pick {which} first: each evaluation is kept as a version (v1, v2, ...).")
    return history.get(as_int(version, which))


def _versions(ui: UI, history, a, b) -> dict:
    choices = views.version_choices(history.records)
    return {ui.evaluate.version_a: gr.update(choices=choices, value=str(a) if a else None),
            ui.evaluate.version_b: gr.update(choices=choices, value=str(b) if b else None)}


# ---------------------------------------------------------------------------- handlers
@user_errors
def evaluate(res: Resources, ui: UI, state: Session | None, label_set, custom_file, eval_set, upload, folder,
             progress=gr.Progress()) -> dict:
    """Score the label set in use (edits included) on a labelled set: mIoU, pixel accuracy, per-class IoU,
    the most confused pairs, and each class's change against the previous evaluation of that set. The
    first evaluation of a set runs the model once per image; later ones re-score its cached outputs."""
    from prolab.eval_cache import class_scores, compare, confused_pairs

    s = ensure_session(state, res)
    e = ui.evaluate
    with s.lock:
        apply_label_set(s, res, label_set, custom_file)
        wb = s.workbench
        space = wb.base_space()  # the label set as segmented (without novel categories)
        target, cache, built = _labelled_set(res, s, eval_set, upload, folder, progress)
        t0 = time.perf_counter()
        scorer = cache.scorer(space, allow_missing=True)
        metrics = cache.score(scorer)
        restricted = scorer.space
        history = s.evaluation.history(target)
        previous = history.records[-1] if history.records else None
        name = wb.label_set.name + (" (edited)" if wb.descriptions is not wb.label_set.descriptions else "")
        record = history.add(_kept(metrics), wb.descriptions, note=name,
                             meta={"label_key": s.label_key, "custom_set": s.custom_set})
        comparison = compare(previous.metrics, record.metrics) if previous else None
        scores = class_scores(metrics, restricted, previous.metrics if previous else None)
        pairs = confused_pairs(metrics, restricted, top=5)
        seconds = time.perf_counter() - t0
    unscored = [c.name for c in scores if not c.scored]
    untrained = [c for c in scorer.novel_classes() if c not in unscored] if scorer.credit is not None else []
    title = f"Per-class IoU, v{record.version}" + (f" against v{previous.version}" if previous else "")
    return {ui.state: s, e.chart: views.class_iou_figure(scores, title, (f"v{previous.version}" if previous else "",
                                                                         f"v{record.version}")),
            e.summary: views.evaluation_summary(record, cache, seconds, built, previous, comparison, unscored,
                                                untrained),
            e.deltas: views.delta_rows(comparison), e.confused: views.confused_rows(pairs),
            **_versions(ui, history, previous.version if previous else None, record.version), e.status: ""}


@user_errors
def compare_evaluations(res: Resources, ui: UI, state: Session | None, version_a, version_b) -> dict:
    """Each class's IoU in evaluation B against evaluation A (version numbers of the set evaluated last)."""
    from prolab.eval_cache import class_scores, compare

    s = ensure_session(state, res)
    e = ui.evaluate
    with s.lock:
        a, b = _record(s, version_a, "version A"), _record(s, version_b, "version B")
        comparison = compare(a.metrics, b.metrics)
    scores = class_scores(b.metrics, previous=a.metrics)
    figure = views.class_iou_figure(scores, f"Per-class IoU, v{b.version} against v{a.version}",
                                    (f"v{a.version}", f"v{b.version}"))
    return {ui.state: s, e.summary: views.comparison_summary(a, b, comparison), e.chart: figure,
            e.deltas: views.delta_rows(comparison), e.status: ""}


@user_errors
def restore_evaluation(res: Resources, ui: UI, state: Session | None, version, class_name, threshold,
                       opacity) -> dict:
    """Put back the label set and descriptions of an earlier evaluation (of the set evaluated last): the
    Edit tab shows them and the current result is re-segmented (no forward pass)."""
    s = ensure_session(state, res)
    with s.lock:
        record = _record(s, version, "the version to restore (A)")
        apply_label_set(s, res, record.meta["label_key"], record.meta.get("custom_set"))
        wb = s.workbench
        if record.descriptions == wb.label_set.descriptions:
            wb.reset_descriptions()  # the shipped ones: shared with other users, shown as unedited
        else:
            use_descriptions(wb, record.descriptions)
        found = wb.descriptions.find(class_name or "")
        out = descriptions_changed(ui, s, threshold, opacity, "\n".join(wb.descriptions[found]) if found else "")
    message = (f"Restored the descriptions of **v{record.version}** ({views.escape(record.note)}); the Edit tab "
               "shows them. Press **Evaluate** to measure them again.")
    return {**out, ui.controls.label_set: s.label_key, ui.evaluate.status: message}


def use_upload(ui: UI) -> dict:
    """An uploaded zip or a typed folder is the set to evaluate."""
    return {ui.evaluate.eval_set: UPLOAD}


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    e, c, v = ui.evaluate, ui.controls, ui.viewer
    shown = [e.summary, e.chart, e.deltas]
    e.evaluate_btn.click(bind(evaluate, res, ui), [ui.state, c.label_set, c.custom_file, e.eval_set, e.upload,
                                                   e.folder],
                         [ui.state, *shown, e.confused, e.version_a, e.version_b, e.status], api_name="evaluate")
    e.compare_btn.click(bind(compare_evaluations, res, ui), [ui.state, e.version_a, e.version_b],
                        [ui.state, *shown, e.status], api_name="compare_evaluations")
    e.restore_btn.click(bind(restore_evaluation, res, ui), [ui.state, e.version_a, ui.edit.class_name, c.threshold,
                                                            v.opacity],
                        ui.result + [ui.edit.changes, ui.edit.class_name, ui.edit.text, c.label_set, e.status],
                        api_name="restore_evaluation")
    e.upload.upload(bind(use_upload, ui), None, e.eval_set, api_visibility="private")
    e.folder.input(bind(use_upload, ui), None, e.eval_set, api_visibility="private")
