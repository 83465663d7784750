"""Description generation with any OpenAI-compatible chat-completions endpoint.

One request per category (temperature 0) with the ProLab structured few-shot prompt; answers are
parsed by :mod:`prolab.llm_parse`. Requests run in a small thread pool, are retried with
exponential backoff on rate limits, timeouts, connection errors and 5xx (never on 401/403 or other
4xx), and are cached on disk keyed by (base URL, model, prompt version, category, context), so a
repeated request costs nothing.

Typical use (CLI and app alike)::

    config = LLMConfig.from_env(model="gpt-4o-mini")
    if not config.is_configured:
        raise ProLabError(config.how_to_configure)
    ds = generate_descriptions(["zebra", "fire hydrant"], config, progress=print)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from prolab.caches import default_cache_dir
from prolab.descriptions import DescriptionSet, write_text_atomic
from prolab.errors import ProLabError
from prolab.llm_parse import parse_sentences

log = logging.getLogger(__name__)

#: Bump whenever the prompt or the parsing changes what comes back; it is part of the cache key.
PROMPT_VERSION = "prolab-describe-v1"
DEFAULT_MODEL = "gpt-4o-mini"
#: Fewer usable sentences than this is a failed answer.
MIN_SENTENCES = 3
#: Sent as the API key when a base URL is given without one (local servers ignore it, but the
#: client insists on some value).
PLACEHOLDER_KEY = "not-needed"

CONFIG_HELP = ("set OPENAI_API_KEY (and OPENAI_BASE_URL for a local OpenAI-compatible server such "
               "as vLLM, Ollama or llama.cpp) or pass --api-key/--base-url")

SYSTEM_PROMPT = """\
You write visual descriptions of object and scene categories for a semantic segmentation model.
For the category you are given, write 8 to 15 short descriptive phrases, in this order:
1. a general description of what it is;
2. its shape, orientation and main physical traits;
3. its material, surface texture and typical colours;
4. its typical parts or features, or elements seen with it;
5. its context, variations and where it is usually found.
Rules: describe only what can be SEEN in a photo; use short phrases of 3 to 12 words; prefer
general visual properties that other categories can share (e.g. "Covered in short fur",
"Made of glass", "Found outdoors along roads") over facts only this category has; do not repeat
the category name in every phrase; if the name is ambiguous, describe the meaning a scene-parsing
dataset would use.
Answer with a JSON list of strings and nothing else."""

FEW_SHOT_CATEGORY = "wall"
FEW_SHOT_ANSWER = [
    "A vertical surface that encloses or divides a space",
    "Large flat upright plane",
    "Straight edges meeting the floor and ceiling",
    "Made of brick, concrete, plaster or drywall",
    "Smooth or rough painted surface",
    "Often white, beige, grey or pastel coloured",
    "May hold windows, doors, shelves or pictures",
    "Sometimes covered in tiles or wallpaper",
    "Found indoors around rooms and corridors",
    "Also forms the outside of buildings",
]


def build_messages(category: str, context: str = "") -> list[dict[str, str]]:
    """The chat messages for one category: system rules, one worked example, the request."""
    def ask(name: str) -> str:
        q = f"Category: {name}"
        return f"{q}\nContext: {context}" if context else q

    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": ask(FEW_SHOT_CATEGORY)},
        {"role": "assistant", "content": json.dumps(FEW_SHOT_ANSWER, indent=1)},
        {"role": "user", "content": ask(category)},
    ]


def _default_cache_dir() -> Path:
    return default_cache_dir() / "llm"


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask an OpenAI-compatible chat-completions endpoint.

    ``retries`` is the number of *extra* attempts after the first; the wait before retry ``i``
    (0-based) is ``backoff_base * 2**i`` scaled by a random factor in [1, 1 + jitter], capped at
    ``backoff_max`` (a server's Retry-After is honoured up to the same cap).
    """

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    jitter: float = 0.25
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int | None = 800  # None: let the server decide (some models reject the field)
    cache_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if not self.model or not self.model.strip():
            raise ProLabError("The LLM model name is empty: pass --model or set PROLAB_LLM_MODEL.")
        if self.concurrency < 1:
            raise ProLabError(f"Concurrency must be at least 1, got {self.concurrency}.")
        if self.retries < 0:
            raise ProLabError(f"Retries must be 0 or more, got {self.retries}.")
        if self.timeout <= 0:
            raise ProLabError(f"The LLM timeout must be positive, got {self.timeout}.")

    @classmethod
    def from_env(cls, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, **kwargs) -> "LLMConfig":
        """Arguments first, then ``PROLAB_LLM_MODEL``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``."""
        return cls(model=model or os.environ.get("PROLAB_LLM_MODEL") or DEFAULT_MODEL,
                   base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
                   api_key=api_key or os.environ.get("OPENAI_API_KEY") or None, **kwargs)

    def with_options(self, **changes) -> "LLMConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def is_configured(self) -> bool:
        """True when there is a key (hosted API) or a base URL (local servers need no key)."""
        return bool(self.api_key) or bool(self.base_url)

    @property
    def how_to_configure(self) -> str:
        """One line telling the user what to set."""
        return f"No LLM endpoint configured: {CONFIG_HELP}."

    @property
    def endpoint(self) -> str:
        """The base URL used, for messages."""
        return self.base_url or "https://api.openai.com/v1"

    def make_client(self):
        """An ``openai.OpenAI`` client without its own retries (this module does them)."""
        import openai  # lazy: a heavy client library, needed only when a request is made

        if not self.is_configured:
            raise ProLabError(self.how_to_configure)
        return openai.OpenAI(api_key=self.api_key or PLACEHOLDER_KEY, base_url=self.endpoint,
                             timeout=self.timeout, max_retries=0)


