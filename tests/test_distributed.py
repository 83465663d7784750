"""``evaluate`` and ``predict`` under torchrun (2 CPU processes, gloo): the images are split across the
processes, the evaluation gives exactly the single-process JSON and each image is predicted once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prolab.cli import main
from prolab.distributed import DistInfo, shard

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "assets" / "models" / "default"


@pytest.fixture
def one_thread():
    """Both runs with one torch thread (``--threads 1``; torchrun's default), so that they differ only in
    how the images are split: a float sum over other threads may round a heatmap pixel differently."""
    threads = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(threads)


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m prolab ARGS``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                           "--nproc_per_node", "2", "-m", "prolab", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_shard_takes_each_item_once_and_keeps_a_key_together():
    items = [f"{d}/{s}.png" for d, s in [("a", "x"), ("a", "y"), ("b", "x"), ("a", "z"), ("a", "w")]]
    stem = lambda p: p.split("/")[1]  # noqa: E731
    for key in (None, stem):
        parts = [shard(items, DistInfo(rank, 2), key) for rank in range(2)]
        assert sorted(parts[0] + parts[1]) == sorted(items) and not set(parts[0]) & set(parts[1])
        assert all(parts)  # both processes get work
    with_stem = [shard(items, DistInfo(rank, 2), stem) for rank in range(2)]
    assert {"a/x.png", "b/x.png"} <= set(with_stem[0])  # same output names: one process writes both
    assert shard(items, DistInfo(), stem) == items


def test_torchrun_evaluate_equals_one_process(datasets_dir, tmp_path, one_thread):
    """The shipped model on 3 CamVid val images (11 classes, thin poles included; at 320 px to keep the test
    short): the JSON of 2 processes, each scoring its share and summing the confusion counts, equals one
    process's exactly."""
    args = ["evaluate", "--model", str(MODEL), "--dataset", "camvid", "--data-root", str(datasets_dir),
            "--limit", "3", "--size", "320", *one_thread]
    assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    proc = torchrun(*args, "--out", str(tmp_path / "two.json"), cwd=tmp_path)
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    res = one["results"]["camvid/val"]
    assert res["images"] == 3 and sum(v is not None and v > 0 for v in res["per_class_iou"].values()) >= 5
    assert two == one  # mIoU and every per-class IoU to the last digit
    assert proc.stdout.count("Results written to") == 1 and "2 processes" in proc.stdout  # rank 0 alone


def test_torchrun_predict_writes_each_image_once(tmp_path, one_thread):
    """5 images (two with the same file name in different folders) -> the same files as one process, and
    one predictions.json listing every image once, in the order given (the shipped model at 64 px)."""
    from tests.builders import write_labelled_folder

    data = write_labelled_folder(tmp_path / "data", ["sky", "road", "tree"], n=4)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(data / "images" / "im1.png", other / "im1.png")
    inputs = [str(data / "images"), str(other / "im1.png")]
    args = ["predict", *inputs, "--model", str(MODEL), "--size", "64", "--top-properties", "1", *one_thread]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    proc = torchrun(*args, "--out", str(tmp_path / "two"), cwd=tmp_path)
    assert proc.stdout.count("Wrote predictions for 5 image(s)") == 1
    one, two = sorted(p.name for p in (tmp_path / "one").iterdir()), sorted(p.name for p in (tmp_path / "two").iterdir())
    assert one == two and len([n for n in two if n.endswith("_mask.png")]) == 4  # im1 twice: one file
    for name in two:
        if name.endswith(".png"):
            a, b = (np.asarray(Image.open(tmp_path / d / name)) for d in ("one", "two"))
            assert np.array_equal(a, b), name
    summary = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert summary == json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert list(summary["images"]) == [*(str(data / "images" / f"im{i}.png") for i in range(4)), inputs[1]]



def _together_worker(rank: int, store: str, out: str) -> None:
    """One of two gloo processes: the second one's share fails; each writes what it raised."""
    from datetime import timedelta

    import torch.distributed as dist

    from prolab.distributed import together

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    info = DistInfo(rank, 2)

    def work() -> int:
        if rank == 1:
            raise OSError("im7.png: image file is truncated")
        return 5

    try:
        together(work, info)
        outcome = "finished"
    except Exception as exc:  # noqa: BLE001 - what each process raised is the result
        outcome = f"{type(exc).__name__}: {exc}"
    ok = together(lambda: 1, info)  # the processes are still in step afterwards
    Path(out, f"rank{rank}.txt").write_text(f"{outcome}|{ok}")
    dist.destroy_process_group()


def test_one_process_failing_stops_the_others_at_once(tmp_path):
    """``together``: when the second process's share raises, the first raises a sentence naming it at once
    (before, it waited in the next sum until gloo's timeout, 30 minutes) and the second raises its own error."""
    import time

    import torch.multiprocessing as mp

    t = time.perf_counter()
    mp.spawn(_together_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    assert time.perf_counter() - t < 50  # well under the 60 s timeout the processes were given
    first, second = ((tmp_path / f"rank{r}.txt").read_text() for r in range(2))
    assert first == "ProLabError: Process 1 of 2 stopped: im7.png: image file is truncated|1"
    assert second == "OSError: im7.png: image file is truncated|1"
