"""Build and launch the ProLab Explorer Gradio app.

``build_demo(config)`` lays out the tabs and connects their events (``app/tabs/*``); ``main()`` parses
the command line and launches. gradio, torch and the tabs are imported inside ``build_demo`` (after the
command line is checked, so ``--help`` and a bad argument answer at once); the model and the sentence
encoder load in a background warm-up thread after the server is up, so the app is ready within seconds.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import AppConfig
from prolab import labelsets
from prolab.caches import default_cache_dir
from prolab.errors import ProLabError

if TYPE_CHECKING:  # the services import torch: loaded when the app is built, after the arguments are checked
    from app.services import Services

INTRO = ("# ProLab Explorer\n"
         "Property-level semantic segmentation after Xiao et al., *A Semantic Space is Worth 256 Language "
         "Descriptions* (ECCV 2024): pixels are scored against K **properties** (clusters of description "
         "sentences), so any label set, edited descriptions or brand-new categories work with one model.")


#: Sessions gradio keeps its own per-session data for (component updates, ~0.4 MB each), oldest dropped
#: first. gradio's default, 10,000, would let that alone grow to gigabytes; users' arrays are freed
#: after --session-ttl in any case.
STATE_SESSION_CAPACITY = 1000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="ProLab Explorer: the Gradio app.")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    g.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (default 7860 or $GRADIO_SERVER_PORT)")
    g.add_argument("--share", action="store_true", help="create a public gradio.live link")
    g.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    g.add_argument("--session-ttl", type=float, default=1800.0, metavar="SECONDS",
                   help="how long a user's image and results are kept after their last action "
                        "(default 1800 = 30 min); then they are freed")
    g.add_argument("--max-sessions", type=int, default=40, metavar="N",
                   help="users whose image and results are kept at once (default 40, about 41 MB each); "
                        "beyond, the least recently active user's are freed and they are told so")
    g.add_argument("--session-memory", type=float, default=2048.0, metavar="MB",
                   help="the same when all users' images, results and uploaded evaluation sets together hold "
                        "more than this (default 2048 MB)")
    g.add_argument("--disk-budget", type=float, default=2048.0, metavar="MB",
                   help="and when all users' files to download (exports, segmented videos) take more than this "
                        "on disk (default 2048 MB); each user's files are deleted with their session")
    g = p.add_argument_group("kept work (each browser's edits, novel categories, custom sets, evaluations)")
    g.add_argument("--state-dir", default=None, metavar="DIR",
                   help="folder of the SQLite file that keeps each browser's work across reloads and restarts "
                        "(default: $PROLAB_STATE_DIR or <cache folder>/state, e.g. ~/.cache/prolab/state)")
    g.add_argument("--no-state", action="store_true",
                   help="keep nothing after a session ends (work lives in memory only, as before)")
    g.add_argument("--state-max-mb", type=float, default=4.0, metavar="MB",
                   help="a browser's kept work beyond this is not saved, and they are told (default 4)")
    g.add_argument("--state-total-mb", type=float, default=256.0, metavar="MB",
                   help="the file beyond this: the least recently used browsers' work is deleted (default 256)")
    g = p.add_argument_group("model and label set")
    g.add_argument("--model", default=None,
                   help="model directory or Hugging Face id (default: assets/models/default, else a small "
                        "untrained model, clearly labelled)")
    g.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="with --share or a non-local --host, the Model tab loads only the shipped models, "
                        "--model and models under these folders (repeatable)")
    g.add_argument("--allow-any-model", action="store_true",
                   help="let the Model tab of a shared server load any directory or Hugging Face id")
    g.add_argument("--label-set", default="ade20k_150",
                   help="initial label set (default ade20k_150): a key of assets/datasets (ade20k_150, "
                        "coco_stuff_171, pascal_context_59, cityscapes_19, msrc_23, camvid_11, coco_80) "
                        "or 'model' (the model's training classes)")
    g.add_argument("--inference-size", type=int, default=None,
                   help="short side of the network input in pixels (default: the model's input_size)")
    g.add_argument("--cache-dir", default=None,
                   help=f"embedding / layout cache (default: $PROLAB_CACHE_DIR or {default_cache_dir()})")
    g.add_argument("--data-root", default=None, metavar="DIR",
                   help="labelled sets the Evaluate tab offers (their val splits; default: $PROLAB_DATA or "
                        "../shared/datasets next to the repository)")
    g = p.add_argument_group("LLM for describing novel categories (any OpenAI-compatible endpoint)")
    g.add_argument("--llm-model", default=None, help="model name (default: $PROLAB_LLM_MODEL or gpt-4o-mini)")
    g.add_argument("--llm-base-url", default=None,
                   help="API base URL, e.g. http://localhost:11434/v1 (default: $OPENAI_BASE_URL or OpenAI)")
    g.add_argument("--llm-api-key-env", default="OPENAI_API_KEY",
                   help="name of the environment variable holding the API key (default OPENAI_API_KEY)")
    return p


def config_from_args(args: argparse.Namespace) -> AppConfig:
    return AppConfig(host=args.host, port=args.port, share=args.share, model=args.model,
                     label_set=args.label_set, inference_size=args.inference_size,
                     llm_model=args.llm_model, llm_base_url=args.llm_base_url,
                     llm_api_key_env=args.llm_api_key_env, cache_dir=args.cache_dir,
                     open_browser=not args.no_browser, session_ttl=args.session_ttl,
                     max_sessions=args.max_sessions, session_memory_mb=args.session_memory,
                     disk_budget_mb=args.disk_budget,
                     model_dirs=list(args.model_dir), allow_any_model=args.allow_any_model,
                     data_root=args.data_root, keep_state=not args.no_state, state_dir=args.state_dir,
                     state_mb_each=args.state_max_mb, state_mb_total=args.state_total_mb)


#: Longest --session-ttl accepted: a week (gradio's timers misbehave with infinite or huge values).
MAX_SESSION_TTL = 7 * 24 * 3600.0


def check_config(config: AppConfig) -> None:
    """Refuse, before the server starts, settings that would make it fail or make every action fail."""
    if not (math.isfinite(config.session_ttl) and 0 < config.session_ttl <= MAX_SESSION_TTL):
        raise ProLabError(f"--session-ttl must be a number of seconds between 0 and {MAX_SESSION_TTL:.0f}, "
                          f"got {config.session_ttl}.")
    if config.max_sessions < 1:
        raise ProLabError(f"--max-sessions must be at least 1, got {config.max_sessions}.")
    if not (math.isfinite(config.session_memory_mb) and config.session_memory_mb >= 64):
        raise ProLabError(f"--session-memory must be at least 64 MB, got {config.session_memory_mb}.")
    if not (math.isfinite(config.disk_budget_mb) and config.disk_budget_mb >= 16):
        raise ProLabError(f"--disk-budget must be at least 16 MB, got {config.disk_budget_mb}.")
    if not 1 <= config.port <= 65535:
        raise ProLabError(f"--port must be between 1 and 65535, got {config.port}.")
    _check_host(config.host)
    _check_label_set(config.label_set)
    if config.cache_dir:
        _check_writable(Path(config.cache_dir).expanduser(), "--cache-dir")
    if config.keep_state:
        if not (math.isfinite(config.state_mb_each) and math.isfinite(config.state_mb_total)
                and 0.01 <= config.state_mb_each <= config.state_mb_total):
            raise ProLabError(f"--state-max-mb ({config.state_mb_each:g}) must be at least 0.01 and at most "
                              f"--state-total-mb ({config.state_mb_total:g}).")
        _check_writable(config.state_folder(), "--state-dir")
    if config.inference_size is not None:
        from prolab.inference import check_inference_options  # torch: only when the option is given

        try:
            check_inference_options(config.inference_size)
        except ProLabError as exc:
            raise ProLabError(f"--inference-size: {exc}") from None


def _check_host(host: str) -> None:
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ProLabError(f"--host {host!r} is not an address or host name of this machine ({exc}).") from None


def _check_label_set(key: str) -> None:
    keys = [k for k, _ in labelsets.available()] + ["model"]
    if key not in keys:
        raise ProLabError(f"--label-set {key!r} is not a label set; use one of: {', '.join(keys)}.")


def _check_writable(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ProLabError(f"{flag} {folder} cannot be written to ({exc.strerror or exc}).") from None


def build_demo(config: AppConfig | None = None, services: Services | None = None):
    """The Blocks app (not launched). Pass :func:`launch_kwargs` to ``launch`` for theme and CSS. Its
    ``prolab_services`` and ``prolab_ui`` (:class:`app.components.UI`) are what the handlers use."""
    import gradio as gr

    from app.handlers import Wiring
    from app.services import Services
    from app.tabs import (descriptions, evaluate, export, labelspace, live, model, novel, properties, segment,
                          workspace)

    from app import gradio_cache

    gradio_cache.install()  # downloads never read a cached image being rewritten
    services = services or Services(config or AppConfig())
    # gradio's copies of results and downloads (its cache) are deleted with the sessions they served
    ttl = int(min(max(services.config.session_ttl, 60), 86400))
    with gr.Blocks(title="ProLab Explorer", delete_cache=(max(60, ttl // 4), ttl + 60)) as demo:
        ui = build_ui(services)
        wiring = Wiring(services, ui)
        for tab in (segment, novel, descriptions, properties, labelspace, evaluate, export, model, live, workspace):
            wiring.connect(tab)
    demo.prolab_services, demo.prolab_ui = services, ui
    return demo


def build_ui(services: Services):
    """Lay out every tab (inside a ``gr.Blocks`` context); returns the :class:`app.components.UI`."""
    import gradio as gr

    from app.components import UI
    from app.services.sessions import expire_session
    from app.tabs import (descriptions, evaluate, export, labelspace, live, model, novel, properties, segment,
                          workspace)
    from app.views import model as model_view

    config = services.config
    # Expires session_ttl seconds after the user's last action (every action returns the state);
    # expire_session frees its arrays at once instead of waiting for the garbage collector (unless in use).
    state = gr.State(None, time_to_live=config.session_ttl, delete_callback=expire_session)
    gr.Markdown(INTRO)
    source = services.models.default_source
    banner = gr.HTML(model_view.banner(placeholder_entry(source is None, source)), elem_id="pl-banner")
    with gr.Tabs(selected="segment"):
        with gr.Tab("Segment & edit", id="segment"):
            with gr.Row():
                with gr.Column(scale=5):
                    viewer = segment.layout_viewer()
                with gr.Column(scale=4):
                    with gr.Tabs(selected="controls") as right_tabs:
                        with gr.Tab("Segment", id="controls"):
                            controls = segment.layout_controls(config.label_set)
                        with gr.Tab("Inspect", id="inspector"):
                            inspector = segment.layout_inspector()
                        with gr.Tab("Novel categories", id="novel"):
                            novel_ui = novel.layout(config)
                        with gr.Tab("Edit", id="edit"):
                            edit = descriptions.layout()
        with gr.Tab("Property maps", id="properties") as properties_tab:
            properties_ui = properties.layout()
        with gr.Tab("Label space", id="space") as space_tab:
            space = labelspace.layout()
        with gr.Tab("Live: webcam & video", id="live"):
            live_ui = live.layout()
        with gr.Tab("Evaluate", id="evaluate"):
            evaluate_ui = evaluate.layout(config, services.evaluation.eval_sets())
        with gr.Tab("Export", id="export"):
            export_ui = export.layout()
        with gr.Tab("Model & help", id="model") as model_tab:
            model_ui = model.layout(source)
    workspace_ui = workspace.layout(config, services.workspaces.browser_secret())
    return UI(state=state, banner=banner, right_tabs=right_tabs, properties_tab=properties_tab, space_tab=space_tab,
              model_tab=model_tab, viewer=viewer, controls=controls, inspector=inspector, novel=novel_ui,
              edit=edit, properties=properties_ui, space=space, evaluate=evaluate_ui, export=export_ui,
              model=model_ui, live=live_ui, workspace=workspace_ui)


def placeholder_entry(untrained: bool, source: str | None):
    """What the banner shows before the start-up model has loaded: its card's title and folder name
    (read from disk; never the server's path)."""
    from app.services.models import ModelEntry, read_model_card

    local = Path(source).expanduser() if source and Path(source).expanduser().is_dir() else None
    card = read_model_card(local, str(local)) if local is not None else ""
    return ModelEntry(model=None, source=source or "untrained", directory=local, untrained=untrained, card=card)


def launch_kwargs() -> dict:
    import gradio as gr

    from app.views.common import CSS, HEAD

    return {"css": CSS, "head": HEAD, "theme": gr.themes.Soft(primary_hue="indigo")}


def main(argv: list[str] | None = None, started: float | None = None) -> None:
    """Parse arguments, build the app, launch it and start the background warm-up."""
    started = started or time.perf_counter()
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # default paths never download
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = config_from_args(args)
    try:
        check_config(config)
    except ProLabError as exc:  # argparse's one-line usage error, exit status 2
        build_parser().error(str(exc))
    from prolab.threads import apply_thread_policy  # before torch runs anything: the library's one policy

    logging.getLogger(__name__).info("threads: %s", apply_thread_policy().describe())
    try:
        demo = build_demo(config)
    except ProLabError as exc:  # e.g. a --state-dir database of another version: a sentence, not a traceback
        build_parser().error(str(exc))
    demo.queue(default_concurrency_limit=4)
    try:
        _, url, share_url = demo.launch(server_name=config.host, server_port=config.port, share=config.share,
                                        inbrowser=config.open_browser, prevent_thread_lock=True,
                                        state_session_capacity=STATE_SESSION_CAPACITY,
                                        show_error=True, quiet=True, **launch_kwargs())
    except OSError as exc:  # the port is taken, or the address is not this machine's
        build_parser().error(f"cannot listen on {config.host}:{config.port}: {exc}")
    print(f"ProLab Explorer ready at {share_url or url} ({time.perf_counter() - started:.1f} s after start)",
          flush=True)
    demo.prolab_services.warm_up()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
