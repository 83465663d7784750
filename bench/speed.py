"""Median timings on this machine: label-space build, forward pass, re-scoring, app cold start, memory.

    python -m bench.speed [--model DIR] [--runs 5] [--threads N] [--json docs/results/speed.json]
    python -m bench.speed --smoke          # seconds, small settings (tests)

- Label-space build: the ADE20K-150 descriptions at K=256, cold (empty embedding cache and a fresh
  encoder: model load + encoding + K-Means) and warm (every sentence cached: K-Means only).
- Full forward pass (:func:`prolab.inference.embed_image`, whole image, pre-processing included) of
  square images at 256, 512 and 1024 px with the default model (``assets/models/default``), else a
  model of the default config's architecture with an untrained head (speed does not depend on the
  weights; the output says which was used).
- Re-scoring the cached 512 px output against a label space the model was not trained with
  (:func:`prolab.inference.score_embeddings` + :func:`prolab.inference.segment` to a 512 x 512 label
  map): new centres (the ADE-150 space), and classes added with the centres kept (activations reused).
- App cold start: ``python app.py --port <free>`` in a subprocess until its HTTP endpoint answers.
- Peak memory: the process's peak resident set size after each stage (``resource.getrusage``), the
  app subprocess's peak, and the peak of Python/numpy allocations during a label-space build
  (``tracemalloc``; torch tensors are not tracked by it).
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.app_server import NotServing, free_port, stop_server, wait_for_http
from bench.common import ROOT, machine, timed, write_json
from prolab.assets import DEFAULT_MODEL_DIR as DEFAULT_MODEL
from prolab.assets import DESCRIPTIONS_DIR, EXAMPLES_DIR

DEFAULT_CONFIG = ROOT / "configs" / "default_property.yaml"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


# ---------------------------------------------------------------------------- label space
def bench_labelspace(desc_path: Path, k: int, cold_runs: int, warm_runs: int) -> tuple[dict, Any, Path]:
    from prolab.descriptions import load_descriptions
    from prolab.encoder import TextEncoder
    from prolab.labelspace import LabelSpace

    ds = load_descriptions(desc_path)
    loads = []

    def cold(_):
        with tempfile.TemporaryDirectory() as cache:
            enc = TextEncoder(cache_dir=cache)
            t = time.perf_counter()
            enc.model  # noqa: B018 - the model load is part of a cold build; timed separately too
            loads.append(time.perf_counter() - t)
            LabelSpace.build(ds, enc, k=k, seed=0)

    cold_t = timed(cold, cold_runs, setup=lambda: None).summary()
    warm_cache = Path(tempfile.mkdtemp(prefix="prolab-speed-"))
    LabelSpace.build(ds, TextEncoder(cache_dir=warm_cache), k=k, seed=0)  # fill the cache
    space_box = {}

    def warm(_):
        enc = TextEncoder(cache_dir=warm_cache)  # fresh object: only the on-disk cache is warm
        space_box["space"] = LabelSpace.build(ds, enc, k=k, seed=0)
        space_box["encoded"] = enc.num_encoded

    warm_t = timed(warm, warm_runs, setup=lambda: None).summary()
    tracemalloc.start()
    LabelSpace.build(ds, TextEncoder(cache_dir=warm_cache), k=k, seed=0)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    space = space_box["space"]
    out = {"descriptions": str(desc_path.relative_to(ROOT) if desc_path.is_relative_to(ROOT) else desc_path),
           "classes": space.num_classes, "sentences": len(space.sentences), "k": space.k,
           "encoder": space.encoder_id, "template": space.template,
           "cold": {**cold_t, "encoder_load_median_s": statistics.median(loads)},
           "warm": {**warm_t, "sentences_encoded": space_box["encoded"]},
           "warm_build_tracemalloc_peak_mb": py_peak / 2 ** 20}
    return out, space, warm_cache


# ---------------------------------------------------------------------------- model
def load_model(path: Path | None):
    """The default model if present, else the default config's architecture with an untrained head."""
    from prolab.model import PropertySegmenter, SegmenterConfig

    path = path or (DEFAULT_MODEL if (DEFAULT_MODEL / "model.safetensors").is_file() else None)
    if path is not None:
        return PropertySegmenter.from_pretrained(path), str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    from prolab.train import load_config

    opts = dict(load_config(DEFAULT_CONFIG).model) if DEFAULT_CONFIG.is_file() else {}
    model = PropertySegmenter(SegmenterConfig(supervision="property", embed_dim=384, **opts)).eval()
    return model, (f"untrained {model.config.backbone} ({DEFAULT_CONFIG.name} model options {opts}; "
                   "no default model found)")


