"""The explorer's heatmaps (plotly): one attention map with the tokens on its axes, and the masks side by side.

Queries are rows, top to bottom; keys are columns. A key a query may not attend is left blank rather than drawn
as a zero, so the mask's shape shows in the map.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

ALLOWED, BLOCKED = "#2563eb", "#eef2f7"


def attention_figure(weights: np.ndarray, labels: list[str], title: str) -> go.Figure:
    """A heatmap of `weights` (T, T), query i's row blank past key i (the causal mask), each cell's hover text
    naming both tokens and the weight."""
    t = len(labels)
    assert weights.shape == (t, t)
    shown = np.where(np.tril(np.ones((t, t), dtype=bool)), weights, np.nan)
    figure = go.Figure(go.Heatmap(
        z=shown, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=float(np.nanmax(shown)), xgap=1, ygap=1,
        hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>", colorbar={"thickness": 12}))
    size = min(900, max(420, 22 * t + 160))
    figure.update_layout(title=title, height=size, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         xaxis={"title": "key (attended)", "tickangle": -60, "type": "category"},
                         yaxis={"title": "query (attending)", "autorange": "reversed", "type": "category"})
    return figure


def masks_figure(views: dict[str, torch.Tensor]) -> go.Figure:
    """The masks of `views` (title -> (T, T) bool) side by side, allowed keys coloured."""
    figure = make_subplots(rows=1, cols=len(views), subplot_titles=list(views), horizontal_spacing=0.03)
    for column, mask in enumerate(views.values(), start=1):
        t = mask.shape[0]
        figure.add_trace(go.Heatmap(
            z=mask.int().numpy(), x=list(range(t)), y=list(range(t)), zmin=0, zmax=1, showscale=False, xgap=1, ygap=1,
            colorscale=[[0, BLOCKED], [1, ALLOWED]],
            hovertemplate="query %{y}, key %{x}: %{customdata}<extra></extra>",
            customdata=np.where(mask.numpy(), "attends", "masked")), row=1, col=column)
        figure.update_yaxes(autorange="reversed", scaleanchor=f"x{column if column > 1 else ''}", row=1, col=column)
    figure.update_layout(height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure
