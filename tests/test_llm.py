"""The LLM description generator, against a real local chat-completions server (no patching)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

try:  # tests/ may or may not be a package, depending on the checkout
    from tests.fake_llm_server import (FakeLLMServer, Reply, completion, default_sentences, error,
                                       json_list)
except ImportError:
    from fake_llm_server import FakeLLMServer, Reply, completion, default_sentences, error, json_list
from prolab.descriptions import DescriptionSet, load_descriptions, save_descriptions
from prolab.errors import ProLabError
from prolab.llm import (PROMPT_VERSION, DescriptionGenerator, LLMCache, LLMConfig,
                        build_messages, generate_descriptions)
from prolab.llm_parse import parse_sentences

REPO = Path(__file__).resolve().parents[1]
ZEBRA = ["A horse-like wild animal", "Four long legs and an upright mane",
         "Covered in short fur", "Black and white stripes all over",
         "Found on open grassland in herds"]


@pytest.fixture
def server():
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_llm_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PROLAB_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)


def make_config(server, tmp_path, **kw) -> LLMConfig:
    opts = dict(model="fake-model", base_url=server.url, api_key="sk-test", timeout=5.0,
                retries=2, backoff_base=0.01, backoff_max=0.05, cache_dir=tmp_path / "cache")
    opts.update(kw)
    return LLMConfig(**opts)


class Sleeps(list):
    """A sleep function that records the requested waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    json.dumps(ZEBRA),
    "```json\n" + json.dumps(ZEBRA, indent=2) + "\n```",
    "Here are the descriptions:\n" + json.dumps(ZEBRA),
    json.dumps({"zebra": ZEBRA}),
    "\n".join(f"- {s}" for s in ZEBRA),
    "Zebra:\n" + "\n".join(f"* {s}." for s in ZEBRA),
    "\n".join(f"{i}. {s}" for i, s in enumerate(ZEBRA, 1)),
    "Sure! Descriptions of a zebra:\n\n" + "\n".join(f"{i}) {s}" for i, s in enumerate(ZEBRA, 1)),
    "\n".join(ZEBRA),
])
def test_parse_accepts_json_fences_bullets_and_numbered_lists(answer):
    assert parse_sentences(answer) == ZEBRA


def test_parse_drops_empty_duplicate_and_quoted_noise():
    answer = json.dumps(["  Covered   in short fur ", "", "covered in short fur.", '"Has a mane"',
                         "   ", "Has a mane"])
    assert parse_sentences(answer) == ["Covered in short fur", "Has a mane"]


@pytest.mark.parametrize("answer", ["", "   ", "I cannot help with that.", "[1, 2, 3]",
                                    "{\"a\": 1}", "x" * 500])
def test_parse_garbage_gives_few_sentences(answer):
    assert len(parse_sentences(answer)) < 3


def test_prompt_is_structured_few_shot_with_the_category_last():
    msgs = build_messages("fire hydrant", context="street scenes")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    system = msgs[0]["content"]
    for part in ("general description", "shape", "material", "colours", "parts", "context",
                 "JSON list"):
        assert part in system
    example = json.loads(msgs[2]["content"])
    assert 8 <= len(example) <= 15
    assert msgs[-1]["content"] == "Category: fire hydrant\nContext: street scenes"


# -- configuration -------------------------------------------------------------------------------

def test_config_from_env_and_flags(monkeypatch):
    assert not LLMConfig.from_env().is_configured
    assert "OPENAI_API_KEY" in LLMConfig.from_env().how_to_configure
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    monkeypatch.setenv("PROLAB_LLM_MODEL", "env-model")
    cfg = LLMConfig.from_env()
    assert (cfg.api_key, cfg.base_url, cfg.model) == ("sk-env", "http://env:1/v1", "env-model")
    assert "sk-env" not in repr(cfg)
    cfg = LLMConfig.from_env(model="m", base_url="http://flag:2/v1", api_key="sk-flag")
    assert (cfg.api_key, cfg.base_url, cfg.model) == ("sk-flag", "http://flag:2/v1", "m")
    # a local server needs no key
    monkeypatch.delenv("OPENAI_API_KEY")
    assert LLMConfig.from_env().is_configured
    with pytest.raises(ProLabError, match="Concurrency"):
        LLMConfig(concurrency=0)


