"""Browser test: Playwright drives Debian's Chromium through the app like a user.

upload -> segment -> legend visible -> novel category -> re-segmented (+ pixel inspector, label space,
property maps). Screenshots go to ``test-artifacts/browser/``. Under CI (``CI=true``) a missing
Chromium or Playwright is a failure, locally a skip with a message.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.app_server import running_app, save_tiny_model
from tests.builders import write_labelled_folder

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("PROLAB_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(condition: bool, why: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(f"{why} (required under CI)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install playwright)")
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    _require(bool(exe), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, encoder):
    model = save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder)
    cache = encoder.cache.path.parent
    data = tmp_path_factory.mktemp("datasets")  # a labelled set for the Evaluate tab; sky is the background
    write_labelled_folder(data / "tinyset", ["sky", "road", "tree", "zebra"], n=2, shared=True)
    env = {"PROLAB_CACHE_DIR": str(cache), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    with running_app(["--model", str(model), "--label-set", "camvid_11", "--cache-dir", str(cache),
                      "--data-root", str(data)], env=env) as url:
        yield url


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_upload_segment_novel_category_resegment(browser, app_url):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url, wait_until="domcontentloaded")
    expect(page.get_by_text("ProLab Explorer").first).to_be_visible(timeout=60_000)
    shot(page, "00_start")

    # upload -> preview
    page.locator("#pl-upload input[type=file]").set_input_files(str(REPO / "assets/examples/coffee.png"))
    expect(page.locator("#pl-status")).to_contain_text("Image loaded", timeout=60_000)

    # segment -> legend with classes of the label set
    page.locator("#pl-segment-btn").click()
    legend = page.locator("#pl-legend")
    expect(legend).to_contain_text(" present", timeout=120_000)
    chips = legend.locator(".pl-chip")
    assert chips.count() >= 1
    camvid = json.loads((REPO / "assets/datasets/camvid_11.json").read_text())["classes"]
    assert chips.first.get_attribute("data-class") in camvid + ["unknown"]
    expect(page.locator("#pl-status")).to_contain_text("CamVid-11")
    expect(page.locator("#pl-result img")).to_be_visible()
    expect(page.locator("#pl-top-props .main-svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#pl-top-props")).to_contain_text("mean activation")
    shot(page, "01_segmented")

    # a threshold typed in the slider's box is applied on Enter, not only when the box loses focus (issue #28)
    box = page.locator("#pl-threshold input[type=number]")
    box.fill("1")
    box.press("Enter")
    expect(legend.locator('[data-class="unknown"]')).to_be_visible(timeout=60_000)  # every pixel below 1
    box.fill("0")
    box.press("Enter")
    expect(legend.locator('[data-class="unknown"]')).to_have_count(0, timeout=60_000)

    # pixel inspector: click the result image
    page.locator("#pl-result img").click(position={"x": 120, "y": 90})
    expect(page.locator("#pl-px-classes")).to_contain_text("score", timeout=60_000)
    expect(page.get_by_text("Pixel (").first).to_be_visible()
    shot(page, "02_inspector")

    # novel category: no LLM configured -> the page says how to configure one; write it by hand
    page.get_by_role("tab", name="Novel categories").click()
    expect(page.locator("#pl-llm-status")).to_contain_text("No LLM is configured")
    page.locator("#pl-novel-names textarea").fill("everything")
    page.get_by_role("button", name="Start by hand").click()
    editor = page.locator("#pl-novel-json .cm-content")
    expect(editor).to_contain_text("everything", timeout=30_000)
    # the same in the plain editor: the name on a line, then one sentence per line (issue #28)
    expect(page.locator("#pl-novel-editor textarea")).to_have_value(re.compile(r"^everything\nWrite 5 to 15"))
    desc = json.loads((REPO / "assets/descriptions/camvid_11.json").read_text())
    # a category using every property wins nearly everywhere with an untrained model
    editor.fill(json.dumps({"everything": [s for v in desc.values() for s in v]}))
    page.locator("#pl-novel-btn").click()
    expect(legend.locator('[data-class="everything"]')).to_be_visible(timeout=120_000)
    expect(legend).to_contain_text("★ new")
    expect(page.locator("#pl-status")).to_contain_text("forward pass: cached")
    expect(page.locator("#pl-status")).to_contain_text("% of pixels changed")
    expect(page.locator("#pl-novel-table")).to_contain_text("everything")
    shot(page, "03_novel_resegmented")

    # property maps tab: opening it shows the most active property and the top maps
    page.get_by_role("tab", name="Property maps").click()
    expect(page.locator("#pl-heat img")).to_be_visible(timeout=60_000)
    expect(page.locator("#pl-top-gallery img").first).to_be_visible(timeout=60_000)
    expect(page.locator("#pl-heat-md")).to_contain_text("used by")
    shot(page, "04_property_maps")

    # label space tab fills itself when opened
    page.get_by_role("tab", name="Label space").click()
    expect(page.locator("#pl-space-summary")).to_contain_text("properties", timeout=60_000)
    expect(page.locator("#pl-prop-table")).to_contain_text("everything")
    expect(page.locator("#pl-sentence-map .main-svg").first).to_be_visible(timeout=60_000)
    expect(page.locator("#pl-sentence-map")).to_contain_text("PCA of 234 description sentences")
    shot(page, "05_label_space")
    assert not errors, errors
    page.close()


def test_corrupt_upload_shows_a_readable_error(browser, app_url, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url, wait_until="domcontentloaded")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    page.locator("#pl-upload input[type=file]").set_input_files(str(bad))
    expect(page.locator("#pl-error")).to_contain_text("broken.png is not a readable image", timeout=60_000)
    shot(page, "06_bad_file")
    page.close()


def test_evaluate_edit_and_evaluate_again_shows_the_change(browser, app_url):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Evaluate").click()
    summary = page.locator("#pl-eval-summary")
    page.locator("#pl-eval-btn").click()  # the first listed set: tinyset
    expect(summary).to_contain_text("mIoU", timeout=120_000)
    expect(summary).to_contain_text("tinyset val (2 images)")
    expect(summary).to_contain_text("evaluation v1")
    expect(page.locator("#pl-eval-chart .main-svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#pl-eval-chart")).to_contain_text("zebra (not in the label set)")
    shot(page, "07_evaluate")

    # edit sky's sentences: with an untrained model a class using every property wins nearly everywhere
    page.get_by_role("tab", name="Segment & edit").click()
    page.get_by_role("tab", name="Edit", exact=True).click()
    page.locator("#pl-edit-class input").click()  # focus lists the label set's classes
    page.get_by_role("option", name="sky", exact=True).click()
    text = page.locator("#pl-edit-text textarea")
    expect(text).to_have_value(re.compile("open expanse of air"), timeout=60_000)  # sky's sentences shown
    desc = json.loads((REPO / "assets/descriptions/camvid_11.json").read_text())
    text.fill("\n".join(s for v in desc.values() for s in v))
    page.get_by_role("button", name="Apply and re-segment").click()
    expect(page.locator("#pl-status")).to_contain_text("Descriptions updated.", timeout=60_000)

    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#pl-eval-btn").click()
    expect(summary).to_contain_text("against v1", timeout=120_000)
    expect(summary).to_contain_text("Re-evaluated from the cache")
    expect(summary).to_contain_text(re.compile(r"sky \d+\.\d → \d+\.\d"))
    expect(page.locator("#pl-eval-deltas")).to_contain_text("sky")
    shot(page, "08_evaluate_delta")

    page.locator("#pl-eval-restore").click()  # A = v1: the shipped sentences come back
    expect(page.locator("#pl-eval-status")).to_contain_text("Restored the descriptions of v1", timeout=60_000)
    page.get_by_role("tab", name="Segment & edit").click()
    expect(text).to_have_value(re.compile("^The open expanse of air"), timeout=30_000)
    assert not errors, errors
    page.close()


def test_label_set_switch_with_the_mouse_and_a_novel_mistake_keep_the_result(browser, app_url):
    """Issue 21: picking a label set with the mouse reports the real share of changed pixels (the dropdown
    fires twice); a mistake in the novel box is a toast, and the result, legend and status stay (no error
    badges over them); clicking the result marks the pixel."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(app_url, wait_until="domcontentloaded")
    page.locator("#pl-upload input[type=file]").set_input_files(str(REPO / "assets/examples/coffee.png"))
    expect(page.locator("#pl-status")).to_contain_text("Image loaded", timeout=60_000)
    page.locator("#pl-segment-btn").click()
    expect(page.locator("#pl-legend")).to_contain_text(" present", timeout=120_000)

    page.locator("#pl-label-set input").click()
    page.get_by_role("option", name=re.compile("MSRC")).click()
    status = page.locator("#pl-status")
    expect(status).to_contain_text("MSRC", timeout=60_000)
    page.wait_for_timeout(3000)  # let a second firing of the dropdown (and any rescore) land
    changed = re.search(r"([0-9.]+)% of pixels changed", status.inner_text())
    assert changed is not None and float(changed.group(1)) > 0.0, status.inner_text()
    shot(page, "10_label_set_switched")

    before = page.locator("#pl-result img").get_attribute("src")
    page.locator("#pl-result img").click(position={"x": 120, "y": 90})
    expect(page.locator("#pl-px-classes")).to_contain_text("score", timeout=60_000)
    expect(page.locator("#pl-result img")).not_to_have_attribute("src", before or "", timeout=30_000)  # marked

    page.get_by_role("tab", name="Novel categories").click()
    page.locator("#pl-novel-json .cm-content").fill('{"zebra": ["Black and white stripes",]}')
    page.locator("#pl-novel-btn").click()
    expect(page.locator(".toast-body").first).to_contain_text("not valid JSON", timeout=30_000)
    expect(page.locator("#pl-novel-table .error").first).to_be_visible(timeout=30_000)  # the badge goes here
    for panel in ("#pl-result", "#pl-legend-box", "#pl-status"):
        assert page.locator(f"{panel} .error").count() == 0, panel
    expect(page.locator("#pl-result img")).to_be_visible()
    expect(page.locator("#pl-legend")).to_contain_text(" present")
    expect(status).to_contain_text("MSRC")
    shot(page, "11_novel_mistake_kept_result")
    page.close()