def bench_forward(model, sizes: list[int], runs: int) -> tuple[dict, dict]:
    from prolab.inference import embed_image

    rng = np.random.default_rng(0)
    out, cached = {}, {}
    for s in sizes:
        image = (rng.random((s, s, 3)) * 255).astype(np.uint8)
        cached[s] = embed_image(model, image, size=s)  # warm-up (allocator, kernels)
        n = max(2, runs // 2) if s >= 1024 else runs
        out[str(s)] = {**timed(lambda: embed_image(model, image, size=s), n).summary(),
                       "output_shape": list(cached[s].shape), "peak_rss_mb_after": peak_rss_mb()}
    return out, cached


def bench_rescore(model, cached, space, encoder_cache: Path, runs: int) -> dict:
    """New centres (nothing reusable) and added classes with the centres kept (activations reused).

    ``cached`` is what the app keeps per image: the :class:`~prolab.inference.LowRankFactors` of
    :func:`~prolab.inference.embed_image_factored` (or the output map when the model has none)."""
    from prolab.encoder import TextEncoder
    from prolab.inference import embedding_activations, inverse_norms, rescore_activations, score_embeddings, segment

    t = model.config.temperature
    size = (cached.shape[1] * 4, cached.shape[2] * 4)
    n = runs * 3

    def full(emb, ls):
        return segment(score_embeddings(emb, ls, t)[1], size)

    full(cached, space)  # warm-up; nothing is remembered between calls
    new_centres = timed(lambda: full(cached, space), n).summary()
    enc = TextEncoder(space.encoder_id, template=space.template, cache_dir=encoder_cache)
    added = space.extended({"teapot": ["A small pot with a spout and a handle", "Made of porcelain or metal",
                                       "Used to brew and pour tea"]}, enc)
    # as the app's workbench does: the activations (and their norms) of these centres are kept
    act = embedding_activations(cached, space, t)
    inv = inverse_norms(act)
    added_t = timed(lambda: segment(rescore_activations(act, added, inv), size), n).summary()
    labels = full(cached, space)
    return {"embeddings_shape": list(cached.shape), "label_map": list(size),
            "new_label_space": {**new_centres, "classes": space.num_classes, "k": space.k,
                                "classes_in_map": int(len(np.unique(labels[labels >= 0])))},
            "classes_added_same_centres": {**added_t, "classes": added.num_classes, "k": added.k}}


# ---------------------------------------------------------------------------- app
def _peak_rss_of(pid: int) -> float | None:
    """Peak RSS (MB) of a running process from /proc (Linux); None elsewhere.

    Not ``RUSAGE_CHILDREN``: a forked child's high-water mark starts at the parent's size."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def app_cold_start(runs: int, timeout: float) -> dict:
    """Seconds from launching ``python app.py`` until ``GET /`` answers 200 (median of ``runs``)."""
    if not (ROOT / "app.py").is_file():
        return {"skipped": "app.py not found"}
    times, peaks, log_tail = [], [], ""
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    for _ in range(runs):
        port = free_port()
        with tempfile.TemporaryFile("w+") as logf:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-browser"], cwd=ROOT,
                                    env=env, stdout=logf, stderr=subprocess.STDOUT)
            ready = why = None
            try:
                wait_for_http(f"http://127.0.0.1:{port}/", proc, timeout, request_timeout=2)
                ready = time.perf_counter() - t0
                peaks.append(_peak_rss_of(proc.pid))
            except NotServing as exc:
                why = str(exc)
            finally:
                stop_server(proc, timeout=10)
            logf.seek(0)
            log_tail = logf.read()[-600:]
        if ready is None:
            return {"skipped": f"app.py did not start ({why})", "log_tail": log_tail}
        times.append(ready)
    peaks = [p for p in peaks if p is not None]
    out = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs,
           "note": "until GET / answers 200; the app loads torch and the model in a background thread "
                   "after that, so the peak RSS covers only the start-up"}
    if peaks:
        out["peak_rss_mb"] = max(peaks)
    return out


# ---------------------------------------------------------------------------- report
def _ms(d: dict) -> list[str]:
    return [f"{d['median_s'] * 1000:.1f}", f"{d['median_cpu_s'] * 1000:.1f}", str(d["runs"])]


def markdown(r: dict) -> str:
    """The results as a Markdown table (printed, and saved next to the JSON for the docs)."""
    ls, m, app = r["labelspace"], r["memory"], r["app"]
    head = (f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
            f"({r['machine']['torch_threads']} threads), Python {r['machine']['python']}; {r['date_utc']}.\n"
            f"Load average (1/5/15 min) at the start {', '.join(f'{x:.1f}' for x in r['load_average_start'])}, at the "
            f"end {', '.join(f'{x:.1f}' for x in r['load_average_end'])}.\n"
            f"Model: {r['model']['source']} ({r['model']['parameters']:,} parameters; {r['model']['label_space']}).\n")
    rows = [[f"label-space build, cold ({ls['classes']} classes, {ls['sentences']} sentences, K={ls['k']}: "
             "encoder load + encode + K-Means)", *_ms(ls["cold"])],
            ["  of which: sentence-encoder load", f"{ls['cold']['encoder_load_median_s'] * 1000:.1f}", "", ""],
            [f"label-space build, warm cache ({ls['warm']['sentences_encoded']} sentences encoded; K-Means)",
             *_ms(ls["warm"])]]
    for s, d in r["forward"].items():
        rows.append([f"forward {s} x {s} px (whole image, pre-processing included) -> "
                     f"{' x '.join(map(str, d['output_shape']))}", *_ms(d)])
    rs = r.get("rescore")
    if rs:
        e, lm = " x ".join(map(str, rs["embeddings_shape"])), " x ".join(map(str, rs["label_map"]))
        n = rs["new_label_space"]
        rows.append([f"re-score cached {e} embeddings against a new label space ({n['classes']} classes, "
                     f"K={n['k']}, new centres) -> {lm} label map", *_ms(n)])
        a = rs["classes_added_same_centres"]
        rows.append([f"re-score after adding a class ({a['classes']} classes, centres kept) -> {lm} label map",
                     *_ms(a)])
    if "median_s" in app:
        rows.append(["app cold start (`python app.py` until HTTP 200)", f"{app['median_s'] * 1000:.0f}", "",
                     str(app["runs"])])
    else:
        rows.append([f"app cold start: skipped ({app['skipped']})", "", "", ""])
    table = ["| stage | median wall (ms) | median CPU (ms) | runs |", "|---|---|---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    mem = (f"\nPeak resident memory of the benchmark process: {m['after_labelspace_mb']:.0f} MB after the "
           f"label-space builds, {m['after_forward_mb']:.0f} MB after the forward passes, {m['end_mb']:.0f} MB at "
           f"the end; Python/numpy allocations of one warm label-space build peak at "
           f"{ls['warm_build_tracemalloc_peak_mb']:.1f} MB (tracemalloc)")
    if "peak_rss_mb" in app:
        mem += f"; the app process's peak RSS when it first answers is {app['peak_rss_mb']:.0f} MB"
    return head + "\n" + "\n".join(table) + "\n" + mem + ".\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model directory (default assets/models/default)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--descriptions", type=Path, default=DESCRIPTIONS_DIR / "ade20k_150.json")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--app-runs", type=int, default=3)
    ap.add_argument("--app-timeout", type=float, default=180.0)
    ap.add_argument("--no-app", action="store_true", help="skip the app cold start")
    ap.add_argument("--smoke", action="store_true", help="tiny settings (MSRC-23 descriptions, K=8, 64/128 px)")
    ap.add_argument("--json", type=Path, default=None, help="results JSON (default docs/results/speed.json)")
    args = ap.parse_args(argv)
    # Small K gives expected "identical signature" warnings; they are not what this script measures.
    logging.getLogger("prolab").setLevel(logging.ERROR)
    if args.smoke:
        args.descriptions = DESCRIPTIONS_DIR / "msrc_23.json"
        args.k, args.runs, args.cold_runs, args.sizes, args.no_app = 8, 1, 1, [64, 128], True
    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = args.json or ROOT / "docs" / "results" / ("speed_smoke.json" if args.smoke else "speed.json")
    t0 = time.perf_counter()
    result: dict[str, Any] = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "machine": machine(), "smoke": args.smoke, "load_average_start": list(os.getloadavg())}
    ls, space, cache = bench_labelspace(args.descriptions, args.k, args.cold_runs, args.runs)
    result["labelspace"] = ls
    mem = {"after_labelspace_mb": peak_rss_mb()}
    model, source = load_model(args.model)
    own = model.label_space
    result["model"] = {"source": source, "backbone": model.config.backbone, "supervision": model.config.supervision,
                       "parameters": model.num_parameters(), "input_size": model.config.input_size,
                       "label_space": (f"{own.num_classes} classes, {len(own.sentences)} sentences, K={own.k}"
                                       if own is not None else "no label space")}
    if own is not None:
        result["model"].update(classes=own.num_classes, sentences=len(own.sentences), properties=own.k)
    result["forward"], cached = bench_forward(model, args.sizes, args.runs)
    mem["after_forward_mb"] = peak_rss_mb()
    if model.config.supervision == "property" and space.dim == model.config.embed_dim:
        pick = 512 if 512 in cached else max(cached)
        from prolab.images import load_image
        from prolab.inference import embed_image_factored

        # A real photo (not noise) so that the label map has realistic class regions; the head's
        # low-rank factors are scored, as in the app.
        example = load_image(EXAMPLES_DIR / "astronaut.png")
        emb, factors = embed_image_factored(model, example, size=pick)
        result["rescore"] = bench_rescore(model, factors if factors is not None else emb, space, cache, args.runs)
    else:
        result["rescore"] = None
    mem["end_mb"] = peak_rss_mb()
    result["memory"] = mem
    result["app"] = {"skipped": "--no-app" + (" (--smoke)" if args.smoke else "")} if args.no_app else \
        app_cold_start(args.app_runs, args.app_timeout)
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    result["load_average_end"] = list(os.getloadavg())
    md = markdown(result)
    print(md)
    write_json(out_path, result)
    out_path.with_suffix(".md").write_text(md)
    print(f"\nresults: {out_path}")
    return result


if __name__ == "__main__":
    main()
