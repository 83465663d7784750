"""Browser test of the kept workspace (issue 28): Chromium edits a class and adds a novel category; after a
page reload and after a server restart (same port and --state-dir) both are back and re-segment; another
browser context (its own local storage) sees none of it. Screenshots go to ``test-artifacts/browser/``."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.app_server import free_port
from tests.app_server import running_app, save_tiny_model
from tests.test_app_browser import REPO, browser, shot  # noqa: F401 - the Chromium fixture

DESC = json.loads((REPO / "assets/descriptions/camvid_11.json").read_text())
EDITED = "a pale ceiling of cloud kept by the workspace"


def segment_coffee(page) -> None:
    from playwright.sync_api import expect

    page.locator("#pl-upload input[type=file]").set_input_files(str(REPO / "assets/examples/coffee.png"))
    expect(page.locator("#pl-status")).to_contain_text("Image loaded", timeout=120_000)
    page.locator("#pl-segment-btn").click()
    expect(page.locator("#pl-legend")).to_contain_text(" present", timeout=180_000)


def open_app(context, url: str):
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    expect(page.get_by_text("ProLab Explorer").first).to_be_visible(timeout=120_000)
    expect(page.locator("#pl-workspace-note")).to_contain_text("kept for this browser", timeout=120_000)
    page.wait_for_timeout(1500)  # the page-load event binds this page to the browser's workspace
    return page


def sky_sentences(page, shown):
    """The Edit tab's sentences of sky, once they show ``shown`` (a pattern)."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Edit", exact=True).click()
    page.locator("#pl-edit-class input").click()
    page.get_by_role("option", name="sky", exact=True).click()
    text = page.locator("#pl-edit-text textarea")
    expect(text).to_have_value(shown, timeout=120_000)
    return text


def assert_work_is_back(page) -> None:
    from playwright.sync_api import expect

    segment_coffee(page)  # images are not kept: the image again, one forward pass
    expect(page.locator("#pl-legend").locator('[data-class="everything"]')).to_be_visible(timeout=120_000)
    sky_sentences(page, EDITED)


def test_work_survives_a_reload_and_a_restart_and_stays_private(browser, tmp_path, encoder):  # noqa: F811
    from playwright.sync_api import expect

    model = save_tiny_model(tmp_path / "tiny-model", encoder)
    cache = encoder.cache.path.parent
    args = ["--model", str(model), "--label-set", "camvid_11", "--cache-dir", str(cache),
            "--state-dir", str(tmp_path / "state")]
    env = {"PROLAB_CACHE_DIR": str(cache), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    port = free_port()
    mine = browser.new_context(viewport={"width": 1440, "height": 1000})
    with running_app(args, env=env, port=port) as url:
        page = open_app(mine, url)
        segment_coffee(page)
        text = sky_sentences(page, re.compile("open expanse of air"))
        text.fill(EDITED)
        # opening the class list and leaving it (gradio sends the pick again on blur) keeps the unapplied edit
        page.locator("#pl-edit-class input").click()
        text.click()
        page.wait_for_timeout(2000)
        expect(text).to_have_value(EDITED)
        page.get_by_role("button", name="Apply and re-segment").click()
        expect(page.locator("#pl-status")).to_contain_text("CamVid-11 (edited)", timeout=180_000)
        page.get_by_role("tab", name="Segment & edit").click()
        page.get_by_role("tab", name="Novel categories").click()
        page.locator("#pl-novel-names textarea").fill("everything")
        page.get_by_role("button", name="Start by hand").click()
        editor = page.locator("#pl-novel-json .cm-content")
        expect(editor).to_contain_text("everything", timeout=30_000)
        # a category using every property wins nearly everywhere with an untrained model
        editor.fill(json.dumps({"everything": [s for v in DESC.values() for s in v]}))
        page.locator("#pl-novel-btn").click()
        expect(page.locator("#pl-legend").locator('[data-class="everything"]')).to_be_visible(timeout=120_000)
        shot(page, "20_workspace_edited")

        page.reload(wait_until="domcontentloaded")
        expect(page.locator("#pl-workspace-note")).to_contain_text("kept for this browser", timeout=120_000)
        page.wait_for_timeout(1500)
        assert_work_is_back(page)
        shot(page, "21_workspace_after_reload")
        page.close()

    with running_app(args, env=env, port=port) as url:  # a restart: nothing of the old process in memory
        page = open_app(mine, url)
        assert_work_is_back(page)
        shot(page, "22_workspace_after_restart")

        other = browser.new_context(viewport={"width": 1440, "height": 1000})
        theirs = open_app(other, url)
        segment_coffee(theirs)
        expect(theirs.locator("#pl-legend").locator('[data-class="everything"]')).to_have_count(0)
        sky_sentences(theirs, re.compile("open expanse of air"))
        shot(theirs, "23_workspace_other_browser")
        other.close()
    mine.close()