def test_improve_these_descriptions_then_apply_shows_the_changed_sentences(browser, app_url, tmp_path):
    """Issue 27: "Improve these descriptions" on a small uploaded zip, from a deliberately bad road (every
    CamVid sentence: with the untrained model road wins everywhere), keeps a real change; Apply makes it the
    user's edits, shown in the Edit tab."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Segment & edit").click()
    page.get_by_role("tab", name="Edit", exact=True).click()
    page.locator("#pl-edit-class input").click()
    page.get_by_role("option", name="road", exact=True).click()
    text = page.locator("#pl-edit-text textarea")
    expect(text).to_have_value(re.compile(r"\w"), timeout=60_000)
    desc = json.loads((REPO / "assets/descriptions/camvid_11.json").read_text())
    text.fill("\n".join(s for v in desc.values() for s in v))
    page.get_by_role("button", name="Apply and re-segment").click()
    expect(page.locator("#pl-status")).to_contain_text("Descriptions updated.", timeout=60_000)

    folder = write_labelled_folder(tmp_path / "streets", ["sky", "road", "tree"], n=4)
    archive = shutil.make_archive(str(tmp_path / "streets"), "zip", folder)
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#pl-eval-upload input[type=file]").set_input_files(archive)
    expect(page.locator("#pl-eval-set input")).to_have_value(re.compile("Uploaded zip"), timeout=60_000)
    page.locator("#pl-improve .label-wrap").first.click()  # open the accordion
    page.locator("#pl-improve-budget input").fill("5")
    page.locator("#pl-improve-btn").click()
    status = page.locator("#pl-improve-status")
    expect(status).to_contain_text("Kept ", timeout=300_000)
    expect(status).to_contain_text("streets all")
    kept = page.locator("#pl-improve-kept")
    expect(kept).to_contain_text("aligned trained class")  # the source of a kept change
    gains = re.findall(r"([+-]\d+\.\d)", kept.text_content())  # the steps' mIoU change on each half
    assert gains and all(float(g) >= 0 for g in gains) and any(float(g) > 0 for g in gains)
    kept_text = kept.text_content()
    shot(page, "09_improve_kept")

    page.locator("#pl-improve-apply").click()
    expect(status).to_contain_text("Applied the search's changes", timeout=60_000)
    page.get_by_role("tab", name="Segment & edit").click()
    page.get_by_role("tab", name="Edit", exact=True).click()
    expect(text).not_to_have_value(re.compile("Thin metal frame beneath the rider"), timeout=30_000)  # not road's edit
    name = page.locator("#pl-edit-class input").input_value()  # the first class changed, its sentences shown
    assert name in ("sky", "road", "tree") and name in kept_text
    now_in = [line for line in text.input_value().splitlines() if line[:40] in kept_text]
    assert now_in, "the class's sentences in the Edit tab are not the ones the search put in"
    changes = page.locator("#pl-edit-changes")
    expect(changes).to_contain_text(name)
    expect(changes).to_contain_text(now_in[0][:40])  # the diff shows the sentence the search put in
    shot(page, "10_improve_applied")
    assert not errors, errors
    page.close()
