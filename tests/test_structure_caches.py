"""Caches come from a library (``cachetools`` or ``functools``), with their sizes in one config
(:class:`prolab.caches.CacheSizes`), and the library keeps no process-wide pool of its own.

Read from the source with ``ast``: no least-recently-used eviction written by hand in prolab/ or app/ (an
``OrderedDict`` kept as a cache, ``move_to_end``, ``popitem(last=False)``, a list or dict whose entries are
popped and put back at the end, the oldest key popped by ``next(iter(...))``); no cache constructed with a
literal size; no module-level container in prolab/ that its module fills (a pool a notebook did not ask for).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: Mutating methods of dicts, lists, sets and deques: a module-level container they are called on is a pool.
MUTATORS = {"append", "appendleft", "extend", "insert", "pop", "popitem", "clear", "update", "setdefault",
            "add", "discard", "remove", "move_to_end"}
#: Constructors of mutable containers, and the cache classes of cachetools and weakref (pools by nature).
CONTAINERS = {"dict", "list", "set", "OrderedDict", "defaultdict", "deque", "Counter"}
CACHES = {"LRUCache", "LFUCache", "FIFOCache", "RRCache", "TTLCache", "TLRUCache", "Cache", "MRUCache",
          "WeakValueDictionary", "WeakKeyDictionary", "WeakSet"}
SIZED = {"LRUCache", "LFUCache", "FIFOCache", "RRCache", "TTLCache", "TLRUCache", "MRUCache", "lru_cache"}

#: Files another change is rewriting, with the hand-written cache it still has: each entry must still be
#: found (so it is dropped here as soon as that change lands).
KNOWN: dict[str, str] = {}


def _name(node: ast.AST) -> str | None:
    """``f`` of ``f(...)`` / ``m.f(...)``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _same(a: ast.AST, b: ast.AST) -> bool:
    return ast.dump(a) == ast.dump(b)


def _is_call(node: ast.AST, method: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method


def _oldest_key_of(node: ast.AST, container: ast.AST) -> bool:
    """``next(iter(container))``: the first (oldest) key of a dict."""
    return (isinstance(node, ast.Call) and _name(node.func) == "next" and len(node.args) == 1
            and isinstance(node.args[0], ast.Call) and _name(node.args[0].func) == "iter"
            and len(node.args[0].args) == 1 and _same(node.args[0].args[0], container))


def hand_written_lru(source: str) -> list[str]:
    """Where ``source`` keeps least-recently-used order or evicts by hand: ``line: what``."""
    found = []
    tree = ast.parse(source)
    call_args = {id(a) for node in ast.walk(tree) if isinstance(node, ast.Call) for a in node.args}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if _is_call(node, "move_to_end"):
            found.append(f"{line}: move_to_end (an OrderedDict kept in recency order)")
        elif _is_call(node, "popitem") and (
                any(k.arg == "last" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.keywords)
                or (node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value is False)):
            found.append(f"{line}: popitem(last=False) (the oldest entry evicted)")
        elif (_is_call(node, "append") or _is_call(node, "insert")) and node.args and \
                _is_call(node.args[-1], "pop") and _same(node.args[-1].func.value, node.func.value):
            found.append(f"{line}: an entry popped and put back (a list kept in recency order)")
        elif _is_call(node, "pop") and node.args and _oldest_key_of(node.args[0], node.func.value):
            found.append(f"{line}: pop(next(iter(...))) (the oldest key evicted)")
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                if isinstance(t, ast.Subscript) and _oldest_key_of(t.slice, t.value):
                    found.append(f"{line}: del d[next(iter(d))] (the oldest key evicted)")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _is_call(node.value, "pop"):
            for t in node.targets:
                if isinstance(t, ast.Subscript) and _same(t.value, node.value.func.value):
                    found.append(f"{line}: d[k] = d.pop(k) (a dict kept in recency order)")
        elif isinstance(node, ast.Call) and _name(node.func) == "OrderedDict" and id(node) not in call_args:
            found.append(f"{line}: an OrderedDict kept (a cache in insertion order)")
        elif isinstance(node, ast.keyword) and node.arg == "default_factory" and _name(node.value) == "OrderedDict":
            found.append(f"{line}: an OrderedDict field")
    return found


def literal_cache_sizes(source: str) -> list[str]:
    """Caches of ``source`` whose size is written in place or in a module constant (or unbounded), not
    read from the config."""
    tree = ast.parse(source)
    constants = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 and isinstance(node.value, ast.Constant)
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in SIZED:
            size = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "maxsize"), None)
            if size is None or isinstance(size, ast.Constant) or (isinstance(size, ast.Name) and size.id in constants):
                found.append(f"{node.lineno}: {_name(node.func)} of size {ast.unparse(size) if size else 'default'}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                if _name(d) in ("lru_cache", "cache"):  # bare @lru_cache (128) or @cache (unbounded)
                    found.append(f"{d.lineno}: @{_name(d)} without a size from the config")
    return found


def module_pools(source: str) -> list[str]:
    """Module-level mutable containers that the module fills or empties, and module-level cache objects:
    ``line: name``."""
    tree = ast.parse(source)
    containers: dict[str, int] = {}  # name -> line
    pools: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        value = node.value
        for t in (t for t in targets if isinstance(t, ast.Name)):
            if isinstance(value, ast.Call) and _name(value.func) in CACHES:
                pools[t.id] = node.lineno  # a cache object is a pool whether or not this module fills it
            elif isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)) or \
                    (isinstance(value, ast.Call) and _name(value.func) in CONTAINERS):
                containers[t.id] = node.lineno
    for node in ast.walk(tree):
        names: set[str] = set()
        if isinstance(node, ast.Global):
            names = set(node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS \
                and isinstance(node.func.value, ast.Name):
            names = {node.func.value.id}
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            names = {t.value.id for t in targets if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)}
        pools.update({n: containers[n] for n in names if n in containers})
    return [f"{line}: {name}" for name, line in sorted(pools.items())]


