"""Images: windowed CT slices, slice galleries, Grad-CAM and routing-map overlays.

Slices are displayed radiologically: row 0 (anterior) at the top, column 0 = patient right on the left.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from molre_lib.data.windowing import WINDOW_PRESETS, window  # noqa: F401 - re-exported by plots
from molre_lib.plots.style import CAM_CMAP, DOUBLE_COLUMN_IN, EXPERT_CMAP



def plot_slice_gallery(
    hu: np.ndarray, slices: Sequence[int] | None = None, windows: Sequence[str] = ("brain", "subdural", "bone"),
    title: str | None = None, n_slices: int = 4,
) -> Figure:
    """Grid of axial slices (rows) × windows (columns) from a HU volume (D, H, W)."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected a HU volume (D, H, W), got shape {hu.shape}")
    if slices is None:
        slices = np.linspace(hu.shape[0] * 0.2, hu.shape[0] * 0.8, n_slices).round().astype(int).tolist()
    rows, cols = len(slices), len(windows)
    cell = DOUBLE_COLUMN_IN / max(cols, 3)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows * hu.shape[1] / hu.shape[2]), squeeze=False)
    for r, z in enumerate(slices):
        if not 0 <= z < hu.shape[0]:
            raise IndexError(f"slice {z} outside volume with {hu.shape[0]} slices")
        for c, name in enumerate(windows):
            ax = axes[r, c]
            ax.imshow(window(hu[z], name), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if r == 0:
                ax.set_title(name if isinstance(name, str) else f"{name[0]:g}/{name[1]:g}")
            if c == 0:
                ax.set_ylabel(f"slice {z}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


CAM_THRESHOLD = 0.1  # CAM values at or below this are transparent, so the slice stays readable


def show_cam(ax, base: np.ndarray, cam: np.ndarray | None, alpha: float = 0.45, threshold: float = CAM_THRESHOLD):
    """Draw a grey slice (H, W) in [0, 1] and, if given, a CAM (H, W) in [0, 1] over it (values <= threshold
    transparent); returns the two images."""
    base_im = ax.imshow(base, cmap="gray", vmin=0, vmax=1)
    cam_im = None
    if cam is not None:
        if cam.shape != base.shape:
            raise ValueError(f"CAM shape {cam.shape} differs from slice shape {base.shape}")
        cam = np.ma.masked_less_equal(cam, threshold) if threshold > 0 else cam
        cam_im = ax.imshow(cam, cmap=CAM_CMAP, vmin=0, vmax=1, alpha=alpha)
    ax.set_xticks([]), ax.set_yticks([])
    ax.spines[:].set_visible(False)
    return base_im, cam_im


def expert_colormap(n_experts: int) -> tuple[ListedColormap, BoundaryNorm]:
    """Discrete colour map and norm so expert e always gets the same colour."""
    colours = plt.get_cmap(EXPERT_CMAP).colors[:n_experts] if n_experts <= 10 else plt.get_cmap("tab20").colors[:n_experts]
    return ListedColormap(colours), BoundaryNorm(np.arange(-0.5, n_experts + 0.5), n_experts)


def show_routing(ax, base: np.ndarray, expert_map: np.ndarray, n_experts: int, alpha: float = 0.45,
                 background: float | None = 0.0):
    """Draw a grey slice and its dominant-expert map (H, W) of ints as a discrete overlay; pixels whose
    slice value is <= ``background`` (air in a window) stay uncoloured (None colours every pixel)."""
    if expert_map.shape != base.shape:
        raise ValueError(f"routing map shape {expert_map.shape} differs from slice shape {base.shape}")
    ax.imshow(base, cmap="gray", vmin=0, vmax=1)
    cmap, norm = expert_colormap(n_experts)
    shown = np.ma.masked_where(base <= background, expert_map) if background is not None else expert_map
    im = ax.imshow(shown, cmap=cmap, norm=norm, alpha=alpha, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    ax.spines[:].set_visible(False)
    return im


def expert_legend(fig_or_ax, n_experts: int, **kwargs) -> None:
    cmap, _ = expert_colormap(n_experts)
    handles = [Patch(color=cmap(e), label=f"expert {e}") for e in range(n_experts)]
    fig_or_ax.legend(handles=handles, **{"loc": "lower center", "ncol": min(n_experts, 8), **kwargs})


def plot_cam_overlay(
    base: np.ndarray, cam: np.ndarray, title: str | None = None, alpha: float = 0.45, with_plain: bool = True,
    threshold: float = CAM_THRESHOLD,
) -> Figure:
    """One windowed slice (H, W) in [0, 1], optionally side by side with its Grad-CAM overlay (H, W)."""
    n = 2 if with_plain else 1
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.0), squeeze=False)
    if with_plain:
        show_cam(axes[0, 0], base, None)
        axes[0, 0].set_title("slice")
    show_cam(axes[0, -1], base, cam, alpha=alpha, threshold=threshold)
    axes[0, -1].set_title("Grad-CAM")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_cam_panel(
    bases: Sequence[np.ndarray], cams: Mapping[str, Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
    alpha: float = 0.45, title: str | None = None, threshold: float = CAM_THRESHOLD,
) -> Figure:
    """Paper panel: rows = slices (each (H, W) in [0, 1]), columns = the plain slice then one CAM per finding.

    cams: finding name -> list of CAMs aligned with ``bases``.
    """
    names = list(cams)
    rows, cols = len(bases), 1 + len(names)
    cell = min(1.6, DOUBLE_COLUMN_IN / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.3), squeeze=False)
    for r, base in enumerate(bases):
        show_cam(axes[r, 0], base, None)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=6)
        for c, name in enumerate(names, start=1):
            show_cam(axes[r, c], base, cams[name][r], alpha=alpha, threshold=threshold)
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
    axes[0, 0].set_title("slice", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_routing_maps(
    bases: Sequence[np.ndarray], expert_maps: Sequence[np.ndarray], n_experts: int, labels: Sequence[str] | None = None,
    alpha: float = 0.5, title: str | None = None, background: float | None = 0.0,
) -> Figure:
    """Dominant expert per token, upsampled to the slice, over windowed slices (one panel per slice);
    air (slice value <= ``background``) is left uncoloured so the head's routing reads clearly."""
    n = len(bases)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows + 0.45), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        show_routing(ax, bases[i], expert_maps[i], n_experts, alpha=alpha, background=background)
        if labels is not None:
            ax.set_title(labels[i], fontsize=6)
    expert_legend(fig, n_experts, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
