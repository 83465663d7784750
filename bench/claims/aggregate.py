"""The four parts' results from the training runs': mean +- std over seeds, training curves, the held-out
classes against their controls, upper bound and chance, and the label-space choices."""
from __future__ import annotations

import math
import re
import statistics
from typing import Any

from bench.claims.plan import DEFAULT_ENCODER, EVAL_SETS, HELD_OUT, SCRATCH


def mean_std(values: list[float]) -> dict:
    """Mean, standard deviation, count and values of the finite ``values``."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals), "values": vals}


def _finals(runs: list[dict]) -> dict:
    return {f"{n}_{sp}": mean_std([r["final"][f"{n}_{sp}"]["miou"] for r in runs]) for n, sp in EVAL_SETS}


def _curves(runs: list[dict], n_stops: int) -> dict:
    return {f"{n}_{sp}": [mean_std([r["curve"][i][f"{n}_{sp}"] for r in runs]) for i in range(n_stops)]
            for n, sp in EVAL_SETS}


def _scratch_runs(results: dict, sup: str) -> list[dict]:
    return [r for name, r in sorted(results.items()) if name.startswith(f"scratch_{sup}_s")]


def part1(results: dict, profile: dict) -> dict:
    """Property vs category supervision: final mIoU per set over the seeds (and the from-scratch row)."""
    out: dict[str, Any] = {}
    for sup in ("property", "category"):
        out[sup] = _finals([results[f"{sup}_s{s}"] for s in profile["seeds"]])
    out["delta_property_minus_category"] = {
        k: (out["property"][k]["mean"] - out["category"][k]["mean"]) for k in out["property"]}
    out["seeds"] = list(profile["seeds"])
    out["backbone"] = results[f"property_s{profile['seeds'][0]}"]["settings"]["backbone"]
    if _scratch_runs(results, "property") and _scratch_runs(results, "category"):
        sc: dict[str, Any] = {"backbone": SCRATCH,
                              "seeds": [r["settings"]["seed"] for r in _scratch_runs(results, "property")]}
        for sup in ("property", "category"):
            sc[sup] = _finals(_scratch_runs(results, sup))
        sc["delta_property_minus_category"] = {
            k: (sc["property"][k]["mean"] - sc["category"][k]["mean"]) for k in sc["property"]}
        out["scratch"] = sc
    return out


def part2(results: dict, profile: dict) -> dict:
    """Training length: mIoU per set at every stop of the schedule, over the seeds."""
    n = len(profile["stops"])
    out: dict[str, Any] = {"steps": list(profile["stops"]), "schedule_steps": profile["steps"]}
    for sup in ("property", "category"):
        out[sup] = _curves([results[f"{sup}_s{s}"] for s in profile["seeds"]], n)
    if _scratch_runs(results, "property") and _scratch_runs(results, "category"):
        out["scratch"] = {sup: _curves(_scratch_runs(results, sup), n) for sup in ("property", "category")}
    return out


def chance_iou(pixels: dict[str, int]) -> dict[str, float | None]:
    """Expected IoU of a uniform random guess over the C classes: n_c / (N + n_c (C - 1))."""
    c, n = len(pixels), sum(pixels.values())
    return {k: (v / (n + v * (c - 1)) if v else None) for k, v in pixels.items()}


#: Part 3's scored arms: the held-out model with the classes from their descriptions or from random
#: training sentences, each with the open-set credit (the library default) and without it.
P3_ARMS = ("projected_credit", "control_credit", "projected_plain", "control_plain")
P3_FIELDS = P3_ARMS + ("upper_bound", "chance")


def part3(results: dict, profile: dict) -> dict:
    """Unknown categories: each held-out class's IoU per arm, upper bound and chance, per evaluation set."""
    out: dict[str, Any] = {"classes": list(HELD_OUT), "seeds": list(profile["heldout_seeds"]), "sets": {}}
    held = [results[f"heldout_s{s}"]["heldout"] for s in profile["heldout_seeds"]]
    first = held[0]
    out.update({k: first[k] for k in ("union_classes_removed", "training_label_space_classes",
                                      "training_sentences_mentioning_heldout_words", "examples",
                                      "open_set_credit")})
    for key in first["projected_plain"]:
        rows = {}
        pixels = first["projected_plain"][key]["per_class_pixels"]
        for c in HELD_OUT:
            vals: dict[str, list] = {f: [] for f in P3_ARMS}
            for h in held:
                for mode in ("credit", "plain"):
                    vals[f"projected_{mode}"].append(h[f"projected_{mode}"][key]["per_class_iou"][c])
                    vals[f"control_{mode}"] += [d[key]["per_class_iou"][c] for d in h[f"control_{mode}"] if key in d]
            upper = []  # the part 1 property model of the same seed, trained with them
            for s in profile["heldout_seeds"]:
                final = results.get(f"property_s{s}", {}).get("final", {})
                if key in final:
                    upper.append(final[key]["per_class_iou"][c])
            rows[c] = {**{f: mean_std(v) for f, v in vals.items()},
                       "upper_bound": mean_std(upper) if upper else None,
                       "chance": chance_iou(pixels)[c], "pixels": pixels[c]}
        present = [c for c in HELD_OUT if rows[c]["pixels"]]

        def avg(field):
            vals = [rows[c][field]["mean"] if isinstance(rows[c][field], dict) else rows[c][field]
                    for c in present]
            vals = [v for v in vals if v is not None]
            return statistics.fmean(vals) if vals and len(vals) == len(present) else None

        out["sets"][key] = {"per_class": rows, "classes_with_pixels": present,
                            "mean": {f: avg(f) for f in P3_FIELDS},
                            "upper_bound_seen_in_training": key.endswith("_train"),
                            "known_classes_miou": {mode: _known_miou([h[f"projected_{mode}"][key] for h in held])
                                                   for mode in ("credit", "plain")}}
    return out


def _known_miou(evals: list[dict]) -> float | None:
    vals = []
    for e in evals:
        v = [x for c, x in e["per_class_iou"].items() if c not in HELD_OUT and x is not None]
        vals.append(statistics.fmean(v) if v else None)
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def part4(results: dict, profile: dict, args) -> dict:
    """Label-space choices: one row per K, template and encoder."""
    rows = []

    def arm(name_fn, settings):
        runs = [results.get(name_fn(s)) for s in profile["part4_seeds"]]
        runs = [r for r in runs if r is not None]
        if not runs:
            return
        row = dict(settings)
        for n, sp in EVAL_SETS:
            row[f"{n}_{sp}"] = mean_std([r["final"][f"{n}_{sp}"]["miou"] for r in runs])
        ls = runs[0].get("label_space", {})
        row["sentences"] = ls.get("sentences")
        row["trained_classes_with_identical_signature"] = ls.get("trained_classes_with_identical_signature")
        rows.append(row)

    for k in profile["ks"]:
        arm(lambda s, k=k: f"property_s{s}" if k == profile["k"] and f"property_s{s}" in results else f"k{k}_s{s}",
            {"k": k, "template": "plain", "encoder": DEFAULT_ENCODER})
    for t in args.templates:
        if t != "plain":
            arm(lambda s, t=t: f"template_{t}_s{s}", {"k": profile["k"], "template": t, "encoder": DEFAULT_ENCODER})
    for enc in args.encoders:
        if enc != DEFAULT_ENCODER:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", enc).strip("-")
            arm(lambda s, slug=slug: f"encoder_{slug}_s{s}", {"k": profile["k"], "template": "plain", "encoder": enc})
    return {"seeds": list(profile["part4_seeds"]), "rows": rows}
