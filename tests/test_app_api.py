"""The app's API, driven with gradio_client against ``python app.py`` started on 127.0.0.1.

The app runs a tiny untrained model (CamVid label space, saved with ``save_pretrained`` to a temporary
folder) and a fake OpenAI-compatible LLM server, so nothing is downloaded. With random weights the
property activations are nearly uniform, which makes one outcome predictable: a novel category that
uses *every* property has the highest cosine at almost every pixel.
"""
from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app_server import MODEL_CARD, app_log, running_app, save_tiny_category_model, save_tiny_model
from tests.builders import write_labelled_folder
from tests.fake_llm_server import FakeLLMServer

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "assets" / "examples" / "astronaut.png"
CHELSEA = REPO / "assets" / "examples" / "chelsea.png"
EVAL_CLASSES = ["sky", "road", "tree", "zebra"]  # sky is the background; zebra is no CamVid class


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, encoder):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder)


@pytest.fixture(scope="module")
def llm():
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One tiny labelled set in the shared datasets' format, for the Evaluate tab."""
    root = tmp_path_factory.mktemp("datasets")
    write_labelled_folder(root / "tinyset", EVAL_CLASSES, n=2, shared=True)
    return root


@pytest.fixture(scope="module")
def app_url(tiny_model, encoder, llm, data_root):
    cache = encoder.cache.path.parent
    with running_app(["--model", str(tiny_model), "--label-set", "camvid_11", "--cache-dir", str(cache),
                      "--llm-base-url", llm.url, "--llm-model", "fake-model", "--data-root", str(data_root)],
                     env={"PROLAB_CACHE_DIR": str(cache)}) as url:
        yield url


@pytest.fixture()
def client(app_url):
    return Client(app_url, verbose=False)  # a new client is a new session


def segment(client, path=ASTRONAUT, label_set="camvid_11", threshold=0.0):
    return client.predict(handle_file(str(path)), label_set, None, threshold, 0.55, api_name="/segment")


def everything_category(label_set_key="camvid_11") -> str:
    desc = json.loads((REPO / "assets" / "descriptions" / f"{label_set_key}.json").read_text())
    return json.dumps({"everything": [s for v in desc.values() for s in v]})


def test_segment_gives_overlay_legend_and_status(client):
    image, legend, status, top_fig, prop_dd = segment(client)
    assert Image.open(image).size == (512, 512)
    assert 'id="pl-legend"' in legend and " present" in legend
    shown = [c for c in json.loads((REPO / "assets/datasets/camvid_11.json").read_text())["classes"]
             if f'data-class="{c}"' in legend]
    assert shown, legend
    assert "CamVid-11" in status and "forward pass" in status and "K = " in status
    assert len(prop_dd["choices"]) > 2
    # same image again: the embeddings are cached, no second forward pass
    _, _, status2, _, _ = segment(client, threshold=0.0)
    assert "cached" in status2
    # no pixel of an untrained model reaches a cosine of 1
    _, legend3, _, _, _ = client.predict(1.0, 0.55, api_name="/rescore")
    assert 'data-class="unknown"' in legend3 and "100.0%" in legend3


def test_property_map_top_maps_and_pixel_inspector(client):
    segment(client)
    heat, bar, md = client.predict("0", True, api_name="/property_map")
    assert Image.open(heat).size == (512, 512) and "Property 0" in md
    name = md.split("**Property 0**: ")[1].split("\n")[0].strip()
    _, _, md2 = client.predict(name[2:12], False, api_name="/property_map")  # search by part of the name
    assert "**Property 0**" in md2
    with pytest.raises(AppError, match="No property name contains"):
        client.predict("no such property at all", True, api_name="/property_map")
    gallery = client.predict(4, True, api_name="/top_property_maps")
    assert len(gallery) == 4 and all(Path(g["image"]).is_file() for g in gallery)
    heat, _, md, gallery, chosen = client.predict(None, 3, True, api_name="/property_maps_overview")
    assert len(gallery) == 3 and md.startswith(f"**Property {chosen}**")
    x, y, md, classes, props = client.predict(300, 200, api_name="/inspect_pixel")[:5]
    assert (x, y) == (300, 200) and "Pixel (300, 200)" in md
    scores = [row[1] for row in classes["data"]]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 5
    acts = [row[2] for row in props["data"]]
    assert acts == sorted(acts, reverse=True) and all(0 < a < 1 for a in acts)
    with pytest.raises(AppError, match="outside"):
        client.predict(5000, 10, api_name="/inspect_pixel")


