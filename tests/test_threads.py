"""The one thread policy (prolab.threads): OpenMP waits passively in every entry point (the CLI, the app,
``import prolab`` in a notebook), one inter-op thread, one intra-op thread when torch was imported first
with spinning waits; ``PROLAB_THREAD_POLICY=off`` leaves everything alone. Each case runs in a fresh
interpreter: OpenMP reads its wait policy once per process. Speed: ``python -m bench.under_load``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

REPORT = ("import os, torch; from prolab.threads import apply_thread_policy; p = apply_thread_policy(); "
          "print(os.environ.get('OMP_WAIT_POLICY'), p.wait_policy, torch.get_num_threads(), "
          "torch.get_num_interop_threads(), p.applied)")


def run(code: str, **env) -> list[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "PROLAB_THREAD_POLICY")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**base, "PYTHONPATH": str(REPO), **env}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.split()


def test_import_prolab_sets_the_passive_wait_policy_before_torch():
    assert run("import prolab, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)") == \
        ["PASSIVE", "False"]
    env, seen, threads, interop, applied = run("import prolab; " + REPORT)
    assert (env, seen, interop, applied) == ("PASSIVE", "PASSIVE", "1", "True")
    assert int(threads) == min(os.cpu_count() or 1, int(threads))  # torch's default, not lowered


def test_a_users_choice_is_kept():
    assert run("import prolab; " + REPORT, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="2")[:3] == \
        ["ACTIVE", "ACTIVE", "2"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: torch uses one thread anyway")
def test_torch_imported_first_spins_so_one_thread():
    env, seen, threads, _, _ = run("import torch, prolab; " + REPORT)
    assert (env, seen, threads) == ("None", "default", "1")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: torch uses one thread anyway")
def test_lowering_a_notebooks_torch_threads_is_said():
    """A notebook that imported torch first loses its intra-op threads at the first model load: that
    changes the user's own torch work too, so it is a warning (shown without any logging set up), not a
    silent log line."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "PROLAB_THREAD_POLICY")}
    res = subprocess.run([sys.executable, "-c", "import torch, prolab; from prolab.threads import "
                          "apply_thread_policy; apply_thread_policy(); print(torch.get_num_threads())"],
                         capture_output=True, text=True, cwd=REPO, env={**base, "PYTHONPATH": str(REPO)}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["1"] and "torch now uses one thread" in res.stderr


def test_policy_off_leaves_torch_alone():
    code = ("import os, torch; d = (torch.get_num_threads(), torch.get_num_interop_threads()); import prolab; "
            "from prolab.threads import apply_thread_policy; p = apply_thread_policy(); "
            "print(d == (torch.get_num_threads(), torch.get_num_interop_threads()), p.applied, "
            "os.environ.get('OMP_WAIT_POLICY'))")
    assert run(code, PROLAB_THREAD_POLICY="off") == ["True", "False", "None"]
    assert run("import prolab, os; print(os.environ.get('OMP_WAIT_POLICY'))", PROLAB_THREAD_POLICY="off") == ["None"]


def test_the_cli_the_app_and_a_model_load_apply_it():
    cli = subprocess.run([sys.executable, "-m", "prolab", "-v", "labelspace", "show",
                          "assets/models/default/labelspace", "--json"], capture_output=True, text=True, cwd=REPO,
                         env={k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
                         timeout=300)
    assert "threads: OMP_WAIT_POLICY PASSIVE" in cli.stderr
    assert run("import app.main, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)") == \
        ["PASSIVE", "False"]
    assert "OMP_WAIT_POLICY" not in (REPO / "app.py").read_text()  # one policy, in the library
    assert run("from prolab import threads; from prolab.model import PropertySegmenter; "
               "from prolab.assets import DEFAULT_MODEL_DIR; a = threads.applied_once(); "
               "PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR); import torch; "
               "print(a, threads.applied_once(), torch.get_num_interop_threads())") == ["False", "True", "1"]
