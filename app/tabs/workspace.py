"""This browser's workspace: the id kept in its local storage (read when the page loads) and "Forget my
work". What is kept, and where: :mod:`app.services.workspace`."""
from __future__ import annotations

import gradio as gr

from app.components import WorkspaceUI
from app.config import AppConfig
from app.handlers import Ctx, handler, on
from app.services.sessions import Session, release_session
from app.views import workspace as view

#: The local-storage entry holding this browser's workspace id (scrambled with the server's secret).
STORAGE_KEY = "prolab-workspace"


def layout(config: AppConfig, secret: str | None) -> WorkspaceUI:
    """A line under the tabs saying what is kept, with the "Forget my work" button (``secret``: the
    browser-storage key of a server that keeps work; None: ``--no-state``)."""
    keeps = secret is not None
    browser = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=secret) if keeps else None
    with gr.Row(equal_height=True):
        note = gr.Markdown(view.note_text(config.keep_state, config.state_mb_each), elem_id="pl-workspace-note")
        forget_btn = gr.Button("Forget my work", size="sm", variant="secondary", scale=0, visible=keeps,
                               elem_id="pl-forget-work")
    page_load = gr.context.Context.root_block.load  # the page's load event (the id is read then)
    return WorkspaceUI(browser=browser, note=note, forget_btn=forget_btn, page_load=page_load)


def _events_when_kept(make):
    return lambda ui: make(ui) if ui.workspace.browser is not None else []


# ---------------------------------------------------------------------------- handlers
@handler(outputs=lambda ui: [ui.workspace.browser, ui.controls.label_set], session=False,
         inputs=lambda ui: {"stored": ui.workspace.browser},
         events=_events_when_kept(lambda ui: [on(ui.workspace.page_load, api_visibility="private")]))
def open_workspace(ctx: Ctx, stored) -> dict:
    """The page's workspace: the one this browser stored when the server knows it, else a new one; the
    label-set list shows the set the workspace used last."""
    services = ctx.services
    wid = services.workspaces.open_page(ctx.page, stored)
    key = services.workspaces.label_set_of(wid)
    known = key is not None and key in dict(services.text.label_set_choices()).values()
    return {ctx.ui.workspace.browser: wid, **({ctx.ui.controls.label_set: key} if known else {})}


@handler(outputs=lambda ui: [ui.state, ui.workspace.browser, ui.workspace.note], session=False,
         inputs=lambda ui: {"current": ui.state},
         events=_events_when_kept(lambda ui: [on(ui.workspace.forget_btn.click, api_name="forget_work",
                                                 api_visibility="private")]))
def forget_work(ctx: Ctx, current) -> dict:
    """Delete this browser's saved work and start it a new, empty workspace; the session's edits, novel
    categories, evaluations and image are freed too."""
    wid = ctx.services.workspaces.forget(ctx.page)
    if isinstance(current, Session):
        release_session(current, reason="forgotten")
    return {ctx.ui.state: None, ctx.ui.workspace.browser: wid,
            ctx.ui.workspace.note: view.FORGOTTEN}
