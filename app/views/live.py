"""The Live tab's views: webcam and video status lines, class shares over time."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from app.views.common import escape, rgb_hex


def live_status(frame, frames: int, property_index: int | None) -> str:
    """One line under the webcam result: frame rate, time per frame, what is shown."""
    if property_index is not None:
        what = f"property {property_index}"
    else:
        ids = [i for i in np.unique(frame.labels) if i >= 0]
        names = ", ".join(escape(frame.class_names[i]) for i in ids[:6]) + (" ..." if len(ids) > 6 else "")
        what = names or "no class"
    return (f"**{frame.fps:.1f} frames/s** · {1000 * frame.seconds:.0f} ms per frame · {frames} segmented, "
            f"{frame.dropped} dropped while busy · showing: {what}")


def video_status(result, quality: str | None) -> str:
    """One line under a segmented video: frames, size, time and frame rate."""
    return (f"{result.frames} frames ({result.info.width} x {result.info.height}) segmented in "
            f"{result.seconds:.1f} s: **{result.fps:.1f} frames/s** ({escape(quality or 'default')}).")


def shares_over_time_figure(times: Sequence[float], table: dict[str, list[float]], class_names: list[str],
                            palette: np.ndarray, max_classes: int = 12):
    """Lines: each class's share of every frame over time (the classes with the largest mean share)."""
    order = sorted(table, key=lambda n: -float(np.mean(table[n])))[:max_classes]
    index = {n: i for i, n in enumerate(class_names)}
    fig = go.Figure()
    for name in order:
        color = rgb_hex(palette[index[name]]) if name in index else "#141414"
        fig.add_trace(go.Scatter(x=list(times), y=[100 * v for v in table[name]], mode="lines", name=escape(name),
                                 line=dict(color=color, width=2),
                                 hovertemplate="%{x:.2f} s: %{y:.1f} %<extra>" + escape(name) + "</extra>"))
    fig.update_layout(height=340, margin=dict(l=4, r=8, t=30, b=36), template="plotly_white",
                      xaxis=dict(title="time (s)"), yaxis=dict(title="share of the frame (%)", range=[0, 100]),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig
