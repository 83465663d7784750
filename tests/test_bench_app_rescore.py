"""Smoke test: ``python -m bench.app_rescore`` runs end to end and prints every row (numbers are not checked)."""
import os
import subprocess
import sys
from pathlib import Path

from tests.app_server import save_tiny_model

REPO = Path(__file__).resolve().parents[1]


def test_app_rescore_bench_runs(tmp_path, encoder):
    model = save_tiny_model(tmp_path / "model", encoder)
    env = {**os.environ, "PROLAB_CACHE_DIR": str(encoder.cache.path.parent), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.app_rescore", "--model", str(model), "--label-set",
                          "camvid_11", "--other-label-set", "msrc_23", "--runs", "2"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("new unknown threshold", "add a novel category", "edit 'sky' descriptions",
                "switch label set (camvid_11 <-> msrc_23)"):
        assert row in out.stdout, out.stdout
    assert "embeddings (384, 128, 128)" in out.stdout
