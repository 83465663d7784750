"""The handler contract: how a tab's function becomes a gradio event.

A handler is a module-level function ``fn(ctx, *inputs) -> {component: value}`` declared with
:func:`handler`, which names, in one place: the events that run it (``events=lambda ui: [on(ui.x.click,
api_name=...)]``), its outputs (``outputs=lambda ui: [...]``) and the components its parameters read
(``inputs=lambda ui: {"name": ui.edit.class_name}``; the label-set dropdown, custom file, threshold and
opacity are found by parameter name). :meth:`Wiring.connect` wires a tab module's handlers; each event
passes the inputs by name, never by position in a list kept elsewhere.

Around every call the contract supplies, once for all handlers: the user's :class:`Session` (created on
their first action; ``ctx.session``), its lock for the whole call (``lock=False``: the handler takes it
for the parts that need it, with :meth:`Ctx.read`), the session in the outputs, and the errors: a
:class:`ProLabError` becomes a readable message naming the user's files, never the server's upload
folder; a bug becomes a short message (traceback in the log). Either way nothing in the session is lost.

What several tabs' handlers return is here too, so that no tab imports another: :meth:`Ctx.result` (the
result panels, drawn by :mod:`app.views.common`), :meth:`Ctx.edited` (the Edit tab's panels, also shown when
an evaluation's descriptions are restored), :meth:`Ctx.required_space` and :meth:`Ctx.descriptions_file`.
"""
from __future__ import annotations

import functools
import inspect
import logging
import time
import traceback
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import gradio as gr

from app.components import UI
from app.inputs import as_opacity, name_files, name_uploads
from app.services import Services
from app.services.models import ModelEntry
from app.services.sessions import Session
from app.views.common import escape, result_panels
from app.views.descriptions import changes_rows
from prolab.descriptions import normalise_sentence, save_descriptions
from prolab.edit_session import EditSession, Segmentation
from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace

log = logging.getLogger("prolab.app")
T = TypeVar("T")
#: Parameters gradio fills itself (not components).
SPECIAL = ("progress", "evt")
#: Components whose value is a path in the server's upload folder: error messages name the file instead.
FILE_COMPONENTS = (gr.File, gr.UploadButton, gr.Video)
UPLOADS = str(gr.utils.get_upload_folder())
#: A warning repeated within this many seconds is one message (:meth:`Ctx.warn`).
REPEAT_SECONDS = 3.0


