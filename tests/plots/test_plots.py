"""Paper figures and tables: every plot renders from realistic inputs, exports in three formats, and the
identifier guard keeps DICOM patient identifiers out of figures and tables."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from molre_lib import plots  # noqa: E402
from molre_lib.plots.names import finding_name  # noqa: E402
from molre_lib.data.taxonomy import CATEGORIES, CATEGORY_OF, FINDING_KEYS  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 75)) < np.linspace(0.02, 0.4, 75)).astype(np.float32)
    mask = (rng.random((40, 75)) > 0.1).astype(np.float32)
    return y * mask, mask


def test_every_category_has_a_distinct_fixed_colour():
    assert list(plots.CATEGORY_COLOURS) == CATEGORIES
    assert len(set(plots.CATEGORY_COLOURS.values())) == len(CATEGORIES)


def test_save_figure_writes_pdf_svg_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = plots.save_figure(fig, tmp_path / "figs", "line")
    assert [p.suffix for p in paths] == [".pdf", ".svg", ".png"]
    assert paths[0].read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in paths[1].read_bytes()[:500]
    from PIL import Image

    with Image.open(paths[2]) as im:
        dpi = im.info["dpi"]
    assert round(dpi[0]) == 300


def test_save_figure_refuses_patient_identifiers(tmp_path):
    fig, ax = plt.subplots()
    ax.set_title("PatientName: DOE^JOHN")
    with pytest.raises(ValueError, match="PatientName"):
        plots.save_figure(fig, tmp_path, "bad")
    fig2, ax2 = plt.subplots()
    ax2.set_title("scan 17 (Jane Roe)")
    with pytest.raises(ValueError, match="forbidden"):
        plots.save_figure(fig2, tmp_path, "bad2", forbidden=["Jane Roe"])
    assert not list(tmp_path.iterdir())


def test_save_table_writes_csv_and_booktabs_latex(tmp_path):
    df = pd.DataFrame({"finding": ["epidural_hematoma", "ich"], "auc": [0.91234, 0.5], "n_pos": [3, 4]})
    csv_path, tex_path = plots.save_table(df, tmp_path, "auc", caption="AUC", label="tab:auc")
    assert pd.read_csv(csv_path)["auc"].tolist() == [0.91234, 0.5]
    tex = tex_path.read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "0.912" in tex and "epidural\\_hematoma" in tex


@pytest.mark.parametrize("column", ["PatientID", "patient_name", "Accession Number", "StudyInstanceUID"])
def test_identifier_columns_are_rejected(tmp_path, column):
    df = pd.DataFrame({"scan_id": ["s1"], column: ["x"]})
    with pytest.raises(ValueError, match="identifier"):
        plots.save_table(df, tmp_path, "t")
    plots.check_no_identifiers(df.drop(columns=[column]))
    with pytest.raises(ValueError, match="forbidden"):
        plots.check_no_identifiers(pd.DataFrame({"scan_id": ["DOE^JOHN"]}), forbidden=["DOE^JOHN"])


def test_dataset_figures(tmp_path, labels):
    y, m = labels
    prev = plots.prevalence_table(y, m)
    assert prev["n_pos"].sum() == int(y.sum()) and (prev["prevalence"] <= 1).all()
    assert list(prev["category"]) == [CATEGORY_OF[k] for k in FINDING_KEYS]
    for by in ("finding", "category"):
        fig = plots.plot_prevalence(prev, by=by)
        assert len(fig.axes[0].patches) == (75 if by == "finding" else 6)
    co = plots.cooccurrence_matrix(y, m)
    k = FINDING_KEYS[-1]
    both = ((y[:, -1] == 1) & (y[:, -2] == 1)).sum()
    assert co.loc[k, FINDING_KEYS[-2]] == pytest.approx(both / ((y[:, -1] * m[:, -2]).sum()))
    plots.save_figure(plots.plot_cooccurrence(co), tmp_path, "cooc")
    hu = np.random.default_rng(0).normal(40, 300, (12, 32, 32)).astype(np.float32)
    fig = plots.plot_slice_gallery(hu, slices=[2, 6])
    assert len(fig.axes) == 6


def test_forest_plot_keeps_75_rows_in_category_order(labels):
    rng = np.random.default_rng(1)
    auc = rng.uniform(0.55, 0.95, 75)
    auc[3] = np.nan
    table = pd.DataFrame({"finding": FINDING_KEYS, "auc": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05})
    fig = plots.plot_forest(table.sample(frac=1.0, random_state=0))
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ticks) == 75
    key_of = {finding_name(k, short=True): k for k in FINDING_KEYS}  # rows show the finding's name
    cats = [CATEGORY_OF[key_of[t]] for t in ticks]
    assert cats == sorted(cats, key=CATEGORIES.index)
    # readable: at least ~0.1 inch per row
    assert fig.get_size_inches()[1] / 75 >= 0.1


def test_delta_auc_marks_significant_findings():
    from molre_lib.stats.delong import paired_delong

    rng = np.random.default_rng(3)
    y = (rng.random((120, 5)) < 0.4).astype(float)
    a = y * 0.3 + rng.random(y.shape)
    b = a.copy()
    b[:, 0] = y[:, 0] * 3 + rng.random(120)  # finding 0: clearly better in run B
    d = paired_delong(y, a, b, finding_keys=FINDING_KEYS[:5])
    d.loc[4, ["delta_auc", "ci_low", "ci_high", "p", "p_holm"]] = np.nan  # an undefined finding is left out
    fig = plots.plot_delta_auc(d)
    marks = sorted(t.get_text() for t in fig.axes[0].texts if set(t.get_text()) == {"*"})
    assert marks == ["***"]
    assert len(fig.axes[0].get_yticklabels()) == 4
    assert plots.significance_mark(0.01) == "*" and plots.significance_mark(0.009) == "**"


def test_calibration_confidence_training_summary_and_table(labels):
    y, m = labels
    rng = np.random.default_rng(2)
    probs = {"lora": np.clip(y * 0.6 + rng.random(y.shape) * 0.4, 0, 1), "molre": np.clip(y * 0.8 + rng.random(y.shape) * 0.2, 0, 1)}
    from molre_lib.stats.calibration import confidence_regime_shift

    fig = plots.plot_reliability(probs, y, m)
    assert [t.get_text().split(" ")[0] for t in fig.axes[0].get_legend().get_texts()] == ["lora", "molre"]
    shift = confidence_regime_shift(y, probs["lora"], probs["molre"], m, finding_keys=FINDING_KEYS)
    fig = plots.plot_confidence_shift(shift)
    assert len(fig.axes[1].get_yticklabels()) == int((shift["n_pos"] > 0).sum())
    log = pd.DataFrame({"step": range(10), "train_loss": np.linspace(1, 0.2, 10),
                        "val_auc": [np.nan] * 4 + list(np.linspace(0.6, 0.8, 6))})
    fig = plots.plot_training_curves(log)
    assert len(fig.axes) == 2
    summary = pd.DataFrame({"backbone": ["a"] * 3 + ["b"] * 3, "arm": ["lora", "molre", "molre SHARED_A=True"] * 2,
                            "mean_auc": [0.7, 0.75, 0.76, 0.8, 0.82, 0.81], "ci_low": [0.65, 0.7, 0.7, 0.75, 0.78, 0.77],
                            "ci_high": [0.75, 0.8, 0.81, 0.85, 0.86, 0.85]})
    fig = plots.plot_summary(summary)
    from matplotlib.container import BarContainer

    bars = {c.get_label(): c.patches[0].get_facecolor() for c in fig.axes[0].containers if isinstance(c, BarContainer)}
    assert len(bars) == 3 and len(set(bars.values())) == 3  # a variant never takes another arm's colour
    plots.plot_table(summary)
