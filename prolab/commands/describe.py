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
    g = p.add_argument_group(
        "improving a label set (--improve)",
        "Search for better sentences, guided by mIoU on a labelled set split in two: a change is kept when the "
        "search half's mIoU rises by --margin and the guard half's does not fall (prolab.description_search). "
        "Offline proposals always; with --llm also the configured LLM's.")
    g.add_argument("--improve", metavar="DESCRIPTIONS",
                   help="descriptions JSON or shipped label set key (e.g. camvid_11) to improve; writes --out")
    g.add_argument("--dataset", metavar="NAME", help="shared dataset to measure on (msrc_v2, camvid, ...)")
    g.add_argument("--folder", metavar="PATH", help="labelled images/ + masks/ + classes.txt folder (or .zip)")
    g.add_argument("--split", default="val", help="split of --dataset (default val)")
    g.add_argument("--data-root", help="shared datasets folder (default $PROLAB_DATA)")
    g.add_argument("--segmenter", default=None, metavar="MODEL_DIR",
                   help="segmentation model (default assets/models/default; --model names the LLM)")
    g.add_argument("--budget", type=int, help="proposals to try (default 200 unless --seconds is given)")
    g.add_argument("--seconds", type=float, help="wall-time budget of the search")
    g.add_argument("--seed", type=int, default=0, help="seed of the proposals' order and of the split (default 0)")
    g.add_argument("--margin", type=float, default=0.1,
                   help="least rise of the search half's mIoU, in points, to keep a change (default 0.1)")
    g.add_argument("--classes", help="comma-separated classes to edit (default: all of the dataset's)")
    g.add_argument("--llm", action="store_true",
                   help="also ask the LLM of --base-url/--api-key/--model (or the OPENAI_* variables)")
    g.add_argument("--report", metavar="PATH", help="write the report (kept changes, per class, trajectory) as JSON")
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
    if args.improve:
        return cmd_improve(args)
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


def read_label_set(spec: str):
    """A descriptions JSON file, else a shipped label set's key."""
    from prolab import labelsets
    from prolab.descriptions import load_descriptions

    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        return load_descriptions(path)
    keys = [k for k, _ in labelsets.available()]
    if spec not in keys:
        raise ProLabError(f"--improve takes a descriptions JSON file or a shipped label set ({', '.join(keys)}); "
                          f"{spec!r} is neither.")
    return labelsets.load(spec).descriptions


def _improve_source(args: argparse.Namespace):
    from prolab.data.readers import data_root, find_data_root, read_folder, read_shared

    if bool(args.dataset) == bool(args.folder):
        raise ProLabError("Give the labelled images to measure on: --dataset NAME or --folder PATH (one of them).")
    if args.dataset:
        root = find_data_root(args.data_root) or data_root(args.data_root)
        return read_shared(root, args.dataset, args.split)
    folder = Path(args.folder)
    return read_folder(args.folder, args.split if (folder / f"{args.split}.txt").is_file() else None)


def cmd_improve(args: argparse.Namespace) -> int:
    """``describe --improve``: the description search, with a progress bar, a report table and JSON."""
    import shutil

    from tqdm import tqdm

    from prolab.assets import DEFAULT_MODEL_DIR
    from prolab.description_search import SearchSettings, format_report, improve_descriptions, save_report
    from prolab.descriptions import save_descriptions
    from prolab.encoder import TextEncoder
    from prolab.eval_cache import EvalCache
    from prolab.evaluate import load_mapping
    from prolab.llm import LLMConfig
    from prolab.model import PropertySegmenter

    if not (math.isfinite(args.margin) and 0 <= args.margin < 100):
        raise ProLabError(f"--margin must be from 0 to 100 mIoU points, got {args.margin}.")
    budget = args.budget if args.budget is not None else (None if args.seconds is not None else 200)
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    settings = SearchSettings(budget=budget, seconds=args.seconds, seed=args.seed, margin=args.margin / 100,
                              classes=classes)
    llm = None
    if args.llm:
        check_request_options(args)
        llm = LLMConfig.from_env(model=args.model, base_url=args.base_url, api_key=args.api_key,
                                 timeout=args.timeout, retries=0)
        if not llm.is_configured:
            raise ProLabError(llm.how_to_configure)
    descriptions = read_label_set(args.improve)
    model_dir = Path(args.segmenter) if args.segmenter else DEFAULT_MODEL_DIR
    source = _improve_source(args)
    try:
        model = PropertySegmenter.from_pretrained(model_dir)
        if model.label_space is None:
            raise ProLabError("--improve needs a property (ProLab) model with a label space.")
        encoder = TextEncoder(model.label_space.encoder_id, template=model.label_space.template)
        with tqdm(total=len(source.samples), desc=f"forward {source.name}", dynamic_ncols=True) as bar:
            cache = EvalCache.build(model, source, mapping=load_mapping(model_dir if model_dir.is_dir() else None),
                                    progress=lambda *_: bar.update(1))
    finally:
        if "extracted_to" in source.meta:
            shutil.rmtree(source.meta["extracted_to"], ignore_errors=True)
    with tqdm(total=100, desc="search", unit="%", dynamic_ncols=True) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.update(max(0, round(100 * fraction) - bar.n))
            bar.set_postfix_str(message, refresh=False)

        result = improve_descriptions(model, cache, descriptions, encoder, settings, split_seed=args.seed, llm=llm,
                                      progress=progress)
    print(format_report(result))
    save_descriptions(result.descriptions, args.out)
    print(f"Wrote the improved descriptions to {args.out}")
    if args.report:
        save_report(result, args.report)
        print(f"Wrote the report to {args.report}")
    return 0
