"""Result figures: training curves, per-finding AUC forest plot, ΔAUC, calibration, confidence regimes, summary."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory

from molre_lib.plots.data import _order_by_category
from molre_lib.plots.names import finding_names
from molre_lib.plots.paper_tables import method_name
from molre_lib.plots.style import (
    ADAPTER_COLOURS,
    DOUBLE_COLUMN_IN,
    MIN_POSITIVES,
    SINGLE_COLUMN_IN,
    arm_colours,
    category_colour,
    category_legend,
    figure_width,
    finding_categories,
    print_column,
    small_font,
)


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")


CURVE_NAMES = {"loss": "training loss", "train_loss": "training loss", "val_loss": "validation loss",
               "val_macro_auc": "validation macro AUC", "val_micro_auc": "validation micro AUC"}


def curve_name(column: str) -> str:
    """A train-log column as a legend reads it (``val_macro_auc`` -> "validation macro AUC")."""
    return CURVE_NAMES.get(column, column.replace("_", " ").replace("auc", "AUC").replace("val ", "validation "))


def plot_training_curves(
    log: pd.DataFrame, x: str | None = None, loss_cols: Sequence[str] | None = None, auc_cols: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Loss (left) and AUC (right) against step/epoch from a train_log.csv DataFrame.

    By default x is the first of step/global_step/epoch present; loss and AUC columns are those whose name
    contains "loss" / "auc". Rows with NaN in a column (e.g. validation only every epoch) are skipped per curve.
    """
    if x is None:
        x = next((c for c in ("step", "global_step", "epoch") if c in log.columns), None)
        if x is None:
            raise KeyError(f"train log has no step/global_step/epoch column; has {list(log.columns)}")
    loss_cols = list(loss_cols) if loss_cols is not None else [c for c in log.columns if "loss" in c.lower()]
    auc_cols = list(auc_cols) if auc_cols is not None else [c for c in log.columns if "auc" in c.lower()]
    _require(log, [x, *loss_cols, *auc_cols], "train log")
    if not loss_cols and not auc_cols:
        raise KeyError(f"train log has neither loss nor AUC columns; has {list(log.columns)}")
    panels = [(loss_cols, "loss"), (auc_cols, "AUC")]
    panels = [p for p in panels if p[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(figure_width(DOUBLE_COLUMN_IN * len(panels) / 2), 2.3),
                             squeeze=False)
    for ax, (cols, ylabel) in zip(axes[0], panels):
        for col in cols:
            part = log[[x, col]].dropna()
            marker = "o" if len(part) < 30 else None
            ax.plot(part[x], part[col], marker=marker, markersize=2.5, label=curve_name(col))
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), borderaxespad=0.0)  # above the axes, off the curves
        if ylabel == "AUC":
            ax.axhline(0.5, color="0.6", lw=0.6, ls=":")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _category_panels(table: pd.DataFrame, n_panels: int) -> list[pd.DataFrame]:
    """Split rows (already in category order) into ``n_panels`` runs of whole categories with balanced rows."""
    cats = list(dict.fromkeys(table["category"]))
    if n_panels <= 1 or len(cats) < 2:
        return [table]
    sizes = [int((table["category"] == c).sum()) for c in cats]
    best = None
    for cuts in combinations(range(1, len(cats)), min(n_panels, len(cats)) - 1):
        bounds = [0, *cuts, len(cats)]
        load = max(sum(sizes[a:b]) for a, b in zip(bounds, bounds[1:]))
        if best is None or load < best[0]:
            best = (load, bounds)
    bounds = best[1]
    return [table[table["category"].isin(cats[a:b])] for a, b in zip(bounds, bounds[1:])]


def _panel_layout(table: pd.DataFrame, panels: int | None, width: float):
    """(parts, figure) for a per-finding plot: two panels side by side at double-column print width."""
    if panels is None:
        panels = 2 if print_column() == "double" else 1
    parts = _category_panels(table, panels)
    rows = max(len(p) for p in parts)
    pitch = 0.11 if print_column() == "single" else 0.12  # inches per row: 7-pt labels stay apart
    fig, axes = plt.subplots(1, len(parts), figsize=(figure_width(width), pitch * rows + 0.9), squeeze=False,
                             sharex=True)  # one AUC / ΔAUC scale across panels
    return parts, fig, list(axes[0])


