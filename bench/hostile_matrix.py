"""Feed bad inputs to every CLI command and to the app's handlers, and count tracebacks (goal: 0).

    python -m bench.hostile_matrix [--model DIR] [--json docs/results/hostile_matrix.json] [--only cli|app]

CLI: each case runs ``prolab.cli.main(argv)`` in this process; it passes when it returns (any status)
with no exception escaping and, for a status of 2, exactly one ``error: ...`` line on stderr (progress
bars aside). An escaping exception is what a user would see as a traceback. Argparse's own usage errors
(``SystemExit(2)``) pass.

App: each case calls an event's handler as gradio does (``tests/test_app_handlers.py``'s way, on the
real components, not launched); it passes when it returns or raises ``gr.Error`` with a message that is
not the generic "Something went wrong" (which means an unexpected exception, logged with its traceback).

Every case is listed with its outcome; the summary counts cases and tracebacks per side.
"""
from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import write_json
from prolab.assets import DEFAULT_MODEL_DIR, EXAMPLES_DIR

DEEP = "[" * 100_000
ASTRONAUT = str(EXAMPLES_DIR / "astronaut.png")


# ---------------------------------------------------------------------------- inputs
def make_inputs(tmp: Path) -> dict[str, str]:
    """Bad (and a few good) files every case refers to by name."""
    p: dict[str, str] = {}

    def write(name: str, data: bytes | str) -> str:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        p[name] = str(path)
        return str(path)

    write("deep.json", DEEP)
    write("deep.yaml", DEEP)
    write("bom.json", b"\xef\xbb\xbf" + json.dumps({"zebra": ["Black and white stripes"]}).encode())
    write("comma.json", '{"zebra": ["Black and white stripes",]}')
    write("list.json", '["a list"]')
    write("empty.json", "")
    write("latin1.json", '{"caf\xe9": ["A small restaurant"]}'.encode("latin-1"))
    write("latin1.txt", "zebra\ncaf\xe9\n".encode("latin-1"))
    write("binary.json", bytes(range(256)) * 4)
    write("good.json", json.dumps({"zebra": ["Black and white stripes", "Has four legs"],
                                   "sky": ["Blue expanse above"]}))
    write("config.yaml", "steps: 1\nsources: [msrc_v2]\n")
    write("a_file", "not a folder")
    img = tmp / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(img)
    p["img.png"] = str(img)
    write("broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    for name, change in (("ok", None), ("ids", "ids"), ("transposed", "transposed"), ("big_mask", "big"),
                         ("classes300", "classes"), ("latin1_classes", "latin1"), ("bomb", "bomb")):
        p[f"set_{name}"] = str(_labelled_set(tmp / f"set_{name}", change))
        p[f"set_{name}.zip"] = _zip(tmp / f"set_{name}", tmp / f"set_{name}.zip")
    write("not_a.zip", b"PK\x03\x04 not really a zip")
    # issue 31: inputs whose size, not their form, is the problem
    write("classes301.json", json.dumps({f"class_{i}": ["a thing", "another thing"] for i in range(301)}))
    write("classes5000.json", json.dumps({f"class_{i}": ["a thing", "another thing"] for i in range(5000)}))
    write("dup_keys.json", '{"zebra": ["Black and white stripes"], "zebra": ["Hooves"]}')
    write("nul_name.json", json.dumps({"ze\u0000bra": ["Black and white stripes"]}))
    write("mb_name.json", json.dumps({"x" * 1_000_000: ["A sentence"]}))
    write("many_sentences.json", json.dumps({"zebra": [f"sentence {i}" for i in range(100_000)]}))
    write("deep_config/config.json", DEEP)
    write("huge_categories.txt", "okapi\n" * 400_000)
    for name, change in (("huge_classes", "huge_classes"), ("mask16", "mask16"), ("mask_rgb", "mask_rgb")):
        p[f"set_{name}"] = str(_labelled_set(tmp / f"set_{name}", change))
        p[f"set_{name}.zip"] = _zip(tmp / f"set_{name}", tmp / f"set_{name}.zip")
    return p


