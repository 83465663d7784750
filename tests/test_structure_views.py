"""The display's structure, read with ``ast`` (issue #30 item 4): one views module per tab, no tab importing
another tab, and views that are pure (library results in, images/HTML/tables/figures out: no gradio, no
handler context, no services or session state)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABS = REPO / "app" / "tabs"
VIEWS = REPO / "app" / "views"
#: What a tab may import from the app (besides its own views module and app.views.common).
TAB_MAY_IMPORT = ("app.handlers", "app.services", "app.inputs", "app.components", "app.config")
#: What a views module may import besides the standard library and app.views.common.
VIEW_MAY_IMPORT = ("numpy", "plotly", "prolab")


def imported_modules(source: str) -> list[str]:
    """Every module ``source`` imports, at the top or inside a function (``from app import views`` names
    ``app.views``; ``from app.views import segment`` names ``app.views.segment``)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("app", "app.views", "app.tabs"):
                names += [f"{node.module}.{a.name}" for a in node.names]
            else:
                names.append(node.module)
    return names


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def tab_violations(tab: str, source: str) -> list[str]:
    """Imports of tab module ``tab`` that reach another tab, another tab's views or an app module outside
    :data:`TAB_MAY_IMPORT`."""
    own = {"app.views", "app.views.common", f"app.views.{tab}"}
    bad = []
    for name in imported_modules(source):
        if not name.startswith("app"):
            continue
        if name in own or _under(name, TAB_MAY_IMPORT):
            continue
        bad.append(name)
    return bad


def view_violations(source: str) -> list[str]:
    """Imports of a views module beyond the standard library, numpy, plotly, prolab and app.views.common."""
    return [name for name in imported_modules(source)
            if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
            and not _under(name, VIEW_MAY_IMPORT) and not _under(name, ("app.views.common",))]


def test_the_checks_find_what_they_forbid():
    assert tab_violations("live", "from app.tabs.properties import resolve_property") == ["app.tabs.properties"]
    assert tab_violations("export", "from app import render") == ["app.render"]
    assert tab_violations("export", "from app.views import labelspace") == ["app.views.labelspace"]
    assert tab_violations("export", "def f():\n    from app.tabs import labelspace") == ["app.tabs.labelspace"]
    assert tab_violations("export", "from app.views import common, export as view\nfrom app.handlers import Ctx"
                                    "\nfrom prolab.predict import save_mask") == []
    assert view_violations("import gradio as gr") == ["gradio"]
    assert view_violations("from app.handlers import Ctx\nfrom app.services.sessions import Session") == [
        "app.handlers", "app.services.sessions"]
    assert view_violations("from app.views.segment import mark_pixel") == ["app.views.segment"]
    assert view_violations("import html\nimport numpy as np\nimport plotly.graph_objects as go\n"
                           "from app.views.common import escape\nfrom prolab.colorize import blend") == []


def test_every_tab_has_its_views_module_and_the_old_ones_are_gone():
    tabs = {p.stem for p in TABS.glob("*.py") if p.stem != "__init__"}
    views = {p.stem for p in VIEWS.glob("*.py") if p.stem != "__init__"}
    assert tabs <= views and views - tabs == {"common"}
    assert not (REPO / "app" / "views.py").exists() and not (REPO / "app" / "render.py").exists()


def test_no_tab_imports_another_tab():
    found = {p.name: bad for p in sorted(TABS.glob("*.py")) if (bad := tab_violations(p.stem, p.read_text()))}
    assert not found, f"tabs importing another tab (or its views), or an app module they should not: {found}"


def test_views_are_pure():
    found = {p.name: bad for p in sorted(VIEWS.glob("*.py")) if (bad := view_violations(p.read_text()))}
    assert not found, f"views importing gradio, the handlers, services or another tab's views: {found}"