def _legend_below(fig: Figure, categories=None, handles=None, ncol: int | None = None) -> None:
    """One legend under all panels (a patch per category by default, then any ``handles``), inside the figure so
    a print-size page keeps it; the axes move up to make room."""
    from matplotlib.patches import Patch

    handles = [*([Patch(color=category_colour(c), label=str(c).capitalize()) for c in dict.fromkeys(categories)]
                 if categories is not None else []), *(handles or [])]
    ncol = ncol or min(len(handles), 6 if fig.get_figwidth() >= 6 else 3)
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    while True:  # as many columns as fit the page width
        legend = fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=small_font(6),
                            bbox_to_anchor=(0.5, 0.0), handlelength=1.0, columnspacing=1.0)
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width * 0.98:
            break
        legend.remove()
        ncol -= 1
    rows = -(-len(handles) // max(ncol, 1))
    extra = (0.16 * rows + 0.05) / fig.get_figheight()  # inches of legend as a figure fraction
    fig.subplots_adjust(bottom=fig.subplotpars.bottom + extra)


def _finding_ticks(ax, part: pd.DataFrame, y: np.ndarray, colours) -> None:
    """Row labels: the finding's name (findings.csv), coloured by category."""
    ax.set_yticks(y, finding_names(part["finding"], short=True), fontsize=small_font(5.5))
    for tick, colour in zip(ax.get_yticklabels(), colours):
        tick.set_color(colour)
    ax.set_ylim(max(len(part), 1) - 0.5, -0.5)


def _positives_column(ax, part: pd.DataFrame, y: np.ndarray) -> None:
    """The number of test positives of each row, in a column right of the axes under the header "n+"."""
    if "n_pos" not in part:
        return
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for yi, n in zip(y, part["n_pos"].to_numpy(dtype=float)):
        ax.text(1.02, yi, "" if np.isnan(n) else f"{int(n)}", transform=right, ha="left", va="center",
                fontsize=small_font(5.5), color="0.25")
    ax.text(1.02, 1.0, "n+", transform=ax.transAxes, ha="left", va="bottom", fontsize=small_font(5.5), color="0.25")


def _rare(part: pd.DataFrame, min_positives: int) -> np.ndarray:
    """Rows with fewer than ``min_positives`` test positives (no usable interval); none without an n_pos column."""
    if "n_pos" not in part:
        return np.zeros(len(part), bool)
    return part["n_pos"].to_numpy(dtype=float) < min_positives


def _marker_handles(min_positives: int, rare: bool, missing: bool, interval: str) -> list:
    handles = [Line2D([], [], color="0.3", marker="o", ms=3, lw=0.8, label=interval)]
    if rare:
        handles.append(Line2D([], [], color="0.3", marker="o", ms=3, ls="", markerfacecolor="none",
                              label=f"< {min_positives} positives: point only, too few for an interval"))
    if missing:
        handles.append(Line2D([], [], color="0.5", marker="o", ms=3, ls="", markerfacecolor="none",
                              label="no AUC (no positives or no negatives), drawn at 0.5"))
    handles.append(Line2D([], [], ls="", label="n+: positives in the test split"))
    return handles


def plot_forest(
    table: pd.DataFrame, auc: str = "auc", lo: str = "ci_low", hi: str = "ci_high", finding: str = "finding",
    categories: Mapping[str, str] | None = None, label: str | None = None, title: str | None = None,
    panels: int | None = None, min_positives: int = MIN_POSITIVES,
) -> Figure:
    """Forest plot: per-finding AUC with CI, rows grouped by category (75 rows stay readable), finding names.

    table columns: finding, auc, ci_low, ci_high and optionally n_pos (shown as a column "n+") and category
    (else from the taxonomy). Findings with fewer than ``min_positives`` test positives are drawn hollow without
    an interval (a scan bootstrap cannot estimate one from so few); findings with NaN AUC (one class only) get an
    open grey marker at 0.5. The legend says both.
    ``panels``: side-by-side panels of whole categories (default 2 when sized for a double column, else 1).
    """
    _require(table, [finding, auc, lo, hi], "forest table")
    table = table.copy()
    if "category" not in table.columns:
        table["category"] = finding_categories(table[finding], categories)
    table = _order_by_category(table.rename(columns={finding: "finding"}))
    vals_all = table[auc].to_numpy(dtype=float)
    mean = np.nanmean(vals_all) if (~np.isnan(vals_all)).any() else np.nan
    parts, fig, axes = _panel_layout(table, panels, SINGLE_COLUMN_IN + 0.6)
    any_rare = any_missing = False
    for ax, part in zip(axes, parts):
        y = np.arange(len(part))
        colours = np.array([category_colour(c) for c in part["category"]])
        vals = part[auc].to_numpy(dtype=float)
        ok = ~np.isnan(vals)
        rare = ok & _rare(part, min_positives)
        full = ok & ~rare
        any_rare |= bool(rare.any())
        any_missing |= bool((~ok).any())
        ax.hlines(y[full], part[lo].to_numpy(dtype=float)[full], part[hi].to_numpy(dtype=float)[full],
                  colors=colours[full], lw=0.8)
        ax.scatter(vals[full], y[full], c=colours[full], s=9, zorder=3, label=label)
        if rare.any():
            ax.scatter(vals[rare], y[rare], facecolors="none", edgecolors=colours[rare], s=11, lw=0.8, zorder=3)
        if (~ok).any():
            ax.scatter(np.full((~ok).sum(), 0.5), y[~ok], facecolors="none", edgecolors="0.5", s=9, zorder=3)
        ax.axvline(0.5, color="0.6", lw=0.6, ls=":")
        if np.isfinite(mean):
            ax.axvline(mean, color="0.3", lw=0.6, ls="--")
        _finding_ticks(ax, part, y, colours)
        _positives_column(ax, part, y)
        ax.set_xlabel(f"AUC (mean {mean:.3f})" if np.isfinite(mean) else "AUC")
    if title:
        (fig.suptitle(title) if len(axes) > 1 else axes[0].set_title(title))
    _legend_below(fig, table["category"],
                  _marker_handles(min_positives, any_rare, any_missing, "AUC, 95% CI (scan bootstrap)"))
    return fig


def significance_mark(p: float) -> str:
    """'***' p<0.001, '**' p<0.01, '*' p<0.05, '' otherwise (p is the corrected p-value)."""
    if p is None or np.isnan(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else ""


def delta_axis_limits(table: pd.DataFrame, delta: str, lo: str, hi: str, rare: np.ndarray) -> tuple[float, float]:
    """x limits of a ΔAUC plot: the drawn intervals and points (rare rows: points only), 0 included, with room for
    the significance stars right of the widest interval."""
    lows = np.concatenate([table[lo].to_numpy(dtype=float)[~rare], table[delta].to_numpy(dtype=float)])
    highs = np.concatenate([table[hi].to_numpy(dtype=float)[~rare], table[delta].to_numpy(dtype=float)])
    left, right = np.nanmin([*lows, 0.0]), np.nanmax([*highs, 0.0])
    span = max(right - left, 0.05)
    return left - 0.05 * span, right + 0.16 * span


def plot_delta_auc(
    table: pd.DataFrame, delta: str = "delta_auc", lo: str = "ci_low", hi: str = "ci_high", p: str = "p_holm",
    finding: str = "finding", categories: Mapping[str, str] | None = None, title: str | None = None,
    xlabel: str = "ΔAUC (MoLRE − LoRA)", panels: int | None = None, min_positives: int = MIN_POSITIVES,
) -> Figure:
    """Per-finding ΔAUC with CI, grouped by category, finding names, significance stars beside each row's interval.

    table: ``stats.paired_delong`` output (finding, n_pos, delta_auc, ci_low, ci_high, p_holm); NaN rows are left
    out. Rows with fewer than ``min_positives`` test positives are drawn hollow, without interval or star.
    The axis spans what is drawn. ``panels``: side-by-side panels of whole categories (default 2 when sized for a
    double column, else 1).
    """
    _require(table, [finding, delta, lo, hi, p], "ΔAUC table")
    table = table.copy()
    if "category" not in table.columns:
        table["category"] = finding_categories(table[finding], categories)
    table = _order_by_category(table.rename(columns={finding: "finding"}).dropna(subset=[delta]))
    rare_all = _rare(table, min_positives)
    xlim = delta_axis_limits(table, delta, lo, hi, rare_all) if len(table) else (-1.0, 1.0)
    pad = 0.01 * (xlim[1] - xlim[0])
    parts, fig, axes = _panel_layout(table, panels, SINGLE_COLUMN_IN + 0.8)
    for ax, part in zip(axes, parts):
        y = np.arange(len(part))
        colours = np.array([category_colour(c) for c in part["category"]])
        d = part[delta].to_numpy(dtype=float)
        rare = _rare(part, min_positives)
        highs = part[hi].to_numpy(dtype=float)
        ax.hlines(y[~rare], part[lo].to_numpy(dtype=float)[~rare], highs[~rare], colors=colours[~rare], lw=0.8)
        ax.scatter(d[~rare], y[~rare], c=colours[~rare], s=9, zorder=3)
        if rare.any():
            ax.scatter(d[rare], y[rare], facecolors="none", edgecolors=colours[rare], s=11, lw=0.8, zorder=3)
        ax.axvline(0.0, color="0.4", lw=0.6)
        for yi, pv, end, r in zip(y, part[p].to_numpy(dtype=float), highs, rare):
            mark = "" if r else significance_mark(pv)
            if mark:  # just right of the row's interval
                ax.text(end + pad, yi, mark, va="center", ha="left", fontsize=small_font(6))
        ax.set_xlim(*xlim)
        _finding_ticks(ax, part, y, colours)
        _positives_column(ax, part, y)
        ax.set_xlabel(xlabel)
    if title:
        axes[0].set_title(title, loc="left")
    handles = _marker_handles(min_positives, bool(rare_all.any()), False, "ΔAUC, 95% CI (DeLong)")
    handles.insert(1, Line2D([], [], ls="", label="* p<.05  ** p<.01  *** p<.001 (Holm)"))
    _legend_below(fig, table["category"], handles)
    return fig


def plot_reliability(
    probs: Mapping[str, np.ndarray], labels: np.ndarray, mask: np.ndarray | None = None, n_bins: int = 10,
    title: str | None = None,
) -> Figure:
    """Reliability diagram (all findings pooled) for one or more models, pooled ECE in the legend, histogram below.

    probs: model name -> (N, F) predicted probabilities; labels, mask: (N, F). ECE from
    :func:`molre_lib.stats.calibration.expected_calibration_error` with the same bins.
    """
    from sklearn.calibration import calibration_curve

    from molre_lib.stats.calibration import expected_calibration_error

    fig, (ax, hax) = plt.subplots(2, 1, figsize=(figure_width(SINGLE_COLUMN_IN), 3.4), sharex=True,
                                  height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls=":")
    keep = np.ones(np.shape(labels), bool) if mask is None else np.asarray(mask) > 0
    for name, p in probs.items():
        p = np.asarray(p, dtype=float)
        if p.shape != np.shape(labels):
            raise ValueError(f"{name}: probabilities {p.shape} and labels {np.shape(labels)} differ in shape")
        pf, yf = p[keep], np.asarray(labels, dtype=float)[keep]
        frac_pos, mean_pred = calibration_curve(yf, pf, n_bins=n_bins, strategy="uniform")
        _, ece = expected_calibration_error(labels, p, mask, n_bins=n_bins)
        colour = ADAPTER_COLOURS.get(str(name).lower())
        ax.plot(mean_pred, frac_pos, marker="o", markersize=2.5, color=colour, label=f"{name} (ECE {ece:.3f})")
        hax.hist(pf, bins=n_bins, range=(0, 1), histtype="step", color=colour, log=True)
    ax.set_ylabel("observed frequency")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), borderaxespad=0.0)  # above the axes, off the curves
    hax.yaxis.set_minor_formatter(NullFormatter())  # log axis: minor labels (6x10^1 ...) collide at 7 pt
    hax.set_xlabel("predicted probability")
    hax.set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confidence_shift(
    shift: pd.DataFrame, label_a: str = "LoRA", label_b: str = "MoLRE", categories: Mapping[str, str] | None = None,
    title: str | None = None, band: tuple[float, float] = (0.3, 0.7),
) -> Figure:
    """Confidence-regime shift of positives from run A to run B (``calibration.confidence_regime_shift``).

    Top: totals over findings (borderline in A, moved up, moved down, confident in A / B). Below: per finding
    with positives, share of positives moved up (borderline in A -> confident in B, right) and down (left).
    ``band``: the borderline band the table was computed with; the legend states it, so "borderline" and
    "confident" have their thresholds on the figure.
    """
    _require(shift, ["finding", "n_pos", "borderline_a", "moved_up", "moved_down", "confident_a", "confident_b"],
             "confidence-regime shift")
    table = shift[shift["n_pos"] > 0].copy()
    if "category" not in table.columns:
        table["category"] = finding_categories(table["finding"], categories)
    table = _order_by_category(table)
    parts = _category_panels(table, 2 if print_column() == "double" else 1)
    n = max(len(p) for p in parts)
    pitch = 0.11 if print_column() == "single" else 0.12
    fig = plt.figure(figsize=(figure_width(SINGLE_COLUMN_IN + 1.0), pitch * n + 2.2))
    grid = fig.add_gridspec(2, len(parts), height_ratios=(1.1, pitch * n + 0.3))
    tax = fig.add_subplot(grid[0, :])
    axes = [fig.add_subplot(grid[1, 0])]
    axes += [fig.add_subplot(grid[1, i], sharex=axes[0]) for i in range(1, len(parts))]
    totals = {f"borderline in {label_a}": table["borderline_a"].sum(), "moved up": table["moved_up"].sum(),
              "moved down": table["moved_down"].sum(), f"confident in {label_a}": table["confident_a"].sum(),
              f"confident in {label_b}": table["confident_b"].sum()}
    tax.barh(range(len(totals)), list(totals.values()), height=0.7,
             color=["#BBBBBB", "#009E73", "#D55E00", ADAPTER_COLOURS["lora"], ADAPTER_COLOURS["molre"]])
    tax.set_yticks(range(len(totals)), list(totals), fontsize=small_font(6))
    tax.invert_yaxis()
    tax.set_xlabel("positive (scan, finding) pairs")
    for ax, part in zip(axes, parts):
        y = np.arange(len(part))
        npos = part["n_pos"].to_numpy(dtype=float)
        ax.barh(y, part["moved_up"] / npos, color="#009E73", height=0.8,
                label=f"moved up: borderline in {label_a} → confident in {label_b}")
        ax.barh(y, -part["moved_down"] / npos, color="#D55E00", height=0.8,
                label=f"moved down: confident in {label_a} → borderline in {label_b}")
        ax.axvline(0, color="0.4", lw=0.6)
        _finding_ticks(ax, part, y, [category_colour(c) for c in part["category"]])
        ax.set_xlabel("share of positives")
    if title:
        tax.set_title(title)
    meaning = Line2D([], [], ls="", label=f"positives only; borderline: {band[0]:g} ≤ p ≤ {band[1]:g}, "
                                          f"confident: p > {band[1]:g}")
    _legend_below(fig, handles=[*axes[0].get_legend_handles_labels()[0], meaning], ncol=1)
    return fig