def _labelled_set(root: Path, change: str | None) -> Path:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("sky\nroad\ntree\n")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        mask = np.zeros((48, 64), np.uint8)
        mask[20:, :] = 1
        mask[30:, 30:] = 2
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    mask0 = root / "masks" / "im0.png"
    if change == "ids":
        bad = np.full((48, 64), 7, np.uint8)
        Image.fromarray(bad).save(mask0)
    elif change == "transposed":
        Image.fromarray(np.zeros((64, 48), np.uint8)).save(mask0)
    elif change == "big":
        Image.fromarray(np.zeros((2000, 3000), np.uint8)).save(mask0)
    elif change == "classes":
        (root / "classes.txt").write_text("".join(f"class {i}\n" for i in range(300)))
    elif change == "latin1":
        (root / "classes.txt").write_bytes("sky\nroad\ncaf\xe9\n".encode("latin-1"))
    elif change == "bomb":
        Image.new("L", (20000, 10000)).save(mask0)
    elif change == "huge_classes":  # 100 MB of "a\n" (a 100 KB zip): refused after its first megabyte
        with open(root / "classes.txt", "wb") as fh:
            for _ in range(100):
                fh.write(b"a\n" * 2 ** 19)
    elif change == "mask16":
        Image.fromarray(np.full((48, 64), 1000, np.uint16)).save(mask0)
    elif change == "mask_rgb":
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(mask0)
    return root


def _zip(folder: Path, path: Path) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in folder.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    return str(path)


