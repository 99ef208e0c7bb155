"""Figures sized for print: with ``paper_style(column)`` each result figure is exactly one (3.5 in) or two
(7 in) columns wide, every text is 7-9 pt and inside the page, and the PDF embeds TrueType (Type 42) fonts,
read back from the PDF with poppler's pdfinfo / pdffonts."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import shutil  # noqa: E402
import subprocess  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from molre_lib import plots  # noqa: E402
from molre_lib.plots.names import finding_name  # noqa: E402
from molre_lib.data.taxonomy import FINDING_KEYS  # noqa: E402
from molre_lib.plots.style import COLUMN_WIDTHS_IN, paper_style, print_column  # noqa: E402
from molre_lib.stats.calibration import confidence_regime_shift  # noqa: E402
from molre_lib.stats.delong import paired_delong  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def poppler():
    tools = {name: shutil.which(name) for name in ("pdfinfo", "pdffonts")}
    if not all(tools.values()):
        pytest.fail("pdfinfo / pdffonts not found: install poppler-utils (.ci/run does)")
    return tools


def _figures() -> dict:
    rng = np.random.default_rng(0)
    auc = rng.uniform(0.55, 0.95, 75)
    auc[3] = np.nan
    forest = pd.DataFrame({"finding": FINDING_KEYS, "auc": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05})
    y = (rng.random((150, 75)) < 0.2).astype(float)
    a, b = y * 0.5 + rng.random(y.shape), y * 0.7 + rng.random(y.shape)
    pa, pb = np.clip(a / 1.7, 0, 1), np.clip(b / 1.7, 0, 1)
    summary = pd.DataFrame({"backbone": ["dinov3_vitb16"] * 3 + ["phantom_vit"] * 3,
                            "arm": ["lora", "molre", "molre SHARED_A=True"] * 2,
                            "mean_auc": [0.7, 0.75, 0.76, 0.8, 0.82, 0.81], "ci_low": [0.65, 0.7, 0.7, 0.75, 0.78, 0.77],
                            "ci_high": [0.75, 0.8, 0.81, 0.85, 0.86, 0.85]})
    log = pd.DataFrame({"step": range(10), "train_loss": np.linspace(1, 0.2, 10),
                        "val_auc": [np.nan] * 4 + list(np.linspace(0.6, 0.8, 6))})
    return {
        "forest": lambda: plots.plot_forest(forest, title="LoRA · test"),
        "delta_auc": lambda: plots.plot_delta_auc(paired_delong(y, a, b, finding_keys=FINDING_KEYS)),
        "confidence_shift": lambda: plots.plot_confidence_shift(confidence_regime_shift(y, pa, pb, finding_keys=FINDING_KEYS)),
        "reliability": lambda: plots.plot_reliability({"LoRA": pa, "MoLRE": pb}, y),
        "summary": lambda: plots.plot_summary(summary, title="Test macro AUC"),
        "training_curves": lambda: plots.plot_training_curves(log),
    }


@pytest.mark.parametrize("column", ["single", "double"])
def test_figures_are_column_wide_with_7_to_9_pt_text_and_truetype_fonts(column, tmp_path, poppler):
    width_pt = COLUMN_WIDTHS_IN[column] * 72
    with paper_style(column):
        assert print_column() == column
        for name, make in _figures().items():
            fig = make()
            fig.canvas.draw()
            for text in fig.findobj(matplotlib.text.Text):
                if text.get_visible() and text.get_text().strip():
                    assert 7 <= text.get_fontsize() <= 9, f"{name}: {text.get_text()!r} at {text.get_fontsize()} pt"
            drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches: everything drawn, labels and legends
            w, h = fig.get_size_inches()
            assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, \
                f"{name}: drawn area {drawn} runs off the {w:.2f} x {h:.2f} in page"
            pdf = plots.save_figure(fig, tmp_path / column, name)[0]
            info = subprocess.run([poppler["pdfinfo"], str(pdf)], capture_output=True, text=True, check=True).stdout
            page_w = float(next(line for line in info.splitlines() if line.startswith("Page size")).split()[2])
            assert page_w == pytest.approx(width_pt, abs=0.5), f"{name}: {page_w} pt wide, not {width_pt}"
            fonts = subprocess.run([poppler["pdffonts"], str(pdf)], capture_output=True, text=True, check=True).stdout
            rows = fonts.splitlines()[2:]
            assert rows, f"{name}: no font in the PDF"
            for row in rows:
                assert "TrueType" in row and "Type 3" not in row, f"{name}: {row}"
                assert row.split()[-5] == "yes", f"{name}: font not embedded: {row}"  # emb column
            plt.close(fig)
    assert print_column() is None  # the with block restores the default


def test_forest_splits_75_rows_by_category_at_double_width():
    make = _figures()["forest"]
    with paper_style("double"):
        fig = make()
    panels = [ax for ax in fig.axes if ax.get_yticklabels()]
    assert len(panels) == 2
    ticks = [[t.get_text() for t in ax.get_yticklabels()] for ax in panels]
    assert sum(map(len, ticks)) == 75 and ticks[0][0] == finding_name(FINDING_KEYS[0], short=True)
    assert fig.get_size_inches()[1] < 9  # fits a page; one panel of 75 rows would not at 7 pt
    with paper_style("single"):
        assert len([ax for ax in make().axes if ax.get_yticklabels()]) == 1
