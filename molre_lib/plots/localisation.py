"""Explanations against ground truth: CAM comparison panel with lesion outlines, localisation forest plot,
routing-specialisation tests and category gate profiles.

Slices are displayed radiologically (row 0 anterior at the top, column 0 = patient right on the left), grey
values are a windowed slice in [0, 1] (brain window unless the caller windows otherwise), every CAM shares one
colour scale [0, 1] with one colour bar, and a CAM is drawn only inside the head (transparent on the air).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from molre_lib.plots.names import finding_name
from molre_lib.plots.paper_tables import method_name
from molre_lib.plots.style import ADAPTER_COLOURS, CAM_CMAP, DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN, arm_colours

MASK_COLOUR = "#FF00FF"  # lesion outline: magenta reads on grey and is not a colour of the jet CAM
CAM_ALPHA = 0.5
CAM_THRESHOLD = 0.1  # CAM values at or below this are transparent, so the slice stays readable


def show_cam_on_slice(ax, base: np.ndarray, cam: np.ndarray | None = None, mask: np.ndarray | None = None,
                      head: np.ndarray | None = None, alpha: float = CAM_ALPHA, threshold: float = CAM_THRESHOLD):
    """Grey slice (H, W) in [0, 1]; CAM (H, W) in [0, 1] over it, hidden outside ``head`` and at or below
    ``threshold``; the lesion ``mask`` as an outline. Returns the CAM image (for a colour bar) or None."""
    ax.imshow(base, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = None
    if cam is not None:
        hidden = np.asarray(cam) <= threshold if threshold > 0 else np.zeros(np.shape(cam), bool)
        if head is not None:
            hidden |= ~np.asarray(head, bool)
        im = ax.imshow(np.ma.masked_where(hidden, cam), cmap=CAM_CMAP, vmin=0, vmax=1, alpha=alpha,
                       interpolation="bilinear")
    if mask is not None and np.asarray(mask).any():
        ax.contour(np.asarray(mask, float), levels=[0.5], colors=MASK_COLOUR, linewidths=0.7)
    ax.set_xticks([]), ax.set_yticks([])
    ax.spines[:].set_visible(False)
    return im


CAM_SCALES = ("volume", "slice")


def cam_caption(location: Mapping | None) -> str:
    """A CAM cell's caption from ``analysis.slices.cam_location``: the share of the volume's CAM mass on the shown
    slice and, when the peak lies elsewhere, the peak slice and its share ("3% of its mass here / most on slice 6
    (41%)"); empty without a location."""
    if not location:
        return ""
    share = location.get("shown_share", float("nan"))
    if not np.isfinite(share):
        return "no CAM mass in the head"
    if location["peak_slice"] == location["shown"]:
        return f"{share:.0%} of its mass here\n(its peak slice)"
    return f"{share:.0%} of its mass here\nmost on slice {location['peak_slice']} ({location['peak_share']:.0%})"


def _slice_scaled(cam: np.ndarray, head: np.ndarray | None) -> np.ndarray:
    inside = np.asarray(cam, float) * (np.asarray(head, bool) if head is not None else 1.0)
    top = float(np.nanmax(inside)) if np.size(inside) else 0.0
    return np.asarray(cam, float) / top if top > 0 else np.asarray(cam, float)


def plot_cam_comparison(bases: Sequence[np.ndarray], masks: Sequence[np.ndarray], heads: Sequence[np.ndarray],
                        cams: Mapping[str, Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
                        title: str | None = None, alpha: float = CAM_ALPHA, threshold: float = CAM_THRESHOLD,
                        locations: Mapping[str, Sequence[Mapping]] | None = None, scale: str = "volume") -> Figure:
    """Paper panel: one row per finding (its largest lesion slice), columns CT then each model's CAM on that
    slice, lesion outlined in every column, one colour bar for all CAMs.

    Args:
        cams: model -> list aligned with ``bases`` (each (H, W) in [0, 1], scaled to its volume's maximum).
        locations: model -> per row ``analysis.slices.cam_location`` (``ExampleViews.locations``): each CAM cell is
            captioned with the share of its volume's CAM mass on the shown slice and, when the peak lies
            elsewhere, that slice, so an empty-looking cell says where the model looked.
        scale: ``"volume"`` (default: one scale for every cell, comparable across models and slices; a model
            looking elsewhere shows little here) or ``"slice"`` (each cell scaled to its own in-head maximum: the
            pattern on the slice is visible, its strength is not comparable).
    """
    if scale not in CAM_SCALES:
        raise ValueError(f"scale must be one of {CAM_SCALES}, got {scale!r}")
    models = list(cams)
    rows, cols = len(bases), 1 + len(models)
    cell = min(1.45, (DOUBLE_COLUMN_IN - 0.9) / cols)
    caption_h = 0.24 if locations else 0.0  # two 6-pt lines under each CAM cell
    head_h, foot_h = (0.25 if title is None else 0.4), 0.3
    height = (cell + caption_h) * rows + head_h + foot_h
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 0.9, height), squeeze=False)
    im = None
    for r in range(rows):
        show_cam_on_slice(axes[r, 0], bases[r], None, masks[r])
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=6)
        for c, name in enumerate(models, start=1):
            cam = cams[name][r] if scale == "volume" else _slice_scaled(cams[name][r], heads[r])
            im = show_cam_on_slice(axes[r, c], bases[r], cam, masks[r], heads[r], alpha=alpha,
                                   threshold=threshold) or im
            if locations:
                axes[r, c].set_xlabel(cam_caption(locations[name][r]), fontsize=6, labelpad=1.5)
    axes[0, 0].set_title("CT (brain window)", fontsize=7)
    for c, name in enumerate(models, start=1):
        axes[0, c].set_title(f"{method_name(name)} CAM", fontsize=7)  # "lora" -> "LoRA CAM"
    fig.subplots_adjust(left=0.16, right=0.86, top=1 - head_h / height, bottom=foot_h / height, wspace=0.04,
                        hspace=caption_h / cell + 0.08)
    if im is not None:
        cax = fig.add_axes((0.88, 0.2, 0.02, 0.6))
        bar = fig.colorbar(im, cax=cax)
        bar.solids.set_alpha(1.0)
        scaled = "its volume's maximum" if scale == "volume" else "its slice's maximum"
        bar.set_label(f"CAM, scaled to {scaled}\n(≤ {threshold:g} not drawn)", fontsize=6)
        bar.ax.tick_params(labelsize=6)
    fig.legend(handles=[Line2D([], [], color=MASK_COLOUR, lw=1.0, label="lesion mask")], loc="lower left",
               fontsize=6, frameon=False, bbox_to_anchor=(0.01, 0.0))
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