# ---------------------------------------------------------------------------- CLI
def cli_cases(p: dict[str, str], model: str, out: Path) -> list[list[str]]:
    """Argument lists for ``prolab``: every command, with bad files, paths and numbers."""
    ls_out = str(out / "ls")
    build = ["labelspace", "build", "--k", "2"]
    cases = [
        [*build, "--descriptions", p["deep.json"], "--out", ls_out],
        [*build, "--descriptions", p["comma.json"], "--out", ls_out],
        [*build, "--descriptions", p["list.json"], "--out", ls_out],
        [*build, "--descriptions", p["empty.json"], "--out", ls_out],
        [*build, "--descriptions", p["binary.json"], "--out", ls_out],
        [*build, "--descriptions", p["latin1.json"], "--out", ls_out],
        [*build, "--descriptions", "/nonexistent.json", "--out", ls_out],
        [*build, "--descriptions", p["good.json"], "--out", "/proc/nope/ls"],
        [*build, "--descriptions", p["good.json"], "--out", p["a_file"] + "/ls"],
        ["labelspace", "build", "--k", "0", "--descriptions", p["good.json"], "--out", ls_out],
        ["labelspace", "build", "--k", "-5", "--descriptions", p["good.json"], "--out", ls_out],
        ["labelspace", "show", "/nonexistent"],
        ["labelspace", "show", p["a_file"]],
        ["labelspace", "project", "/nonexistent", "--descriptions", p["good.json"]],
    ]
    describe = ["describe", "--categories", "zebra", "--out", str(out / "d.json")]
    cases += [[*describe, "--timeout", v] for v in ("nan", "inf", "0", "-1")]
    cases += [[*describe, "--backoff", "nan"], [*describe, "--concurrency", "0"], [*describe, "--retries", "-1"],
              ["describe", "--categories-file", p["latin1.txt"], "--out", str(out / "d.json")],
              ["describe", "--categories-file", "/nonexistent", "--out", str(out / "d.json")],
              ["describe", "--categories", "zebra", "--out", p["deep.json"]],
              ["describe", "--categories", "zebra", "--out", "/proc/nope/d.json"]]
    train = ["train", "--config", p["config.yaml"], "--out", str(out / "run")]
    cases += [["train"], ["train", "--config", p["deep.yaml"]], ["train", "--config", "/nonexistent.yaml"],
              [*train, "--lr", "nan"], [*train, "--lr", "inf"], [*train, "--lr", "-1"], [*train, "--threads", "-1"],
              [*train, "--steps", "0"], [*train, "--batch-size", "-3"], [*train, "--set", "model.embed_dim=abc"],
              [*train, "--set", "model.decoder_channels=abc"], [*train, "--set", "steps=abc"],
              [*train, "--set", "noequals"], [*train, "--set", "weight_decay=.nan"], [*train, "--set", "k=0"],
              [*train, "--set", "model=[1,2]"], [*train, "--set", "teacher_threshold=5"]]
    ev = ["evaluate", "--model", model, "--folder"]
    cases += [[*ev, p["set_ok"], "--limit", "-1"], [*ev, p["set_ok"], "--limit", "0"],
              [*ev, p["set_ids"]], [*ev, p["set_transposed"]], [*ev, p["set_big_mask"]],
              [*ev, p["set_classes300"]], [*ev, p["set_latin1_classes"]], [*ev, p["set_bomb"]],
              [*ev, p["set_ids.zip"]], [*ev, p["not_a.zip"]], [*ev, "/etc"], [*ev, p["a_file"]],
              [*ev, p["set_ok"], "--size", "0"], [*ev, p["set_ok"], "--size", "100000"],
              [*ev, p["set_ok"], "--threads", "-1"], [*ev, p["set_ok"], "--teacher-threshold", "nan"],
              [*ev, p["set_ok"], "--descriptions", p["deep.json"]], [*ev, p["set_ok"], "--out", "/proc/nope/e.json"],
              [*ev, p["set_ok"], "--out", p["a_file"] + "/e.json"], ["evaluate", "--model", "/nonexistent",
                                                                      "--folder", p["set_ok"]],
              ["evaluate", "--model", model, "--dataset", "nope", "--data-root", "/nonexistent"]]
    pr = ["predict", p["img.png"], "--model", model]
    cases += [[*pr, "--out", str(out / "p"), "--alpha", v] for v in ("nan", "5", "-1")]
    cases += [[*pr, "--out", "/proc/nope/p"], [*pr, "--out", p["a_file"]], [*pr, "--out", str(out / "p"), "--size", "0"],
              [*pr, "--out", str(out / "p"), "--threads", "-1"], [*pr, "--out", str(out / "p"), "--unknown-threshold", "inf"],
              [*pr, "--out", str(out / "p"), "--descriptions", p["deep.json"]],
              [*pr, "--out", str(out / "p"), "--descriptions", p["bom.json"]],
              [*pr, "--out", str(out / "p"), "--top-properties", "-1"],
              ["predict", p["broken.png"], "--model", model, "--out", str(out / "p")],
              ["predict", "/nonexistent.png", "--model", model, "--out", str(out / "p")]]
    return cases + limit_cli_cases(p, model, out)


def limit_cli_cases(p: dict[str, str], model: str, out: Path) -> list[list[str]]:
    """Issue 31's CLI cases: inputs too large (or named twice, or with control characters)."""
    build = ["labelspace", "build", "--k", "2", "--out", str(out / "ls"), "--descriptions"]
    ev = ["evaluate", "--model", model, "--folder"]
    return [[*build, p[n]] for n in ("classes301.json", "classes5000.json", "dup_keys.json", "nul_name.json",
                                      "mb_name.json", "many_sentences.json")] + [
        [*ev, p["set_huge_classes.zip"]], [*ev, p["set_huge_classes"]], [*ev, p["set_mask16"]],
        [*ev, p["set_mask16.zip"]], [*ev, p["set_mask_rgb"]],
        ["predict", p["img.png"], "--model", model, "--out", str(out / "p"), "--descriptions", p["dup_keys.json"]],
        ["predict", p["img.png"], "--model", str(Path(p["deep_config/config.json"]).parent), "--out", str(out / "p")],
        ["describe", "--categories-file", p["huge_categories.txt"], "--out", str(out / "d.json")],
        ["export", "--model", model, "--out", "/etc/passwd/x.onnx"],
        ["export", "--model", model, "--out", "/proc/prolab.onnx"]]