class LLMCache:
    """One small JSON file per answer, named by a hash of everything that shapes the answer."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else _default_cache_dir()

    @staticmethod
    def key(config: LLMConfig, category: str, context: str = "") -> str:
        parts = [config.endpoint.rstrip("/"), config.model, PROMPT_VERSION,
                 " ".join(category.split()).casefold(), context.strip()]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[str] | None:
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # missing or damaged: ask again
        sentences = data.get("sentences") if isinstance(data, dict) else None
        if isinstance(sentences, list) and len(sentences) >= MIN_SENTENCES \
                and all(isinstance(s, str) for s in sentences):
            return sentences
        return None

    def put(self, key: str, record: dict) -> None:
        try:
            write_text_atomic(self._path(key), json.dumps(record, indent=1, ensure_ascii=False))
        except OSError as exc:  # a read-only cache must not fail the generation
            log.warning("could not write LLM cache %s: %s", self.root, exc)


class _Fatal(ProLabError):
    """An error that makes every other request pointless (bad key, unknown model)."""


def _one_line(text: object, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _server_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return _one_line(msg)
    return _one_line(getattr(exc, "message", exc))


ProgressFn = Callable[[int, int, str], None]


class DescriptionGenerator:
    """Generates descriptions category by category; counts requests and cache hits.

    Args:
        config: endpoint, model, retry and concurrency settings.
        cache: an :class:`LLMCache`; ``None`` uses ``config.cache_dir`` (or the default folder).
        sleep: the wait function, replaceable so callers can observe backoff.
    """

    def __init__(self, config: LLMConfig, cache: LLMCache | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.cache = cache if cache is not None else LLMCache(config.cache_dir)
        self.sleep = sleep
        self.requests = 0      # HTTP requests sent, retries included
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self.config.make_client()
        return self._client

    def describe(self, category: str, *, context: str = "", overwrite: bool = False) -> list[str]:
        """Sentences for one category: from the cache unless ``overwrite``, else from the LLM."""
        key = LLMCache.key(self.config, category, context)
        if not overwrite:
            cached = self.cache.get(key)
            if cached is not None:
                with self._lock:
                    self.cache_hits += 1
                return cached
        text = self._request(category, context)
        sentences = parse_sentences(text)
        if len(sentences) < MIN_SENTENCES:
            raise ProLabError(
                f"The LLM answer for {category!r} has {len(sentences)} usable sentence(s), "
                f"need at least {MIN_SENTENCES}; it began: {_one_line(text, 80)!r}. "
                f"Try another --model.")
        self.cache.put(key, {"category": category, "model": self.config.model,
                             "base_url": self.config.endpoint, "prompt_version": PROMPT_VERSION,
                             "context": context, "sentences": sentences, "raw": text})
        return sentences

    def generate(self, categories: Iterable[str], *, context: str = "", overwrite: bool = False,
                 progress: ProgressFn | None = None) -> DescriptionSet:
        """Descriptions for every category, in the given order, or a :class:`ProLabError`.

        All or nothing: if any category fails, the error names the failed ones (the others are
        cached, so a rerun only asks for the failures). ``progress(done, total, category)`` is
        called from the calling thread after each category.
        """
        names = _unique_categories(categories)
        if not self.config.is_configured:
            raise ProLabError(self.config.how_to_configure)
        results: dict[str, list[str]] = {}
        errors: dict[str, ProLabError] = {}
        abort = threading.Event()

        def task(name: str) -> list[str]:
            if abort.is_set():
                raise _Skipped()
            try:
                return self.describe(name, context=context, overwrite=overwrite)
            except _Fatal:
                abort.set()  # here, not in the caller, so queued tasks see it before they start
                raise

        workers = min(self.config.concurrency, len(names))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prolab-llm") as pool:
            futures = {pool.submit(task, n): n for n in names}
            for done, fut in enumerate(as_completed(futures), 1):
                name = futures[fut]
                try:
                    results[name] = fut.result()
                except _Skipped:
                    continue
                except _Fatal as exc:
                    for f in futures:
                        f.cancel()
                    raise ProLabError(str(exc)) from None
                except ProLabError as exc:
                    errors[name] = exc
                if progress is not None:
                    progress(done, len(names), name)
        if errors:
            failed = list(errors)
            first = errors[failed[0]]
            if len(failed) == 1:
                raise ProLabError(str(first))
            raise ProLabError(
                f"{len(failed)} of {len(names)} categories failed ({', '.join(failed)}); "
                f"first error: {first}")
        return DescriptionSet([(n, results[n]) for n in names])

    def _request(self, category: str, context: str) -> str:
        import openai  # lazy: see make_client

        cfg = self.config
        attempts = cfg.retries + 1
        reason = ""
        for attempt in range(attempts):
            wait = None
            try:
                with self._lock:
                    self.requests += 1
                resp = self.client.chat.completions.create(
                    model=cfg.model, messages=build_messages(category, context),
                    temperature=cfg.temperature,
                    **({"max_tokens": cfg.max_tokens} if cfg.max_tokens else {}))
                return _content(resp, category)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise _Fatal(
                    f"The LLM server at {cfg.endpoint} rejected the API key "
                    f"({exc.status_code}: {_server_message(exc)}): set OPENAI_API_KEY "
                    f"or pass --api-key.") from None
            except openai.NotFoundError as exc:
                raise _Fatal(
                    f"The LLM server at {cfg.endpoint} answered 404 for model {cfg.model!r} "
                    f"({_server_message(exc)}): pass --model or set PROLAB_LLM_MODEL to a model "
                    f"it serves, and check OPENAI_BASE_URL (usually ends in /v1).") from None
            except openai.RateLimitError as exc:
                reason = f"rate limited (429: {_server_message(exc)})"
                wait = _retry_after(exc)
            except openai.APITimeoutError:
                reason = f"no answer within {cfg.timeout:g} s"
            except openai.APIConnectionError as exc:
                reason = f"cannot connect ({_one_line(exc.__cause__ or exc, 100)})"
            except json.JSONDecodeError as exc:  # HTTP 200 whose body is not JSON: not an OpenAI API
                raise ProLabError(
                    f"The server at {cfg.endpoint} answered the request for {category!r} with invalid "
                    f"JSON ({exc.msg} at character {exc.pos}); check OPENAI_BASE_URL / --base-url "
                    f"(it usually ends in /v1).") from None
            except openai.APIStatusError as exc:
                if exc.status_code < 500:
                    raise ProLabError(
                        f"The LLM server at {cfg.endpoint} refused the request for {category!r} "
                        f"({exc.status_code}: {_server_message(exc)}).") from None
                reason = f"server error ({exc.status_code}: {_server_message(exc)})"
            if attempt + 1 < attempts:
                delay = min(cfg.backoff_max, cfg.backoff_base * 2 ** attempt
                            * (1 + random.uniform(0, cfg.jitter)))
                if wait is not None:
                    delay = min(cfg.backoff_max, max(delay, wait))
                log.info("LLM request for %r failed (%s); retry %d/%d in %.2f s",
                         category, reason, attempt + 1, cfg.retries, delay)
                self.sleep(delay)
        hint = (" Is the server running? Set OPENAI_BASE_URL or pass --base-url."
                if reason.startswith("cannot connect") else "")
        raise ProLabError(f"No descriptions for {category!r} from {cfg.endpoint}: {reason}, "
                          f"after {attempts} attempt(s).{hint}")


class _Skipped(Exception):
    """A queued category not asked because another one failed fatally."""


def _content(resp, category: str) -> str:
    if isinstance(resp, str):  # the client hands back non-JSON bodies as text
        raise ProLabError(
            f"The server answered the request for {category!r} with something that is not a chat "
            f"completion ({_one_line(resp, 60)!r}); check OPENAI_BASE_URL / --base-url "
            f"(it usually ends in /v1).")
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise ProLabError(
            f"The server's answer for {category!r} has no message; check OPENAI_BASE_URL / "
            f"--base-url points at a chat-completions API.") from None
    if not isinstance(content, str) or not content.strip():
        raise ProLabError(f"The LLM answer for {category!r} is empty. Try another --model.")
    return content


def _retry_after(exc) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


def _unique_categories(categories: Iterable[str]) -> list[str]:
    if isinstance(categories, str):
        categories = [categories]
    names: list[str] = []
    seen: set[str] = set()
    for c in categories:
        if not isinstance(c, str):
            raise ProLabError(f"Category names must be strings, got {c!r}.")
        name = " ".join(c.split())
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
    if not names:
        raise ProLabError("No categories given: name at least one category to describe.")
    return names


def generate_descriptions(categories: Iterable[str], config: LLMConfig | None = None, *,
                          context: str = "", overwrite: bool = False,
                          progress: ProgressFn | None = None,
                          cache: LLMCache | None = None) -> DescriptionSet:
    """Describe ``categories`` with the LLM in ``config`` (default: :meth:`LLMConfig.from_env`).

    Returns a :class:`DescriptionSet` in the given order. Cached answers are reused unless
    ``overwrite``; ``context`` (e.g. "ADE20K indoor and outdoor scenes") is added to every request
    to pick the right sense of ambiguous names. Raises :class:`ProLabError` naming what to fix.
    """
    config = config if config is not None else LLMConfig.from_env()
    return DescriptionGenerator(config, cache).generate(
        categories, context=context, overwrite=overwrite, progress=progress)
