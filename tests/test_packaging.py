"""pyproject.toml: the `prolab` command, the packages, requirements.txt's dependencies, and a wheel that
carries the shipped assets where :mod:`prolab.assets` finds them."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
#: What a wheel must carry for `prolab predict` and the app to work without a checkout.
DEFAULT_MODEL_FILES = ("config.json", "model.safetensors", "MODEL_CARD.md", "dataset_mapping.json",
                       "labelspace/labelspace.json", "labelspace/labelspace.safetensors")


def _requirements() -> tuple[list[str], list[str]]:
    """requirements.txt's runtime lines and its "tests and benchmarks" lines."""
    runtime, dev = [], []
    current = runtime
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip().lower() == "# tests and benchmarks":
            current = dev
        elif line.strip() and not line.lstrip().startswith("#"):
            current.append(line.split("#")[0].replace(" ", ""))
    return runtime, dev


def test_console_script_resolves_to_the_cli():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"prolab"}
    module, _, attr = scripts["prolab"].partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert callable(main)
    with pytest.raises(SystemExit) as exc:
        main(["labelspace", "--help"])
    assert exc.value.code == 0


def test_dependencies_are_requirements_txt():
    runtime, dev = _requirements()
    project = PYPROJECT["project"]
    assert [d.replace(" ", "") for d in project["dependencies"]] == runtime
    assert [d.replace(" ", "") for d in project["optional-dependencies"]["dev"]] == dev
    assert "torch==2.13.0" in runtime  # the CPU build the README's set-up installs


@pytest.mark.xdist_group("packaging")
def test_xdist_groups_the_tests_that_share_a_fixture(request):
    """Under pytest-xdist (the README's test command) a grouped test's id carries its group: the grouping that
    builds each module's app server or exported graph once. pytest 9.2 with xdist 3.8 silently lost it (the
    suite ran ~40 s longer), hence the pin in requirements.txt."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("runs under pytest-xdist (`-n 0` runs every test in this one process)")
    assert request.node.nodeid.endswith("@packaging"), request.node.nodeid


def test_every_package_is_listed_and_assets_are_package_data():
    config = PYPROJECT["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "prolab").rglob("__init__.py")}
    listed = set(config["packages"])
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"] == {"prolab._assets": "assets"}
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["prolab._assets"] == ["**/*"]
    from prolab import assets

    assert assets.PACKAGED_ASSETS == "_assets"
    assert assets.ASSETS_DIR.resolve() == (REPO / "assets").resolve()  # a checkout: its own assets/


def test_prolab_assets_override(tmp_path):
    code = "from prolab.assets import ASSETS_DIR, DEFAULT_MODEL_DIR; print(ASSETS_DIR); print(DEFAULT_MODEL_DIR)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "PROLAB_ASSETS": str(tmp_path)}).stdout.split("\n")
    assert out[:2] == [str(tmp_path), str(tmp_path / "models" / "default")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (setuptools, no network)."""
    pytest.importorskip("setuptools")
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "prolab", src / "prolab", ignore=ignore)
    shutil.copytree(REPO / "assets", src / "assets", ignore=ignore)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    [built] = (tmp_path / "dist").glob("prolab_explorer-*.whl")
    return built


def test_wheel_carries_the_assets_and_finds_them(tmp_path, wheel):
    """Unpack the wheel as an installed package would be, and check that prolab finds the shipped model
    there, from another folder."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        z.extractall(tmp_path / "site")
    assert "prolab = prolab.cli:main" in entry_points
    shipped = {"prolab/_assets/" + p.relative_to(REPO / "assets").as_posix()
               for p in (REPO / "assets").rglob("*") if p.is_file()}
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)[:5]}"
    for f in DEFAULT_MODEL_FILES:
        assert f"prolab/_assets/models/default/{f}" in names
    assert "prolab/_assets/layouts/index.json" in names
    library_data = {p.relative_to(REPO).as_posix() for p in (REPO / "prolab").rglob("*")
                    if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert library_data and library_data <= names, f"missing from the wheel: {sorted(library_data - names)}"
    assert not any(n.startswith(("app/", "bench/", "tests/", "tools/")) for n in names)

    code = ("from prolab.assets import ASSETS_DIR, DEFAULT_MODEL_DIR; from prolab import labelsets; "
            "print(ASSETS_DIR); print(DEFAULT_MODEL_DIR.is_dir()); print(len(labelsets.available()))")
    env = {k: v for k, v in os.environ.items() if k not in ("PROLAB_ASSETS", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(tmp_path / "site")}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assets_dir, model_found, label_sets = out.stdout.split()
    assert Path(assets_dir) == tmp_path / "site" / "prolab" / "_assets"
    assert model_found == "True" and int(label_sets) == 7


def site_dirs() -> list[str]:
    """The running interpreter's package folders (a virtual environment's, its base's, the user's)."""
    return list(dict.fromkeys(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")
                              and Path(p).is_dir()))


def venv_with_this_environment(env_dir: Path) -> Path:
    """A fresh virtual environment that sees the packages this interpreter sees, and returns its python.

    ``venv`` builds from the *base* interpreter (``sys._base_executable``): its ``system_site_packages``
    are the base's, not those of the virtual environment the tests run in (where the README installs the
    dependencies). A ``.pth`` file in the new environment appends this interpreter's package folders after
    its own, so what is installed there is found first. It has no pip of its own (``ensurepip`` takes about
    5 s): ``python -m pip`` there runs this interpreter's pip, which installs into the new environment."""
    import sysconfig
    import venv

    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert sysconfig.get_paths()["purelib"] != purelib
    (Path(purelib) / "_prolab_test_parent_env.pth").write_text("\n".join(site_dirs()) + "\n", encoding="utf-8")
    return py


def test_the_test_venv_sees_the_running_environment(tmp_path):
    """Inside a virtual environment too (issue #28: "No module named 'safetensors'" there): every package
    folder of this interpreter is on the new environment's path, after its own."""
    py = venv_with_this_environment(tmp_path / "venv")
    code = "import sys, sysconfig; print(sysconfig.get_paths()['purelib']); print('\\n'.join(sys.path))"
    own, *path = subprocess.run([str(py), "-I", "-c", code], capture_output=True, text=True,
                                check=True).stdout.splitlines()
    assert path.index(own) < min(path.index(d) for d in site_dirs())
    ok = subprocess.run([str(py), "-c", "import safetensors, torch"], capture_output=True, text=True,
                        cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_an_installed_wheel_predicts_a_novel_class(tmp_path, wheel):
    """Install the wheel in a fresh virtual environment (its dependencies from this interpreter's
    site-packages, nothing downloaded) and run the installed ``prolab predict`` from another folder on a
    class the shipped model never trained on: the open-set credit reads the package's ImageNet class names."""
    env_dir = tmp_path / "venv"
    py = venv_with_this_environment(env_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PROLAB_ASSETS", "PYTHONPATH")}
    # --ignore-installed: the README's `pip install ".[dev]"` put prolab-explorer in the environment it sees too
    res = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                          str(wheel)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "novel.json").write_text('{"spacesuit": ["Bulky white protective suit", "Worn by astronauts"], '
                                     '"sky": ["Blue expanse above"]}', encoding="utf-8")
    from PIL import Image

    Image.open(REPO / "assets" / "examples" / "astronaut.png").convert("RGB").resize((128, 128)).save(
        work / "a.png")
    res = subprocess.run([str(env_dir / "bin" / "prolab"), "predict", "a.png", "--out", "out",
                          "--descriptions", "novel.json", "--size", "128", "--threads", "2"],
                         capture_output=True, text=True, timeout=600, cwd=work, env={**env, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import prolab; print(prolab.__file__)"], capture_output=True,
                           text=True, cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where  # the installed copy ran, not the checkout
    assert (work / "out" / "a_mask.png").is_file() and "Traceback" not in res.stderr


def readme_setup() -> tuple[str, list[str]]:
    """The README's text before its first code block, and that block's commands."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    before, _, rest = readme.partition("```bash\n")
    block = rest.partition("```")[0]
    return before, [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip()]


def test_readme_first_screen_installs_the_package_and_runs_the_tests():
    """Two set-up commands: install the project (dependencies from pyproject.toml) and start the app; add
    the dev extras and run the tests. How to pick torch's CPU or CUDA build is said before them, and
    .ci/run runs the README's own test command (issue #28)."""
    before, commands = readme_setup()
    assert len(commands) == 2
    install, tests = commands
    assert install.startswith("pip install . ") and install.endswith("&& python app.py")
    assert tests.startswith('pip install ".[dev]" ') and tests.endswith("&& python -m pytest tests")
    assert "-r requirements.txt" not in install + tests
    cpu, cuda = "https://download.pytorch.org/whl/cpu", "whl/cu12"
    assert f"--extra-index-url {cpu}" in install and f"--extra-index-url {cpu}" in tests
    assert "whl/cpu" in before and cuda in before and "CUDA" in before
    assert len(before.splitlines()) + len(commands) < 30  # on the first screen
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    pip_part, _, test_part = tests.partition(" && ")
    # CI installs the same package and extras; its registry mirror serves the CPU torch without the index URL
    package = pip_part.removeprefix("pip install ").split(" --extra-index-url")[0]
    assert any("pip install" in ln and ln.split(" --extra-index-url")[0].endswith(package) for ln in ci_commands)
    assert any(ln.startswith(test_part) for ln in ci_commands)


def test_readme_says_how_to_get_the_cpu_or_the_cuda_build_of_torch():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "pins the CPU build" not in readme
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in readme
    assert "https://download.pytorch.org/whl/cu12" in readme
    comments = [ln for ln in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    for name in (w.strip("().,;") for ln in comments for w in ln.split() if w.strip("().,;").endswith(".md")):
        assert (REPO / name).is_file(), f"requirements.txt points to {name}, which is not in the repository"


def test_readme_reports_the_unseen_animals_result_of_its_json():
    import json

    result = json.loads((REPO / "docs" / "results" / "unseen_animals.json").read_text(encoding="utf-8"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "does not, yet" not in readme
    flat = readme.replace("\n  ", " ")
    assert f"{100 * result['animal_mean_iou']:.1f} mean IoU with the open-set credit" in flat
    assert f"against {100 * result['control_mean_iou']:.1f} for random-sentence" in flat