ATTRIBUTION_NAMES = {"gradcam": "Grad-CAM", "occlusion": "Occlusion"}  # figure titles name the method
METRIC_LABELS = {"hit": "pointing game\n(hit rate)", "energy": "CAM energy\nin the mask", "auroc": "voxel AUROC"}
ROW_PITCH_IN = 0.1  # inches per (finding, model) row: 40 findings x 2 models fit a page (6-pt labels, 0.2 in each)


def plot_localisation_forest(summary: pd.DataFrame, metrics: Sequence[str] = ("hit", "energy"),
                             model: str = "model", finding: str = "finding", title: str | None = None) -> Figure:
    """Per finding (rows) and model (colours): each metric's mean with its bootstrap CI, and its chance level
    (grey bar: the mask's share of the head, or the dilated mask's share for the pointing game).
    ``summary``: :func:`molre_lib.analysis.localisation.summarise` by (model, finding) for one method."""
    findings = list(dict.fromkeys(summary[finding]))
    models = list(dict.fromkeys(summary[model]))
    colours = {**arm_colours(models), **{m: ADAPTER_COLOURS[m] for m in models if m in ADAPTER_COLOURS}}
    n = len(findings)
    fig, axes = plt.subplots(1, len(metrics), figsize=(DOUBLE_COLUMN_IN * 0.75, ROW_PITCH_IN * n * len(models) + 1.3),
                             sharey=True, squeeze=False)
    y0 = np.arange(n)[::-1].astype(float)
    step = 0.7 / max(len(models), 1)
    for ax, m in zip(axes[0], metrics):
        for k, name in enumerate(models):
            t = summary[summary[model] == name].set_index(finding).reindex(findings)
            y = y0 + 0.35 - step / 2 - k * step
            ax.errorbar(t[m], y, xerr=[t[m] - t[f"{m}_lo"], t[f"{m}_hi"] - t[m]], fmt="o", ms=3, lw=0.8,
                        color=colours[name], label=method_name(name) if m == metrics[0] else None)
        chance = summary.groupby(finding, sort=False)[f"{m}_chance"].mean().reindex(findings)
        if m == "auroc":
            ax.axvline(0.5, color="0.6", lw=0.6, ls=":")
        else:
            ax.barh(y0, chance, height=0.8, color="0.88", zorder=0, label="chance" if m == metrics[0] else None)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])  # "1.0" and the next panel's "0.0" ran together
        ax.set_ylim(-0.6, n - 0.4)  # the rows, not a margin of empty rows above and below
        ax.set_xlabel(METRIC_LABELS.get(m, m), fontsize=7)
        ax.grid(axis="x", lw=0.3, color="0.85")
    axes[0, 0].set_yticks(y0, [f"{finding_name(f, short=True)} (n={int(summary[summary[finding] == f]['n_scans'].max())})"
                               for f in findings], fontsize=6)
    height = fig.get_size_inches()[1]
    top = 1 - 0.45 / height  # legend and title take a fixed 0.45 in above the panels
    fig.legend(loc="lower center", ncol=len(models) + 1, fontsize=6, frameon=False, bbox_to_anchor=(0.55, top))
    if title:
        fig.suptitle(title, fontsize=8, y=1 - 0.05 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def plot_specialisation_tests(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Cramér's V of dominant expert vs tissue class and vs lesion per routed layer (dots), against the
    permutation null (grey: mean to 95th percentile); p-values annotated, as "p≤1/(n_perm+1)" where no permutation
    reached the observed V (the smallest p the test can give, not an estimate)."""
    targets = list(dict.fromkeys(table["target"]))
    if not targets:  # no routed layer with per-token gates on a grid
        fig, ax = plt.subplots(figsize=(SINGLE_COLUMN_IN, 1.2))
        ax.text(0.5, 0.5, "no routed layer with per-token gates on a spatial grid", ha="center", va="center",
                fontsize=7, transform=ax.transAxes)
        ax.axis("off")
        return fig
    fig, axes = plt.subplots(1, len(targets), figsize=(SINGLE_COLUMN_IN * 0.75 * len(targets) + 0.4, 2.2),
                             squeeze=False)
    for ax, target in zip(axes[0], targets):
        t = table[table["target"] == target].sort_values("layer_index")
        x = t["layer_index"].to_numpy()
        ax.bar(x, t["v_null_95"] - t["v_null_mean"], bottom=t["v_null_mean"], width=0.5, color="0.8",
               label="null (mean–95%)")
        ax.plot(x, t["v"], "o-", color="#0072B2", ms=4, lw=0.8, label="observed")
        floor = 1.0 / (t["n_perm"].to_numpy(dtype=float) + 1) if "n_perm" in t else np.zeros(len(t))
        for xi, v, p, lo in zip(x, t["v"], t["p"], floor):
            text = f"p≤{lo:.2g}" if lo > 0 and p <= lo * (1 + 1e-9) else f"p={p:.2g}"  # the permutation floor
            ax.annotate(text, (xi, v), textcoords="offset points", xytext=(0, 4), ha="center", va="bottom",
                        rotation=90, fontsize=5.5)  # upright labels collide on 8+ neighbouring layers
        ax.set_xticks(x, [str(i) for i in x])
        ax.set_xlabel("routed layer", fontsize=7)
        ax.set_title(f"expert vs {target}", fontsize=7)
        ax.set_ylim(0, max(0.1, float(np.nanmax(t[["v", "v_null_95"]].to_numpy())) * 1.6))  # room for the p labels
    axes[0, 0].set_ylabel("Cramér's V", fontsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, frameon=False, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_category_gates(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Per finding category: each expert's mean-gate difference (scans with vs without a finding of the
    category) with its bootstrap CI; 0 = no preference."""
    from molre_lib.plots.style import category_colour

    cats = list(dict.fromkeys(table["category"]))
    experts = sorted(table["expert"].unique())
    fig, ax = plt.subplots(figsize=(SINGLE_COLUMN_IN, 0.3 * max(len(cats), 2) + 0.9))
    if not cats:  # too few scans: say so instead of an empty axis
        ax.text(0.5, 0.5, "no category with ≥ 2 scans with and ≥ 2 without a finding", ha="center", va="center",
                fontsize=7, transform=ax.transAxes)
        ax.axis("off")
        return fig
    step = 0.7 / max(len(experts), 1)
    cmap = plt.get_cmap("tab10")
    for k, e in enumerate(experts):
        t = table[table["expert"] == e].set_index("category").reindex(cats)
        y = np.arange(len(cats))[::-1] + 0.35 - step / 2 - k * step
        ax.errorbar(t["diff"], y, xerr=[t["diff"] - t["diff_lo"], t["diff_hi"] - t["diff"]], fmt="o", ms=2.5,
                    lw=0.7, color=cmap(e), label=f"expert {e}")
    ax.axvline(0, color="0.5", lw=0.6, ls=":")
    ax.set_yticks(np.arange(len(cats))[::-1], cats, fontsize=6)
    for tick, c in zip(ax.get_yticklabels(), cats):
        tick.set_color(category_colour(c))
    ax.set_xlabel("mean gate: with − without a finding of the category", fontsize=6.5)
    ax.legend(fontsize=5.5, frameon=False, ncol=min(len(experts), 4), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    if title:
        ax.set_title(title, fontsize=7, pad=18)
    fig.tight_layout()
    return fig
