"""Figures of a tuned comparison: the optimisation history of every arm, validation AUC against each tuned
parameter (slice plots), and the final seed-level comparison (points per seed, paired lines).

Inputs are the tables a tuned sweep writes (``molre_lib.workbook.tune.read_trials``: one row per trial with
``arm``, ``trial``, ``state``, ``val_auc``, ``param_<NAME>``) and the per-seed table of
``molre_lib.analysis.seeds.seed_comparisons`` (``backbone``, ``arm_a``, ``arm_b``, ``seed``, ``auc_a``,
``auc_b``). Paper style (molre_lib.plots.style); the functions return the figure, ``save_figure`` writes it.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .style import DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN, arm_colours, figure_width


def _complete(trials: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("arm", "trial", "state", "val_auc") if c not in trials.columns]
    if missing:
        raise KeyError(f"trials table lacks {missing}: expected tune/trials.csv (molre_lib.workbook.tune.read_trials)")
    done = trials[trials["state"] == "COMPLETE"].copy()
    if done.empty:
        raise ValueError("no completed trial to plot (every trial failed or is still running)")
    done["val_auc"] = done["val_auc"].astype(float)
    return done.sort_values(["arm", "trial"])


def plot_optimisation_history(trials: pd.DataFrame, title: str | None = None) -> Figure:
    """Best-so-far validation macro AUC against the trial number, every arm on one axes (trial values as dots)."""
    done = _complete(trials)
    colours = arm_colours(done["arm"].unique())
    fig, ax = plt.subplots(figsize=(figure_width(SINGLE_COLUMN_IN), 2.4))
    for arm, part in done.groupby("arm", sort=False):
        x = np.arange(1, len(part) + 1)  # the arm's completed trials in order (a failed trial does not count)
        ax.scatter(x, part["val_auc"], s=8, color=colours[arm], alpha=0.45, linewidths=0)
        ax.step(x, np.maximum.accumulate(part["val_auc"].to_numpy()), where="post", color=colours[arm], lw=1.2,
                label=arm)
    ax.set_xlabel("trial (completed)")
    ax.set_ylabel("best val macro AUC so far")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_slices(trials: pd.DataFrame, params: Sequence[str] | None = None, log_x: Sequence[str] | None = None,
                title: str | None = None) -> Figure:
    """Validation AUC against each tuned parameter (columns), one row per arm; the best trial ringed.

    ``params`` default: every ``param_<NAME>`` column; ``log_x`` default: the numeric parameters whose values are
    all positive and span more than a factor 10 (learning rates, alpha).
    """
    done = _complete(trials)
    params = list(params) if params is not None else [c[len("param_"):] for c in done.columns if c.startswith("param_")]
    if not params:
        raise ValueError("the trials table has no param_<NAME> column to plot against")
    arms = list(done["arm"].unique())
    colours = arm_colours(arms)
    fig, axes = plt.subplots(len(arms), len(params), squeeze=False, sharey="row",
                             figsize=(figure_width(DOUBLE_COLUMN_IN * min(1.0, len(params) / 2)), 1.6 * len(arms) + 0.4))
    for i, arm in enumerate(arms):
        part = done[done["arm"] == arm]
        best = part.loc[part["val_auc"].idxmax()]
        for j, name in enumerate(params):
            ax, values = axes[i][j], pd.to_numeric(part[f"param_{name}"], errors="coerce")
            ax.scatter(values, part["val_auc"], s=10, color=colours[arm], linewidths=0)
            ax.scatter([pd.to_numeric(best[f"param_{name}"], errors="coerce")], [best["val_auc"]], s=40,
                       facecolors="none", edgecolors="black", linewidths=0.8)
            positive = values.dropna()
            if (log_x is not None and name in log_x) or (log_x is None and len(positive) and (positive > 0).all()
                                                          and positive.max() / positive.min() > 10):
                ax.set_xscale("log")
            if i == len(arms) - 1:
                ax.set_xlabel(name)
            if j == 0:
                ax.set_ylabel(f"{arm}\nval AUC", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_seed_comparison(per_seed: pd.DataFrame, title: str | None = None) -> Figure:
    """One panel per comparison (backbone: A vs B): each seed's test macro AUC of both arms, joined by a line."""
    need = ["backbone", "arm_a", "arm_b", "seed", "auc_a", "auc_b"]
    missing = [c for c in need if c not in per_seed.columns]
    if missing:
        raise KeyError(f"per-seed table lacks {missing}: expected molre_lib.analysis.seeds.seed_comparisons(...)[1]")
    if per_seed.empty:
        raise ValueError("no paired seeds to plot")
    groups = list(per_seed.groupby(["backbone", "arm_a", "arm_b"], sort=False))
    colours = arm_colours(pd.unique(per_seed[["arm_a", "arm_b"]].to_numpy().ravel()))
    fig, axes = plt.subplots(1, len(groups), squeeze=False, figsize=(
        figure_width(min(DOUBLE_COLUMN_IN, 1.8 * len(groups) + 0.6)), 2.4))
    for ax, ((backbone, a, b), part) in zip(axes[0], groups):
        for _, row in part.iterrows():
            colour = "#0072B2" if row["auc_a"] > row["auc_b"] else "#D55E00"
            ax.plot([0, 1], [row["auc_a"], row["auc_b"]], color=colour, lw=0.8, alpha=0.8)
        ax.scatter(np.zeros(len(part)), part["auc_a"], color=colours[a], s=14, zorder=3)
        ax.scatter(np.ones(len(part)), part["auc_b"], color=colours[b], s=14, zorder=3)
        ax.set_xticks([0, 1], [a, b], fontsize="small")
        ax.set_xlim(-0.4, 1.4)
        delta = (part["auc_a"] - part["auc_b"]).mean()
        ax.set_title(f"{backbone}\nmean Δ {delta:+.3f}, {len(part)} seeds", fontsize="small")
    axes[0][0].set_ylabel("test macro AUC")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