def test_novel_category_resegments_without_forward_pass(client):
    segment(client)
    out = client.predict(everything_category(), 0.0, 0.55, api_name="/segment_novel")
    image, legend, status, _, _, table = out
    assert 'data-class="everything"' in legend and "★ new" in legend
    assert "forward pass: cached" in status
    changed = float(status.split("% of pixels changed")[0].split("·")[-1])
    assert changed > 50.0  # the all-properties category takes over most of the image
    assert {row[0] for row in table["data"]} == {"everything"}
    assert len(table["data"]) >= 8  # it maps onto many properties
    # removing it restores the label set
    _, legend2, _, _, _, table2 = client.predict(0.0, 0.55, api_name="/clear_novel")
    assert 'data-class="everything"' not in legend2 and not table2["data"]
    # bad JSON is a readable error and the session keeps working
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict('{"zebra": [', 0.0, 0.55, api_name="/segment_novel")
    with pytest.raises(AppError, match="no sentences"):
        client.predict('{"zebra": []}', 0.0, 0.55, api_name="/segment_novel")
    assert " present" in client.predict(0.0, 0.55, api_name="/rescore")[1]


def test_llm_generates_descriptions_for_novel_categories(client, llm):
    text = client.predict("zebra, fire hydrant", "{}", api_name="/generate_descriptions")
    data = json.loads(text)
    assert list(data) == ["zebra", "fire hydrant"] and len(data["zebra"]) >= 3
    assert {"zebra", "fire hydrant"} <= set(llm.categories_requested())
    template = client.predict("okapi", text, api_name="/novel_template")
    assert set(json.loads(template)) == {"zebra", "fire hydrant", "okapi"}
    with pytest.raises(AppError, match="placeholder"):
        client.predict(template, 0.0, 0.55, api_name="/segment_novel")


def test_rebuild_label_space_and_explorer_views(client):
    segment(client)
    out = client.predict("camvid_11", None, 8, 0.0, 0.55, api_name="/rebuild_label_space")
    status, summary, table = out[2], out[5], out[6]
    assert "K = 8" in status and "own K-Means" in status
    assert "K = 8 properties" in summary
    assert len(table["data"]) == 8 and sum(r[2] for r in table["data"]) == 118  # every sentence once
    plot = client.predict("camvid_11", None, "pca", "property", "sky", api_name="/sentence_map")
    fig = json.loads(plot["plot"])
    assert len(fig["data"][0]["x"]) == 118
    md, rows = client.predict("road", api_name="/class_detail")
    assert "road" in md and len(rows["data"]) >= 3
    rows = client.predict("sky", api_name="/search_properties")
    assert rows["data"] and all("sky" in (r[1] + r[4]).lower() for r in rows["data"])
    detail = client.predict(0, api_name="/property_detail")
    assert "Property 0" in detail[0]
    matrix = json.loads(client.predict(api_name="/class_matrix")["plot"])
    assert np.array(matrix["data"][0]["z"]).shape[1] == 8
    out = client.predict("camvid_11", None, 0.0, 0.55, api_name="/use_model_properties")
    assert "(the model's properties)" in out[2]
    with pytest.raises(AppError, match="K="):
        client.predict("camvid_11", None, 1000, 0.0, 0.55, api_name="/rebuild_label_space")


def test_switch_label_set_and_custom_set(client, tmp_path):
    segment(client)
    out = client.predict("msrc_23", None, 0.0, 0.55, api_name="/set_label_set")
    assert "MSRC" in out[2] and "cached" in out[2]
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"thing": ["A solid object"], "stuff": ["Amorphous background region"]}))
    out = client.predict("custom", handle_file(str(custom)), 0.0, 0.55, api_name="/load_custom_label_set")
    assert "Custom (mine.json)" in out[2] and "2 classes" in out[2]


