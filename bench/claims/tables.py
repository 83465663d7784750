"""bench.paper_claims' Markdown tables (printed, and saved next to the results JSON for the docs)."""
from __future__ import annotations

from bench.claims.aggregate import P3_FIELDS
from bench.claims.plan import BACKBONE_LABELS, PRETRAINED, SCRATCH, short_backbone


def _pct(x: dict | float | None) -> str:
    if isinstance(x, dict):
        if x.get("mean") is None:
            return "n/a"
        return f"{100 * x['mean']:.1f} +- {100 * x['std']:.1f}" if x["n"] > 1 else f"{100 * x['mean']:.1f}"
    return "n/a" if x is None else f"{100 * x:.1f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds(x: dict) -> str:
    return ", ".join(f"{100 * v:.1f}" for v in x["values"])


def _md_part1(p1: dict) -> list[str]:
    sets = ("msrc_v2_val", "camvid_val")
    blocks = [(p1, p1.get("backbone", SCRATCH))] + ([(p1["scratch"], SCRATCH)] if "scratch" in p1 else [])
    rows = []
    for block, backbone in blocks:
        rows += [[f"{sup} ({BACKBONE_LABELS.get(backbone, backbone)})"]
                 + [f"{_pct(block[sup][k])} [{_seeds(block[sup][k])}]" for k in sets]
                 for sup in ("property", "category")]
        rows.append([f"property - category ({BACKBONE_LABELS.get(backbone, backbone)})"]
                    + [f"{100 * block['delta_property_minus_category'][k]:+.1f}" for k in sets])
    scratch = (f"; from-scratch comparison row: seeds {p1['scratch']['seeds']}" if "scratch" in p1 else "")
    return [f"**1. Property vs category supervision** (mIoU %, mean +- std over seeds {p1['seeds']}{scratch}; "
            "per-seed values in brackets)\n",
            _md_table(["supervision (backbone)", "MSRC-v2 val", "CamVid val"], rows)]


def _md_part2(p2: dict, backbone: str = PRETRAINED) -> list[str]:
    blocks = [(p2, short_backbone(backbone))]
    if "scratch" in p2:
        blocks.append((p2["scratch"], short_backbone(SCRATCH)))
    header, rows = ["step"], [[str(step)] for step in p2["steps"]]
    for block, tag in blocks:
        for k, name in (("msrc_v2_val", "MSRC"), ("camvid_val", "CamVid")):
            for sup in ("property", "category"):
                header.append(f"{name} {sup}" + (f" ({tag})" if len(blocks) > 1 else ""))
                for i, row in enumerate(rows):
                    row.append(_pct(block[sup][k][i]))
    return [f"\n**2. Training length** (mIoU %, mean +- std over seeds, at steps of one poly schedule of "
            f"{p2['schedule_steps']} steps)\n", _md_table(header, rows)]


def _md_part3(p3: dict, names: dict) -> list[str]:
    credit = p3.get("open_set_credit") or {}
    out = [f"\n**3. Unknown categories** (IoU %, seeds {p3['seeds']}). Removed from training (label space and "
           f"pixels): {', '.join(p3['union_classes_removed'])}; training label space "
           f"{p3['training_label_space_classes']} classes; {p3['training_sentences_mentioning_heldout_words']} of its "
           "sentences mention a held-out animal word. *Projected*: the held-out model with the classes added back "
           "from their descriptions; *control*: the same model with each class described by random sentences of "
           "training classes (the same number per class). Each is scored *with the open-set credit* "
           "(prolab.novel_prior, the library default for description-only classes: ImageNet-classifier ConSE "
           f"sentence map x (1 - best trained score); weight {credit.get('weight')}, temperature "
           f"{credit.get('temperature')}, top {credit.get('top')}, {credit.get('short_side')} px) and *plain* "
           "(ProLab scores only). *Upper bound*: the part 1 property model of the same seed, trained with them; "
           "*chance*: uniform random guess over the 23 MSRC classes.\n"]
    for key, block in p3["sets"].items():
        note = " (the upper-bound model was trained on these images; the held-out model saw the images but none " \
               "of these classes' pixels)" if block["upper_bound_seen_in_training"] else ""
        out.append(f"\n{names.get(key, key)}{note}:\n")
        rows = [[c, f"{row['pixels']:,}"] + [_pct(row[f]) for f in P3_FIELDS] for c, row in block["per_class"].items()]
        m = block["mean"]
        rows.append([f"mean of {len(block['classes_with_pixels'])} present", ""] + [_pct(m[f]) for f in P3_FIELDS])
        out.append(_md_table(["class", "GT pixels", "projected + credit", "control + credit", "projected, plain",
                              "control, plain", "upper bound", "chance"], rows))
        known = block["known_classes_miou"]
        out.append(f"\nmIoU of the other (known) MSRC classes for the held-out model with the projected classes: "
                   f"{_pct(known['credit'])} with the credit, {_pct(known['plain'])} plain")
    return out


def _md_part4(p4: dict) -> list[str]:
    return [f"\n**4. Label-space choices** (property model, mIoU %, seeds {p4['seeds']}; *shared*: training "
            "classes whose property signature equals another training class's)\n",
            _md_table(["K", "template", "encoder", "sentences", "MSRC-v2 val", "CamVid val", "shared"],
                      [[r["k"], r["template"], r["encoder"], r["sentences"], _pct(r["msrc_v2_val"]),
                        _pct(r["camvid_val"]), r["trained_classes_with_identical_signature"] or 0]
                       for r in p4["rows"]])]


def markdown(res: dict) -> str:
    """The result tables as Markdown (printed, and saved next to the JSON for the docs)."""
    names = {"msrc_v2_val": "MSRC-v2 val", "camvid_val": "CamVid val", "msrc_v2_train": "MSRC-v2 train images"}
    out = []
    if "part1" in res:
        out += _md_part1(res["part1"])
    if "part2" in res:
        out += _md_part2(res["part2"], res.get("part1", {}).get("backbone", res["meta"].get("backbone", PRETRAINED)))
    if "part3" in res:
        out += _md_part3(res["part3"], names)
    if "part4" in res:
        out += _md_part4(res["part4"])
    meta = res["meta"]
    out.append(f"\n**Time** ({meta['jobs']} runs at a time, one thread each; sum of the runs' wall times per part; "
               f"1/5/15-min load average at the start {', '.join(f'{x:.1f}' for x in meta['load_average_start'])}, "
               f"at the end {', '.join(f'{x:.1f}' for x in meta['load_average_end'])})\n")
    out.append(_md_table(["part", "run time (s)"], [[k, f"{v:.0f}"] for k, v in meta["part_run_seconds"].items()]
                         + [["data preparation", f"{meta['data_prep_s']:.0f}"],
                            ["total elapsed", f"{meta['elapsed_s']:.0f}"]]))
    return "\n".join(out) + "\n"