def rss_mb() -> float:
    """This process's resident memory."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def temp_mb() -> float:
    """Bytes under the temporary folder (what the cases leave behind), in MB; gradio's own cache (the
    app's examples, written when the app is built) aside."""
    total = 0
    for root, dirs, files in os.walk(tempfile.gettempdir()):
        if root == tempfile.gettempdir() and "gradio" in dirs:
            dirs.remove("gradio")
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2 ** 20


#: What a message shown to a user must not hold: an internal path (the temporary folder, the repository,
#: gradio's upload folder) or a Python object's repr.
INTERNAL = re.compile("|".join(["/tmp/", re.escape(tempfile.gettempdir().rstrip("/") + "/"),
                                re.escape(str(Path(__file__).resolve().parents[1]) + "/"),
                                r"<[\w.]+ (object )?at 0x", r"<_io\.", r"Traceback \(most recent"]))


def message_problems(message: str, own: tuple[str, ...] = ()) -> list[str]:
    """Why ``message`` is not a user-facing sentence: it names an internal path (other than the case's own
    inputs, ``own``: the CLI names the files its user gave) or a Python object, or it does not end as a
    sentence."""
    text = message
    for path in sorted(own, key=len, reverse=True):
        text = text.replace(path, "")
    problems = [f"names {m.group(0)!r}" for m in INTERNAL.finditer(text)]
    # a sentence, or a statement naming what it is about last ("Input not found: /x.png")
    if not (message.rstrip().endswith((".", ")", "!", "?")) or re.search(r"\w: \S+$", message.rstrip())):
        problems.append("not a sentence")
    return problems


def run_cli_case(argv: list[str]) -> tuple[bool, str]:
    """``(passed, what happened)`` for one CLI invocation (see the module docstring)."""
    from prolab.cli import main

    err, std = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            status = main(argv)
    except SystemExit as exc:  # argparse: usage line + "error: ...", status 2
        return exc.code in (0, 2), f"argparse exit {exc.code}"
    except BaseException as exc:  # noqa: BLE001 - what the user would see as a traceback
        return False, f"TRACEBACK {exc.__class__.__name__}: {str(exc)[:150]}"
    lines = [ln for ln in err.getvalue().strip().splitlines() if "it/s]" not in ln and "s/it]" not in ln]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if status == 2 and (len(errors) != 1 or "Traceback" in err.getvalue()):
        return False, f"exit 2 with {len(errors)} error lines: {lines[-3:]}"
    if errors:
        own = {str(q) for a in argv if a.startswith("/") for q in (Path(a), *Path(a).parents)
               if len(q.parts) > 2}  # the user's paths and their folders (not / or /tmp alone)
        bad = message_problems(errors[0][len("error: "):], tuple(own))
        if bad:
            return False, f"BAD MESSAGE ({'; '.join(bad)}): {errors[0][:150]}"
    return True, f"exit {status}: {(errors or lines or [''])[-1][:150]}"