@dataclass
class Ctx:
    """What a handler is called with besides its inputs."""

    services: Services
    ui: UI
    state: Session | None  # the gr.State's value: None before the user's first action
    locked: bool  # whether the session's lock is held from the first use of :attr:`session` to the end
    progress: gr.Progress | None = None
    has_session: bool = True  # the handler was declared with a session
    page: str | None = None  # gradio's id of the page (browser tab) that called, when called from one
    _session: Session | None = field(default=None, repr=False)
    _held: list = field(default_factory=list, repr=False)

    @property
    def session(self) -> Session:
        """The user's session, created on their first action (and locked for the rest of the call)."""
        return self.open_session()

    @property
    def edit(self) -> EditSession:
        """The session's label set, edits, image and results."""
        return self.session.edit

    def open_session(self, entry: ModelEntry | None = None) -> Session:
        """The user's session, or a new one on ``entry`` (default: the start-up model; loading another one
        as a first action needs no start-up model)."""
        if not self.has_session:
            raise TypeError("this handler was declared session=False")
        if self._session is None:
            workspace = self.services.workspaces.of_page(self.page)
            self._start(self.services.sessions.ensure(self.state, entry, workspace))
        return self._session

    def read(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` under the session's lock (for handlers declared ``lock=False``)."""
        s = self.session
        with s.lock:
            return fn(s)

    def warn(self, message: str) -> str:
        """Show ``message`` once as a warning toast (no error badge on the outputs) and return it escaped for
        a status panel. The same message within :data:`REPEAT_SECONDS` is not shown again: gradio's dropdown
        sends one pick twice."""
        s, now = self.session, time.monotonic()
        if s.last_warning[0] != message or now - s.last_warning[1] > REPEAT_SECONDS:
            gr.Warning(escape(message))
        s.last_warning = (message, now)
        return escape(message)

    def report(self, fraction: float, message: str) -> None:
        """Progress shown on the event's outputs."""
        if self.progress is not None:
            self.progress(fraction, desc=message)

    # ------------------------------------------------------------ what several tabs' handlers return
    def result(self, seg: Segmentation | None, opacity, message: str | None = None) -> dict:
        """The result panels of ``seg`` (drawn by :func:`app.views.common.result_panels`); with nothing
        segmented yet (None), only ``message`` in the status (None: the status stays as it is). Keeps
        ``opacity`` in the session: the pixel inspector redraws the overlay with it."""
        if seg is None:
            return {} if message is None else {self.ui.viewer.status: message}
        s, ui, edit = self.session, self.ui, self.edit
        s.opacity = as_opacity(opacity)
        p = result_panels(edit.image, seg, s.opacity, forward_seconds=edit.forward_seconds,
                          changed=edit.changed_fraction(), model_title=s.model_entry.title,
                          label_set_name=edit.name, mode=edit.mode, source_size=edit.source_size)
        v = ui.viewer
        return {v.image: p.overlay, v.legend: p.legend, v.status: p.status, ui.controls.top_fig: p.top_properties,
                ui.properties.property: gr.update(choices=p.property_choices)}

    def edited(self, seg: Segmentation | None, opacity, name: str | None = None, select: bool = False) -> dict:
        """After the descriptions changed (Edit tab, restoring an evaluation): the result re-scored, what
        changed, the classes and the sentences of class ``name`` (None: the box is left as it is;
        ``select``: that class picked in the list)."""
        edit, e = self.edit, self.ui.edit
        out = {**self.result(seg, opacity, "Descriptions updated."), e.changes: changes_rows(edit.changes()),
               e.class_name: gr.update(choices=list(edit.descriptions.categories))}
        if name is not None:
            found = edit.descriptions.find(name)
            out[e.text] = "\n".join(edit.descriptions[found]) if found else ""
            cls = self.box_class(name)
            self.session.edit_box = (edit.choice.key, cls) if cls else None
            if found and select:
                out[e.class_name] = gr.update(choices=list(edit.descriptions.categories), value=found)
        return out

    def box_class(self, name: str | None) -> str | None:
        """The class the Edit tab's box holds for a picked or typed ``name``: its stored spelling in the label
        set in use, else the typed name (whitespace collapsed); None for an empty name."""
        typed = normalise_sentence(name or "")
        return (self.edit.descriptions.find(typed) or typed) if typed else None

    def drop_drafts(self, name: str | None = None) -> None:
        """Forget the Edit tab's unapplied sentences of class ``name`` of the label set in use (None: of
        every class of it), once what they were typed for is applied or reset."""
        key, drafts = self.edit.choice.key, self.session.edit_drafts
        cls = None if name is None else self.box_class(name)
        if name is not None and cls is None:
            return
        for k in [k for k in drafts if k[0] == key and (cls is None or k[1].casefold() == cls.casefold())]:
            del drafts[k]

    def required_space(self, message: str = "This model has no label space.") -> LabelSpace:
        """The label space in use, or a readable error for a category model."""
        space = self.edit.space()
        if space is None:
            raise ProLabError(message)
        return space

    def export_folder(self) -> Path:
        """A new folder of the user's session for files handed to them (gradio serves them from there;
        deleted with the session), once there is room within ``--disk-budget``."""
        image = self.edit.image  # an export is about the size of the image (PNGs, a zip of maps)
        self.services.sessions.reserve_disk(self.session, need=image.nbytes if image is not None else 2 ** 20)
        return self.session.scratch("export")

    def descriptions_file(self) -> Path:
        """The descriptions in use (edits and novel categories included) written to a new JSON file."""
        return save_descriptions(self.edit.all_descriptions(),
                                 self.export_folder() / f"descriptions_{self.edit.choice.key}.json")

    def _start(self, session: Session) -> None:
        if self.locked:
            session.lock.acquire()
            self._held.append(session.lock)
        self._session = session

    def _finish(self) -> None:
        if self._session is not None:  # in use until now: what it returns (files) is fetched next, not expired
            self._session.last_used = time.monotonic()
        while self._held:
            self._held.pop().release()

    def keep_work(self) -> None:
        """After a successful action: write the session's work to its workspace when it changed, and tell
        the user what they need to know (a restore that failed, the workspace over its cap) beside the
        result, without failing the action."""
        session = self._session
        if session is None:
            return
        notices = [session.notice] if session.notice else []
        session.notice = None
        try:
            self.services.workspaces.save(session)
        except ProLabError as exc:
            notices.append(str(exc))
        except Exception:  # the database failing must never lose the result on screen
            log.error("saving the workspace failed:\n%s", traceback.format_exc())
            notices.append("Your work could not be saved this time (the details are in the server log); "
                           "it stays in this session.")
        for text in notices:
            gr.Warning(escape(text))


@dataclass(frozen=True)
class Event:
    """One event that runs a handler: ``listener`` (e.g. ``ui.edit.apply_btn.click``), components replacing
    the handler's by parameter name, a handler run after it succeeds, and gradio's options."""

    listener: Callable
    inputs: dict = field(default_factory=dict)
    then: Callable | None = None
    options: dict = field(default_factory=dict)
    then_options: dict = field(default_factory=dict)


def on(listener: Callable, inputs: dict | None = None, then: Callable | None = None, then_options: dict | None = None,
       **options) -> Event:
    """An :class:`Event` (``options`` go to gradio: ``api_name``, ``show_progress_on``, ...; ``then_options``
    to the event of ``then``, private unless they say otherwise)."""
    return Event(listener, inputs or {}, then, options, {"api_visibility": "private", **(then_options or {})})


#: Events a user fires again while the last one is still running (a second pick, a dropdown's blur that
#: repeats its pick, a slider dragged twice, keystrokes): gradio's default ("once") drops those, leaving
#: what the page shows out of step with what was computed; "always_last" runs the latest once the running
#: one ends, with the page's values at that time.
REPEATED_EVENTS = frozenset({"input", "release", "select", "submit"})


def trigger_options(listener: Callable) -> dict:
    """Gradio options every event of ``listener``'s kind gets unless the handler says otherwise."""
    return {"trigger_mode": "always_last"} if getattr(listener, "event_name", None) in REPEATED_EVENTS else {}


@dataclass(frozen=True)
class Spec:
    """What :func:`handler` declares."""

    outputs: Callable[[UI], list]
    inputs: Callable[[UI], dict]
    events: Callable[[UI], list[Event]]
    session: bool
    lock: bool


def handler(outputs: Callable[[UI], list], inputs: Callable[[UI], dict] | None = None,
            events: Callable[[UI], list[Event]] | None = None, *, session: bool = True, lock: bool = True):
    """Declare a handler: its outputs (besides the session), the components of parameters not found by
    name (:func:`common_inputs`), the events that run it (none: only run after another one, see
    :func:`on`), whether it needs the user's session and whether it holds the session's lock for the
    whole call."""
    def declare(fn):
        fn.spec = Spec(outputs, inputs or (lambda ui: {}), events or (lambda ui: []), session, lock)
        return fn
    return declare


def common_inputs(ui: UI) -> dict:
    """Components a parameter of this name reads unless the handler says otherwise."""
    c = ui.controls
    return {"label_set": c.label_set, "custom_file": c.custom_file, "threshold": c.threshold,
            "opacity": ui.viewer.opacity}


class Wiring:
    """Connects handlers to events for one app (its services and components)."""

    def __init__(self, services: Services, ui: UI):
        self.services, self.ui = services, ui

    def connect(self, module) -> int:
        """Wire every event of every handler defined in ``module``; returns how many."""
        count = 0
        for fn in vars(module).values():
            if getattr(fn, "__module__", None) != module.__name__ or not hasattr(fn, "spec"):
                continue
            for event in fn.spec.events(self.ui):
                runner, ins, outs = self.bind(fn, event.inputs)
                dependency = event.listener(runner, ins, outs, **{**trigger_options(event.listener), **event.options})
                if event.then is not None:
                    dependency.success(*self.bind(event.then), **event.then_options)
                count += 1
        return count

    def bind(self, fn, inputs: dict | None = None) -> tuple[Callable, list, list]:
        """The function gradio calls, its input components and its output components."""
        spec: Spec = fn.spec
        ui = self.ui
        params = list(inspect.signature(fn).parameters.values())[1:]  # after ctx
        table = {**common_inputs(ui), **spec.inputs(ui), **(inputs or {})}
        names = [p.name for p in params if p.name not in SPECIAL]
        missing = [n for n in names if n not in table]
        if missing:
            raise TypeError(f"handler {fn.__name__}: no component for parameter(s) {', '.join(missing)}")
        components = [table[n] for n in names]
        head = [ui.state] if spec.session else []
        files = {n for n in names if isinstance(table[n], FILE_COMPONENTS)}
        return self._runner(fn, spec, params, files), head + components, head + list(spec.outputs(ui))

    def _runner(self, fn, spec: Spec, params: list[inspect.Parameter], files: set[str]) -> Callable:
        services, ui = self.services, self.ui
        state = [inspect.Parameter("state", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if spec.session else []
        # gradio passes the request to a parameter annotated gr.Request (not an input: the API is unchanged)
        request = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
        signature = inspect.Signature(state + [p.replace(annotation=inspect.Parameter.empty) for p in params]
                                      + request)

        @functools.wraps(fn, assigned=("__module__", "__name__", "__qualname__", "__doc__"), updated=())
        def run(*args, **kwargs):
            values = signature.bind(*args, **kwargs).arguments
            request = values.pop("request", None)
            ctx = Ctx(services, ui, values.pop("state", None), spec.lock, values.get("progress"), spec.session,
                      page=getattr(request, "session_hash", None))
            try:
                out = fn(ctx, **values)
                if spec.session:
                    ctx.keep_work()
                return {ui.state: ctx.session, **out} if spec.session else out
            except gr.Error:
                raise
            except ProLabError as exc:  # messages quote file and class names: escaped, the toast is HTML
                uploaded = [str(values[name]) for name in files if values.get(name)]
                text = name_uploads(name_files(str(exc), uploaded), UPLOADS)
                log.info("refused in %s: %s", fn.__name__, text[:300].replace("\n", " "))  # one line, no traceback
                raise gr.Error(escape(text), print_exception=False) from None
            except Exception as exc:
                log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
                raise gr.Error(escape(f"Something went wrong ({exc.__class__.__name__}: {exc}). Your work is "
                                      "kept; the details are in the server log."), print_exception=False) from None
            finally:
                ctx._finish()

        run.__signature__ = signature
        run.handler = fn  # what the app's structure test checks
        run.__annotations__ = {"request": gr.Request,
                               **({"evt": gr.SelectData} if any(p.name == "evt" for p in params) else {})}
        return run
