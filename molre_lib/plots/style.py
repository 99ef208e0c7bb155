"""Paper style: fonts, sizes, one fixed colour per taxonomy category, and figure export.

Every figure in the workbook goes through :func:`save_figure`, which writes PDF + SVG + PNG (300 dpi)
and refuses figures whose text carries a DICOM patient identifier (see :mod:`molre_lib.plots.tables`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import contextmanager
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
# Print sizes (use_paper_style(column=...)): the figure is exactly this wide, so placed at 100% in the paper
# its fonts are the 7-9 pt set here.
COLUMN_WIDTHS_IN: dict[str, float] = {"single": 3.5, "double": 7.0}
MIN_FONT_PT = 7.0
# Rare findings: below this many test positives a scan bootstrap (or DeLong) cannot give a usable interval, so
# forest plots draw the point hollow without one and tables print no CI (03's MIN_POSITIVES parameter).
MIN_POSITIVES = 5

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
    "figure.titlesize": 9,
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


_print_column: str | None = None  # set by use_paper_style(column=...): figures are made for that column


def _rc(column: str | None) -> dict[str, object]:
    if column is None:
        return dict(PAPER_RC)
    if column not in COLUMN_WIDTHS_IN:
        raise ValueError(f"column must be one of {sorted(COLUMN_WIDTHS_IN)} or None, got {column!r}")
    width = COLUMN_WIDTHS_IN[column]
    # "standard" bbox: the saved page is the figure, exactly the column wide (a tight bbox would change it)
    return {**PAPER_RC, "savefig.bbox": "standard", "figure.figsize": (width, 0.62 * width)}


def use_paper_style(column: str | None = None) -> None:
    """Apply :data:`PAPER_RC` to matplotlib globally (notebooks call this once in their setup cell).

    ``column="single"`` (3.5 in) or ``"double"`` (7 in) sizes the result figures for print: each is made and
    saved exactly that wide (fonts 7-9 pt at 100%), and the 75-row forest / ΔAUC plots split their categories
    over two panels at double width. ``None`` keeps each figure's own size, cropped to its content.
    """
    global _print_column
    plt.rcParams.update(_rc(column))
    _print_column = column


@contextmanager
def paper_style(column: str | None = None):
    """:func:`use_paper_style` only inside a ``with`` block."""
    global _print_column
    before = _print_column
    with plt.rc_context(_rc(column)):
        _print_column = column
        try:
            yield
        finally:
            _print_column = before


def print_column() -> str | None:
    """The column figures are sized for ("single" / "double"), or None."""
    return _print_column


def figure_width(default: float) -> float:
    """Width (inches) for a new figure: the print column's when one is set, else ``default``."""
    return COLUMN_WIDTHS_IN[_print_column] if _print_column else default


def small_font(default: float) -> float:
    """A font size for dense labels: ``default``, raised to 7 pt when figures are sized for print."""
    return max(default, MIN_FONT_PT) if _print_column else default


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
