"""Benchmarks of ProLab Explorer. Run them from the repository root as modules, e.g.
``python -m bench.speed --smoke``. What they share is in modules that are not benches:
:mod:`bench.common` (paths, machine, timing, JSON), :mod:`bench.app_server` (the app as a server
process), :mod:`bench.cached_scoring` (label spaces re-scored on forward passes run once) and
:mod:`bench.claims` (the jobs of ``bench.paper_claims``)."""
import os

# Like the CLI and the app: default paths never download (set HF_HUB_OFFLINE=0 to allow it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Before any bench imports torch: prolab sets OpenMP's wait policy then, which keeps every --threads a
# bench asks for (with torch loaded first, a model load falls back to one thread).
import prolab  # noqa: E402,F401