def _sources(*folders: str) -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
            for folder in folders for p in sorted((REPO / folder).rglob("*.py"))}


# ---------------------------------------------------------------------------- the detectors detect
HAND_LRU_EXAMPLES = {
    "ordered dict": """
from collections import OrderedDict
class Memo:
    def __init__(self):
        self.items = OrderedDict()
    def get(self, k):
        self.items.move_to_end(k)
        while len(self.items) > 3:
            self.items.popitem(last=False)
""",
    "list": """
class Recent:
    def get(self, k):
        for i, (key, v) in enumerate(self.items):
            if key == k:
                self.items.append(self.items.pop(i))
""",
    "dict": """
def keep(d, k, v):
    d[k] = d.pop(k, v)
    if len(d) > 4:
        d.pop(next(iter(d)))
""",
    "dataclass field": """
from collections import OrderedDict
from dataclasses import dataclass, field
@dataclass
class State:
    histories: dict = field(default_factory=OrderedDict)
""",
}


@pytest.mark.parametrize("name", sorted(HAND_LRU_EXAMPLES))
def test_the_detector_finds_hand_written_lru_caches(name):
    assert hand_written_lru(HAND_LRU_EXAMPLES[name])


def test_the_detectors_find_literal_sizes_and_module_pools():
    assert len(literal_cache_sizes("""
import functools
from cachetools import LRUCache
a = LRUCache(maxsize=3)
KEEP = 4
b = LRUCache(KEEP)
@functools.lru_cache(maxsize=2)
def f(): ...
@functools.cache
def g(): ...
""")) == 4
    assert literal_cache_sizes("c = LRUCache(maxsize=SIZES.models)\n@lru_cache(maxsize=SIZES.priors)\ndef f(): ...") == []
    pools = module_pools("""
import weakref
_LOADED = {}
_KEEP = 4
_NAMES = {"a", "b"}
_SEEN: list = []
_REFS = weakref.WeakValueDictionary()
def load(k):
    _LOADED[k] = 1
    _SEEN.append(k)
    return k in _NAMES
""")
    assert [p.split(": ")[1] for p in pools] == ["_LOADED", "_REFS", "_SEEN"]
    # nn.Sequential(OrderedDict(layers)): named layers handed to a constructor, not a cache
    assert hand_written_lru("from collections import OrderedDict\nnet = Sequential(OrderedDict(layers))\n") == []


# ---------------------------------------------------------------------------- the code has none
def test_no_hand_written_lru_cache_in_prolab_or_app():
    found = {path: hits for path, source in _sources("prolab", "app").items() if (hits := hand_written_lru(source))}
    for path, why in KNOWN.items():
        assert path in found, f"{path} no longer has a hand-written cache ({why}): drop it from KNOWN"
        del found[path]
    assert not found, "hand-written LRU caches (use cachetools.LRUCache or functools.lru_cache):\n" + "\n".join(
        f"  {path}: {hit}" for path, hits in found.items() for hit in hits)


def test_every_cache_size_comes_from_the_one_config():
    found = {path: hits for path, source in _sources("prolab", "app").items()
             if (hits := literal_cache_sizes(source))}
    assert not found, "cache sizes written in place (add them to prolab.caches.CacheSizes):\n" + "\n".join(
        f"  {path}: {hit}" for path, hits in found.items() for hit in hits)


def test_no_module_level_pool_in_prolab():
    found = {path: hits for path, source in _sources("prolab").items() if (hits := module_pools(source))}
    assert not found, ("module-level pools in the library (the caller keeps them, e.g. the app's services):\n"
                       + "\n".join(f"  {path}: {hit}" for path, hits in found.items() for hit in hits))


def test_the_cache_folder_rule_is_written_once():
    """``$PROLAB_CACHE_DIR`` and ``~/.cache`` are read by :func:`prolab.caches.default_cache_dir` alone."""
    found = []
    for path, source in _sources("prolab", "app").items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and node.value in ("PROLAB_CACHE_DIR", ".cache"):
                found.append(path)
    assert set(found) == {"prolab/caches.py"}
