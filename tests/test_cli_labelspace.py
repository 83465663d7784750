import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_labelspace import SMALL

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cache=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache:
        env["PROLAB_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "prolab", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "d.json").write_text(json.dumps(SMALL))
    res = run_cli("labelspace", "build", "--descriptions", tmp / "d.json", "--k", 10, "--seed", 0,
                  "--out", tmp / "ls", cache=tmp / "cache")
    assert res.returncode == 0, res.stderr
    return tmp, res


def test_build_and_show(built):
    tmp, res = built
    assert "Built 10 properties from 30 sentences of 6 classes" in res.stdout
    show = run_cli("labelspace", "show", tmp / "ls")
    assert show.returncode == 0
    assert "K=10" in show.stdout and show.stdout.count("size=") == 10
    data = json.loads(run_cli("labelspace", "show", tmp / "ls", "--json").stdout)
    assert data["k"] == 10 and data["classes"] == list(SMALL)
    assert sum(p["size"] for p in data["properties"]) == 30


def test_project(built):
    tmp, _ = built
    (tmp / "new.json").write_text(json.dumps({"zebra": ["Covered in striped fur", "Has four legs"]}))
    res = run_cli("labelspace", "project", tmp / "ls", "--descriptions", tmp / "new.json",
                  "--cache-dir", tmp / "cache")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("zebra:") and "soft" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["labelspace", "build", "--descriptions", "/nonexistent.json", "--out", "/tmp/x"], "not found"),
    (["labelspace", "show", "/nonexistent-dir"], "not a label space"),
])
def test_user_errors_are_one_line_without_traceback(args, message):
    res = run_cli(*args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_k_and_bad_json(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(SMALL))
    res = run_cli("labelspace", "build", "--descriptions", tmp_path / "d.json", "--k", 1,
                  "--out", tmp_path / "o", cache=tmp_path / "c")
    assert res.returncode == 2 and "K must be" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "e.json").write_text(json.dumps({"wall": []}))
    res = run_cli("labelspace", "build", "--descriptions", tmp_path / "e.json", "--out", tmp_path / "o")
    assert res.returncode == 2 and "no sentences" in res.stderr


def test_build_with_unknown_encoder_fails_cleanly(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(SMALL))
    res = run_cli("labelspace", "build", "--descriptions", tmp_path / "d.json", "--k", 4, "--out",
                  tmp_path / "o", "--encoder", tmp_path / "missing-encoder", cache=tmp_path / "c")
    assert res.returncode == 2 and "Cannot load sentence encoder" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()


def test_labelspace_build_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "bench.labelspace_build", "--descriptions",
                          str(REPO / "assets/descriptions/camvid_11.json"), "--k", "8", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["k"] == 8 and data["classes"] == 11 and data["sentences"] > 88
    assert data["rebuild_sentences_encoded"] == 1  # only the edited sentence is encoded again
    assert data["cold_sentences_encoded"] >= data["sentences"] - 20
    assert "cold_build_s" in res.stdout


def test_bad_seed_is_one_line_and_outputs_follow_the_umask(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(SMALL))
    res = run_cli("labelspace", "build", "--descriptions", tmp_path / "d.json", "--k", 4, "--seed", -1,
                  "--out", tmp_path / "o", cache=tmp_path / "c")
    assert res.returncode == 2 and "seed" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    res = run_cli("labelspace", "build", "--descriptions", tmp_path / "d.json", "--k", 4, "--seed", 3,
                  "--out", tmp_path / "o", cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("labelspace.json", "labelspace.safetensors"):
        assert (tmp_path / "o" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