def plot_summary(
    table: pd.DataFrame, x: str = "backbone", group: str = "arm", value: str = "mean_auc",
    lo: str | None = "ci_low", hi: str | None = "ci_high", title: str | None = None,
) -> Figure:
    """Grouped bars (e.g. mean AUC per backbone for each arm: LoRA, MoLRE, variants) with CI whiskers, from a long table.

    An AUC (``value`` naming one) is drawn as a bar rising from chance, 0.5, where its axis starts: bars on an axis
    cut anywhere else would make a 0.02 difference look like a factor of two."""
    _require(table, [x, group, value] + [c for c in (lo, hi) if c], "summary table")
    base = 0.5 if "auc" in value.lower() else 0.0
    xs = list(dict.fromkeys(table[x]))
    groups = list(dict.fromkeys(table[group]))
    colours = arm_colours(groups)
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(figure_width(max(SINGLE_COLUMN_IN, 0.7 * len(xs) + 1.0)), 2.4))
    for i, g in enumerate(groups):
        part = table[table[group] == g].set_index(x).reindex(xs)
        pos = np.arange(len(xs)) + (i - (len(groups) - 1) / 2) * width
        yerr = None
        if lo and hi:
            yerr = np.vstack([part[value] - part[lo], part[hi] - part[value]]).clip(min=0)
        ax.bar(pos, part[value] - base, bottom=base, width=width * 0.95, yerr=yerr, capsize=1.5,
               error_kw={"lw": 0.6}, color=colours[str(g)], label=method_name(str(g)) if group == "arm" else str(g))
    ax.set_xticks(np.arange(len(xs)), xs, rotation=30, ha="right")
    finite = table[[c for c in (value, lo, hi) if c]].to_numpy(dtype=float)  # whiskers stay inside the axes
    finite = finite[np.isfinite(finite)]
    if base:
        top = min(1.0, max(finite.max(), base) + 0.02) if finite.size and finite.max() <= 1 else None
        ax.set_ylim(min(base, finite.min() - 0.02) if finite.size else base, top)
    elif finite.size:
        ax.set_ylim(max(0.0, finite.min() - 0.05), min(1.0, finite.max() + 0.02) if finite.max() <= 1 else None)
    ax.set_ylabel({"mean_auc": "Mean AUC"}.get(value, value.replace("_", " ")))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the axes: arm names can be long
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