def test_unconfigured_generation_says_what_to_set(tmp_path):
    with pytest.raises(ProLabError, match="OPENAI_API_KEY.*--api-key"):
        generate_descriptions(["zebra"], LLMConfig.from_env(cache_dir=tmp_path))


# -- requests ------------------------------------------------------------------------------------

def test_success_json_and_bullet_answers(server, tmp_path):
    server.add_for("zebra", json_list(ZEBRA))
    server.add_for("fire hydrant", completion(
        "Here you go:\n- A short metal post on the pavement\n- Painted red or yellow\n"
        "- Has outlet nozzles on its sides\n- Found beside roads\n- Painted red or yellow"))
    seen = []
    ds = generate_descriptions(["zebra", "fire hydrant", "Zebra"], make_config(server, tmp_path),
                               progress=lambda d, t, n: seen.append((d, t, n)))
    assert isinstance(ds, DescriptionSet)
    assert ds.categories == ["zebra", "fire hydrant"]
    assert ds["zebra"] == ZEBRA
    assert ds["fire hydrant"] == ["A short metal post on the pavement", "Painted red or yellow",
                                  "Has outlet nozzles on its sides", "Found beside roads"]
    assert sorted(server.categories_requested()) == ["fire hydrant", "zebra"]
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "fake-model"
    assert req["body"]["temperature"] == 0
    assert req["authorization"] == "Bearer sk-test"
    assert [d for d, _, _ in seen] == [1, 2] and {t for _, t, _ in seen} == {2}
    assert {n for _, _, n in seen} == {"zebra", "fire hydrant"}


def test_base_url_without_key_works_for_local_servers(server, tmp_path):
    ds = generate_descriptions(["zebra"], make_config(server, tmp_path, api_key=None))
    assert ds["zebra"] == default_sentences("zebra")
    assert server.requests[0]["authorization"].startswith("Bearer ")


def test_rate_limit_then_success_backs_off(server, tmp_path):
    server.add(error(429, "slow down"), error(429, "slow down"), json_list(ZEBRA))
    sleeps = Sleeps()
    gen = DescriptionGenerator(make_config(server, tmp_path, backoff_base=0.01, jitter=0.25,
                                           backoff_max=1.0), sleep=sleeps)
    assert gen.generate(["zebra"])["zebra"] == ZEBRA
    assert gen.requests == len(server.requests) == 3
    assert len(sleeps) == 2
    assert 0.01 <= sleeps[0] <= 0.0125 and 0.02 <= sleeps[1] <= 0.025  # exponential + jitter


def test_retry_after_header_is_honoured_up_to_the_cap(server, tmp_path):
    server.add(error(429, "wait", headers={"Retry-After": "0.5"}), json_list(ZEBRA))
    sleeps = Sleeps()
    gen = DescriptionGenerator(make_config(server, tmp_path, backoff_max=0.2), sleep=sleeps)
    gen.generate(["zebra"])
    assert sleeps == [0.2]


def test_server_errors_exhaust_retries(server, tmp_path):
    server.add(*[error(500, "boom")] * 5)
    sleeps = Sleeps()
    gen = DescriptionGenerator(make_config(server, tmp_path, retries=2), sleep=sleeps)
    with pytest.raises(ProLabError, match=r"'zebra'.*500.*after 3 attempt") as exc:
        gen.generate(["zebra"])
    assert "\n" not in str(exc.value)
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_502_then_success(server, tmp_path):
    server.add(error(502, "bad gateway"), json_list(ZEBRA))
    assert generate_descriptions(["zebra"], make_config(server, tmp_path))["zebra"] == ZEBRA
    assert len(server.requests) == 2


def test_timeout_is_retried_then_reported(server, tmp_path):
    slow = Reply(**{**json_list(ZEBRA).__dict__, "delay": 2.0})
    server.add(slow, slow)
    cfg = make_config(server, tmp_path, timeout=0.3, retries=1)
    with pytest.raises(ProLabError, match=r"'zebra'.*no answer within 0.3 s.*2 attempt"):
        generate_descriptions(["zebra"], cfg)
    assert len(server.requests) == 2