# ---------------------------------------------------------------------------- app
def app_cases(p: dict[str, str]) -> list[tuple[str, tuple]]:
    """``(api_name, inputs after the state)`` for the app's events."""
    names300 = ", ".join(f"thing {i}" for i in range(300))
    up = lambda name: ("camvid_11", None, "upload", p[name], "")  # noqa: E731
    return [
        ("generate_descriptions", (names300, "{}")), ("generate_descriptions", ("x" * 1_000_000, "{}")),
        ("generate_descriptions", ("okapi", '{"zebra": ["Stripes",]}')), ("generate_descriptions", ("okapi", DEEP)),
        ("novel_template", ("okapi", DEEP)), ("novel_template", ("okapi", '["list"]')), ("novel_template", ("", "{}")),
        ("segment_novel", (DEEP, 0.0, 0.55)), ("segment_novel", ('{"zebra": [', 0.0, 0.55)),
        ("segment_novel", ('{"zebra": []}', 0.0, 0.55)), ("segment_novel", ('["list"]', 0.0, 0.55)),
        ("segment_novel", ('{"zebra": [1, 2]}', 0.0, 0.55)), ("segment_novel", ('{"": ["x"]}', 0.0, 0.55)),
        ("segment_novel", ("\ufeff" + json.dumps({"zebra": ["Black and white stripes"]}), 0.0, 0.55)),
        ("segment_novel", (json.dumps({"zebra": ["x" * 100_000]}), 0.0, 0.55)),
        ("segment_novel", (json.dumps({"zebra": ["Stripes"]}), float("nan"), 0.55)),
        ("set_label_set", ("nope", None, 0.0, 0.55)), ("set_label_set", ("custom", None, 0.0, 0.55)),
        ("set_label_set", ("custom", p["deep.json"], 0.0, 0.55)),
        ("set_label_set", ("custom", p["binary.json"], 0.0, 0.55)),
        ("set_label_set", ("custom", p["latin1.json"], 0.0, 0.55)),
        ("rescore", (float("nan"), 0.55)), ("rescore", (float("inf"), 0.55)), ("rescore", ("abc", 0.55)),
        ("rescore", (-5, 0.55)), ("rescore", (0.0, float("nan"))), ("overlay", (5,)), ("overlay", ("abc",)),
        ("inspect_pixel", (-1, 0)), ("inspect_pixel", (10 ** 9, 0)), ("inspect_pixel", (float("nan"), 0)),
        ("inspect_pixel", ("abc", "def")), ("property_map", ("<script>", True)), ("property_map", (10 ** 9, True)),
        ("property_map", (DEEP[:1000], True)), ("search_properties", ("[" * 10_000,)),
        ("property_detail", (-1,)), ("property_detail", (float("nan"),)), ("class_detail", ("x" * 100_000,)),
        ("edit_class", ("camvid_11", None, "", "Flat grey asphalt", 0.0, 0.55)),
        ("edit_class", ("camvid_11", None, "road", "", 0.0, 0.55)),
        ("edit_class", ("camvid_11", None, "road", "x\n" * 10_000, 0.0, 0.55)),
        ("reset_class", ("no such class", 0.0, 0.55)),
        ("import_descriptions", ("camvid_11", None, p["deep.json"], 0.0, 0.55)),
        ("import_descriptions", ("camvid_11", None, p["latin1.json"], 0.0, 0.55)),
        ("import_descriptions", ("camvid_11", None, p["bom.json"], 0.0, 0.55)),
        ("import_descriptions", ("camvid_11", None, p["binary.json"], 0.0, 0.55)),
        ("rebuild_label_space", ("camvid_11", None, 0, 0.0, 0.55)),
        ("rebuild_label_space", ("camvid_11", None, 10 ** 9, 0.0, 0.55)),
        ("rebuild_label_space", ("camvid_11", None, float("nan"), 0.0, 0.55)),
        ("evaluate", up("set_classes300.zip")), ("evaluate", up("set_transposed.zip")),
        ("evaluate", up("set_big_mask.zip")), ("evaluate", up("set_bomb.zip")), ("evaluate", up("set_ids.zip")),
        ("evaluate", up("set_latin1_classes.zip")), ("evaluate", up("not_a.zip")), ("evaluate", up("broken.png")),
        ("evaluate", ("camvid_11", None, "upload", None, "/etc")),
        ("evaluate", ("camvid_11", None, "upload", None, p["a_file"])),
        ("evaluate", ("camvid_11", None, "../nope", None, "")),
        ("compare_evaluations", ("x", "y")), ("restore_evaluation", ("abc", "sky", 0.0, 0.55)),
        ("load_model", ("/etc",)), ("load_model", ("",)), ("load_model", ("../../x" * 50,)),
        ("load_shipped_model", ("../../etc",)), ("load_shipped_model", (str(DEFAULT_MODEL_DIR),)),
        ("load_image", (p["broken.png"],)), ("load_image", (p["deep.json"],)),
        ("export_property_maps", (-1,)), ("export_property_maps", (10 ** 9,)), ("top_property_maps", (-3, True)),
    ] + limit_app_cases(p)


