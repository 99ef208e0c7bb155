"""Figure checks a reviewer would make at print size, read from matplotlib's own renderer.

:func:`figure_problems` draws a figure once, records every text the renderer actually draws (a tick label
outside the view or on a hidden axis is not drawn, so it is not checked) with its window extent, and returns
one line per problem:

- **overlapping text**: two drawn texts whose boxes intersect by more than ``OVERLAP_PT`` in both directions
  (axis labels of neighbouring panels running into each other, tick labels stacked too tightly);
- **text cut by the canvas**: a text box reaching outside the figure when the saved page is the figure
  (``savefig.bbox = "standard"``, what ``paper_style(column)`` sets; a tight bbox grows to hold its text);
- **machine names**: a text holding a taxonomy key (``intracranial_hemorrhage_fluid_level``) where the
  taxonomy has a human name, or a run folder name (``phantom_vit_molre_seed0``) where the paper says LoRA /
  MoLRE;
- **legend over data**: a legend box intersecting a plotted line, marker, bar, image or data label.

Tests call it on every figure of the notebook series (``tests/plots/test_figure_check.py``); a notebook may
call it before saving a figure of its own.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import matplotlib as mpl
import numpy as np
from matplotlib.collections import Collection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.transforms import Bbox

OVERLAP_PT = 0.5  # boxes may touch: glyph boxes include the font's line gap, so a shared edge is no collision
CUT_PT = 0.5  # a box may reach this far past the page edge (anti-aliasing) before it counts as cut
RUN_FOLDER = re.compile(r"\b[a-z0-9]+(?:_[a-z0-9]+)*_(?:lora|molre|linear_probe|full)_seed\d+\b")


def drawn_texts(fig: Figure) -> list[tuple[Text, Bbox]]:
    """Every non-empty text the renderer draws, with its window extent (display pixels)."""
    fig.canvas.draw()  # layout first (tight_layout, legends placed)
    renderer = fig.canvas.get_renderer()
    seen: dict[int, Text] = {}
    original = renderer.draw_text

    def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and str(s).strip():
            seen.setdefault(id(mtext), mtext)
        return original(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    renderer.draw_text = record
    try:
        fig.draw(renderer)
    finally:
        del renderer.draw_text  # back to the class's method
    return [(t, t.get_window_extent(renderer)) for t in seen.values()]


def _describe(text: Text) -> str:
    s = text.get_text().replace("\n", " ")
    return repr(s if len(s) <= 50 else s[:47] + "...")


def overlapping_texts(texts: list[tuple[Text, Bbox]], dpi: float) -> list[str]:
    """Pairs of drawn texts whose boxes intersect by more than :data:`OVERLAP_PT` both ways."""
    if len(texts) < 2:
        return []
    tol = OVERLAP_PT * dpi / 72
    b = np.array([[bb.x0, bb.y0, bb.x1, bb.y1] for _, bb in texts])
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    hit = np.triu((w > tol) & (h > tol), k=1)
    return [f"overlapping text: {_describe(texts[i][0])} and {_describe(texts[j][0])}"
            for i, j in zip(*np.nonzero(hit))]


def cut_texts(texts: list[tuple[Text, Bbox]], fig: Figure) -> list[str]:
    """Drawn texts reaching outside the figure's canvas by more than :data:`CUT_PT`."""
    tol = CUT_PT * fig.dpi / 72
    page = fig.bbox
    out = []
    for text, bb in texts:
        if bb.x0 < page.x0 - tol or bb.y0 < page.y0 - tol or bb.x1 > page.x1 + tol or bb.y1 > page.y1 + tol:
            out.append(f"text cut by the canvas: {_describe(text)} at {bb.x0 / fig.dpi:.2f}..{bb.x1 / fig.dpi:.2f} "
                       f"x {bb.y0 / fig.dpi:.2f}..{bb.y1 / fig.dpi:.2f} in on a {fig.get_figwidth():.2f} x "
                       f"{fig.get_figheight():.2f} in page")
    return out


def machine_names(texts: Iterable[Text], keys: Iterable[str] | None = None) -> list[str]:
    """Texts showing a taxonomy key that has a human name, or a run folder name instead of a method name."""
    if keys is None:
        from molre_lib.data.taxonomy import FINDING_KEYS

        keys = FINDING_KEYS
    snake = sorted((k for k in keys if "_" in k), key=len, reverse=True)  # one-word keys read as words
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, snake)) + r")\b") if snake else None
    out = []
    for text in texts:
        s = text.get_text()
        run = RUN_FOLDER.search(s)
        if run:
            out.append(f"run folder name {run.group(0)!r} in {_describe(text)}: use the method name (LoRA, MoLRE)")
        elif pattern is not None and (m := pattern.search(s)):
            out.append(f"taxonomy key {m.group(1)!r} in {_describe(text)}: use the finding's name from findings.csv")
    return out


def _data_boxes(ax, renderer) -> list[tuple[object, Bbox]]:
    """Window extents of what an axes plots: lines, markers, bars, error bars, images, data labels."""
    titles = (ax.title, ax._left_title, ax._right_title)
    boxes = []
    for artist in ax.get_children():
        if artist is ax.patch or not artist.get_visible() or artist is ax.get_legend():
            continue
        if isinstance(artist, Line2D) and len(artist.get_xdata()) == 0:
            continue
        if isinstance(artist, Patch) and artist in ax.spines.values():
            continue
        if isinstance(artist, (Line2D, Collection, Patch, AxesImage)) or (
                isinstance(artist, Text) and artist.get_text() and artist not in titles):
            box = artist.get_window_extent(renderer)
            if box.width > 0 or box.height > 0:
                boxes.append((artist, box))
    return boxes


def legends_over_data(fig: Figure) -> list[str]:
    """Legends whose box intersects something plotted in any axes of the figure."""
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out = []
    for legend in legends:
        lbox = legend.get_window_extent(renderer)
        for ax in fig.axes:
            for artist, box in _data_boxes(ax, renderer):
                if lbox.overlaps(box):
                    label = artist.get_text() if isinstance(artist, Text) else artist.get_label()
                    out.append(f"legend over data: a {type(artist).__name__} {str(label)[:40]!r} under the legend "
                               f"{[t.get_text() for t in legend.get_texts()][:2]}")
                    break
    return out


def figure_problems(fig: Figure, cut: bool | None = None, keys: Iterable[str] | None = None) -> list[str]:
    """Everything a reviewer would flag at print size, one line each (empty: the figure passes).

    Args:
        fig: the figure, at the size it is saved (make it under ``paper_style(column)`` for print).
        cut: check for text outside the canvas; default: when ``savefig.bbox`` is ``"standard"`` (the saved page
            is the canvas), not under a tight bbox (the saved page grows to hold every text).
        keys: taxonomy keys that must not be shown (default ``taxonomy.FINDING_KEYS``).
    """
    texts = drawn_texts(fig)
    if cut is None:
        cut = mpl.rcParams["savefig.bbox"] in (None, "standard")
    problems = overlapping_texts(texts, fig.dpi)
    if cut:
        problems += cut_texts(texts, fig)
    problems += machine_names([t for t, _ in texts], keys)
    problems += legends_over_data(fig)
    return problems
