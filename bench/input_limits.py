"""What the largest accepted inputs cost (issue 31): memory of the app's process per input and for four at
once, a huge class list's refusal, and the embedding cache after 100,000 new sentences.

    python -m bench.input_limits [--model DIR] [--json docs/results/input_limits.json] [--skip-app]

Memory is the process's peak resident set during each call (the kernel's ``VmHWM``, reset before it) and
its resident set after it, in MB above the level before the call; the app runs in this process (handlers
called as gradio calls them, in their own threads as gradio's workers do, on the shipped model unless
``--model``), one image segmented and one class edited first (the sentence encoder is then loaded).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import write_json
from prolab.assets import EXAMPLES_DIR
from prolab.limits import LIMITS

ASTRONAUT = str(EXAMPLES_DIR / "astronaut.png")


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM (Linux only)")


def measured(fn) -> dict:
    """Run ``fn``; its outcome, seconds and memory (peak and after, MB above the start)."""
    outcome = ["ok"]

    def run():  # in a worker thread, as gradio runs handlers (threads get their own malloc arenas)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a refusal is an outcome here
            outcome[0] = "refused: " + str(getattr(exc, "message", exc))[:120]

    reset_peak()
    start, t = rss_mb(), time.perf_counter()
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    outcome = outcome[0]
    return {"outcome": outcome, "seconds": round(time.perf_counter() - t, 3),
            "peak_mb": round(peak_mb() - start, 1), "after_mb": round(rss_mb() - start, 1)}


def salt() -> str:
    return f"{os.getpid()}-{time.time_ns()}"  # new sentences: the embedding cache does not answer them


def label_set_json(folder: Path, classes: int, sentences: int) -> Path:
    s = salt()
    path = folder / f"set_{classes}x{sentences}_{s}.json"
    path.write_text(json.dumps({f"class {i} {s}": [f"Property {j} of thing {i} ({s})" for j in range(sentences)]
                                for i in range(classes)}))
    return path


def huge_class_list(folder: Path) -> dict:
    """A 1 GB classes.txt (sparse after its first megabyte of "a\\n" lines) read as the Evaluate tab does."""
    from prolab.data.readers import read_classes

    path = folder / "classes.txt"
    with open(path, "wb") as fh:
        fh.write(b"a\n" * 2 ** 19)
        fh.truncate(2 ** 30)
    row = measured(lambda: read_classes(path))
    path.unlink()
    return {"file_mb": 1024, **row}


def embedding_cache(folder: Path, sentences: int = 100_000, cap_mb: float = 200.0) -> dict:
    """``sentences`` new entries (synthetic vectors, 1,000 at a time) into a cache capped at ``cap_mb``."""
    from prolab.encoder import EmbeddingCache

    cache = EmbeddingCache(folder / "cache", max_bytes=int(cap_mb * 2 ** 20))
    rng = np.random.default_rng(0)
    t, largest = time.perf_counter(), 0
    for b in range(sentences // 1000):
        cache.put_many("bench", {f"sentence {b} {i}": rng.standard_normal(384).astype(np.float32)
                                 for i in range(1000)})
        largest = max(largest, cache.path.stat().st_size)
    return {"sentences": sentences, "cap_mb": cap_mb, "final_mb": round(cache.path.stat().st_size / 2 ** 20, 1),
            "largest_mb": round(largest / 2 ** 20, 1), "seconds": round(time.perf_counter() - t, 1)}


def encode_cost(n: int = 500) -> dict:
    """Seconds to encode ``n`` new sentences with the default encoder (to extrapolate to 100,000)."""
    import torch

    from prolab.encoder import TextEncoder

    torch.set_num_threads(1)
    enc = TextEncoder(cache_dir=False)
    enc.encode(["warm up"])
    s = salt()
    t = time.perf_counter()
    enc.encode([f"A new sentence number {i} ({s})" for i in range(n)])
    seconds = time.perf_counter() - t
    return {"sentences": n, "seconds": round(seconds, 1), "per_100k_minutes": round(seconds / n * 1e5 / 60, 1)}


def app_inputs(folder: Path, model: str | None, only_four: bool = False) -> dict:
    from app.config import AppConfig
    from app.main import build_demo
    from app.services import Services

    demo = build_demo(services=Services(AppConfig(model=model, label_set="camvid_11")))
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    ui = demo.prolab_ui

    def session():
        return fns["segment"].fn(None, ASTRONAUT, "camvid_11", None, 0.0, 0.55)[ui.state]

    # a server in use: the sentence encoder loaded (once per process, ~100 MB) and a first edit made
    warm = session()
    fns["edit_class"].fn(warm, "camvid_11", None, "road", f"A warm-up sentence ({salt()})", 0.0, 0.55)
    warm.release()
    rows = {}
    big = LIMITS.max_sentences // LIMITS.max_classes  # sentences per class of the largest accepted set
    singles = () if only_four else (("custom set 300 x 2", LIMITS.max_classes, 2),
                               (f"custom set 300 x {big}", LIMITS.max_classes, big),
                               ("custom set 301 x 2 (refused)", LIMITS.max_classes + 1, 2))
    for name, classes, per in singles:
        path = label_set_json(folder, classes, per)
        s = session()
        rows[name] = {"bytes": path.stat().st_size,
                      **measured(lambda: fns["load_custom_label_set"].fn(s, "custom", str(path), 0.0, 0.55))}
        s.release()
    if not only_four:
        s = session()
        text = "\n".join(f"Road property {j} ({salt()})" for j in range(LIMITS.max_sentences_per_class))
        rows[f"edit_class {LIMITS.max_sentences_per_class} sentences"] = {"bytes": len(text), **measured(
            lambda: fns["edit_class"].fn(s, "camvid_11", None, "road", text, 0.0, 0.55))}
        rows["edit_class 100,000 sentences (refused)"] = {"bytes": 200_000, **measured(
            lambda: fns["edit_class"].fn(s, "camvid_11", None, "road", "x\n" * 100_000, 0.0, 0.55))}
        n = LIMITS.max_classes - 11
        novel = json.dumps({f"novel {i} {salt()}": [f"A novel thing {i} ({salt()})", "It has parts"] for i in range(n)})
        rows[f"segment_novel {n} categories"] = {"bytes": len(novel), **measured(
            lambda: fns["segment_novel"].fn(s, novel, 0.0, 0.55))}
        s.release()
    # four users at once, each loading its own largest accepted set
    paths = [label_set_json(folder, LIMITS.max_classes, big) for _ in range(4)]
    sessions = [session() for _ in range(4)]

    errors: list[str] = []

    def load(s, p):
        try:
            fns["load_custom_label_set"].fn(s, "custom", str(p), 0.0, 0.55)
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(str(getattr(exc, "message", exc))[:120])

    def four():
        threads = [threading.Thread(target=load, args=(s, p)) for s, p in zip(sessions, paths)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("; ".join(errors))

    rows[f"four users at once, 300 x {big} each"] = {"bytes": sum(p.stat().st_size for p in paths), **measured(four)}
    held = sum(s.nbytes for s in sessions) / 2 ** 20
    rows[f"four users at once, 300 x {big} each"]["sessions_hold_mb"] = round(held, 1)
    rows[f"four users at once, 300 x {big} each"]["session_memory_budget_mb"] = demo.prolab_services.config.session_memory_mb
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--only-four", action="store_true", help="only the four users at once (the app's part)")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="prolab-bench-limits-"))
    command = "python -m bench.input_limits " + " ".join(sys.argv[1:] if argv is None else argv)
    result: dict = {"command": command.strip(), "limits": vars(LIMITS)}
    try:
        if args.only_four:
            result["app"] = app_inputs(folder, args.model, only_four=True)
            print(json.dumps(result["app"]), flush=True)
        else:
            measure_all(result, folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        write_json(args.json, result)
    return result


def measure_all(result: dict, folder: Path, args) -> None:
    """Every measurement but the four users at once alone."""
    result["huge_class_list"] = huge_class_list(folder)
    print(json.dumps(result["huge_class_list"]), flush=True)
    result["embedding_cache"] = embedding_cache(folder)
    print(json.dumps(result["embedding_cache"]), flush=True)
    result["encode_cost"] = encode_cost()
    print(json.dumps(result["encode_cost"]), flush=True)
    if not args.skip_app:
        result["app"] = app_inputs(folder, args.model)
        for k, v in result["app"].items():
            print(k, json.dumps(v), flush=True)


if __name__ == "__main__":
    main()