def limit_app_cases(p: dict[str, str]) -> list[tuple[str, tuple]]:
    """Issue 31's app cases: inputs too large (or named twice, or with control characters), API calls
    without an event."""
    up = lambda name: ("camvid_11", None, "upload", p[name], "")  # noqa: E731
    custom = lambda name: ("custom", p[name], 0.0, 0.55)  # noqa: E731
    return [
        ("load_custom_label_set", custom("classes301.json")), ("load_custom_label_set", custom("classes5000.json")),
        ("load_custom_label_set", custom("dup_keys.json")), ("load_custom_label_set", custom("nul_name.json")),
        ("load_custom_label_set", custom("mb_name.json")), ("load_custom_label_set", custom("many_sentences.json")),
        ("edit_class", ("camvid_11", None, "road", "x\n" * 100_000, 0.0, 0.55)),
        ("edit_class", ("camvid_11", None, "x" * 1_000_000, "A sentence", 0.0, 0.55)),
        ("edit_class", ("camvid_11", None, "ro\x00ad", "A sentence", 0.0, 0.55)),
        ("segment_novel", (json.dumps({"zebra": ["Black and white stripes"] * 10}) + " " * 20_000_000, 0.0, 0.55)),
        ("segment_novel", (json.dumps({f"novel {i}": ["x"] for i in range(295)}), 0.0, 0.55)),
        ("segment_novel", ('{"zebra": ["a"], "zebra": ["b"]}', 0.0, 0.55)),
        ("import_descriptions", ("camvid_11", None, p["classes5000.json"], 0.0, 0.55)),
        ("evaluate", up("set_huge_classes.zip")), ("evaluate", up("set_mask16.zip")),
        ("evaluate", up("set_mask_rgb.zip")),
        ("sentence_map", ("camvid_11", None, None, "class", "")),
        ("load_model", ("m" * 100_000,)), ("load_model", (str(Path(p["deep_config/config.json"]).parent),)),
        ("inspect_click", (None,)), ("pick_property", (None,)),
    ]