def test_timeout_then_success(server, tmp_path):
    server.add(Reply(**{**json_list(ZEBRA).__dict__, "delay": 2.0}), json_list(ZEBRA))
    cfg = make_config(server, tmp_path, timeout=0.3, retries=1)
    assert generate_descriptions(["zebra"], cfg)["zebra"] == ZEBRA


def test_unreachable_server_says_what_to_set(tmp_path):
    with FakeLLMServer() as srv:
        url = srv.url  # a port that is free once the server is closed
    cfg = LLMConfig(base_url=url, api_key="k", retries=1, backoff_base=0.01, cache_dir=tmp_path)
    with pytest.raises(ProLabError, match="cannot connect.*OPENAI_BASE_URL"):
        generate_descriptions(["zebra"], cfg)


@pytest.mark.parametrize("answer", ["I'm sorry, I can't help with that.",
                                    "- Striped\n- Striped\n-   \n- Has hooves", "", None])
def test_malformed_answer_fails_naming_the_category(server, tmp_path, answer):
    server.add(completion(answer))
    with pytest.raises(ProLabError, match="'zebra'"):
        generate_descriptions(["zebra"], make_config(server, tmp_path))
    assert len(server.requests) == 1  # temperature 0: asking again gives the same answer


@pytest.mark.parametrize("reply", [Reply(200, "<html>proxy login</html>"),
                                   Reply(200, {"unexpected": 1})])
def test_answers_that_are_not_chat_completions_fail_cleanly(server, tmp_path, reply):
    server.add(reply)
    with pytest.raises(ProLabError, match="'zebra'.*--base-url"):
        generate_descriptions(["zebra"], make_config(server, tmp_path))


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried_and_stop_the_batch(server, tmp_path, status):
    server.default = lambda cat: error(status, "Incorrect API key provided")
    cfg = make_config(server, tmp_path, concurrency=1, retries=3)
    with pytest.raises(ProLabError, match=f"rejected the API key.*{status}.*OPENAI_API_KEY") as e:
        generate_descriptions(["zebra", "horse", "tree", "car"], cfg)
    assert "\n" not in str(e.value)
    assert len(server.requests) == 1


def test_other_client_errors_are_not_retried(server, tmp_path):
    server.add(error(400, "context length exceeded"))
    with pytest.raises(ProLabError, match="refused.*400.*context length"):
        generate_descriptions(["zebra"], make_config(server, tmp_path))
    assert len(server.requests) == 1


def test_unknown_model_404_names_the_flag(server, tmp_path):
    server.default = lambda cat: error(404, "model 'nope' not found")
    with pytest.raises(ProLabError, match="404.*--model"):
        generate_descriptions(["zebra"], make_config(server, tmp_path, model="nope"))
    assert len(server.requests) == 1


def test_partial_failure_names_failures_and_caches_the_rest(server, tmp_path):
    server.add_for("tree", *[error(503, "overloaded")] * 3)
    cfg = make_config(server, tmp_path, retries=2)
    with pytest.raises(ProLabError, match=r"'tree'.*503"):
        generate_descriptions(["zebra", "tree", "car"], cfg)
    server.requests.clear()
    ds = generate_descriptions(["zebra", "tree", "car"], cfg)
    assert server.categories_requested() == ["tree"]  # the others came from the cache
    assert ds.categories == ["zebra", "tree", "car"]


def test_several_failures_are_listed(server, tmp_path):
    server.add_for("tree", error(500, "x"))
    server.add_for("car", completion("nope"))
    with pytest.raises(ProLabError, match=r"2 of 3 categories failed \((tree, car|car, tree)\)"):
        generate_descriptions(["zebra", "tree", "car"], make_config(server, tmp_path, retries=0))


def test_concurrency_is_bounded(server, tmp_path):
    server.default = lambda cat: Reply(**{**json_list(default_sentences(cat)).__dict__,
                                          "delay": 0.15})
    names = [f"thing {i}" for i in range(8)]
    ds = generate_descriptions(names, make_config(server, tmp_path, concurrency=2))
    assert ds.categories == names  # input order, whatever the completion order
    assert len(server.requests) == 8
    assert 1 <= server.max_in_flight <= 2


# -- cache ---------------------------------------------------------------------------------------

