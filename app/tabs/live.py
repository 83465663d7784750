"""Live: the webcam streamed through the model and uploaded videos, with the speed/quality dial.

Both use the session's current label set (edited and novel classes included) and colours. The frame
work (dropping busy frames, scoring, drawing, video decode/encode) is in :mod:`prolab.live` and
:mod:`prolab.video`; the handlers here pick the inputs and format the outputs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from app import views
from app.common import as_opacity, bind, ensure_session
from app.components import UI, LiveUI
from app.state import Resources, Session, user_errors
from prolab.errors import ProLabError
from prolab.quality import QUALITIES

SHOW_CLASSES = "classes"


def layout() -> LiveUI:
    gr.Markdown("Your camera or a video through the model, scored with the label set of the **Segment & edit** "
                "tab (edited and novel classes included). *fast* runs the network in ONNX Runtime at a smaller "
                "input, *accurate* adds mirrored and larger passes (see docs/RESULTS.md). Frames that arrive "
                "while one is being segmented are dropped, never queued.")
    with gr.Row():
        quality = gr.Radio([(f"{q.name}: {q.description}", q.name) for q in QUALITIES.values()], value="default",
                           label="Speed / quality (shared with the Segment tab; fast for the webcam)",
                           elem_id="pl-quality", scale=3)
        with gr.Column(scale=2):
            show = gr.Dropdown([SHOW_CLASSES], value=SHOW_CLASSES, allow_custom_value=True, filterable=True,
                               label="Show: the classes, or one property's heatmap (name or number)",
                               elem_id="pl-live-show")
            opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity")
    with gr.Tabs():
        with gr.Tab("Webcam"):
            with gr.Row():
                camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera",
                                  elem_id="pl-camera", height=360,
                                  webcam_options=gr.WebcamOptions(mirror=False, constraints={
                                      "video": {"width": {"ideal": 427}, "height": {"ideal": 320}}}))
                live_image = gr.Image(label="Segmented (live)", type="numpy", format="jpeg", interactive=False,
                                      elem_id="pl-live-image", height=360)
            live_status = gr.Markdown("Start the camera (allow the browser to use it).", elem_id="pl-live-status")
        with gr.Tab("Video"):
            with gr.Row():
                video_in = gr.Video(label="Video (up to 120 s and 1920 x 1080)", sources=["upload"],
                                    elem_id="pl-video-in", height=320)
                video_out = gr.Video(label="Segmented video", elem_id="pl-video-out", height=320,
                                     interactive=False)
            video_btn = gr.Button("Segment the video", variant="primary", elem_id="pl-video-btn")
            video_status = gr.Markdown("", elem_id="pl-video-status")
            shares = gr.Plot(label="Share of each frame per class, over time", elem_id="pl-video-shares")
    return LiveUI(quality=quality, show=show, opacity=opacity, camera=camera, live_image=live_image,
                  live_status=live_status, video_in=video_in, video_btn=video_btn, video_out=video_out,
                  shares=shares, video_status=video_status)


# ---------------------------------------------------------------------------- helpers
def _inputs(s: Session, quality: str | None, show) -> dict:
    """What a frame is scored with: network (backend of the dial step), label space, options, colours."""
    from prolab.onnx_backend import with_backend
    from prolab.quality import get_quality

    wb, entry = s.workbench, s.model_entry
    q = get_quality(quality)
    space = wb.space() if wb.is_property_model else None
    names = list(space.class_names) if space is not None else list(entry.model.class_names)
    prop = None
    if show not in (None, "", SHOW_CLASSES):
        if space is None:
            raise ProLabError("Property heatmaps need a property model.")
        from app.tabs.properties import resolve_property

        prop = resolve_property(space, show)
    return {"model": with_backend(entry.model, q.backend, entry.directory), "label_space": space,
            "options": q.inference_kwargs(entry.model.config.input_size), "palette": wb.palette(names),
            "property_index": prop, "prior": wb.prior, "encoder": wb.encoder}


# ---------------------------------------------------------------------------- handlers
@user_errors
def live_frame(res: Resources, ui: UI, state: Session | None, frame, quality, show, opacity) -> dict:
    """Segment one webcam frame; a frame arriving while the previous one is in progress is dropped."""
    s = ensure_session(state, res)
    if frame is None:
        return {ui.state: s}
    with s.lock:  # the label set and model are read under the session's lock; the frame is not
        inputs = _inputs(s, quality, show)
    out = s.live.process(frame, opacity=as_opacity(opacity), **inputs)
    if out is None:  # dropped: the previous frame is still being segmented
        return {ui.state: s}
    return {ui.state: s, ui.live.live_image: out.image,
            ui.live.live_status: views.live_status(out, s.live.frames, inputs["property_index"])}


@user_errors
def show_choices(res: Resources, ui: UI, state: Session | None, show) -> dict:
    """The "Show" list: the classes, then every property of the label space in use (searchable)."""
    s = ensure_session(state, res)
    with s.lock:
        space = s.workbench.space() if s.workbench.is_property_model else None
    return {ui.state: s, ui.live.show: gr.update(choices=[(SHOW_CLASSES, SHOW_CLASSES)] + views.property_choices(space),
                                                 value=show or SHOW_CLASSES)}


@user_errors
def segment_video(res: Resources, ui: UI, state: Session | None, video, quality, show, opacity,
                  progress=gr.Progress()) -> dict:
    """Segment every frame of an uploaded video: the overlay video and each class's share over time."""
    from prolab.video import VideoLimits, check_limits, probe
    from prolab.video import segment_video as run

    s = ensure_session(state, res)
    if not video:
        raise ProLabError("Upload a video first.")
    check_limits(probe(video), VideoLimits(), Path(video).name)  # before any work: a clear, quick error
    with s.lock:
        inputs = _inputs(s, quality, show)
        if s.video_dir is None or not Path(s.video_dir).is_dir():
            s.video_dir = tempfile.mkdtemp(prefix="prolab-video-")
    from prolab.frames import FrameSegmenter

    seg = FrameSegmenter(inputs["model"], inputs["label_space"], inputs["options"], prior=inputs["prior"],
                         encoder=inputs["encoder"])
    alpha, k = as_opacity(opacity), inputs["property_index"]
    render = None
    if k is not None:
        from prolab.colorize import blend, heatmap, resize_map

        def render(image, result):
            return blend(image, heatmap(resize_map(result.activations[k].numpy(), image.shape[:2]), 0.0, 1.0), alpha)

    progress(0.0, desc="Segmenting frames")

    def report(done: int, total: int) -> None:
        progress((done, total), desc="Segmenting frames", unit="frames")

    out_path = Path(s.video_dir) / f"{Path(video).stem[:60]}_segmented.mp4"
    result = run(seg, video, out_path, inputs["palette"], alpha, VideoLimits(), report, render)
    lv = ui.live
    return {ui.state: s, lv.video_out: str(result.output),
            lv.shares: views.shares_over_time_figure(result.times, result.share_table(), seg.class_names,
                                                     inputs["palette"]),
            lv.video_status: views.video_status(result, quality)}


# ---------------------------------------------------------------------------- wiring
def wire(ui: UI, res: Resources) -> None:
    lv = ui.live
    # concurrency_limit=None: a frame is never held in gradio's queue behind the previous one;
    # LiveStream drops it at once instead when that one is still being segmented.
    lv.camera.stream(bind(live_frame, res, ui), [ui.state, lv.camera, lv.quality, lv.show, lv.opacity],
                     [ui.state, lv.live_image, lv.live_status], api_name="live_frame", stream_every=0.04,
                     concurrency_limit=None, show_progress="hidden", time_limit=3600)
    lv.show.focus(bind(show_choices, res, ui), [ui.state, lv.show], [ui.state, lv.show], api_visibility="private")
    lv.video_btn.click(bind(segment_video, res, ui), [ui.state, lv.video_in, lv.quality, lv.show, lv.opacity],
                       [ui.state, lv.video_out, lv.shares, lv.video_status], api_name="segment_video")
