"""Figures of a tuned comparison: the optimisation history of every arm, validation AUC against each tuned
parameter (slice plots), the final seed-level comparison (points per seed, paired lines), the final runs'
validation curves (has training levelled off?) and the same runs trained for several lengths (where is the
plateau?); one panel (or row) per backbone, arms under their paper names in the same colours in every figure.

Inputs are the tables a tuned sweep writes (``molre_lib.workbook.tune.read_trials``: one row per trial with
``arm``, ``trial``, ``state``, ``val_auc``, ``param_<NAME>``) and the per-seed table of
``molre_lib.analysis.seeds.seed_comparisons`` (``backbone``, ``arm_a``, ``arm_b``, ``seed``, ``auc_a``,
``auc_b``). Paper style (molre_lib.plots.style); the functions return the figure, ``save_figure`` writes it.
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from molre_lib.common.arms import arm_labels

from .style import ADAPTER_COLOURS, DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN, arm_colours, figure_width


PANEL_KEY = "BACKBONE"  # a tuned sweep's trials are compared within a backbone: one panel each
AXIS_NAMES = {"LR": "learning rate", "LORA_ALPHA_PER_RANK": "alpha / r", "LORA_ALPHA": "alpha"}


def method_colours(labels) -> dict[str, str]:
    """A colour per paper name, the same in every figure: an adapter's own colour for its bare name (LoRA,
    MoLRE, Linear probe), the extra colours in sorted order for the rest (MoLRE (shared A), ...)."""
    from .paper_tables import METHOD_NAMES

    adapter_of = {name: key for key, name in METHOD_NAMES.items()}
    labels = sorted(dict.fromkeys(str(x) for x in labels))
    colours = {x: ADAPTER_COLOURS[adapter_of[x]] for x in labels if adapter_of.get(x) in ADAPTER_COLOURS}
    colours.update(arm_colours([x for x in labels if x not in colours]))
    return colours


def _complete(trials: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("arm", "trial", "state", "val_auc") if c not in trials.columns]
    if missing:
        raise KeyError(f"trials table lacks {missing}: expected tune/trials.csv (molre_lib.workbook.tune.read_trials)")
    done = trials[trials["state"] == "COMPLETE"].copy()
    if done.empty:
        raise ValueError("no completed trial to plot (every trial failed or is still running)")
    done["val_auc"] = done["val_auc"].astype(float)
    done["label"] = _labels(done)
    done["panel"] = done[PANEL_KEY].astype(str) if PANEL_KEY in done else ""
    order = {p: i for i, p in enumerate(dict.fromkeys(done["panel"]))}  # panels in the sweep's order
    return done.assign(_order=done["panel"].map(order)).sort_values(["_order", "trial"], kind="stable")


def _labels(trials: pd.DataFrame) -> pd.Series:
    """The paper name of each trial's arm within its panel: from the grid keys trials.csv starts with (ADAPTER, and
    each other key that varies within an adapter: common.arms), else the arm name as it is."""
    from .paper_tables import method_name

    if "ADAPTER" not in trials:
        return trials["arm"].astype(str)
    keys = list(trials.columns[:list(trials.columns).index("arm")])
    return arm_labels(trials.assign(adapter=trials["ADAPTER"].astype(str)), keys).map(method_name)


NARROW_IN = 5.0  # below this width (a single print column) panels stack in one column instead of one row


def _layout(n_panels: int, panel_width: float, height: float) -> tuple[Figure, list]:
    """One panel per backbone: side by side when the figure may be wide, stacked in a single print column."""
    width = figure_width(min(DOUBLE_COLUMN_IN, max(SINGLE_COLUMN_IN, panel_width * n_panels)))
    rows, cols = (n_panels, 1) if width < NARROW_IN and n_panels > 1 else (1, n_panels)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(width, height * rows + 0.5))
    return fig, list(axes.ravel())


def _legend_below(fig: Figure, colours: dict[str, str], marker: str = "o",
                  extra: Sequence = ()) -> tuple[float, float, float, float]:
    """One legend under the panels (the arms' colours, then any ``extra`` handles); returns tight_layout's rect,
    leaving the bottom inches its rows take."""
    handles = [plt.Line2D([], [], color=c, marker=marker, lw=1.2, ms=4, label=a) for a, c in colours.items()]
    handles += list(extra)
    ncol = min(5 if fig.get_figwidth() >= NARROW_IN else 2, len(handles))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize="small", frameon=False)
    rows = -(-len(handles) // ncol)
    return (0, min(0.4, (0.12 + 0.2 * rows) / fig.get_figheight()), 1, 1)


def _finish(fig: Figure, colours: dict[str, str], title: str | None, extra: Sequence = ()) -> Figure:
    """The legend below the panels, the title, and a layout that leaves room for both."""
    room = _legend_below(fig, colours, extra=extra)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=room)
    return fig


def plot_optimisation_history(trials: pd.DataFrame, title: str | None = None) -> Figure:
    """Best-so-far validation macro AUC against the trial number, every arm of a backbone on one axes (trial
    values as dots), one panel per backbone; one legend below."""
    done = _complete(trials)
    colours = method_colours(done["label"].unique())
    panels = list(dict.fromkeys(done["panel"]))
    fig, axes = _layout(len(panels), SINGLE_COLUMN_IN, 2.2)
    for ax, panel in zip(axes, panels):
        for label, part in done[done["panel"] == panel].groupby("label", sort=False):
            x = np.arange(1, len(part) + 1)  # the arm's completed trials in order (a failed trial does not count)
            ax.scatter(x, part["val_auc"], s=8, color=colours[label], alpha=0.45, linewidths=0)
            ax.step(x, np.maximum.accumulate(part["val_auc"].to_numpy()), where="post", color=colours[label], lw=1.2,
                    label=label)
        ax.set_xlabel("trial (completed)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if panel:
            ax.set_title(panel, fontsize="small")
        ax.set_ylabel("best val macro AUC so far")
    return _finish(fig, colours, title)


def _chosen(part: pd.DataFrame) -> int:
    """Position in ``part`` (one arm's complete trials) of the trial the tuning chose: best ``mean_val_auc`` over
    seeds where the trials were confirmed (workbook.tune_confirm: ties to the better trial, then the earlier),
    otherwise the best ``val_auc`` (ties to the earlier)."""
    if "mean_val_auc" in part and pd.to_numeric(part["mean_val_auc"], errors="coerce").notna().any():
        mean = pd.to_numeric(part["mean_val_auc"], errors="coerce").fillna(-np.inf).to_numpy()
        order = np.lexsort((part["trial"].to_numpy(), -part["val_auc"].to_numpy(), -mean))
        return int(order[0])
    return int(part["val_auc"].to_numpy().argmax())


def plot_slices(trials: pd.DataFrame, params: Sequence[str] | None = None, log_x: Sequence[str] | None = None,
                title: str | None = None) -> Figure:
    """Validation AUC against each tuned parameter (columns), one row per backbone, every arm in its colour; each
    arm's chosen trial ringed (the best mean over seeds when the sweep confirmed its best trials: trials.csv's
    ``mean_val_auc``; else the best trial). An arm without a parameter (a probe has no alpha) is absent from that
    column.

    ``params`` default: every ``param_<NAME>`` column; ``log_x`` default: the numeric parameters whose values are
    all positive and span a factor 4 or more (learning rates, alpha); a grid's values are its ticks.
    """
    done = _complete(trials)
    params = list(params) if params is not None else [c[len("param_"):] for c in done.columns if c.startswith("param_")]
    if not params:
        raise ValueError("the trials table has no param_<NAME> column to plot against")
    colours = method_colours(done["label"].unique())
    panels = list(dict.fromkeys(done["panel"]))
    fig, axes = plt.subplots(len(panels), len(params), squeeze=False, sharey="row", figsize=(
        figure_width(DOUBLE_COLUMN_IN * min(1.0, max(len(params), 2) / 2)), 2.0 * len(panels) + 0.6))
    for i, panel in enumerate(panels):
        rows = done[done["panel"] == panel]
        for j, name in enumerate(params):
            ax = axes[i][j]
            all_values = pd.to_numeric(rows[f"param_{name}"], errors="coerce").dropna()
            groups = list(rows.groupby("label", sort=False))
            for k, (label, part) in enumerate(groups):
                values = pd.to_numeric(part[f"param_{name}"], errors="coerce")
                if values.isna().all():
                    continue
                if all_values.nunique() <= 8:  # a grid: arms side by side around each value (x 1.07 apart)
                    values = values * 1.07 ** (k - (len(groups) - 1) / 2)
                best = _chosen(part)
                ax.scatter(values, part["val_auc"], s=12, color=colours[label], linewidths=0, alpha=0.85)
                ax.scatter([values.iloc[best]], [part["val_auc"].iloc[best]], s=46,
                           facecolors="none", edgecolors=colours[label], linewidths=1.0)
            if (log_x is not None and name in log_x) or (log_x is None and len(all_values) and (all_values > 0).all()
                                                          and all_values.max() / all_values.min() >= 4):
                ax.set_xscale("log")
                ticks = sorted(all_values.unique())
                if len(ticks) <= 8 and min(b / a for a, b in zip(ticks, ticks[1:] or [np.inf])) >= 1.6:  # a grid
                    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize="small")
                    ax.minorticks_off()
                else:
                    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
            if i == len(panels) - 1:
                ax.set_xlabel(AXIS_NAMES.get(name, name))
            if j == 0:
                ax.set_ylabel(f"{panel}\nval macro AUC" if panel else "val macro AUC", fontsize="small")
    return _finish(fig, colours, title)


def plot_seed_comparison(per_seed: pd.DataFrame, title: str | None = None) -> Figure:
    """One panel per backbone: every arm's test macro AUC per seed (dots), each seed's arms joined by a thin line
    (seeds are paired: seed s of every arm saw the same data order), the mean over seeds as a bar."""
    from .paper_tables import method_name

    need = ["backbone", "arm_a", "arm_b", "seed", "auc_a", "auc_b"]
    missing = [c for c in need if c not in per_seed.columns]
    if missing:
        raise KeyError(f"per-seed table lacks {missing}: expected molre_lib.analysis.seeds.seed_comparisons(...)[1]")
    if per_seed.empty:
        raise ValueError("no paired seeds to plot")
    long = pd.concat([per_seed[["backbone", "arm_b", "seed", "auc_b"]].set_axis(["backbone", "arm", "seed", "auc"], axis=1),
                      per_seed[["backbone", "arm_a", "seed", "auc_a"]].set_axis(["backbone", "arm", "seed", "auc"], axis=1)])
    long = long.drop_duplicates(["backbone", "arm", "seed"])
    long["label"] = long["arm"].map(method_name)
    colours = method_colours(long["label"].unique())
    backbones = list(dict.fromkeys(long["backbone"]))
    n_arms = long.groupby("backbone")["arm"].nunique().max()
    fig, axes = _layout(len(backbones), 0.75 * n_arms + 0.7, 2.4)
    for ax, backbone in zip(axes, backbones):
        part = long[long["backbone"] == backbone]
        labels = list(dict.fromkeys(part["label"]))
        wide = part.pivot(index="seed", columns="label", values="auc")[labels]
        x = np.arange(len(labels))
        for _, row in wide.iterrows():
            ax.plot(x, row.to_numpy(), color="#999999", lw=0.6, alpha=0.7, zorder=1)
        for k, label in enumerate(labels):
            ax.scatter(np.full(wide[label].notna().sum(), k), wide[label].dropna(), color=colours[label], s=14, zorder=3)
            ax.hlines(wide[label].mean(), k - 0.25, k + 0.25, color="black", lw=1.4, zorder=4)
        ax.set_xticks(x, [textwrap.fill(label, 10, break_long_words=False) for label in labels], fontsize="small")
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_title(f"{backbone} ({len(wide)} seeds)", fontsize="small")
        ax.set_ylabel("test macro AUC")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_validation_curves(curves: dict, title: str | None = None) -> Figure:
    """Validation macro AUC after each epoch of every arm's final runs: the mean over seeds as a line, the range
    over seeds as a band, one panel per backbone; one legend below. ``curves``:
    ``molre_lib.analysis.seeds.validation_curves(runs)``."""
    from .paper_tables import method_name

    if not curves or not any(curves.values()):
        raise ValueError("no validation curve to plot (no finished run logged a validation AUC)")
    labels = {arm: method_name(arm) for arms in curves.values() for arm in arms}
    colours = method_colours(labels.values())
    fig, axes = _layout(len(curves), SINGLE_COLUMN_IN, 2.2)
    for ax, (backbone, arms) in zip(axes, curves.items()):
        for arm, c in arms.items():
            colour = colours[labels[arm]]
            ax.fill_between(c["epochs"], c["min"], c["max"], color=colour, alpha=0.15, linewidth=0)
            ax.plot(c["epochs"], c["mean"], color=colour, lw=1.2, marker="o", ms=2.5)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        n = max(c["n_seeds"] for c in arms.values())
        ax.set_title(f"{backbone} (mean and range over {n} seeds)", fontsize="small")
        ax.set_ylabel("val macro AUC")
    return _finish(fig, colours, title)


LENGTH_STYLES = ("-", "--", ":", "-.")  # the longest training first


def plot_training_lengths(curves: dict, title: str | None = None) -> Figure:
    """Validation macro AUC after each epoch of the same runs trained for different lengths (each with its own
    cosine schedule): has a length reached the plateau? One panel per backbone, a colour per arm (paper names),
    a line style per length (solid: the longest), the mean over seeds as a line and their range as a band.
    ``curves``: ``{backbone: {arm: {epochs_trained: {"epochs": [...], "mean": [...], "min": [...], "max": [...],
    "n_seeds": n}}}}`` (``benchmarks/phantom_length_figure.py`` builds it from ``phantom_tuned_length`` files)."""
    if not curves or not any(curves.values()):
        raise ValueError("no training-length curve to plot")
    colours = method_colours(arm for arms in curves.values() for arm in arms)
    lengths = sorted({n for arms in curves.values() for by_length in arms.values() for n in by_length}, reverse=True)
    if len(lengths) > len(LENGTH_STYLES):
        raise ValueError(f"{len(lengths)} training lengths: at most {len(LENGTH_STYLES)} can be told apart")
    style = dict(zip(lengths, LENGTH_STYLES))
    fig, axes = _layout(len(curves), SINGLE_COLUMN_IN, 2.2)
    for ax, (backbone, arms) in zip(axes, curves.items()):
        seeds = set()
        for arm, by_length in arms.items():
            for n, c in by_length.items():
                ax.fill_between(c["epochs"], c["min"], c["max"], color=colours[arm], alpha=0.08, linewidth=0)
                ax.plot(c["epochs"], c["mean"], color=colours[arm], ls=style[n], lw=1.1)
                ax.plot(c["epochs"][-1:], c["mean"][-1:], color=colours[arm], marker="o", ms=3)  # where it ended
                seeds.add(c["n_seeds"])
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        n = "–".join(str(x) for x in sorted(seeds))
        ax.set_title(f"{backbone} (mean and range over {n} seeds)", fontsize="small")
        ax.set_ylabel("val macro AUC")
    extra = [plt.Line2D([], [], color="0.35", ls=style[n], lw=1.1, label=f"{n} epochs") for n in lengths]
    return _finish(fig, colours, title, extra)

