"""The Model tab's views: the model card and the banner naming the model in use."""
from __future__ import annotations

from app.views.common import escape


def describe(entry) -> str:
    """The model card of ``entry`` (an :class:`app.services.models.ModelEntry`): backbone, size, supervision,
    encoder and its training label space."""
    m = entry.model
    cfg = m.config
    space = m.label_space
    lines = [f"**Model:** {escape(entry.title)} (<code>{escape(entry.name)}</code>)"
             + (" — ⚠ **untrained (random weights)**" if entry.untrained else ""),
             f"- backbone `{cfg.backbone}`, {m.num_parameters(include_aux=False) / 1e6:.2f} M parameters, "
             f"{cfg.supervision} supervision, {cfg.out_channels}-d output, input short side {cfg.input_size}",
             f"- temperature T = {cfg.temperature}, text encoder `{cfg.encoder_id}` (template `{cfg.template}`)"]
    if space is not None:
        lines.append(f"- training label space: {space.num_classes} classes, K = {space.k} properties")
    elif cfg.supervision == "category":
        lines.append(f"- category-supervised baseline: {len(m.class_names)} fixed classes (no properties, "
                     "no novel categories or other label sets)")
    offsets = getattr(m, "score_offsets", None) or {}
    if offsets:
        shown = ", ".join(f"{escape(k)} {v:+.2f}" for k, v in sorted(offsets.items(), key=lambda kv: -abs(kv[1])))
        lines.append(f"- score offsets (fitted on training images, `prolab calibrate`; added to the class each "
                     f"class means): {shown}")
    note = getattr(m, "score_offsets_note", None)
    if note:
        lines.append(f"- ⚠ {escape(note)}")
    return "\n".join(lines)


def banner(entry) -> str:
    """The line above the tabs naming the model in use (a warning for the untrained placeholder)."""
    if entry.untrained:
        return ('<div class="pl-banner-warn" id="pl-model-banner">⚠ <b>Untrained random model</b>: '
                "no trained model was found at <code>assets/models/default/</code>, so segmentations are "
                "meaningless (the app is fully usable otherwise). Load a trained model in the "
                "<i>Model</i> tab.</div>")
    return (f'<div id="pl-model-banner"><small>Model: <b>{escape(entry.title)}</b> '
            f'(<code>{escape(entry.name)}</code>)</small></div>')
