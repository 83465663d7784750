"""Running bench.paper_claims' training runs: each arm trained, stopped and evaluated at every step of its
schedule (:func:`run_job`), the training data decoded once beforehand, the runs spread over processes."""
from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.claims.evaluation import eval_sources, heldout_evaluation, score


def run_job(job: dict) -> dict:
    """Train one arm (stopping at every step of ``job['stops']``) and evaluate it; returns its results."""
    logging.getLogger("prolab").setLevel(logging.ERROR)
    import torch

    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter
    from prolab.train import CHECKPOINT_DIR, load_config, train

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    out = Path(job["config"]["out_dir"])
    if out.exists():
        shutil.rmtree(out)  # a stale checkpoint must not be resumed
    torch.set_num_threads(job["config"].get("threads") or 1)
    sources = eval_sources(job["config"]["data_root"], job["eval_limit"])
    if job.get("heldout"):
        # Its own mapping sends the held-out classes nowhere; MSRC is scored in heldout_evaluation.
        sources.pop("msrc_v2_val")
    result: dict[str, Any] = {"name": job["name"], "part": job["part"], "settings": job["settings"],
                              "curve": [], "final": {}}
    model = None
    train_cpu = 0.0  # CPU seconds in training (the rest of cpu_s is evaluation)
    for i, stop in enumerate(job["stops"]):
        cfg = load_config(None, **job["config"], stop_after=stop, resume=i > 0)
        t_train = time.process_time()
        # Resuming: start from the checkpointed model (weights are reloaded by train anyway), which
        # saves re-running K-Means for a label space that is already known.
        train(cfg, model=PropertySegmenter.from_pretrained(out / CHECKPOINT_DIR) if i > 0 else None)
        train_cpu += time.process_time() - t_train
        model = PropertySegmenter.from_pretrained(out)
        mapping = load_mapping(out)
        point = {"step": stop}
        for key, src in sources.items():
            point[key] = score(model, src, mapping, job["size"], job["eval_limit"])
        result["curve"].append({"step": stop, **{k: v["miou"] for k, v in point.items() if k != "step"}})
        result["final"] = {k: v for k, v in point.items() if k != "step"}
    if model.label_space is not None:
        space = model.label_space
        result["label_space"] = {"k": space.k, "classes": space.num_classes, "sentences": len(space.sentences),
                                 "template": space.template, "encoder": space.encoder_id,
                                 "trained_classes_with_identical_signature": _trained_duplicates(space, mapping)}
    if job.get("eval_train"):
        train_src = eval_sources(job["config"]["data_root"], job["eval_limit"], True)["msrc_v2_train"]
        result["final"]["msrc_v2_train"] = score(model, train_src, load_mapping(out), job["size"], job["eval_limit"])
    if job.get("heldout"):
        t_held = time.process_time()
        result["heldout"] = heldout_evaluation(model, out, job)
        result["heldout_eval_cpu_s"] = round(time.process_time() - t_held, 1)
    summary = json.loads((out / "train_summary.json").read_text())
    result.update(wall_s=round(time.perf_counter() - t_wall, 1), cpu_s=round(time.process_time() - t_cpu, 1),
                  train_cpu_s=round(train_cpu, 1), train_images=summary["images"], threads=summary["threads"])
    return result


def _trained_duplicates(space, mapping: dict) -> int:
    """How many classes the training data uses share their property signature with another such class."""
    used = {t for key in ("msrc_23", "camvid_11") for t in mapping.get(key, {}).values() if t}
    groups = [[c for c in g if c in used] for g in space.duplicate_groups()]
    return sum(len(g) for g in groups if len(g) > 1)


def prepare_data(jobs: list[dict]) -> None:
    """Decode and cache the training images once per label mapping, before parallel workers start
    (two workers writing the same cache file at once would race)."""
    from prolab.train import build_dataset, load_config

    seen = set()
    for job in jobs:
        key = job["config"].get("descriptions_dir")
        if key in seen:
            continue
        seen.add(key)
        build_dataset(load_config(None, **job["config"]))


def run_all(jobs: list[dict], n_jobs: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    if n_jobs <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for job in jobs:
                results[job["name"]] = _logged(run_job(job))
        finally:
            torch.set_num_threads(threads)  # in-process runs (tests) must not leave 1 thread behind
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for f in futures:
            r = _logged(f.result())
            results[r["name"]] = r
    return results


def _logged(r: dict) -> dict:
    finals = ", ".join(f"{k} {v['miou'] * 100:.1f}" for k, v in r["final"].items())
    print(f"  [{r['part']}] {r['name']:<24} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU | mIoU {finals}",
          flush=True)
    return r
