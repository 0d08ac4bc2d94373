"""The marks several figures share, in one place: the colours, bars on a time line, segments drawn
as horizontal lines, and the shaded boxes of the ground truth. They add to a figure; they compute
nothing."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# the common action, other classes, the supports, a whole video
COMMON, OTHER, SUPPORT, VIDEO = "#d62728", "#8c8c8c", "#1f77b4", "#e8e8e8"


def bars(rows, starts, ends, texts, name, colour, width=0.55, **kw) -> go.Bar:
    """Horizontal bars ``[start, end]`` on categorical rows (one legend entry for all of them)."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    kw = {"hovertemplate": "%{text}: %{customdata[0]:.1f}-%{customdata[1]:.1f} s<extra>%{y}</extra>",
          "customdata": np.round(np.stack([starts, ends], 1), 3), **kw}
    return go.Bar(y=list(rows), base=np.round(starts, 3), x=np.round(ends - starts, 3), orientation="h",
                  name=name, marker_color=colour, width=width, text=list(texts), textposition="inside",
                  insidetextanchor="middle", **kw)


def segment_lines(segments, y):
    """x, y for one Scatter drawing every ``[start, end]`` as a horizontal line at its own height."""
    segments, y = np.asarray(segments, float).reshape(-1, 2), np.asarray(y, float).reshape(-1)
    xs = np.stack([segments[:, 0], segments[:, 1], np.full(len(y), np.nan)], 1).reshape(-1)
    ys = np.repeat(y, 3)
    ys[2::3] = np.nan
    return np.round(xs, 3), np.round(ys, 4)


def gt_boxes(fig, gt, **where) -> None:
    """Shade each ground-truth ``[start, end]`` of ``gt (G, 2)`` in the common action's colour."""
    for s, e in np.asarray(gt, float).reshape(-1, 2):
        fig.add_vrect(x0=s, x1=e, fillcolor=COMMON, opacity=0.12, line_width=0, **where)


def legend_above(fig, *, rows: int = 1, title_lines: int = 1) -> go.Figure:
    """Put the legend in a row between the title and the plot, with room for ``rows`` rows of entries
    and a title of ``title_lines`` lines: away from the x axis's title (below) and the colorbars (right)."""
    top = 36 + 24 * title_lines + 26 * rows    # px: the title's lines, then the legend's rows
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
                      title=dict(yref="container", y=1.0, yanchor="top", pad=dict(t=14)),
                      margin=dict(t=top))
    return fig
