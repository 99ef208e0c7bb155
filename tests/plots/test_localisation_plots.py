"""Localisation figures: the CAM comparison panel draws the lesion outline in every column, hides the CAM on the
air, shares one colour bar; the forest, specialisation and category plots render from their tables."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from molre_lib.plots import localisation as lp  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _slice():
    yy, xx = np.mgrid[:32, :32]
    head = (yy - 16) ** 2 + (xx - 16) ** 2 < 12 ** 2
    base = head * 0.5
    mask = (yy - 12) ** 2 + (xx - 20) ** 2 < 9
    cam = np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 20.0) + 0.3 * (~head)  # some mass on the air
    return base, mask, head, cam


def test_cam_comparison_panel(tmp_path):
    base, mask, head, cam = _slice()
    fig = lp.plot_cam_comparison([base, base], [mask, None], [head, head], {"lora": [cam, cam], "molre": [cam, cam]},
                                 row_labels=["a", "b"])
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(fig.axes) == 7  # 2 x 3 panels + one colour bar
    assert [ax.get_title() for ax in axes[:3]] == ["CT (brain window)", "LoRA CAM", "MoLRE CAM"]  # paper names
    # the outline is drawn on every column of the row with a mask, CAM images are masked outside the head
    assert all(len(ax.collections) > 0 for ax in axes[:3])
    cam_image = axes[1].images[1].get_array()
    hidden = np.ma.getmaskarray(cam_image)
    assert hidden[~head].all()  # nothing on the air
    np.testing.assert_array_equal(hidden[head], cam[head] <= lp.CAM_THRESHOLD)  # faint values let the CT show
    fig.savefig(tmp_path / "p.png")


def test_tables_plots():
    rows = []
    for model in ("lora", "molre"):
        for f in ("a", "b", "c"):
            rows.append({"model": model, "finding": f, "n_scans": 5, **{f"{m}{s}": v for m in ("hit", "energy", "auroc")
                         for s, v in (("", 0.5), ("_lo", 0.3), ("_hi", 0.7), ("_chance", 0.1))}})
    fig = lp.plot_localisation_forest(pd.DataFrame(rows), metrics=("hit", "energy", "auroc"))
    assert len(fig.axes) == 3
    spec = pd.DataFrame([{"layer": f"l{i}", "layer_index": i, "target": t, "v": 0.3, "v_null_mean": 0.05,
                          "v_null_95": 0.08, "p": 0.005} for i in range(3) for t in ("tissue", "lesion")])
    assert len(lp.plot_specialisation_tests(spec).axes) == 2
    assert lp.plot_specialisation_tests(spec.iloc[:0]).axes[0].texts  # nothing to test: a note
    cat = pd.DataFrame([{"category": c, "expert": e, "diff": 0.01 * e, "diff_lo": -0.01, "diff_hi": 0.05}
                        for c in ("acute", "chronic") for e in range(4)])
    assert len(lp.plot_category_gates(cat).axes) == 1
    assert lp.plot_category_gates(cat.iloc[:0]).axes[0].texts  # no category: a note, not an error
