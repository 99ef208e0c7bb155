"""Phantom slice gallery: every finding of a category, without / with it, in three CT windows.

One figure per category (``phantom_<category>.{png,pdf,svg}``): a row per finding showing the
slice where its region is largest, first the same subject without the finding (brain window),
then with it in the brain, subdural and bone windows, the finding's region outlined.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from molre_lib.data.phantom import PhantomConfig, counterfactual
from molre_lib.data.taxonomy import CATEGORIES, FINDINGS, keys_in

from molre_lib.data.windowing import window

WINDOWS = ("brain", "subdural", "bone")


def best_slice(mask: np.ndarray) -> int:
    """Axial slice with the most voxels of ``mask`` (D, H, W)."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))


def category_figure(category: str, cfg: PhantomConfig, seed: int = 7, outline: bool = True):
    """Figure for one category: rows = findings, columns = without | brain | subdural | bone."""
    import matplotlib.pyplot as plt

    keys = keys_in(category)
    names = {f.key: f.name for f in FINDINGS}
    fig, axes = plt.subplots(len(keys), 4, figsize=(7.0, 1.75 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        with_f, without = counterfactual(seed + row, key, cfg)
        mask = with_f.masks.get(key, np.zeros(with_f.hu.shape, bool))   # empty if too small for this grid
        k = best_slice(mask) if mask.any() else with_f.hu.shape[0] // 2
        panels = [("without (brain)", without.hu[k], "brain")] + [(w, with_f.hu[k], w) for w in WINDOWS]
        for col, (title, img, win) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(window(img, win), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if outline and col > 0 and mask[k].any():
                ax.contour(mask[k], levels=[0.5], colors=["#ff5a36"], linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=7)
        axes[row, 0].set_ylabel(f"{names[key]}\n(slice {k})", fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"Phantom findings: {category} (contour = labelled region; image right = patient left)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.995))
    return fig


def write_gallery(out_dir: str | Path, cfg: PhantomConfig | None = None, seed: int = 7,
                  categories: list[str] | None = None) -> list[Path]:
    """Write one figure per category as PNG (300 dpi), PDF and SVG; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molre_lib.plots.style import save_figure

    cfg = cfg or PhantomConfig(shape=(32, 160, 160))
    paths: list[Path] = []
    for category in categories or CATEGORIES:
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r} (allowed: {CATEGORIES})")
        fig = category_figure(category, cfg, seed)
        paths += save_figure(fig, out_dir, f"phantom_{category}")
        plt.close(fig)
    return paths
