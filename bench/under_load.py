"""Speed on a busy machine: each user-facing step's time with N CPU-bound background programs / idle.

    python -m bench.under_load [--background 2] [--repeat 3] [--limit 20] [--policy prolab]
                               [--json docs/results/under_load.json]

Steps (the shipped default model; MSRC-v2 val from ``$PROLAB_DATA`` / ``--data-root``):

- ``evaluate``: ``prolab evaluate --dataset msrc_v2 --limit 20`` as a new process, start to exit (what a
  user waits for at the command line: start-up, model load, 20 forward passes, scoring).
- ``re-evaluate``: :class:`prolab.eval_cache.EvalCache` of the same 20 images re-scored after one class's
  sentences are edited (a new sentence each time: encoded, assigned, label space re-derived), as the
  app's Evaluate tab does.
- ``re-segment``: :class:`prolab.edit_session.EditSession` on the 512 x 512 example: one class edited (a new
  sentence) and the image re-scored, one ``apply`` as the app's handlers make it.
- ``webcam frame``: one 427 x 320 frame through :class:`prolab.frames.FrameSegmenter` at the live tab's
  320 px short side (torch backend).

The last three run in one worker process, set up once (as a notebook or the app would). Idle and loaded
measurements alternate ``--repeat`` times; each loaded one starts ``--background`` Python busy loops (each
ends by itself after ``--load-seconds`` and is killed when its measurement ends), waits a second for the
scheduler to share the cores, then times every step. A first idle measurement warms caches and is not counted. Reported: medians, and loaded / idle (fair share
with 2 busy programs on 2 cores: 2x; goal <= 2.5x). "Idle" means without our busy loops: on a shared
machine other programs run too, so the load average before each measurement is recorded.

``--policy`` picks the thread settings of the measured processes: ``prolab`` (the library's,
:mod:`prolab.threads`), ``off`` (torch's defaults, as ``prolab`` ran before the policy: OpenMP spins),
``off-1`` (torch's defaults with one thread) or ``passive-1`` (the policy with one thread).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_RATIO = 2.5
STEPS = ("evaluate", "re-evaluate", "re-segment", "webcam frame")

#: Environment of the measured processes for each ``--policy`` (None: remove the variable).
POLICIES = {
    "prolab": {"PROLAB_THREAD_POLICY": None, "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
    "off": {"PROLAB_THREAD_POLICY": "off", "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
    "off-1": {"PROLAB_THREAD_POLICY": "off", "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "1"},
    "passive-1": {"PROLAB_THREAD_POLICY": None, "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "1"},
}

# A CPU-bound background program that ends by itself after argv[1] seconds.
BUSY = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def policy_env(policy: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    for key, value in POLICIES[policy].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Background:
    """``n`` busy loops on this machine, bounded by ``seconds`` and killed on exit."""

    def __init__(self, n: int, seconds: float):
        self.n, self.seconds, self.procs = n, seconds, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY, str(self.seconds)]) for _ in range(self.n)]
        time.sleep(1.0)  # the scheduler shares the cores from here on
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


# ---------------------------------------------------------------------------------------------- worker
def worker(args) -> None:
    """Set up once, then for each line on stdin time every in-process step ``args.inner`` times and
    print one JSON line of wall seconds."""
    from prolab import labelsets
    from prolab.assets import DEFAULT_MODEL_DIR, EXAMPLES_DIR
    from prolab.data.readers import data_root, read_shared
    from prolab.edit_session import EditClass, EditSession
    from prolab.encoder import TextEncoder
    from prolab.eval_cache import EvalCache
    from prolab.evaluate import load_mapping
    from prolab.frames import FrameSegmenter
    from prolab.images import load_image
    from prolab.live import LIVE_SHORT_SIDE, shrink
    from prolab.model import PropertySegmenter
    from prolab.threads import apply_thread_policy

    policy = apply_thread_policy()
    model = PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR)
    encoder = TextEncoder()
    source = read_shared(data_root(args.data_root), "msrc_v2", "val")
    source = dataclasses.replace(source, samples=source.samples[:args.limit])
    cache = EvalCache.build(model, source, mapping=load_mapping(DEFAULT_MODEL_DIR))
    msrc = labelsets.load("msrc_23").descriptions
    ade = labelsets.load("ade20k_150")
    session = EditSession(model, encoder, ade.key, label_sets={ade.key: ade}.__getitem__, inference_size=512)
    session.segment(EXAMPLES_DIR / "astronaut.png")
    frames = FrameSegmenter(model, model.label_space, options={"size": LIVE_SHORT_SIDE})
    frame = shrink(load_image(EXAMPLES_DIR / "astronaut.png")[:384], LIVE_SHORT_SIDE)  # 4:3, as the live tab
    frames(frame)
    edit_class = ade.class_names[0]
    counter = iter(range(10 ** 9))

    def re_evaluate():
        n = next(counter)
        edited = msrc.with_category("cat", msrc[msrc.find("cat")][:4] + [f"Has soft fur, try {os.getpid()} {n}"])
        cache.rescore(model.label_space.edited(edited, encoder))

    def re_segment():
        n = next(counter)
        session.apply(EditClass(edit_class, ade.descriptions[edit_class] + [f"Flat upright surface {os.getpid()} {n}"]))

    steps = {"re-evaluate": re_evaluate, "re-segment": re_segment, "webcam frame": lambda: frames(frame)}
    print(json.dumps({"ready": policy.describe()}), flush=True)
    for _ in sys.stdin:
        out = {}
        for name, fn in steps.items():
            times = []
            for _ in range(args.inner):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            out[name] = statistics.median(times)
        print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------- driver
def time_evaluate(args, env) -> float:
    cmd = [sys.executable, "-m", "prolab", "evaluate", "--model", "assets/models/default", "--dataset", "msrc_v2",
           "--limit", str(args.limit)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"prolab evaluate failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t


def measure(args, env, worker_proc) -> dict:
    times = {"load_average": os.getloadavg()[0], "evaluate": time_evaluate(args, env)}
    worker_proc.stdin.write("go\n")
    worker_proc.stdin.flush()
    times.update(json.loads(worker_proc.stdout.readline()))
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--background", type=int, default=2, help="CPU-bound background programs (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="idle/loaded measurement pairs (default 3)")
    ap.add_argument("--inner", type=int, default=5, help="timings of each in-process step per measurement")
    ap.add_argument("--limit", type=int, default=20, help="MSRC-v2 val images (default 20)")
    ap.add_argument("--load-seconds", type=float, default=600.0, help="a busy loop's longest life")
    ap.add_argument("--policy", choices=tuple(POLICIES), default="prolab")
    ap.add_argument("--data-root")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    env = policy_env(args.policy)
    cmd = [sys.executable, "-m", "bench.under_load", "--worker", "--inner", str(args.inner), "--limit", str(args.limit)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    runs = {"idle": [], "loaded": []}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = os.getloadavg()
    worker_proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(worker_proc.stdout.readline())["ready"]
        measure(args, env, worker_proc)  # warm-up, not counted: first calls fill caches and allocators
        for _ in range(args.repeat):
            runs["idle"].append(measure(args, env, worker_proc))
            t = time.monotonic()
            with Background(args.background, args.load_seconds):
                runs["loaded"].append(measure(args, env, worker_proc))
            if time.monotonic() - t > args.load_seconds:  # the busy loops ended first: partly idle
                print(f"warning: a loaded measurement outlasted --load-seconds {args.load_seconds:.0f}; "
                      "its times are partly idle", flush=True)
                runs["loaded"][-1]["outlasted_load"] = True
    finally:
        worker_proc.kill()
        worker_proc.wait()
    rows = {}
    for step in STEPS:
        idle = statistics.median(r[step] for r in runs["idle"])
        loaded = statistics.median(r[step] for r in runs["loaded"])
        rows[step] = {"idle_s": idle, "loaded_s": loaded, "ratio": loaded / idle, "ok": loaded / idle <= GOAL_RATIO}
    result = {"started": started, "policy": args.policy, "threads": ready, "cpus": os.cpu_count(),
              "background": args.background, "repeat": args.repeat, "inner": args.inner, "images": args.limit,
              "load_average_start": load_start, "load_average_end": os.getloadavg(), "steps": rows, "runs": runs}
    print(f"{started}; policy {args.policy}: {ready}; {os.cpu_count()} CPUs; {args.background} busy "
          f"background programs; medians of {args.repeat} (in-process steps: medians of {args.inner} each)")
    print("load average (1/5/15 min) at the start " + ", ".join(f"{x:.1f}" for x in load_start)
          + "; before each idle measurement " + ", ".join(f"{r['load_average']:.1f}" for r in runs["idle"])
          + "; at the end " + ", ".join(f"{x:.1f}" for x in result["load_average_end"]))
    print(f"{'step':<34}{'idle':>10}{'loaded':>10}{'ratio':>8}")
    for step, r in rows.items():
        name = f"evaluate ({args.limit} images, CLI)" if step == "evaluate" else step
        print(f"{name:<34}{r['idle_s']:9.3f}s{r['loaded_s']:9.3f}s{r['ratio']:7.2f}x  "
              f"{'ok' if r['ok'] else 'over'} (goal <= {GOAL_RATIO}x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
