"""bench.paper_claims' figures: one PNG per part."""
from __future__ import annotations

from pathlib import Path

from bench.claims.plan import DEFAULT_ENCODER, PRETRAINED, SCRATCH, short_backbone


def charts(res: dict, fig_dir: Path, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    names = {"msrc_v2_val": "MSRC-v2 val", "camvid_val": "CamVid val"}
    colours = {"property": "#1f77b4", "category": "#ff7f0e"}
    keys = list(names)
    paths = []

    if "part1" in res:
        # 1. supervision (the from-scratch comparison arms hatched, beside the main backbone's)
        p1 = res["part1"]
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        groups = [(p1, sup, f"{sup}, {short_backbone(p1.get('backbone', SCRATCH))}", colours[sup], None)
                  for sup in ("property", "category")]
        if "scratch" in p1:
            groups += [(p1["scratch"], sup, f"{sup}, {short_backbone(SCRATCH)}", colours[sup], "//")
                       for sup in ("property", "category")]
        width, top = 0.8 / len(groups), 1.0
        for j, (block, sup, label, colour, hatch) in enumerate(groups):
            means = [100 * (block[sup][k]["mean"] or 0) for k in keys]
            stds = [100 * (block[sup][k]["std"] or 0) for k in keys]
            top = max(top, *(a + b for a, b in zip(means, stds)), *(100 * max(block[sup][k]["values"] or [0])
                                                                     for k in keys))
            xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(keys))]
            ax.bar(xs, means, width * 0.95, yerr=stds, capsize=3, label=label, hatch=hatch,
                   color=colour if hatch is None else "white", edgecolor=colour)
            for x, v in zip(xs, [block[sup][k]["values"] for k in keys]):
                ax.scatter([x] * len(v), [100 * y for y in v], s=10, color="black", zorder=3)
        ax.set_xticks(range(len(keys)), [names[k] for k in keys])
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"Property vs category supervision ({len(p1['seeds'])} seeds"
                     + (f"; from scratch: {len(p1['scratch']['seeds'])}" if "scratch" in p1 else "") + ")")
        ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
        ax.legend(loc="upper center", fontsize=7, ncol=2)
        paths.append(_save(fig, fig_dir / f"{prefix}_supervision.png"))

    if "part2" in res:
        # 2. training length
        p2 = res["part2"]
        main = short_backbone(res.get("part1", {}).get("backbone", PRETRAINED))
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
        for ax, k in zip(axes, keys):
            for block, style, tag in ((p2, "o-", main), (p2.get("scratch"), "s--", short_backbone(SCRATCH))):
                if block is None:
                    continue
                for sup in ("property", "category"):
                    m = [100 * (x["mean"] or 0) for x in block[sup][k]]
                    s = [100 * (x["std"] or 0) for x in block[sup][k]]
                    ax.plot(p2["steps"], m, style, color=colours[sup], label=f"{sup}, {tag}")
                    ax.fill_between(p2["steps"], [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                                    color=colours[sup], alpha=0.15)
            ax.set_title(names[k])
            ax.set_xlabel(f"training step (poly schedule of {p2['schedule_steps']} steps)")
            ax.set_ylabel("mIoU (%)")
            ax.legend(fontsize=7)
        paths.append(_save(fig, fig_dir / f"{prefix}_training_length.png"))

    if "part3" in res:
        # 3. unknown categories: with the open-set credit (solid) and without it (hatched)
        p3 = res["part3"]
        sets = [k for k in ("msrc_v2_val", "msrc_v2_train") if k in p3["sets"]]
        fig, axes = plt.subplots(1, len(sets), figsize=(7.5 * len(sets), 3.8), squeeze=False)
        for ax, key in zip(axes[0], sets):
            block = p3["sets"][key]
            rows = block["per_class"]
            cls = list(rows)
            arms = [("projected_credit", "from descriptions, open-set credit", "#2ca02c", None),
                    ("control_credit", "random sentences, open-set credit", "#7f7f7f", None),
                    ("projected_plain", "from descriptions, plain ProLab", "#2ca02c", "//"),
                    ("control_plain", "random sentences, plain ProLab", "#7f7f7f", "//"),
                    ("upper_bound", "trained with them" + (" (seen)" if key.endswith("train") else ""), "#1f77b4",
                     None),
                    ("chance", "chance", "#d62728", None)]
            width, top = 0.8 / len(arms), 0.0
            for j, (field, label, colour, hatch) in enumerate(arms):
                vals = []
                for c in cls:
                    v = rows[c][field]
                    v = v["mean"] if isinstance(v, dict) else v
                    vals.append(100 * v if v is not None else 0)
                m = block["mean"][field]
                vals.append(100 * m if m is not None else 0)
                top = max(top, *vals)
                ax.bar([i + (j - (len(arms) - 1) / 2) * width for i in range(len(cls) + 1)], vals, width * 0.95,
                       label=label, hatch=hatch, color=colour if hatch is None else "white", edgecolor=colour)
            ax.set_xticks(range(len(cls) + 1), [c + ("" if rows[c]["pixels"] else "\n(absent)") for c in cls]
                          + ["mean\n(present)"])
            ax.set_ylabel("IoU (%)")
            ax.set_ylim(0, max(top, 1.0) * 1.35)  # room for the legend above the bars
            ax.set_title(f"Held-out classes, {names.get(key, 'MSRC-v2 train images')}")
            ax.legend(fontsize=6, ncol=3, loc="upper center")
        paths.append(_save(fig, fig_dir / f"{prefix}_unknown_categories.png"))

    if "part4" in res:
        # 4. label space
        rows = res["part4"]["rows"]
        kr = [r for r in rows if r["template"] == "plain" and r["encoder"] == DEFAULT_ENCODER]
        others = [r for r in rows if r not in kr]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for k, marker in zip(keys, ("o", "s")):
            line, = ax.plot([r["k"] for r in kr], [100 * (r[k]["mean"] or 0) for r in kr], marker + "-",
                            label=f"{names[k]} (plain template)")
            for r, star in zip(others, ("*", "P", "X", "D", "^")):
                ax.scatter([r["k"]], [100 * (r[k]["mean"] or 0)], marker=star, s=90, color=line.get_color(),
                           label=f"{names[k]} ({r['template']}, {r['encoder'].split('/')[-1]})")
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["k"] for r in kr], [str(r["k"]) for r in kr])
        ax.set_xlabel("K (number of properties)")
        ax.set_ylabel("mIoU (%)")
        ax.set_title("Label-space choices (property model)")
        ax.legend(fontsize=7)
        paths.append(_save(fig, fig_dir / f"{prefix}_label_space.png"))
    return paths


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