def test_cache_hits_cost_nothing_and_overwrite_regenerates(server, tmp_path):
    cfg = make_config(server, tmp_path)
    first = DescriptionGenerator(cfg)
    ds1 = first.generate(["zebra", "fire hydrant"])
    assert (first.requests, first.cache_hits) == (2, 0)

    second = DescriptionGenerator(cfg)
    ds2 = second.generate(["Zebra", "fire  hydrant"])  # same categories, other spelling
    assert (second.requests, second.cache_hits) == (0, 2)
    assert len(server.requests) == 2
    assert ds2.to_dict() == {"Zebra": ds1["zebra"], "fire hydrant": ds1["fire hydrant"]}

    server.add_for("zebra", json_list(ZEBRA))
    third = DescriptionGenerator(cfg)
    assert third.generate(["zebra"], overwrite=True)["zebra"] == ZEBRA
    assert (third.requests, third.cache_hits) == (1, 0)
    # the regenerated answer replaced the cached one
    assert DescriptionGenerator(cfg).generate(["zebra"])["zebra"] == ZEBRA
    assert len(server.requests) == 3


def test_cache_key_covers_model_url_prompt_version_and_context(server, tmp_path):
    cfg = make_config(server, tmp_path)
    key = LLMCache.key(cfg, "zebra")
    assert key == LLMCache.key(cfg, " ZEBRA ")
    assert key != LLMCache.key(cfg.with_options(model="other"), "zebra")
    assert key != LLMCache.key(cfg.with_options(base_url="http://other/v1"), "zebra")
    assert key != LLMCache.key(cfg, "zebra", context="ADE20K")
    generate_descriptions(["zebra"], cfg)
    generate_descriptions(["zebra"], cfg.with_options(model="other"))
    assert len(server.requests) == 2
    record = json.loads(next((tmp_path / "cache").rglob("*.json")).read_text())
    assert record["prompt_version"] == PROMPT_VERSION


def test_damaged_cache_entry_is_ignored(server, tmp_path):
    cfg = make_config(server, tmp_path)
    generate_descriptions(["zebra"], cfg)
    for f in (tmp_path / "cache").rglob("*.json"):
        f.write_text("{not json")
    assert generate_descriptions(["zebra"], cfg)["zebra"] == default_sentences("zebra")
    assert len(server.requests) == 2


# -- CLI end to end ------------------------------------------------------------------------------

def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PROLAB_LLM_MODEL")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "prolab", "describe", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def cli_main(*args: str) -> int:
    """The CLI in this process (cheaper than a subprocess; same code path after start-up)."""
    from prolab.cli import main

    return main(["describe", *args])


def cli_flags(server, tmp_path) -> list[str]:
    return ["--model", "fake-model", "--base-url", server.url, "--cache-dir",
            str(tmp_path / "cache"), "--backoff", "0.01", "--retries", "1", "--timeout", "10"]


def error_line(proc) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_writes_and_merges_without_losing_entries(server, tmp_path):
    out = tmp_path / "desc.json"
    save_descriptions({"wall": ["A flat vertical surface"], "zebra": ["kept as is"]}, out)
    cats = tmp_path / "cats.txt"
    cats.write_text("# extra categories\ntree\n\nfire hydrant  # street furniture\n")
    server.add_for("fire hydrant", json_list(ZEBRA[:3]))
    proc = run_cli("--categories", "zebra, horse", "--categories-file", str(cats),
                   "--out", str(out), *cli_flags(server, tmp_path),
                   env_extra={"OPENAI_API_KEY": "sk-env"})
    assert proc.returncode == 0, proc.stderr
    assert "3 described" in proc.stdout and "1 already present" in proc.stdout
    ds = load_descriptions(out)
    assert ds.categories == ["wall", "zebra", "horse", "tree", "fire hydrant"]
    assert ds["zebra"] == ["kept as is"] and ds["wall"] == ["A flat vertical surface"]
    assert ds["horse"] == default_sentences("horse")
    assert sorted(server.categories_requested()) == ["fire hydrant", "horse", "tree"]
    assert all(r["authorization"] == "Bearer sk-env" for r in server.requests)

    # a rerun with --overwrite regenerates (bypassing the cache) and replaces the kept entry
    server.requests.clear()
    server.add_for("zebra", json_list(ZEBRA))
    assert cli_main("--categories", "zebra", "--out", str(out), "--overwrite",
                    *cli_flags(server, tmp_path)) == 0
    assert server.categories_requested() == ["zebra"]
    assert load_descriptions(out)["zebra"] == ZEBRA
    assert len(load_descriptions(out)) == 5


