"""Report-labeller agreement figure: per finding (and category) F1 and Cohen's kappa with bootstrap CIs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from molre_lib.data.taxonomy import CATEGORIES, FINDINGS
from molre_lib.plots.style import CATEGORY_COLOURS, DOUBLE_COLUMN_IN, MIN_POSITIVES, UNKNOWN_CATEGORY_COLOUR

_NAMES = {f.key: f.name for f in FINDINGS}
MODE_LABELS = {"u->neg": "uncertain as negative", "u->pos": "uncertain as positive", "3-class": "3 classes"}


def plot_label_agreement(table: pd.DataFrame, mode: str = "u->neg", metrics: tuple[str, ...] = ("f1", "kappa"),
                         min_positives: int = 1, title: str | None = None, rare_below: int = MIN_POSITIVES) -> Figure:
    """Dot plot (rows: findings with at least ``min_positives`` gold positives, then categories and all) of each
    metric with its CI, coloured by category; a finding with fewer than ``rare_below`` positives is drawn hollow
    without an interval (as in 03's forest plots). ``table``: :func:`molre_lib.reports.agreement.agreement_table`."""
    t = table[table["mode"] == mode]
    per = t[(t["level"] == "finding") & (t["positives"] >= min_positives)].copy()
    per["order"] = per["category"].map({c: i for i, c in enumerate(CATEGORIES)})
    per = per.sort_values(["order", "name"], kind="stable")
    rest = t[t["level"] != "finding"]
    rows = pd.concat([per, rest])
    labels = [f"{_NAMES.get(r.name, r.name)} (n+={r.positives})" if r.level == "finding"
              else f"{'All findings' if r.level == 'all' else r.name.capitalize()} (pooled, n+={r.positives})"
              for r in rows.itertuples()]
    n = len(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(DOUBLE_COLUMN_IN * 0.8, 0.16 * n + 1.0), sharey=True,
                             squeeze=False)
    y = np.arange(n)[::-1].astype(float)
    colours = [CATEGORY_COLOURS.get(c, UNKNOWN_CATEGORY_COLOUR) if lvl != "all" else "#000000"
               for c, lvl in zip(rows["category"], rows["level"])]
    for ax, m in zip(axes[0], metrics):
        v, lo, hi = (rows[c].to_numpy(float) for c in (m, f"{m}_lo", f"{m}_hi"))
        err = np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)])
        for i in range(n):
            finding = rows.iloc[i]["level"] == "finding"
            rare = finding and rows.iloc[i]["positives"] < rare_below
            ax.errorbar(v[i], y[i], xerr=None if rare else err[:, i:i + 1], fmt="o" if finding else "D", ms=3,
                        lw=0.8, color=colours[i], mfc="white" if rare else colours[i])
        ax.axhline(len(rest) - 0.5, color="0.7", lw=0.5)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(min(0.0, np.nanmin(lo) if np.isfinite(lo).any() else 0.0) - 0.02, 1.02)
        ax.set_xlabel({"f1": "F1", "kappa": "Cohen's κ"}.get(m, m))
        ax.grid(axis="x", lw=0.3, color="0.85")
    axes[0, 0].set_yticks(y, labels, fontsize=6)
    fig.suptitle(title or f"Report labeller vs hand labels ({MODE_LABELS.get(mode, mode)}; 95% bootstrap CI)\n"
                          f"hollow: fewer than {rare_below} positives, no interval", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # 0.4 in for the two-line title
    return fig
