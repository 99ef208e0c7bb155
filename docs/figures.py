"""Figures of the documentation site, drawn by code (``make docs-figures``), never pasted by hand.

``docs/assets/phantom.png``: one phantom subject without and with an epidural hematoma, on the lesion's largest
slice, in the three CT windows the models read (brain 40/80, subdural 80/200, bone 600/2800), with the lesion
outlined. Deterministic for the seed; re-run it when the phantom changes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from molre_lib.data.phantom import PhantomConfig, counterfactual  # noqa: E402
from molre_lib.data.windowing import WINDOW_PRESETS, window  # noqa: E402
from molre_lib.plots.gallery import best_slice  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"
FINDING, SEED = "epidural_hematoma", 7
WINDOWS = ("brain", "subdural", "bone")  # the default 3-window model input (HEAD_CT_WINDOWS), in order


def phantom_figure(out: Path) -> Path:
    with_lesion, without = counterfactual(SEED, FINDING, PhantomConfig(shape=(32, 192, 192)))
    mask = with_lesion.masks[FINDING]                      # (D, H, W) bool
    z = best_slice(mask)
    fig, axes = plt.subplots(2, len(WINDOWS), figsize=(7.5, 5.2), dpi=110)
    for row, (subject, label) in enumerate([(without, "without"), (with_lesion, "epidural hematoma")]):
        for col, name in enumerate(WINDOWS):
            ax = axes[row, col]
            ax.imshow(np.asarray(window(subject.hu[z], name)), cmap="gray", vmin=0, vmax=1)
            if row == 1:
                ax.contour(mask[z], levels=[0.5], colors="#2ca02c", linewidths=0.8)
            level, width = WINDOW_PRESETS[name]
            ax.set_title(f"{label}: {name} {level:g}/{width:g}" if col == 0 else f"{name} {level:g}/{width:g}", fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


if __name__ == "__main__":
    target = phantom_figure(ASSETS / "phantom.png")
    print(f"wrote {target}", file=sys.stderr)
