"""Input-size limits (issue 31): checked before the work, the same in the library, the CLI and the app;
files read with byte caps; files the app writes owned by a session; the embedding cache kept under its cap."""
from __future__ import annotations

import os
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prolab.cli import main
from prolab.descriptions import DescriptionSet, load_descriptions, parse_descriptions
from prolab.errors import ProLabError
from prolab.limits import LIMITS, loads_json, read_lines
from tests.builders import write_labelled_folder


# ---------------------------------------------------------------------------- descriptions
def test_class_and_sentence_counts_are_limited():
    ok = {f"c{i}": ["a sentence"] for i in range(LIMITS.max_classes)}
    assert len(DescriptionSet(ok)) == LIMITS.max_classes
    with pytest.raises(ProLabError, match=f"the limit is {LIMITS.max_classes}"):
        DescriptionSet({**ok, "one more": ["x"]})
    with pytest.raises(ProLabError, match=f"the limit is {LIMITS.max_sentences_per_class} per class"):
        DescriptionSet({"zebra": [f"s{i}" for i in range(LIMITS.max_sentences_per_class + 1)]})
    many = {f"c{i}": [f"s{i} {j}" for j in range(40)] for i in range(LIMITS.max_sentences // 40 + 1)}
    with pytest.raises(ProLabError, match="sentences; the limit is"):
        DescriptionSet(many)
    # merging two sets that are each within the limits: the union is checked too
    half = DescriptionSet({f"a{i}": ["x"] for i in range(200)})
    with pytest.raises(ProLabError, match="classes; the limit is"):
        half.merged({f"b{i}": ["x"] for i in range(200)})


def test_names_and_sentences_are_plain_and_short():
    with pytest.raises(ProLabError, match="characters; the limit is 100"):
        DescriptionSet({"x" * 1_000_000: ["a sentence"]})
    with pytest.raises(ProLabError, match=r"control character \(U\+0000\)"):
        DescriptionSet({"ze\x00bra": ["a sentence"]})
    with pytest.raises(ProLabError, match="control character"):
        DescriptionSet({"zebra": ["bell \x07 ringing"]})
    with pytest.raises(ProLabError, match=f"the limit is {LIMITS.max_sentence_chars}"):
        DescriptionSet({"zebra": ["x" * 100_000]})
    # the message quotes a long name cut short, never whole
    with pytest.raises(ProLabError) as info:
        DescriptionSet({"y" * 5000: ["s"]})
    assert len(str(info.value)) < 300
    assert DescriptionSet({"café\tau lait": ["Brown\tand warm"]}).categories == ["café au lait"]


def test_duplicate_json_keys_and_oversized_json_are_refused(tmp_path):
    with pytest.raises(ProLabError, match="names 'zebra' twice"):
        parse_descriptions('{"zebra": ["a"], "zebra": ["b"]}')
    with pytest.raises(ProLabError, match="the limit is 4 MB"):
        loads_json('{"a": "' + "x" * LIMITS.max_json_bytes + '"}')
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # sparse: refused after the cap, never read whole
        fh.truncate(2 ** 30)
    with pytest.raises(ProLabError, match="larger than 4 MB"):
        load_descriptions(big)
    with pytest.raises(ProLabError, match="nested too deeply"):
        loads_json("[" * 100_000)


def test_a_huge_class_list_is_refused_after_its_first_lines(tmp_path):
    from prolab.data.readers import MAX_CLASSES, read_classes

    path = tmp_path / "classes.txt"
    with open(path, "wb") as fh:  # 1 GB of "a\n" without writing 1 GB: a sparse file of NULs after 1 MB
        fh.write(b"a\n" * (2 ** 19))
        fh.truncate(2 ** 30)
    with pytest.raises(ProLabError, match=f"more than {MAX_CLASSES} classes"):
        read_classes(path)
    blank = tmp_path / "blank.txt"
    blank.write_bytes(b"sky\n" + b"\n" * (2 ** 20 + 10))
    with pytest.raises(ProLabError, match="larger than 1 MB"):
        read_lines(blank, "The class list", 255)
    with pytest.raises(ProLabError, match="control character"):
        (tmp_path / "nul.txt").write_bytes(b"sky\nro\x00ad\n")
        read_classes(tmp_path / "nul.txt")


def test_a_zip_with_a_huge_class_list_is_refused_unextracted_and_its_folder_not_named(tmp_path, capsys,
                                                                                     tiny_model_dir):
    import tempfile

    folder = write_labelled_folder(tmp_path / "set", ["sky", "road"])
    (folder / "classes.txt").write_bytes(b"a\n" * 2_000_000)  # 4 MB: over the class list's 1 MB
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for f in folder.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    before = set(Path(tempfile.gettempdir()).glob("prolab-data-*"))
    assert main(["evaluate", "--model", str(tiny_model_dir), "--folder", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert "classes.txt is 4 MB; such a file may have at most 1 MB" in err
    assert set(Path(tempfile.gettempdir()).glob("prolab-data-*")) == before  # nothing left behind
    # a failure after extraction (a bad mask): the folder is deleted and named as the zip's content
    folder2 = write_labelled_folder(tmp_path / "set2", ["sky", "road"])
    mask = next((folder2 / "masks").iterdir())
    Image.fromarray(np.zeros((*Image.open(mask).size[::-1], 3), np.uint8)).save(mask)  # an RGB mask
    rgb = tmp_path / "rgb.zip"
    with zipfile.ZipFile(rgb, "w") as z:
        for f in folder2.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(folder2))
    assert main(["evaluate", "--model", str(tiny_model_dir), "--folder", str(rgb)]) == 2
    err = capsys.readouterr().err
    assert "is a colour (RGB) image; masks must be 8-bit index PNGs" in err
    assert "prolab-data-" not in err and tempfile.gettempdir() not in err
    assert set(Path(tempfile.gettempdir()).glob("prolab-data-*")) == before


def test_16_bit_masks_are_refused(tmp_path):
    from prolab.data.readers import read_folder

    folder = write_labelled_folder(tmp_path / "set", ["sky", "road"])
    mask = next((folder / "masks").iterdir())
    w, h = Image.open(mask).size
    Image.fromarray(np.full((h, w), 1000, np.uint16)).save(mask)
    with pytest.raises(ProLabError, match="16-bit image; masks must be 8-bit"):
        read_folder(folder)


def test_deep_or_huge_model_config_is_a_sentence(tmp_path):
    from prolab.model.config import SegmenterConfig

    (tmp_path / "config.json").write_text("[" * 100_000)
    with pytest.raises(ProLabError, match="nested too deeply"):
        SegmenterConfig.load(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1, "a": 2}')
    with pytest.raises(ProLabError, match="twice"):
        SegmenterConfig.load(tmp_path)


def test_export_out_is_checked_before_the_export(capsys):
    assert main(["export", "--out", "/etc/passwd/x.onnx"]) == 2
    assert "/etc/passwd is a file, not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------- video
def test_video_frame_count_cap_is_checked_up_front_and_while_decoding(tmp_path):
    from prolab.video import VideoInfo, VideoLimits, check_limits, make_test_video, segment_video

    with pytest.raises(ProLabError, match="4,800 frames .* the limit is 3,600 frames"):
        check_limits(VideoInfo(320, 240, 240.0, 20.0, 4800), VideoLimits())
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    video = make_test_video(tmp_path / "v.mp4", frames)

    class Fake:
        class_names = ["a"]

        def __call__(self, image):
            from types import SimpleNamespace

            return SimpleNamespace(labels=np.zeros(image.shape[:2], np.int32))

    palette = np.zeros((1, 3), np.uint8)
    with pytest.raises(ProLabError, match="frames"):
        segment_video(Fake(), video, tmp_path / "out.mp4", palette, limits=VideoLimits(max_frames=3))
    with pytest.raises(ProLabError, match="the limit is 40 x 40"):
        segment_video(Fake(), video, tmp_path / "out.mp4", palette, limits=VideoLimits(max_long_side=40,
                                                                                        max_short_side=40))
    assert not list(tmp_path.glob(".out*"))  # no temporary file left
    res = segment_video(Fake(), video, tmp_path / "out.mp4", palette)
    assert res.frames == 6 and (tmp_path / "out.mp4").stat().st_size > 0


# ---------------------------------------------------------------------------- caches and files
def test_embedding_cache_keeps_under_its_cap_least_recently_used_first(tmp_path):
    from prolab.encoder import EmbeddingCache

    cache = EmbeddingCache(tmp_path, max_bytes=2 * 2 ** 20)
    rng = np.random.default_rng(0)
    first = {f"old {i}": rng.standard_normal(384).astype(np.float32) for i in range(300)}
    cache.put_many("enc", first)
    for b in range(12):  # ~1.8 KB a sentence: 3,900 sentences are about 7 MB
        assert cache.get_many("enc", ["old 0"])  # used again and again: kept
        cache.put_many("enc", {f"new {b} {i}": rng.standard_normal(384).astype(np.float32) for i in range(300)})
        assert os.path.getsize(cache.path) <= 2 * 2 ** 20
    kept = cache.get_many("enc", list(first))
    assert "old 0" in kept and len(kept) < 50  # the recently used one stayed; the others went
    assert cache.get_many("enc", [f"new 11 {i}" for i in range(300)]).keys() == {f"new 11 {i}" for i in range(300)}


def test_embedding_cache_from_before_the_cap_is_upgraded(tmp_path):
    from prolab.encoder import EmbeddingCache

    with sqlite3.connect(tmp_path / "embeddings.sqlite") as con:
        con.execute("CREATE TABLE emb (key TEXT PRIMARY KEY, vec BLOB)")
        con.execute("INSERT INTO emb VALUES (?, ?)", (EmbeddingCache.key("enc", "s"), np.ones(4, np.float32).tobytes()))
    cache = EmbeddingCache(tmp_path)
    assert cache.get_many("enc", ["s"])["s"].tolist() == [1, 1, 1, 1]


def test_gradio_cache_files_are_written_once_and_atomically(tmp_path):
    from app.gradio_cache import write_once

    target = tmp_path / "abc" / "image.webp"
    target.parent.mkdir()
    write_once(target, b"first")
    inode = target.stat().st_ino
    write_once(target, b"first")  # the same content again (same hash name): the file is not rewritten
    assert target.stat().st_ino == inode and target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["image.webp"]


def test_the_cache_sweep_survives_files_added_while_it_runs(tmp_path, monkeypatch):
    """A request that hands out a file while the sweep runs (another thread adds to the set it walks):
    gradio's own sweep died of "Set changed size during iteration" and deleted nothing ever after; ours
    deletes the old files, keeps the young and the new one, and is the one gradio's scheduler calls."""
    import os
    import types

    from gradio import route_utils

    from app import gradio_cache

    old = [tmp_path / f"old{i}.png" for i in range(3)]
    young, added = tmp_path / "young.png", tmp_path / "added.png"
    for p in [*old, young, added]:
        p.write_bytes(b"x")
    files = {str(p) for p in [*old, young]}
    blocks = types.SimpleNamespace(blocks={"c": types.SimpleNamespace(keep_in_cache={str(old[2])})},
                                   temp_file_sets=[files])
    real_lstat, now = os.lstat, __import__("time").time()

    def lstat(path):  # the first status read: another user's request adds a file meanwhile
        files.add(str(added))
        st = real_lstat(path)
        return types.SimpleNamespace(st_ctime=now if path == str(young) else now - 3600, st_size=st.st_size)

    monkeypatch.setattr(gradio_cache.os, "lstat", lstat)
    assert gradio_cache.delete_old_files(blocks, age=60) == 2
    assert not old[0].exists() and not old[1].exists()
    assert old[2].exists() and young.exists() and added.exists()  # kept for a component, young, added
    assert files == {str(old[2]), str(young), str(added)}
    gradio_cache.install()
    assert route_utils.delete_files_created_by_app is gradio_cache.delete_old_files