def test_cli_second_run_uses_the_cache(server, tmp_path, capsys):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    assert cli_main("--categories", "zebra,tree", "--out", str(out1),
                    *cli_flags(server, tmp_path)) == 0
    capsys.readouterr()
    assert cli_main("--categories", "zebra,tree", "--out", str(out2),
                    *cli_flags(server, tmp_path)) == 0
    assert "0 request(s), 2 from cache" in capsys.readouterr().out
    assert len(server.requests) == 2
    assert out1.read_text() == out2.read_text()


def test_cli_missing_configuration_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "desc.json"
    proc = run_cli("--categories", "zebra", "--out", str(out))
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in error_line(proc) and "--base-url" in error_line(proc)
    assert not out.exists()


def test_cli_auth_failure_keeps_existing_file(server, tmp_path):
    out = tmp_path / "desc.json"
    save_descriptions({"wall": ["A flat vertical surface"]}, out)
    before = out.read_bytes()
    server.default = lambda cat: error(401, "Incorrect API key provided")
    proc = run_cli("--categories", "zebra", "--out", str(out), *cli_flags(server, tmp_path),
                   "--api-key", "sk-wrong")
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("error:") and "OPENAI_API_KEY" in line and "401" in line
    assert out.read_bytes() == before
    assert len(server.requests) == 1


def test_cli_partial_failure_writes_nothing_and_names_the_failure(server, tmp_path):
    out = tmp_path / "desc.json"
    server.add_for("tree", error(500, "boom"), error(500, "boom"))
    proc = run_cli("--categories", "zebra, tree", "--out", str(out), *cli_flags(server, tmp_path))
    assert proc.returncode == 2
    assert "'tree'" in error_line(proc)
    assert not out.exists() and not list(tmp_path.glob(".desc.json*"))


def test_cli_unreachable_server_and_bad_input(tmp_path, capsys):
    def err(*args: str) -> str:
        capsys.readouterr()
        assert cli_main(*args) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    with FakeLLMServer() as srv:
        url = srv.url
    assert "cannot connect" in err("--categories", "zebra", "--out", str(tmp_path / "d.json"),
                                   "--base-url", url, "--retries", "0",
                                   "--cache-dir", str(tmp_path / "c"))
    assert "No categories" in err("--categories", " , ", "--out", str(tmp_path / "d.json"),
                                  "--api-key", "k")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert "not valid JSON" in err("--categories", "zebra", "--out", str(bad), "--api-key", "k")
    assert bad.read_text() == "[1, 2"
    assert not (tmp_path / "d.json").exists()


def test_server_counts_requests_from_threads(server):
    """Sanity check of the fixture itself: concurrent raw requests are all counted."""
    import urllib.request

    def post():
        req = urllib.request.Request(server.url + "/chat/completions", method="POST",
                                     data=json.dumps({"messages": [{"role": "user",
                                                      "content": "Category: x"}]}).encode())
        with urllib.request.urlopen(req) as r:
            assert json.loads(r.read())["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=post) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(server.requests) == 4


def test_cli_invalid_json_with_status_200_is_one_line_exit_2_and_files_are_0644(server, tmp_path):
    """An HTTP 200 whose JSON body is cut off: one line naming the fix, status 2, nothing written; a
    successful run writes the file with the umask's mode (not mkstemp's 0600)."""
    out = tmp_path / "desc.json"
    server.add(Reply(200, '{"choices": [', content_type="application/json"))
    proc = run_cli("--categories", "zebra", "--out", str(out), *cli_flags(server, tmp_path), "--retries", "0")
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("error:") and "invalid JSON" in line and "--base-url" in line
    assert not out.exists()
    proc = run_cli("--categories", "zebra", "--out", str(out), *cli_flags(server, tmp_path))
    assert proc.returncode == 0, proc.stderr
    mode = out.stat().st_mode & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask
