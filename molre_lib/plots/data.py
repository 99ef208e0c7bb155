"""Dataset figures: prevalence per finding and category, and the finding co-occurrence heatmap."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from molre_lib.plots.names import finding_names
from molre_lib.plots.style import (
    DOUBLE_COLUMN_IN,
    SEQUENTIAL_CMAP,
    category_colour,
    category_legend,
    finding_categories,
)


def _keys_or_default(keys: Sequence[str] | None) -> list[str]:
    if keys is None:
        from molre_lib.data.taxonomy import FINDING_KEYS

        return list(FINDING_KEYS)
    return list(keys)


def prevalence_table(
    labels: np.ndarray, mask: np.ndarray | None = None, keys: Sequence[str] | None = None,
    categories: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per-finding prevalence among scans where the label is known.

    labels, mask: (N, F) arrays (mask 1 = known). Returns columns finding, category, n_pos, n_known, prevalence.
    """
    labels = np.asarray(labels, dtype=float)  # (N, F)
    mask = np.ones_like(labels) if mask is None else np.asarray(mask, dtype=float)
    keys = _keys_or_default(keys)
    if labels.shape != mask.shape or labels.shape[1] != len(keys):
        raise ValueError(f"labels {labels.shape}, mask {mask.shape} and {len(keys)} keys disagree")
    n_pos = (labels * mask).sum(0)
    n_known = mask.sum(0)
    prevalence = np.divide(n_pos, n_known, out=np.full_like(n_pos, np.nan), where=n_known > 0)
    return pd.DataFrame({
        "finding": keys, "category": finding_categories(keys, categories),
        "n_pos": n_pos.astype(int), "n_known": n_known.astype(int), "prevalence": prevalence,
    })


def plot_prevalence(table: pd.DataFrame, by: str = "finding", value: str = "prevalence", title: str | None = None) -> Figure:
    """Horizontal bars of ``value`` per finding (coloured by category, grouped in category order) or per category.

    table: output of :func:`prevalence_table` (columns finding, category, n_pos, n_known, prevalence).
    """
    if by not in ("finding", "category"):
        raise ValueError(f"by must be 'finding' or 'category', got {by!r}")
    for col in ("finding", "category", value):
        if col not in table.columns:
            raise KeyError(f"prevalence table lacks column {col!r} (has {list(table.columns)})")
    if by == "category":
        grouped = table.groupby("category", sort=False)
        if value == "prevalence" and {"n_pos", "n_known"} <= set(table.columns):
            # Fraction of scans with any finding of the category cannot be recovered from marginals; show the
            # mean per-finding prevalence and the positive-label count instead.
            data = pd.DataFrame({"value": grouped[value].mean(), "n_pos": grouped["n_pos"].sum()})
        else:
            data = pd.DataFrame({"value": grouped[value].mean()})
        names, cats = list(data.index), list(data.index)
        height = 0.3 * len(names) + 0.8
        xlabel = f"mean {value} per finding"
    else:
        data = _order_by_category(table).rename(columns={value: "value"})
        names, cats = finding_names(data["finding"], short=True), list(data["category"])
        height = 0.12 * len(names) + 0.8  # 75 rows stay readable at 7 pt
        xlabel = value
    fig, ax = plt.subplots(figsize=(DOUBLE_COLUMN_IN / 2 + 0.5, height))
    y = np.arange(len(names))
    ax.barh(y, data["value"].to_numpy(), color=[category_colour(c) for c in cats], height=0.8)
    ax.set_yticks(y, names, fontsize=5.5 if by == "finding" else 7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylim(len(names) - 0.5, -0.5)
    category_legend(ax, cats, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside the bars
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _order_by_category(table: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by taxonomy category order, keeping finding order inside a category."""
    from molre_lib.plots.style import CATEGORY_COLOURS

    order = {c: i for i, c in enumerate(CATEGORY_COLOURS)}
    rank = table["category"].map(lambda c: order.get(c, len(order)))
    return table.assign(_rank=rank, _pos=np.arange(len(table))).sort_values(["_rank", "_pos"]).drop(columns=["_rank", "_pos"]).reset_index(drop=True)


def cooccurrence_matrix(
    labels: np.ndarray, mask: np.ndarray | None = None, keys: Sequence[str] | None = None, normalize: str = "conditional",
) -> pd.DataFrame:
    """Finding × finding co-occurrence over scans where both labels are known.

    normalize: "count" (number of scans positive for both), "conditional" (P(column | row)),
    or "jaccard" (|A∩B| / |A∪B|). Diagonal is left as is (1 for conditional/jaccard where defined).
    """
    if normalize not in ("count", "conditional", "jaccard"):
        raise ValueError(f"normalize must be count, conditional or jaccard, got {normalize!r}")
    y = np.asarray(labels, dtype=float)  # (N, F)
    m = np.ones_like(y) if mask is None else np.asarray(mask, dtype=float)
    keys = _keys_or_default(keys)
    pos = y * m
    both = pos.T @ pos  # (F, F) scans positive for both
    if normalize == "count":
        out = both
    elif normalize == "conditional":
        row_pos = pos.T @ m  # (F, F) scans positive for row with column known
        out = np.divide(both, row_pos, out=np.full_like(both, np.nan), where=row_pos > 0)
    else:
        known_both = m.T @ m
        either = (pos.T @ m) + (m.T @ pos) - both
        out = np.divide(both, either, out=np.full_like(both, np.nan), where=(either > 0) & (known_both > 0))
    return pd.DataFrame(out, index=keys, columns=keys)


def plot_cooccurrence(
    matrix: pd.DataFrame, categories: Mapping[str, str] | None = None, drop_empty: bool = True, title: str | None = None,
) -> Figure:
    """Heatmap of a :func:`cooccurrence_matrix`, findings grouped by category with coloured tick labels."""
    keys = list(matrix.index)
    cats = finding_categories(keys, categories)
    order = _order_by_category(pd.DataFrame({"finding": keys, "category": cats}))
    matrix = matrix.loc[order["finding"], order["finding"]]
    cats = list(order["category"])
    if drop_empty:
        keep = ~(matrix.fillna(0).eq(0).all(axis=0) & matrix.fillna(0).eq(0).all(axis=1)).to_numpy()
        matrix, cats = matrix.loc[keep, keep], [c for c, k in zip(cats, keep) if k]
    n = len(matrix)
    side = min(DOUBLE_COLUMN_IN, 1.5 + 0.09 * n)
    fig, ax = plt.subplots(figsize=(side + 0.8, side))
    data = np.ma.masked_invalid(matrix.to_numpy(dtype=float))
    im = ax.imshow(data, cmap=SEQUENTIAL_CMAP, aspect="equal")
    fs = 4.5 if n > 40 else 6
    ax.set_xticks(range(n), finding_names(matrix.columns, short=True), rotation=90, fontsize=fs)
    ax.set_yticks(range(n), finding_names(matrix.index, short=True), fontsize=fs)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, cat in zip(ticks, cats):
            tick.set_color(category_colour(cat))
    ax.spines[:].set_visible(False)
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("P(column finding | row finding)", fontsize=6)  # the matrix is not symmetric: say which way
    bar.ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title)
    return fig