def test_edit_descriptions_reset_and_export(client, tmp_path):
    segment(client)
    out = client.predict("camvid_11", None, "road", "Flat grey asphalt for cars\nPainted white lane lines",
                         0.0, 0.55, api_name="/edit_class")
    changes = out[5]["data"]
    assert changes[0][0] == "road" and "Painted white lane lines" in changes[0][2]
    assert "(edited)" in out[2]
    path = client.predict("camvid_11", None, api_name="/export_descriptions")
    exported = json.loads(Path(path).read_text())
    assert exported["road"] == ["Flat grey asphalt for cars", "Painted white lane lines"]
    # import a file, then reset everything
    imp = tmp_path / "imp.json"
    imp.write_text(json.dumps({**exported, "sky": ["Blue area above the horizon"]}))
    out = client.predict("camvid_11", None, handle_file(str(imp)), 0.0, 0.55, api_name="/import_descriptions")
    assert {r[0] for r in out[5]["data"]} == {"road", "sky"}
    out = client.predict(None, 0.0, 0.55, api_name="/reset_descriptions")
    assert not out[5]["data"] and "(edited)" not in out[2]


def test_exports(client):
    segment(client)
    mask, classes = client.predict(api_name="/export_mask")
    m = Image.open(mask)
    names = json.loads(m.text["classes"])
    assert m.size == (512, 512) and names == json.loads(Path(classes).read_text())["classes"]
    assert np.asarray(m).max() < len(names)
    overlay, colors = client.predict(0.5, api_name="/export_overlay")
    assert Image.open(overlay).size == (512, 512) and Image.open(colors).mode == "RGB"
    (zpath,) = client.predict(3, api_name="/export_property_maps")
    with zipfile.ZipFile(zpath) as z:
        pngs = [n for n in z.namelist() if n.endswith(".png")]
        assert len(pngs) == 3 and "activations.npy" in z.namelist()
        meta = json.loads(z.read("properties.json"))
    assert len(meta["top"]) == 3
    (space_zip,) = client.predict(api_name="/export_label_space")
    with zipfile.ZipFile(space_zip) as z:
        assert {"labelspace.json", "labelspace.safetensors"} <= set(z.namelist())
        meta = json.loads(z.read("labelspace.json"))
    assert meta["class_names"][:2] == ["sky", "building"]


def test_model_info_and_loading(client, tiny_model):
    info, card, banner = client.predict(api_name="/model_info")
    assert "compact-cnn" in info and card.strip() == MODEL_CARD.strip() and "pl-model-banner" in banner
    info, card, banner, label_set, *result, shipped = client.predict(str(tiny_model), api_name="/load_model")
    assert len(result) == 5  # overlay, legend, status, top properties, property choices
    assert shipped is None  # not a shipped model: the shipped list names none (its blur then loads nothing)
    assert "K = " in info and "Tiny test model" in card
    # The card's title and the folder's name; the server's full path stays private.
    for shown in (info, banner):
        assert "Tiny test model" in shown and tiny_model.name in shown and str(tiny_model.parent) not in shown
    with pytest.raises(AppError, match="Model not found"):
        client.predict("/no/such/model", api_name="/load_model")
    with pytest.raises(AppError, match="Hugging Face"):
        client.predict("someone/not-cached-model", api_name="/load_model")


def test_unseen_animals_model_is_one_choice_away(client):
    """The shipped model that never saw an animal is listed with its one-line pitch and loads from
    the picker; a cat described in the Novel tab is then segmented on the cat photo."""
    from app.services.models import shipped_models

    listed = {Path(path).name: (label, path) for label, path in shipped_models()}
    assert next(iter(listed)) == "default"
    label, path = listed["unseen_animals"]
    assert "never saw an animal" in label.lower()
    info, card, _, label_set, *_, shipped = client.predict(path, api_name="/load_shipped_model")
    assert "195 classes" in info and "cow" in card and shipped == "unseen_animals"
    client.predict(handle_file(str(CHELSEA)), "ade20k_150", None, 0.0, 0.55, api_name="/segment")
    cat = json.dumps({"cat": json.loads((REPO / "assets" / "descriptions" / "msrc_23.json").read_text())["cat"]})
    _, legend, status, _, _, table = client.predict(cat, 0.0, 0.55, api_name="/segment_novel")
    assert "forward pass: cached" in status and {row[0] for row in table["data"]} == {"cat"}
    # the described cat wins a large part of the photo (the open-set credit; plain scores: 0.03 %)
    share = re.search(r'data-class="cat"[^>]*>cat <b>([0-9.]+)%', legend)
    assert share is not None and float(share.group(1)) > 20.0


