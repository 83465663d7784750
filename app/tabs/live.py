"""Live: the webcam streamed through the model and uploaded videos, with the speed/quality dial.

Both use the session's current label set (edited and novel classes included) and colours. The frame
work (dropping busy frames, scoring, drawing, video decode/encode) is in :mod:`prolab.live` and
:mod:`prolab.video`; the handlers here pick the inputs and format the outputs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from app.components import LiveUI
from app.handlers import Ctx, handler, on
from app.inputs import as_opacity, resolve_property
from app.services.sessions import Session
from app.views import common
from app.views import live as view
from prolab.colorize import blend, heatmap, resize_map
from prolab.frames import FrameSegmenter
from prolab.quality import QUALITIES, get_quality
from prolab.video import VideoLimits, check_limits, probe
from prolab.video import segment_video as run_video
from prolab.errors import ProLabError

SHOW_CLASSES = "classes"


def layout() -> LiveUI:
    gr.Markdown("Your camera or a video through the model, scored with the label set of the **Segment & edit** "
                "tab (edited and novel classes included). *fast* runs the network in ONNX Runtime at a smaller "
                "input with plain upsampling, *default* and *accurate* put class boundaries on the image's edges, "
                "*accurate* adds mirrored and larger passes (see docs/RESULTS.md). Frames that arrive "
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
    """What a frame is scored with: network (backend of the dial step), label space, options, upsampling,
    colours."""
    edit = s.edit
    step = get_quality(quality)  # None: the default step
    model, options = edit.network(step)
    space = edit.space()
    names = list(space.class_names) if space is not None else list(edit.model.class_names)
    prop = None
    if show not in (None, "", SHOW_CLASSES):
        if space is None:
            raise ProLabError("Property heatmaps need a property model.")
        prop = resolve_property(space, show)
    return {"model": model, "label_space": space, "options": options, "palette": edit.palette(names),
            "property_index": prop, "prior": edit.prior, "encoder": edit.encoder, "guided": step.guided}


INPUTS = lambda ui: {"frame": ui.live.camera, "quality": ui.live.quality, "show": ui.live.show,  # noqa: E731
                     "opacity": ui.live.opacity, "video": ui.live.video_in}


# ---------------------------------------------------------------------------- handlers
@handler(outputs=lambda ui: [ui.live.live_image, ui.live.live_status], inputs=INPUTS, lock=False,
         events=lambda ui: [on(ui.live.camera.stream, api_name="live_frame", stream_every=0.04,
                                  concurrency_limit=None, show_progress="hidden", time_limit=3600)])
def live_frame(ctx: Ctx, frame, quality, show, opacity) -> dict:
    """Segment one webcam frame; a frame arriving while the previous one is in progress is dropped."""
    if frame is None:
        return {}
    inputs = ctx.read(lambda s: _inputs(s, quality, show))  # the frame itself is segmented outside the lock
    live = ctx.session.live
    out = live.process(frame, opacity=as_opacity(opacity), **inputs)
    if out is None:  # dropped: the previous frame is still being segmented
        return {}
    return {ctx.ui.live.live_image: out.image,
            ctx.ui.live.live_status: view.live_status(out, live.frames, inputs["property_index"])}


@handler(outputs=lambda ui: [ui.live.show], inputs=INPUTS,
         events=lambda ui: [on(ui.live.show.focus, api_visibility="private")])
def show_choices(ctx: Ctx) -> dict:
    """The "Show" list: the classes, then every property of the label space in use (searchable). Choices
    only: the reply can land after the user picked or typed (it waits for the session), and a value read at
    focus would undo that."""
    choices = [(SHOW_CLASSES, SHOW_CLASSES)] + common.property_choices(ctx.edit.space())
    return {ctx.ui.live.show: gr.update(choices=choices)}


def _heatmap_renderer(k: int, alpha: float):
    """Draws property ``k``'s activation over each frame instead of the classes."""
    def render(image, result):
        return blend(image, heatmap(resize_map(result.activations[k].numpy(), image.shape[:2]), 0.0, 1.0), alpha)
    return render


def _video_dir(s: Session) -> str:
    if s.video_dir is None or not Path(s.video_dir).is_dir():
        s.video_dir = tempfile.mkdtemp(prefix="prolab-video-")
    return s.video_dir


@handler(outputs=lambda ui: [ui.live.video_out, ui.live.shares, ui.live.video_status], inputs=INPUTS, lock=False,
         events=lambda ui: [on(ui.live.video_btn.click, api_name="segment_video")])
def segment_video(ctx: Ctx, video, quality, show, opacity, progress=gr.Progress()) -> dict:
    """Segment every frame of an uploaded video: the overlay video and each class's share over time."""
    if not video:
        raise ProLabError("Upload a video first.")
    check_limits(probe(video), VideoLimits(), Path(video).name)  # before any work: a clear, quick error
    inputs, folder = ctx.read(lambda s: (_inputs(s, quality, show), _video_dir(s)))
    seg = FrameSegmenter(inputs["model"], inputs["label_space"], inputs["options"], prior=inputs["prior"],
                         encoder=inputs["encoder"], guided=inputs["guided"])
    alpha, k = as_opacity(opacity), inputs["property_index"]
    progress(0.0, desc="Segmenting frames")

    def report(done: int, total: int) -> None:
        progress((done, total), desc="Segmenting frames", unit="frames")

    out_path = Path(folder) / f"{Path(video).stem[:60]}_segmented.mp4"
    render = None if k is None else _heatmap_renderer(k, alpha)
    sessions = ctx.services.sessions
    sessions.reserve_disk(ctx.session)
    with sessions.working(ctx.session):  # neither expiry nor the session cap takes its files until it returns
        result = run_video(seg, video, out_path, inputs["palette"], alpha, VideoLimits(), report, render)
        lv = ctx.ui.live
        return {lv.video_out: str(result.output),
                lv.shares: view.shares_over_time_figure(result.times, result.share_table(), seg.class_names,
                                                        inputs["palette"]),
                lv.video_status: view.video_status(result, quality)}
