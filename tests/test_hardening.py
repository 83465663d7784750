"""Hostile inputs to the library and the CLI (issue 21): each is one ``error: ...`` line and exit status 2
(never a traceback), and the ones that used to give wrong results are refused or read correctly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prolab.cli import main
from prolab.errors import ProLabError
from tests.builders import write_labelled_folder

DEEP = "[" * 100_000


def one_error_line(capsys, argv: list[str], needle: str = "") -> str:
    """Run the CLI in-process: it must exit 2 with exactly one ``error: ...`` line on stderr (besides
    progress bars) and no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if "it/s]" not in ln]  # progress bars aside
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert needle in lines[0], lines
    return lines[0]


# ---------------------------------------------------------------------------- JSON and text inputs
def test_deeply_nested_json_and_a_bom(tmp_path):
    from prolab.descriptions import load_descriptions, parse_descriptions

    with pytest.raises(ProLabError, match="nested too deeply"):
        parse_descriptions(DEEP)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"cat": ["Furry"]}).encode())
    assert load_descriptions(tmp_path / "bom.json").to_dict() == {"cat": ["Furry"]}


def test_class_lists_latin1_bom_and_the_class_limit(tmp_path):
    from prolab.data.readers import MAX_CLASSES, read_classes

    (tmp_path / "l1.txt").write_bytes("caf\xe9\nna\xefve\n".encode("latin-1"))
    assert read_classes(tmp_path / "l1.txt") == ["café", "naïve"]
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfsky\nroad\n")
    assert read_classes(tmp_path / "bom.txt") == ["sky", "road"]
    (tmp_path / "many.txt").write_text("".join(f"c{i}\n" for i in range(MAX_CLASSES + 1)))
    with pytest.raises(ProLabError, match=f"the limit is {MAX_CLASSES}"):
        read_classes(tmp_path / "many.txt")
    (tmp_path / "ok.txt").write_text("".join(f"c{i}\n" for i in range(MAX_CLASSES)))
    assert len(read_classes(tmp_path / "ok.txt")) == MAX_CLASSES


def _with_mask(root: Path, mask_size: tuple[int, int]) -> Path:
    """A labelled folder whose first mask is replaced by one of ``mask_size`` (width, height)."""
    write_labelled_folder(root, ["sky", "road"], n=2)
    Image.fromarray(np.zeros(mask_size[::-1], np.uint8)).save(root / "masks" / "im0.png")
    return root


@pytest.mark.parametrize("size, message", [((64, 40), "64 x 40 pixels but its image im0.png is 64 x 48"),
                                           ((48, 64), "transposed"),
                                           ((5000, 4000), "at most 16.8 MP")])
def test_a_mask_must_have_its_image_s_size(tmp_path, size, message):
    from prolab.data.readers import read_folder

    with pytest.raises(ProLabError, match=message):
        read_folder(_with_mask(tmp_path / "set", size))


def test_a_mask_over_pil_s_pixel_limit_is_a_readable_error(tmp_path):
    from prolab.data.dataset import read_index_png

    big = tmp_path / "big.png"  # 20000 x 10000 = 200 MP: PIL raises DecompressionBombError on open
    Image.new("L", (20000, 10000)).save(big, optimize=False)
    with pytest.raises(ProLabError, match="too large|the limit is 40 MP"):
        read_index_png(big)


# ---------------------------------------------------------------------------- the CLI
def test_os_errors_on_out_are_one_line(tmp_path, capsys):
    (tmp_path / "d.json").write_text(json.dumps({"cat": ["Furry animal"], "dog": ["Barks"]}))
    (tmp_path / "file").write_text("x")
    for out in ("/proc/nope/ls", str(tmp_path / "file" / "ls")):
        one_error_line(capsys, ["labelspace", "build", "--descriptions", str(tmp_path / "d.json"), "--k", "2",
                                "--out", out])


def test_deep_json_and_yaml_are_one_line(tmp_path, capsys, tiny_model_dir):
    (tmp_path / "deep.json").write_text(DEEP)
    one_error_line(capsys, ["labelspace", "build", "--descriptions", str(tmp_path / "deep.json"), "--k", "2",
                            "--out", str(tmp_path / "ls")], "nested too deeply")
    (tmp_path / "deep.yaml").write_text(DEEP)
    one_error_line(capsys, ["train", "--config", str(tmp_path / "deep.yaml")], "nested too deeply")


@pytest.mark.parametrize("flags, needle", [
    (["--lr", "nan"], "lr must be"), (["--lr", "-1"], "lr must be > 0"), (["--threads", "-1"], "threads"),
    (["--set", "model.decoder_channels=abc"], "decoder_channels"), (["--set", "model.embed_dim=8"], "embed_dim"),
    (["--set", "steps=abc"], "steps must be a whole number"), (["--set", "weight_decay=.inf"], "weight_decay")])
def test_train_refuses_bad_settings_before_starting(tmp_path, capsys, flags, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 1\nsources: [msrc_v2]\n")
    one_error_line(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), *flags], needle)


def test_train_without_a_config_does_not_start_a_run(capsys):
    one_error_line(capsys, ["train"], "--config")


def test_describe_refuses_nan_and_inf_timeouts(tmp_path, capsys):
    for value in ("nan", "inf", "0"):
        one_error_line(capsys, ["describe", "--categories", "zebra", "--out", str(tmp_path / "d.json"),
                                "--timeout", value], "--timeout")


@pytest.mark.parametrize("alpha", ["nan", "5", "-0.1"])
def test_predict_alpha_must_be_an_opacity(tmp_path, capsys, tiny_model_dir, alpha):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    one_error_line(capsys, ["predict", str(img), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"),
                            "--alpha", alpha], "--alpha")


def test_evaluate_limit_ids_beyond_the_class_list_and_mismatched_masks(tmp_path, capsys, tiny_model_dir):
    folder = write_labelled_folder(tmp_path / "set", ["a", "b"], n=2)
    base = ["evaluate", "--model", str(tiny_model_dir), "--folder", str(folder)]
    one_error_line(capsys, [*base, "--limit", "-1"], "--limit")
    one_error_line(capsys, [*base, "--limit", "0"], "--limit")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20] = 7  # the class list has 2 classes
    Image.fromarray(mask).save(folder / "masks" / "im0.png")
    one_error_line(capsys, base, "value 7 is not a class index")
    Image.fromarray(np.zeros((64, 48), np.uint8)).save(folder / "masks" / "im0.png")
    one_error_line(capsys, base, "transposed")


def test_evaluate_finds_the_shared_datasets_without_prolab_data(monkeypatch, tmp_path):
    """Like the app, ``evaluate --dataset`` falls back to ../shared/datasets beside the checkout."""
    from prolab.data import readers

    monkeypatch.delenv("PROLAB_DATA", raising=False)
    beside = Path(readers.__file__).resolve().parents[2].parent / "shared" / "datasets"
    if not beside.is_dir():
        pytest.skip(f"no shared datasets at {beside}")
    args = type("A", (), {"dataset": ["msrc_v2"], "data_root": None, "split": "val", "ade20k": None,
                          "folder": None})()
    from prolab.commands.evaluate import _sources

    assert _sources(args)[0].name == "msrc_v2"
