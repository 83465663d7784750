"""``describe``: write category descriptions with an OpenAI-compatible LLM."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from prolab.errors import ProLabError
from prolab.limits import read_text


def register(sub) -> None:
    p = sub.add_parser(
        "describe", help="generate category descriptions with an OpenAI-compatible LLM",
        description="Generate ProLab descriptions (8-15 visual phrases per category) with any "
                    "OpenAI-compatible chat endpoint and merge them into a descriptions JSON. "
                    "The key and server come from --api-key/--base-url or OPENAI_API_KEY/"
                    "OPENAI_BASE_URL; the model from --model or PROLAB_LLM_MODEL. Answers are "
                    "cached, so a rerun costs nothing. If any category fails, nothing is written.")
    p.add_argument("--categories", action="append", default=[],
                   help='comma-separated names, e.g. "zebra, fire hydrant" (repeatable)')
    p.add_argument("--categories-file", help="text file with one category per line (# comments)")
    p.add_argument("--out", required=True, help="descriptions JSON to create or merge into")
    p.add_argument("--model", help="model name (default: $PROLAB_LLM_MODEL or gpt-4o-mini)")
    p.add_argument("--base-url", help="API base URL, e.g. http://localhost:11434/v1 "
                                      "(default: $OPENAI_BASE_URL or api.openai.com)")
    p.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY; prefer the variable)")
    p.add_argument("--context", default="",
                   help="added to every request to pick the right sense of ambiguous names, "
                        "e.g. 'ADE20K indoor and outdoor scene parsing'")
    p.add_argument("--overwrite", action="store_true",
                   help="regenerate (bypass the cache) and replace categories already in --out")
    p.add_argument("--concurrency", type=int, default=4, help="parallel requests (default 4)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=4,
                   help="extra attempts on 429, timeouts, connection errors and 5xx (default 4)")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="first retry wait in seconds, doubled each time (default 1)")
    p.add_argument("--cache-dir", help="answer cache folder (default ~/.cache/prolab/llm)")
    p.set_defaults(handler=cmd_describe)


def read_categories(args: argparse.Namespace) -> list[str]:
    """Categories from --categories (comma-separated) and --categories-file (one per line)."""
    names = [c for arg in args.categories for c in arg.split(",")]
    if args.categories_file:
        path = Path(args.categories_file)
        text = read_text(path, "Categories file")
        names += [ln.split("#", 1)[0] for ln in text.splitlines()]
    names = [" ".join(n.split()) for n in names if n.strip()]
    if not names:
        raise ProLabError("No categories given: pass --categories \"a, b\" or --categories-file.")
    return names


def check_request_options(args: argparse.Namespace) -> None:
    """Finite, positive request settings (``--timeout nan`` would make every request fail oddly)."""
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ProLabError(f"--timeout must be a positive number of seconds, got {args.timeout}.")
    if not (math.isfinite(args.backoff) and args.backoff >= 0):
        raise ProLabError(f"--backoff must be 0 or more seconds, got {args.backoff}.")
    if args.concurrency < 1:
        raise ProLabError(f"--concurrency must be at least 1, got {args.concurrency}.")
    if args.retries < 0:
        raise ProLabError(f"--retries must be 0 or more, got {args.retries}.")


def cmd_describe(args: argparse.Namespace) -> int:
    from prolab.descriptions import DescriptionSet, load_descriptions, save_descriptions
    from prolab.llm import DescriptionGenerator, LLMConfig

    names = read_categories(args)
    check_request_options(args)
    out = Path(args.out)
    existing = load_descriptions(out) if out.exists() else DescriptionSet({})
    todo = [n for n in names if args.overwrite or existing.find(n) is None]
    kept = len(names) - len(todo)
    if not todo:
        print(f"All {len(names)} categories are already in {out}; nothing to do "
              f"(--overwrite regenerates them).")
        return 0

    config = LLMConfig.from_env(
        model=args.model, base_url=args.base_url, api_key=args.api_key, timeout=args.timeout,
        retries=args.retries, backoff_base=args.backoff, concurrency=args.concurrency,
        cache_dir=args.cache_dir)
    gen = DescriptionGenerator(config)

    def progress(done: int, total: int, name: str) -> None:
        print(f"[{done}/{total}] {name}", file=sys.stderr, flush=True)

    # progress only on a terminal, so that logs and scripts see just the result or one error line
    new = gen.generate(todo, context=args.context, overwrite=args.overwrite,
                       progress=progress if sys.stderr.isatty() else None)
    merged = existing.merged(new, overwrite=True)
    save_descriptions(merged, out)
    print(f"Wrote {len(merged)} categories to {out}: {len(new)} described "
          f"({gen.requests} request(s), {gen.cache_hits} from cache), {kept} already present.")
    return 0