def test_category_baseline_model_segments_its_own_classes_only(client, tmp_path):
    path = save_tiny_category_model(tmp_path / "category")
    info, card, _, label_set, *_ = client.predict(str(path), api_name="/load_model")
    assert "category-supervised baseline: 3 fixed classes" in info and label_set == "model"
    assert "no model card" in card
    image, legend, status, _, _ = segment(client, label_set="model")
    assert "Model's training classes" in status and any(f'data-class="{c}"' in legend
                                                        for c in ("sky", "tree", "road"))
    with pytest.raises(AppError, match="category-supervised"):
        segment(client, label_set="msrc_23")
    with pytest.raises(AppError, match="category-supervised"):
        client.predict(everything_category(), 0.0, 0.55, api_name="/segment_novel")
    with pytest.raises(AppError, match="property model"):
        client.predict("0", True, api_name="/property_map")


def _png_with_header_size(path: Path, w: int, h: int) -> Path:
    """A tiny (truncated) PNG whose header claims ``w`` x ``h`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_bad_images_give_readable_errors_and_the_app_keeps_working(client, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(AppError, match="not a readable image"):
        segment(client, corrupt)
    # the upload preview reports in place instead of failing, naming the user's file
    _, _, status = client.predict(handle_file(str(corrupt)), api_name="/load_image")
    assert "corrupt.png is not a readable image" in status and "/tmp/gradio" not in status
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(one)
    with pytest.raises(AppError, match="at least 8 px"):
        segment(client, one)
    with pytest.raises(AppError, match="limit is 40 MP"):
        segment(client, _png_with_header_size(tmp_path / "huge.png", 20000, 20000))
    # odd but valid colour modes are converted and segmented
    rng = np.random.default_rng(0)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (64, 96, 4), dtype=np.uint8), "RGBA").save(rgba)
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 255, (64, 96), dtype=np.uint8), "L").save(grey)
    deep = tmp_path / "deep16.png"
    Image.fromarray(rng.integers(0, 65535, (64, 96), dtype=np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    for p in (rgba, grey, deep):
        image, legend, status, _, _ = segment(client, p)
        assert Image.open(image).size == (96, 64) and " present" in legend, p.name
    # the session survived the errors
    assert " present" in segment(client, CHELSEA)[1]


def evaluate(client, eval_set="tinyset", upload=None, label_set="camvid_11"):
    """summary, chart, deltas, confused pairs, version A, version B, status."""
    return client.predict(label_set, None, eval_set, upload, "", api_name="/evaluate")


def test_evaluate_compare_and_restore_endpoints(client, tmp_path):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/evaluate", "/compare_evaluations", "/restore_evaluation"} <= names
    summary, chart, deltas, confused, a, b, status = evaluate(client)
    assert "**tinyset val** (2 images)" in summary and "evaluation **v1**" in summary and "2 forward passes" in summary
    fig = json.loads(chart["plot"])
    assert "zebra (not in the label set)" in fig["data"][0]["y"] and not deltas["data"]
    assert (a["value"], b["value"]) == (None, "1") and b["choices"][0][0].startswith("v1 · CamVid-11 · mIoU ")
    sky = json.loads(everything_category())["everything"]
    client.predict("camvid_11", None, "sky", "\n".join(sky), 0.0, 0.55, api_name="/edit_class")
    summary, chart, deltas, confused, a, b, status = evaluate(client)
    assert "against v1" in summary and "Re-evaluated from the cache" in summary
    assert (a["value"], b["value"]) == ("1", "2") and [c[1] for c in a["choices"]] == ["2", "1"]
    row = next(r for r in deltas["data"] if r[0] == "sky")
    assert float(row[2]) > float(row[1]) + 20 and f"sky {row[1]} → {row[2]}" in summary
    assert len(json.loads(chart["plot"])["data"]) == 2
    summary, chart, deltas, status = client.predict("2", "1", api_name="/compare_evaluations")  # B against A
    assert summary.startswith("**v2 → v1**") and next(r for r in deltas["data"] if r[0] == "sky")[3].startswith("-")
    out = client.predict("1", "sky", 0.0, 0.55, api_name="/restore_evaluation")
    changes, class_name, text, label_set, status = out[5:]
    shipped = json.loads((REPO / "assets" / "descriptions" / "camvid_11.json").read_text())["sky"]
    assert text == "\n".join(shipped) and not changes["data"] and label_set == "camvid_11" and "v1" in status
    assert "against v2" in evaluate(client)[0]  # v3 = v1's descriptions again


def test_evaluate_an_uploaded_zip_and_bad_ones(client, tmp_path):
    import shutil

    folder = write_labelled_folder(tmp_path / "mine", EVAL_CLASSES, n=2, seed=5)
    good = shutil.make_archive(str(tmp_path / "mine"), "zip", folder)
    assert "**mine all** (2 images)" in evaluate(client, "upload", handle_file(good))[0]
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(AppError, match="broken.zip is not a readable zip file") as err:
        evaluate(client, "upload", handle_file(str(broken)))
    assert "/tmp" not in str(err.value)
    with pytest.raises(AppError, match="not in the list of choices"):  # gradio's own input check answers
        evaluate(client, "../../etc")
    assert "against v1" in evaluate(client, "upload", handle_file(good))[0]  # the session survived


def test_sessions_are_independent(app_url):
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    segment(a)
    a.predict(everything_category(), 0.0, 0.55, api_name="/segment_novel")
    # b has no image: its threshold is kept for its first one and nothing of a's result reaches it
    status_b = " ".join(str(v) for v in b.predict(0.0, 0.55, api_name="/rescore"))
    assert "upload an image" in status_b and 'data-class="everything"' not in status_b
    legend_b = segment(b)[1]
    assert 'data-class="everything"' not in legend_b


def _mask(client) -> np.ndarray:
    mask_png, _ = client.predict(api_name="/export_mask")
    return np.asarray(Image.open(mask_png))


def test_concurrent_users_each_get_their_own_image_s_result(app_url, tmp_path, encoder):
    """Four users segment four different images (two sizes) at the same moment, several rounds, each
    user a different image every round: every exported mask equals that image's mask computed alone.
    (The model is shared; nothing about one user's forward pass may reach another's result.)"""
    import threading

    images = []
    for src in (ASTRONAUT, CHELSEA):  # 512 x 512 and 451 x 300
        img = Image.open(src).convert("RGB")
        for flip in (False, True):
            p = tmp_path / f"{src.stem}{'_mirrored' if flip else ''}.png"
            (img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img).save(p)
            images.append(p)
    lively = save_tiny_model(tmp_path / "lively", encoder, output_scale=300.0)
    solo = Client(app_url, verbose=False)
    solo.predict(str(lively), api_name="/load_model")
    reference = []
    for p in images:
        segment(solo, p)
        reference.append(_mask(solo))
    for i in range(len(images)):  # the images really give different masks, so a mix-up would show
        for j in range(i + 1, len(images)):
            assert reference[i].shape != reference[j].shape or not np.array_equal(reference[i], reference[j])
    assert all(len(np.unique(r)) >= 2 for r in reference)
    clients = [Client(app_url, verbose=False) for _ in images]
    for c in clients:
        c.predict(str(lively), api_name="/load_model")  # the same (cached) model object for everyone
    rounds = 3
    barrier = threading.Barrier(len(clients))
    failures: list[str] = []

    def user(c: int) -> None:
        for r in range(rounds):
            k = (c + r) % len(images)
            barrier.wait(timeout=120)
            try:
                segment(clients[c], images[k])
                got = _mask(clients[c])
            except Exception as exc:  # noqa: BLE001 - reported with the round and image below
                failures.append(f"round {r} client {c} {images[k].name}: {exc}")
                continue
            if got.shape != reference[k].shape or not np.array_equal(got, reference[k]):
                failures.append(f"round {r} client {c}: mask of {images[k].name} differs from its reference")

    threads = [threading.Thread(target=user, args=(c,)) for c in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures, "\n".join(failures)


def test_user_and_file_derived_text_is_escaped(client, tmp_path, tiny_model):
    """Model folder names, file names, class names, sentences (property names) and error messages are
    shown as text, never as HTML."""
    import shutil

    evil = "<img src=x onerror=alert(document.domain)>"
    folder = tmp_path / evil
    shutil.copytree(tiny_model, folder)
    info, _, banner, *_ = client.predict(str(folder), api_name="/load_model")
    assert "&lt;img" in banner and "<img" not in banner
    assert "<img" not in info
    custom = tmp_path / f"{evil}.json"
    custom.write_text(json.dumps({"<b>thing</b>": [f"{evil} solid object"],
                                  "stuff": ["Amorphous background region", "Soft fuzzy texture"]}))
    segment(client)
    out = client.predict("custom", handle_file(str(custom)), 0.0, 0.55, api_name="/load_custom_label_set")
    status = out[2]
    assert "onerror=alert" in status and "<img" not in status  # the file's name, as text
    md, _ = client.predict("<b>thing</b>", api_name="/class_detail")
    assert "<b>thing</b>" not in md and "&lt;b&gt;thing" in md
    # K = 3 over 3 sentences: every sentence names its own property, the markup one included
    out = client.predict("custom", handle_file(str(custom)), 3, 0.0, 0.55, api_name="/rebuild_label_space")
    fig = json.loads(out[3]["plot"])
    labels = " ".join(fig["data"][0]["y"]) + " ".join(fig["data"][0]["customdata"])
    assert "<img" not in labels and "&lt;img" in labels
    k = next(i for i, name in enumerate(fig["data"][0]["customdata"]) if "&lt;img" in name)
    prop = fig["data"][0]["y"][k].split(" · ")[0]
    _, _, md = client.predict(prop, True, api_name="/property_map")
    assert "<img" not in md and "&lt;img" in md
    with pytest.raises(AppError) as err:
        client.predict("<script>alert(1)</script>", True, api_name="/property_map")  # no such property
    assert "<script>" not in str(err.value) and "&lt;script&gt;" in str(err.value)


def test_empty_nan_and_odd_numbers_are_readable_errors(client, monkeypatch):
    # httpx refuses to encode NaN; a hostile client sends it anyway (Python's JSON parser accepts it)
    import httpx._content

    monkeypatch.setattr(httpx._content, "json_dumps",
                        lambda obj, **kw: json.dumps(obj, **{**kw, "allow_nan": True}))
    segment(client)
    for args, api, message in [((None,), "/property_detail", "empty"),
                               ((float("nan"), True), "/top_property_maps", "finite"),
                               ((float("nan"), 0.55), "/rescore", "finite"),
                               ((0.0, float("nan")), "/rescore", "finite")]:
        with pytest.raises(AppError, match=message) as err:
            client.predict(*args, api_name=api)
        assert "Something went wrong" not in str(err.value), api
    with pytest.raises(AppError) as err:  # whole-number fields: gradio's own input check answers
        client.predict(float("nan"), 10, api_name="/inspect_pixel")
    assert "Something went wrong" not in str(err.value)
    assert " present" in client.predict(0.0, 0.55, api_name="/rescore")[1]  # the session still works


def test_thin_images_are_refused_at_upload_and_paths_stay_private(client, tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (100000, 8), (0, 128, 0)).save(thin)
    _, _, status = client.predict(handle_file(str(thin)), api_name="/load_image")
    assert "thin.png" in status and "too elongated" in status and "Image loaded" not in status
    with pytest.raises(AppError, match="too elongated"):
        segment(client, thin)
    bad = tmp_path / "broken set.json"
    bad.write_text('{"wall": [')
    segment(client)
    with pytest.raises(AppError) as err:
        client.predict("custom", handle_file(str(bad)), 0.0, 0.55, api_name="/load_custom_label_set")
    assert "broken set.json" in str(err.value) and "gradio" not in str(err.value) \
        and "/tmp" not in str(err.value)
    with pytest.raises(AppError) as err:
        client.predict("camvid_11", None, handle_file(str(bad)), 0.0, 0.55, api_name="/import_descriptions")
    assert "broken set.json" in str(err.value) and "/tmp" not in str(err.value)


def test_bad_startup_model_still_lets_users_load_one_and_sessions_expire(tiny_model, encoder):
    """A --model that cannot load: actions say so and how to fix it, and loading a good model from the
    Model tab works. A session expires --session-ttl seconds after its last action and is freed."""
    cache = encoder.cache.path.parent
    with running_app(["--model", "/no/such/model/dir", "--label-set", "camvid_11", "--cache-dir", str(cache),
                      "--session-ttl", "4"], env={"PROLAB_CACHE_DIR": str(cache)}) as url:
        c = Client(url, verbose=False)
        with pytest.raises(AppError, match="start-up model cannot be loaded.*Model"):
            segment(c)
        info, card, banner, label_set, *_ = c.predict(str(tiny_model), api_name="/load_model")
        assert "Tiny test model" in card and label_set == "camvid_11"
        assert " present" in segment(c)[1]
        assert " present" in c.predict(0.0, 0.55, api_name="/rescore")[1]  # the session holds the image
        import time

        deadline = time.monotonic() + 60
        while "session expired: released" not in app_log(url) and time.monotonic() < deadline:
            time.sleep(1)
        assert "session expired: released" in app_log(url)
        with pytest.raises(AppError, match="start-up model cannot be loaded"):  # a fresh, empty session
            c.predict(0.0, 0.55, api_name="/rescore")


def test_shared_servers_only_load_shipped_and_named_models(tmp_path, tiny_model):
    """--host 0.0.0.0 / --share: the Model tab loads the shipped models, --model and --model-dir
    folders; anything else gets one message whether or not it exists (no probing of the server)."""
    from app.config import AppConfig
    from app.services import Services
    from prolab.assets import MODELS_DIR
    from prolab.errors import ProLabError

    local = Services(AppConfig(host="127.0.0.1")).models
    local.check_allowed(str(tmp_path))  # a local app loads anything
    shared = Services(AppConfig(host="0.0.0.0", model_dirs=[str(tiny_model)])).models
    shared.check_allowed(str(tiny_model))
    shared.check_allowed(str(MODELS_DIR / "default"))
    messages = set()
    for source in (str(tmp_path), "/etc", "/no/such/dir", "someone/some-model",
                   str(tiny_model.parent / ".." / tmp_path.name)):
        with pytest.raises(ProLabError) as err:
            shared.load(source)
        messages.add(str(err.value))
    assert len(messages) == 1 and "--allow-any-model" in messages.pop()
    Services(AppConfig(share=True, allow_any_model=True)).models.check_allowed("/etc")
    with pytest.raises(ProLabError, match="allow-any-model"):
        Services(AppConfig(share=True)).models.check_allowed(str(tiny_model))


def test_idle_sessions_are_released_even_if_gradio_keeps_them(tiny_model):
    """gradio keeps a closed tab's state for an hour whatever its TTL; the app's sweeper frees the
    arrays of any session idle for longer than --session-ttl."""
    import time

    from app.config import AppConfig
    from app.services import Services

    res = Services(AppConfig(model=str(tiny_model), label_set="camvid_11", session_ttl=1.0)).sessions
    s = res.new()
    res.track(s)  # starts the background sweeper
    with s.lock:  # as every app action does: a session in use is never swept
        s.edit.segment(ASTRONAUT)
        time.sleep(1.5)
        assert not s.released  # the sweeper thread could not take the lock
    assert s.edit.nbytes() > 0
    deadline = time.monotonic() + 10
    while not s.released and time.monotonic() < deadline:
        time.sleep(0.2)
    assert s.released and s.edit.nbytes() == 0 and s.edit.image is None
    res.track(s)  # used again: live again, and the next action starts from an empty image
    assert not s.released
