"""Routing figures drawn from the tables of :mod:`molre_lib.analysis.routing` (usage, entropy, per-finding gates)."""
from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from molre_lib.plots.data import _order_by_category
from molre_lib.plots.images import expert_colormap
from molre_lib.plots.results import _require
from molre_lib.plots.names import finding_name, finding_names
from molre_lib.plots.style import (DIVERGING_CMAP, DOUBLE_COLUMN_IN, MIN_POSITIVES, SINGLE_COLUMN_IN, category_colour,
                                  finding_categories)


def short_layer_names(layers: Sequence[str]) -> list[str]:
    """Layer names without their common dotted prefix (``encoder.blocks.3.attn.qkv`` -> ``3.attn.qkv``)."""
    layers = [str(x) for x in layers]
    if len(layers) < 2:
        return layers
    prefix = os.path.commonprefix(layers)
    prefix = prefix[: prefix.rfind(".") + 1] if "." in prefix else ""
    return [x[len(prefix):] or x for x in layers]


def plot_expert_usage(usage: pd.DataFrame, value: str = "usage", title: str | None = None) -> Figure:
    """Stacked bars: share of routing weight (``usage``) or of top-1 choices (``top1``) per expert, per layer.

    usage: columns layer, expert, and ``value`` (output of ``routing.expert_usage``), layers in model order.
    """
    _require(usage, ["layer", "expert", value], "expert usage")
    layers = list(dict.fromkeys(usage["layer"]))
    table = usage.pivot(index="layer", columns="expert", values=value).reindex(layers)
    n_experts = table.shape[1]
    cmap, _ = expert_colormap(n_experts)
    fig, ax = plt.subplots(figsize=(min(DOUBLE_COLUMN_IN, max(SINGLE_COLUMN_IN, 1.6 + 0.14 * len(layers))), 2.4))
    x = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for e in table.columns:
        vals = table[e].fillna(0).to_numpy()
        ax.bar(x, vals, bottom=bottom, color=cmap(int(e)), width=0.85, label=f"expert {e}")
        bottom += vals
    ax.axhline(1.0 / max(n_experts, 1), color="k", lw=0.5, ls=":")  # uniform usage for reference
    ax.set_xticks(x, short_layer_names(layers), rotation=90, fontsize=4.5 if len(layers) > 24 else 6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean gate" if value == "usage" else "top-1 share")
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_gate_entropy(entropy: pd.DataFrame, title: str | None = None) -> Figure:
    """Normalised gate entropy per layer: per-token (how soft each routing decision is) and of the mean
    usage (how balanced the experts are); 1 = uniform over experts, 0 = one expert."""
    _require(entropy, ["layer", "token_entropy_norm", "usage_entropy_norm"], "gate entropy")
    layers = list(entropy["layer"])
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(min(DOUBLE_COLUMN_IN, max(SINGLE_COLUMN_IN, 1.2 + 0.14 * len(layers))), 2.2))
    ax.plot(x, entropy["token_entropy_norm"], marker="o", markersize=2.5, label="per-token entropy")
    ax.plot(x, entropy["usage_entropy_norm"], marker="s", markersize=2.5, label="entropy of mean usage")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("entropy / log E")
    ax.set_xticks(x, short_layer_names(layers), rotation=90, fontsize=4.5 if len(layers) > 24 else 6)
    ax.legend(loc="lower left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_gates_by_finding(
    table: pd.DataFrame, findings: Sequence[str] | None = None, max_findings: int = 12, title: str | None = None,
    min_positives: int = MIN_POSITIVES,
) -> Figure:
    """Mean gate per expert for scans with (filled) vs without (open) each finding; one small panel per finding.

    table: output of ``routing.gates_by_finding`` for one layer (or the layer mean): columns finding, expert,
    pos_mean, neg_mean, diff and optionally n_pos (then each panel title says "n+ = ..."). By default the
    ``max_findings`` findings with the largest |diff| among those with at least ``min_positives`` positive scans
    are shown (a mean over one or two scans would top the ranking by chance; the forest plots' rare-finding rule);
    when no finding has that many, the largest |diff| of all.
    """
    _require(table, ["finding", "expert", "pos_mean", "neg_mean", "diff"], "gates by finding")
    n_pos = table.groupby("finding", sort=False)["n_pos"].max() if "n_pos" in table else None
    if findings is None:
        ranked = table.dropna(subset=["diff"])
        if n_pos is not None and (n_pos >= min_positives).any():
            ranked = ranked[ranked["finding"].map(n_pos) >= min_positives]
        strength = ranked.groupby("finding", sort=False)["diff"].apply(lambda d: d.abs().max())
        findings = list(strength.sort_values(ascending=False).index[:max_findings])
    if not findings:
        raise ValueError("no finding has both positive and negative scans; nothing to plot")
    n_experts = table["expert"].nunique()
    cmap, _ = expert_colormap(n_experts)
    cols = min(4, len(findings))
    rows = int(np.ceil(len(findings) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(DOUBLE_COLUMN_IN * cols / 4, 1.5 * rows + 0.3), squeeze=False)
    for ax, name in zip(axes.flat, findings):
        part = table[table["finding"] == name].sort_values("expert")
        x = np.arange(len(part))
        colours = [cmap(int(e)) for e in part["expert"]]
        ax.vlines(x, part["neg_mean"], part["pos_mean"], colors=colours, lw=1.0)  # dumbbell: the gap is the effect
        ax.scatter(x, part["pos_mean"], c=colours, s=14, zorder=3, label="with finding")
        ax.scatter(x, part["neg_mean"], facecolors="white", edgecolors=colours, s=14, zorder=3, label="without")
        ax.set_xticks(x, [f"E{e}" for e in part["expert"]], fontsize=6)
        ax.set_xlim(-0.6, len(part) - 0.4)
        head = textwrap.fill(finding_name(name, short=True), 26)  # 1.75-in panels
        ax.set_title(head if n_pos is None else f"{head}\n(n+ = {int(n_pos[name])})", fontsize=6.5)
    for ax in axes.flat[len(findings):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mean gate")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="k", label="scans with the finding"),
               Line2D([], [], marker="o", ls="", markerfacecolor="white", color="k", label="scans without")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_expert_specialisation(
    matrix: pd.DataFrame, categories: Mapping[str, str] | None = None, drop_empty: bool = True, title: str | None = None,
    n_pos: Mapping[str, int] | pd.Series | None = None, min_positives: int = MIN_POSITIVES,
) -> Figure:
    """Diverging heatmap finding × expert of (mean gate | positive − mean gate | negative), rows by category.

    matrix: output of ``routing.expert_specialisation`` (index = finding keys, columns = expert ids).
    Red: the expert is used more when the finding is present.
    n_pos: positive scans per finding (``routing.gates_by_finding``'s n_pos); rows with fewer than ``min_positives``
    are drawn grey and left out of the colour scale (a mean over one or two scans would set it by chance), and a
    note under the map says so.
    """
    keys = list(matrix.index)
    order = _order_by_category(pd.DataFrame({"finding": keys, "category": finding_categories(keys, categories)}))
    matrix = matrix.loc[order["finding"]]
    cats = list(order["category"])
    if drop_empty:
        keep = matrix.notna().any(axis=1).to_numpy()
        matrix, cats = matrix[keep], [c for c, k in zip(cats, keep) if k]
    values = matrix.to_numpy(dtype=float)
    rare = np.zeros(len(matrix), bool)
    if n_pos is not None:
        counts = pd.Series(n_pos).reindex(matrix.index).to_numpy(dtype=float)
        rare = ~(counts >= min_positives)
        values = np.where(rare[:, None], np.nan, values)
    vmax = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    fig, ax = plt.subplots(figsize=(SINGLE_COLUMN_IN * 0.6 + 0.25 * matrix.shape[1], 0.11 * len(matrix) + 0.9))
    cmap = plt.get_cmap(DIVERGING_CMAP).with_extremes(bad="0.88")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    if rare.any():
        ax.set_xlabel(f"grey: < {min_positives} positive scans", fontsize=5.5)
    ax.set_xticks(range(matrix.shape[1]), [f"E{c}" for c in matrix.columns])
    ax.set_yticks(range(len(matrix)), finding_names(matrix.index, short=True), fontsize=5)
    for tick, cat in zip(ax.get_yticklabels(), cats):
        tick.set_color(category_colour(cat))
    ax.spines[:].set_visible(False)
    fig.colorbar(im, ax=ax, fraction=0.08, pad=0.03, label="Δ mean gate (pos − neg)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
