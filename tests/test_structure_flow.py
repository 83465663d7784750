"""The two paths docs/ARCHITECTURE.md counts, followed at run time (``sys.setprofile``) rather than read:
an edit from the gradio event to the pixels, and :meth:`ClassScorer.score`. Only the repository's own
files count (app/, prolab/); gradio, torch and the standard library do not."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.app_server import save_tiny_model

pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = str(REPO / "assets" / "examples" / "astronaut.png")
ROOT = str(REPO) + "/"
#: The files the ImageNet prior's network runs in (once per image; its sentence map is kept in the ImageCache).
PRIOR_NETWORK = {"prolab/model/efficientnet.py", "prolab/images.py", "prolab/input_shape.py"}


class Trace:
    """Calls and returns in the repository's files (tests excluded) while active: ``events`` holds
    ``("call" | "return", file, function)``; ``stack_at(file, function)`` the stack when that was first called."""

    def __init__(self):
        self.events: list[tuple[str, str, str]] = []
        self._stack: list[tuple[str, str]] = []
        self.stacks: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def _profile(self, frame, event, arg):
        path = frame.f_code.co_filename
        if event not in ("call", "return") or not path.startswith(ROOT) or path.startswith(ROOT + "tests/"):
            return
        here = (path[len(ROOT):], frame.f_code.co_name)
        if event == "call":
            self._stack.append(here)
            self.stacks.setdefault(here, list(self._stack))
        elif self._stack:
            self._stack.pop()
        self.events.append((event, *here))

    def __enter__(self):
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)

    def files(self) -> set[str]:
        return {f for e, f, _ in self.events if e == "call"}

    def functions(self, path: str) -> set[str]:
        return {fn for e, f, fn in self.events if e == "call" and f == path}

    def returns_into(self, spine: list[tuple[str, str]], until: tuple[str, str]) -> list[str]:
        """Returns from another file into a frame of ``spine`` (a call stack), before ``until`` is called."""
        stack, out = [], []
        for event, *here in self.events:
            here = tuple(here)
            if event == "call":
                if here == until and stack == spine[:-1]:
                    break
                stack.append(here)
                continue
            callee = stack.pop()
            if stack and stack == spine[:len(stack)] and stack[-1][0] != callee[0]:
                out.append(f"{callee[0]}:{callee[1]} -> {stack[-1][0]}:{stack[-1][1]}")
        return out


@pytest.fixture(scope="module")
def app(tmp_path_factory, encoder):
    from app.config import AppConfig
    from app.main import build_demo
    from app.services import Services

    model = save_tiny_model(tmp_path_factory.mktemp("tiny-model"), encoder)
    demo = build_demo(services=Services(AppConfig(model=str(model), label_set="camvid_11",
                                                  cache_dir=str(encoder.cache.path.parent))))
    handlers = {fn.api_name: fn.fn for fn in demo.fns.values() if fn.api_name}
    state = handlers["segment"](None, ASTRONAUT, "camvid_11", None, 0.0, 0.55)[demo.prolab_ui.state]
    return handlers, state


def make_road_novel(handlers, state) -> None:
    """Give road sentences unlike any trained class's: it becomes novel, so the open-set credit is on. The
    same edit twice changes nothing, so each test that needs it makes it (xdist may split the module)."""
    handlers["edit_class"](state, "camvid_11", None, "road", "a glowing jellyfish in deep water\n"
                           "soft translucent tentacles drifting", 0.0, 0.55)


def test_an_edit_reaches_the_pixels_through_six_files_and_two_returns(app):
    handlers, state = app
    with Trace() as trace:
        # road given sentences unlike any trained class's: it becomes novel, so the open-set credit is on
        make_road_novel(handlers, state)
    pixels = ("prolab/inference.py", "segment")  # the label map
    spine = trace.stacks[pixels]
    assert [f for f, _ in spine] == ["app/handlers.py", "app/tabs/descriptions.py", "prolab/edit_session.py",
                                     "prolab/edit_session.py", "prolab/workbench.py", "prolab/inference.py"]
    # what comes back into that chain from another file before the label map exists: the inputs read, the
    # session and its state asked, and one result, the class scores (ClassScorer.score -> Workbench.score)
    returns = trace.returns_into(spine, pixels)
    results = [r for r in returns if r.startswith("prolab/") and r.split(" -> ")[1].startswith("prolab/")
               and not r.startswith(("prolab/workbench.py:is_current", "prolab/descriptions.py:__len__"))]
    assert results == ["prolab/class_scorer.py:score -> prolab/workbench.py:score"], returns
    files = {f for f, _ in spine} | {"prolab/class_scorer.py"}
    assert len(files) == 6
    # inside the scoring sequence, the activations come back from inference.py: the second return
    score = trace.stacks[("prolab/class_scorer.py", "score")]
    assert score[:-1] == spine[:-1]
    rescore = trace.stacks[("prolab/inference.py", "rescore_activations")]
    assert rescore[:len(score)] == score and rescore[-2][0] == "prolab/class_scorer.py"


def _scorer_and_output(state):
    wb = state.edit.workbench
    (_, network), scorer, _, _ = wb.last_key
    return scorer, wb.forward(network), wb.image


def test_class_scorer_score_enters_four_files(app):
    """A first score of an image enters class_scorer, inference, scoring (the activations of a full output
    map) and novel_prior (the open-set credit), plus the ImageNet prior's network once per image (kept in
    the ImageCache); re-scoring with the cache filled (what every edit does) enters three of them."""
    from prolab.class_scorer import ImageCache
    from prolab.inference import LowRankFactors

    handlers, state = app
    make_road_novel(handlers, state)
    scorer, output, image = _scorer_and_output(state)
    assert scorer.needs_prior_map  # "road" made novel: the credit is on, so every step runs
    dense = output.embeddings() if isinstance(output, LowRankFactors) else output
    cache = ImageCache(image)
    with Trace() as cold:
        scorer.score(dense, cache=cache)
    with Trace() as warm:
        scorer.score(dense, cache=cache)
    sequence = {"prolab/class_scorer.py", "prolab/inference.py", "prolab/scoring.py", "prolab/novel_prior.py"}
    # the one other file entered is a read of the label space's width, no step of the sequence
    assert cold.functions("prolab/labelspace.py") <= {"dim"} and warm.functions("prolab/labelspace.py") <= {"dim"}
    read = {"prolab/labelspace.py"}
    assert cold.files() - PRIOR_NETWORK - read <= sequence and len(cold.files() - PRIOR_NETWORK - read) <= 4
    assert warm.files() - read <= sequence and len(warm.files() - read) <= 3, warm.files()