def run_app_case(demo, fn_by_name: dict, name: str, args: tuple, state) -> tuple[bool, str]:
    import gradio as gr

    fn = fn_by_name[name]
    takes_state = bool(fn.inputs) and fn.inputs[0] is demo.prolab_ui.state
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            fn.fn(*((state,) if takes_state else ()), *args)
    except gr.Error as exc:
        message = str(exc.message)
        if message.startswith("Something went wrong"):
            return False, f"TRACEBACK (logged) {message[:150]}"
        bad = message_problems(html.unescape(message))
        if bad:
            return False, f"BAD MESSAGE ({'; '.join(bad)}): {message[:150]}"
        return True, f"message: {message[:150]}"
    except BaseException as exc:  # noqa: BLE001
        return False, f"TRACEBACK {exc.__class__.__name__}: {str(exc)[:150]}\n{traceback.format_exc()[-600:]}"
    return True, "ok"


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory (default: the shipped one)")
    ap.add_argument("--only", choices=("cli", "app"), default=None)
    ap.add_argument("--limits", action="store_true",
                    help="only issue 31's cases (input sizes; the fast part the test suite runs)")
    ap.add_argument("--json", default=None, help="write every case and the summary here")
    args = ap.parse_args()
    # a temporary folder of its own: what the cases leave there is measured (the machine's is shared)
    private = tempfile.mkdtemp(prefix="prolab-hostile-")
    os.environ["TMPDIR"] = tempfile.tempdir = private
    log_tracebacks = TracebackCounter()  # the app logs unexpected errors with their traceback: counted, not shown
    root = logging.getLogger()
    root.handlers[:] = [log_tracebacks]
    root.setLevel(logging.INFO)
    results: dict[str, list] = {"cli": [], "app": []}
    t0 = time.perf_counter()
    rss0, disk0, peak = rss_mb(), temp_mb(), {"rss": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        p = make_inputs(Path(tmp))
        disk_inputs = temp_mb()
        if args.only in (None, "cli"):
            out = Path(tmp) / "out"
            for argv in (limit_cli_cases(p, args.model, out) if args.limits else cli_cases(p, args.model, out)):
                before = rss_mb()
                ok, what = run_cli_case(argv)
                grew = rss_mb() - before
                peak["rss"] = max(peak["rss"], grew)
                results["cli"].append({"argv": [a if len(a) < 80 else a[:40] + "..." for a in argv],
                                       "passed": ok, "outcome": what, "rss_mb": round(grew, 1)})
                print(f"{'ok ' if ok else 'BAD'} cli {' '.join(a[:40] for a in argv)[:150]} -> {what[:160]}", flush=True)
        if args.only in (None, "app"):
            from app.main import build_demo
            from app.config import AppConfig
            from app.services import Services

            demo = build_demo(services=Services(AppConfig(model=args.model, label_set="camvid_11")))
            fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
            for name, case_args in (limit_app_cases(p) if args.limits else app_cases(p)):
                state = fns["segment"].fn(None, ASTRONAUT, "camvid_11", None, 0.0, 0.55)[demo.prolab_ui.state]
                before = rss_mb()
                ok, what = run_app_case(demo, fns, name, case_args, state)
                grew = rss_mb() - before
                peak["rss"] = max(peak["rss"], grew)
                state.release()
                shown = [repr(a)[:40] for a in case_args]
                results["app"].append({"event": name, "inputs": shown, "passed": ok, "outcome": what,
                                       "rss_mb": round(grew, 1)})
                print(f"{'ok ' if ok else 'BAD'} app {name}({', '.join(shown)})"[:160] + f" -> {what[:160]}", flush=True)
        disk_left = temp_mb() - disk_inputs
        left = sorted(n for n in os.listdir(private) if n not in (Path(tmp).name, "gradio"))
    summary = {side: {"cases": len(rows), "tracebacks": sum(r["outcome"].startswith("TRACEBACK") for r in rows),
                      "bad_messages": sum(r["outcome"].startswith("BAD MESSAGE") for r in rows),
                      "failed": sum(not r["passed"] for r in rows),
                      "max_rss_increase_mb": max((r.get("rss_mb", 0) for r in rows), default=0)}
               for side, rows in results.items() if rows}
    shutil.rmtree(private, ignore_errors=True)
    summary["log"] = {"tracebacks": log_tracebacks.tracebacks, "refusal_lines": log_tracebacks.refusals}
    summary["process"] = {"rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss_mb(), 1),
                          "temp_mb_left_by_cases": round(disk_left, 1), "temp_mb_start": round(disk0, 1),
                          "temp_left": left[:20]}
    print(f"\n{json.dumps(summary)}  ({time.perf_counter() - t0:.0f} s)")
    if args.json:
        write_json(args.json, {"command": "python -m bench.hostile_matrix " + " ".join(sys.argv[1:]),
                               "summary": summary, **results})
    sides = [summary[k] for k in ("cli", "app") if k in summary]
    sys.exit(1 if any(s["failed"] for s in sides) or summary["log"]["tracebacks"] else 0)


class TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (an unexpected error), and one-line refusals."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.tracebacks = self.refusals = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info or "Traceback (most recent call last)" in text:
            self.tracebacks += 1
        elif text.startswith("refused in "):
            self.refusals += 1


if __name__ == "__main__":
    main()
