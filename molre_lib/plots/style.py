"""Paper style: fonts, sizes, one fixed colour per taxonomy category, and figure export.

Every figure in the workbook goes through :func:`save_figure`, which writes PDF + SVG + PNG (300 dpi)
and refuses figures whose text carries a DICOM patient identifier (see :mod:`molre_lib.plots.tables`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.text
from matplotlib.figure import Figure

from molre_lib.plots.tables import check_text_for_identifiers

# Okabe–Ito palette: colour-blind safe, prints well in greyscale order. Keys are taxonomy.CATEGORIES.
CATEGORY_COLOURS: dict[str, str] = {
    "hemorrhage": "#D55E00",  # vermillion
    "infarction": "#0072B2",  # blue
    "trauma": "#E69F00",  # orange
    "mass": "#CC79A7",  # reddish purple
    "structural": "#009E73",  # bluish green
    "chronic": "#56B4E9",  # sky blue
}
UNKNOWN_CATEGORY_COLOUR = "#999999"
# Adapter colours used wherever LoRA and MoLRE are compared.
ADAPTER_COLOURS: dict[str, str] = {"lora": "#555555", "molre": "#0072B2", "linear_probe": "#BBBBBB"}
# Arms that are not a bare adapter (e.g. "molre SHARED_A=True") take these, in order (Okabe-Ito).
EXTRA_ARM_COLOURS = ("#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def arm_colours(arms) -> dict[str, str]:
    """A colour per arm: the adapter's own for a bare adapter name, distinct colourblind-safe ones otherwise."""
    arms = list(dict.fromkeys(str(a) for a in arms))
    extra = iter(EXTRA_ARM_COLOURS * (1 + len(arms) // len(EXTRA_ARM_COLOURS)))
    return {a: ADAPTER_COLOURS.get(a.lower()) or next(extra) for a in arms}
EXPERT_CMAP = "tab10"  # discrete expert index -> colour (routing maps, usage bars)
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"
CAM_CMAP = "jet"

FIGURE_FORMATS: tuple[str, ...] = ("pdf", "svg", "png")
PNG_DPI = 300
# Column widths of a two-column paper (inches), used as default figure widths.
SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.2

PAPER_RC: dict[str, object] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable in Illustrator/Inkscape
    "ps.fonttype": 42,
    "svg.fonttype": "none",  # SVG keeps text as text
    "image.interpolation": "nearest",
}


def use_paper_style() -> None:
    """Apply :data:`PAPER_RC` to matplotlib globally (notebooks call this once in their setup cell)."""
    plt.rcParams.update(PAPER_RC)


def paper_style():
    """Context manager applying :data:`PAPER_RC` only inside a ``with`` block."""
    return plt.rc_context(PAPER_RC)


def category_colour(category: str) -> str:
    """Fixed colour of a taxonomy category (grey for an unknown one)."""
    return CATEGORY_COLOURS.get(category, UNKNOWN_CATEGORY_COLOUR)


def finding_categories(findings: Iterable[str], categories: Mapping[str, str] | None = None) -> list[str]:
    """Category of each finding key; ``categories`` defaults to ``taxonomy.CATEGORY_OF``."""
    if categories is None:
        from molre_lib.data.taxonomy import CATEGORY_OF

        categories = CATEGORY_OF
    findings = list(findings)
    missing = [f for f in findings if f not in categories]
    if missing:
        raise KeyError(f"findings without a category: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return [categories[f] for f in findings]


def category_legend(ax, categories: Iterable[str], **kwargs) -> None:
    """Legend with one coloured patch per category present in a plot."""
    from matplotlib.patches import Patch

    seen = list(dict.fromkeys(categories))
    handles = [Patch(color=category_colour(c), label=c) for c in seen]
    ax.legend(handles=handles, **{"loc": "best", **kwargs})


def save_figure(fig: Figure, out_dir: str | Path, name: str, forbidden: Iterable[str] = ()) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{pdf,svg,png}`` (PNG at 300 dpi) and return the three paths.

    Raises ValueError before writing anything if a text element of the figure names a DICOM identifier
    keyword or contains one of ``forbidden`` (e.g. the patient names read from headers).
    """
    if not name or Path(name).name != name or Path(name).suffix in {f".{f}" for f in FIGURE_FORMATS}:
        raise ValueError(f"figure name must be a bare stem without directory or extension, got {name!r}")
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    check_text_for_identifiers(texts, forbidden, where=f"figure {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FIGURE_FORMATS:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=PNG_DPI if fmt == "png" else None, metadata=_metadata(fmt))
        paths.append(path)
    return paths


def _metadata(fmt: str) -> dict[str, str | None]:
    # Deterministic files: no creation dates in PDF/SVG so re-runs diff cleanly.
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": "molre_lib"}
    if fmt == "svg":
        return {"Date": None, "Creator": "molre_lib"}
    return {"Software": "molre_lib"}
