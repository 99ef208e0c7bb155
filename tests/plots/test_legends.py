"""No legend covers data: for the per-finding plots at 75 rows (forest, ΔAUC, confidence shift), the
reliability diagram and the summary plot, every legend's box is clear of every plotted artist."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from molre_lib import plots  # noqa: E402
from molre_lib.plots.checks import legends_over_data  # noqa: E402
from molre_lib.data.taxonomy import FINDING_KEYS  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_no_legend_over_data(fig):
    """The library's check (molre_lib.plots.checks, also run on every notebook figure), plus: there is a legend and
    it lies inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "expected a legend"
    for legend in legends:
        lbox, fbox = legend.get_window_extent(renderer), fig.bbox
        assert fbox.x0 - 1 <= lbox.x0 and lbox.x1 <= fbox.x1 + 1 and fbox.y0 - 1 <= lbox.y0 and lbox.y1 <= fbox.y1 + 1, \
            "legend partly outside the figure"
    assert not legends_over_data(fig)


def _per_finding(seed=1):
    rng = np.random.default_rng(seed)
    auc = rng.uniform(0.5, 0.98, 75)
    return pd.DataFrame({"finding": FINDING_KEYS, "auc": auc, "ci_low": auc - 0.08, "ci_high": np.minimum(auc + 0.08, 1)})


def test_forest_at_75_rows():
    assert_no_legend_over_data(plots.plot_forest(_per_finding(), title="run · test"))


def test_confidence_shift_at_75_rows():
    from molre_lib.stats.calibration import confidence_regime_shift

    rng = np.random.default_rng(2)
    y = (rng.random((300, 75)) < 0.2).astype(np.float32)
    m = np.ones_like(y)
    a = np.clip(y * 0.5 + rng.random(y.shape) * 0.5, 0, 1)
    b = np.clip(y * 0.7 + rng.random(y.shape) * 0.3, 0, 1)
    shift = confidence_regime_shift(y, a, b, m, finding_keys=FINDING_KEYS)
    assert_no_legend_over_data(plots.plot_confidence_shift(shift, label_a="lora", label_b="molre"))


def test_reliability():
    rng = np.random.default_rng(3)
    y = (rng.random((200, 75)) < 0.2).astype(np.float32)
    probs = {"lora": np.clip(y * 0.6 + rng.random(y.shape) * 0.4, 0, 1), "molre": np.clip(y * 0.3 + rng.random(y.shape) * 0.7, 0, 1)}
    assert_no_legend_over_data(plots.plot_reliability(probs, y, np.ones_like(y)))


def test_summary_with_many_backbones_and_arms():
    rng = np.random.default_rng(4)
    rows = [{"backbone": f"backbone_{i}", "arm": arm, "mean_auc": m, "ci_low": m - 0.03, "ci_high": m + 0.03}
            for i in range(6) for arm, m in zip(["lora", "molre", "molre SHARED_A=True"], rng.uniform(0.6, 0.9, 3))]
    assert_no_legend_over_data(plots.plot_summary(pd.DataFrame(rows), title="Test macro AUC (95% CI)"))


def test_delta_auc_at_75_rows():
    from molre_lib.stats.delong import paired_delong

    rng = np.random.default_rng(5)
    y = (rng.random((200, 75)) < 0.25).astype(float)
    a = y * 0.4 + rng.random(y.shape)
    b = y * 0.6 + rng.random(y.shape)
    d = paired_delong(y, a, b, finding_keys=FINDING_KEYS)
    assert_no_legend_over_data(plots.plot_delta_auc(d, xlabel="ΔAUC (molre − lora)"))
