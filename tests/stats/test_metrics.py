"""Statistics of the engine against independent references: scikit-learn, pROC's published DeLong results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from molre_lib.stats.calibration import confidence_regime_shift, expected_calibration_error, operating_points
from molre_lib.stats.auroc import auc_report, bootstrap_counts, micro_auc, per_finding_auc
from molre_lib.stats.delong import benjamini_hochberg, delong_from_placements, holm, paired_delong, placements

DATA = Path(__file__).parents[1] / "fixtures" / "asah_delong_placements.json"


@pytest.fixture
def tied_data():
    rng = np.random.default_rng(0)
    n, f = 240, 6
    y = (rng.random((n, f)) < 0.25).astype(float)
    s = np.round(rng.random((n, f)) + 0.6 * y, 1)  # coarse rounding -> many ties across classes
    m = rng.random((n, f)) < 0.85
    return y, s, m


def test_auc_matches_sklearn_with_ties_and_mask(tied_data):
    y, s, m = tied_data
    ours = per_finding_auc(y, s, m)
    ref = [roc_auc_score(y[m[:, j], j], s[m[:, j], j]) for j in range(y.shape[1])]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert micro_auc(y, s, m) == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-12)


def test_bootstrap_replicates_match_sklearn_on_the_same_resamples(tied_data):
    y, s, m = tied_data
    counts = bootstrap_counts(len(y), 25, seed=3)
    assert (counts.sum(1) == len(y)).all()
    reps = per_finding_auc(y, s, m, counts)
    for b in range(25):
        idx = np.repeat(np.arange(len(y)), counts[b])  # the resample, scans kept jointly across findings
        for j in range(y.shape[1]):
            k = idx[m[idx, j]]
            assert reps[b, j] == pytest.approx(roc_auc_score(y[k, j], s[k, j]), abs=1e-12)
    micro = micro_auc(y, s, m, counts)
    idx = np.repeat(np.arange(len(y)), counts[7])
    assert micro[7] == pytest.approx(roc_auc_score(y[idx][m[idx]], s[idx][m[idx]]), abs=1e-12)


def test_bootstrap_is_seeded():
    assert np.array_equal(bootstrap_counts(50, 10, 1), bootstrap_counts(50, 10, 1))
    assert not np.array_equal(bootstrap_counts(50, 10, 1), bootstrap_counts(50, 10, 2))


def test_report_nan_reasons_macro_and_categories(tied_data):
    y, s, m = tied_data
    y[:, 1] = 0  # no positives
    m[:, 2] = False  # nothing known
    keys = [f"k{j}" for j in range(y.shape[1])]
    cats = {"k0": "a", "k1": "a", "k2": "b", "k3": "b", "k4": "b", "k5": "c"}
    rep = auc_report(y, s, m, keys, cats, n_boot=200, seed=0)
    t = rep["per_finding"].set_index("finding")
    assert np.isnan(t.loc["k1", "auc"]) and t.loc["k1", "reason"] == "no positives"
    assert t.loc["k2", "reason"] == "no known labels" and t.loc["k0", "reason"] == ""
    assert t.loc["k3", "n_pos"] == int((y[m[:, 3], 3] == 1).sum())
    ok = ~t["auc"].isna()
    summ = rep["summary"].set_index("metric")
    assert summ.loc["macro_auc", "value"] == pytest.approx(t.loc[ok, "auc"].mean())
    assert summ.loc["macro_auc", "n_findings"] == 4
    assert summ.loc["category:b", "value"] == pytest.approx(t.loc[["k3", "k4"], "auc"].mean())
    for _, row in t[ok].iterrows():
        assert row.ci_low <= row.auc <= row.ci_high
    assert summ.loc["micro_auc", "ci_low"] <= summ.loc["micro_auc", "value"] <= summ.loc["micro_auc", "ci_high"]


def test_delong_reproduces_published_proc_roc_test():
    """pROC: roc.test(wfns, s100b) on aSAH gives Z = 2.20898359144091, p = 0.0271757822291882,
    95% CI of the AUC difference (0.0104061769564846, 0.174214419249478)."""
    d = json.loads(DATA.read_text())
    v_pos = np.array([d["pos_placement_x144"][k] for k in ("wfns", "s100b")]) / 144  # 72 negatives, half ties
    v_neg = np.array([d["neg_placement_x82"][k] for k in ("wfns", "s100b")]) / 82  # 41 positives, half ties
    r = delong_from_placements(v_pos, v_neg)
    assert r["z"] == pytest.approx(2.20898359144091, rel=1e-9)
    assert r["p"] == pytest.approx(0.0271757822291882, rel=1e-9)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.0104061769564846, 0.174214419249478), rel=1e-9)
    assert r["auc_a"] == pytest.approx(0.823678861788618) and r["auc_b"] == pytest.approx(0.731368563685637)
    # WFNS is an ordinal grade 1..5: rebuild the grades from the placements and recompute them by midranks.
    grade_pos = {37: 1, 94: 2, 117: 3, 128: 4, 140: 5}
    grade_neg = {80: 1, 66: 2, 53: 3, 44: 4, 18: 5}
    scores = np.array([grade_pos[v] for v in d["pos_placement_x144"]["wfns"]]
                      + [grade_neg[v] for v in d["neg_placement_x82"]["wfns"]], float)
    labels = np.array([1] * 41 + [0] * 72)
    auc, vp, vn = placements(scores, labels)
    np.testing.assert_allclose(vp[0] * 144, d["pos_placement_x144"]["wfns"], atol=1e-9)
    np.testing.assert_allclose(vn[0] * 82, d["neg_placement_x82"]["wfns"], atol=1e-9)


def test_placements_match_the_delong_definition(tied_data):
    y, s, _ = tied_data
    yy, sa = y[:, 0], s[:, 0]
    auc, vp, vn = placements(sa, yy)
    x, z = sa[yy == 1], sa[yy == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])  # DeLong 1988 kernel, (m, n)
    np.testing.assert_allclose(vp[0], psi.mean(1))
    np.testing.assert_allclose(vn[0], psi.mean(0))
    assert auc[0] == pytest.approx(roc_auc_score(yy, sa))


def test_paired_delong_table_and_identical_runs(tied_data):
    y, s, m = tied_data
    rng = np.random.default_rng(1)
    s_b = s + rng.normal(0, 0.3, s.shape)
    df = paired_delong(y, s, s_b, m)
    assert df["delta_auc"].to_numpy() == pytest.approx(df["auc_b"] - df["auc_a"])
    np.testing.assert_allclose(df["auc_a"], per_finding_auc(y, s, m))
    same = paired_delong(y, s, s, m)
    assert (same["p"] == 1.0).all() and (same["z"] == 0).all()


def test_multiple_comparison_corrections():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # Holm by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then running max.
    np.testing.assert_allclose(holm(p)[:4], [0.03, 0.06, 0.06, 0.02])
    # BH by hand: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 (step-up minimum).
    np.testing.assert_allclose(benjamini_hochberg(p)[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(holm(p)[4]) and np.isnan(benjamini_hochberg(p)[4])
    sm = pytest.importorskip("statsmodels.stats.multitest")
    q = np.random.default_rng(0).random(40) ** 3
    np.testing.assert_allclose(holm(q), sm.multipletests(q, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(q), sm.multipletests(q, method="fdr_bh")[1])


def test_operating_points_and_ece():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], float)
    p = np.array([0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1, 0.05])
    op = operating_points(y, p, thresholds=(0.5,), target_specificity=(0.8,)).set_index("rule")
    assert op.loc["threshold=0.5", "sensitivity"] == pytest.approx(2 / 3)
    assert op.loc["threshold=0.5", "specificity"] == pytest.approx(4 / 5)
    assert op.loc["specificity>=0.8", "specificity"] >= 0.8
    # threshold 0.4 keeps every positive and lets one negative (0.7) through: sens 1, spec 0.8
    assert op.loc["specificity>=0.8", ["threshold", "sensitivity"]].tolist() == pytest.approx([0.4, 1.0])
    # ECE by hand with 2 bins: [0, .5): y=(1,0,0,0,0) p=(.4,.3,.2,.1,.05) -> |1-1.05|; [.5, 1]: y=(1,1,0) p=(.9,.6,.7).
    per, pooled = expected_calibration_error(y, p, n_bins=2)
    assert pooled == pytest.approx((abs(1 - 1.05) + abs(2 - 2.2)) / 8)
    assert per[0] == pytest.approx(pooled)


def test_confidence_regime_shift_counts():
    y = np.array([[1], [1], [1], [1], [0]], float)
    pa = np.array([[0.5], [0.4], [0.8], [0.2], [0.5]])
    pb = np.array([[0.9], [0.6], [0.5], [0.75], [0.9]])
    df = confidence_regime_shift(y, pa, pb).iloc[0]
    assert (df.n_pos, df.borderline_a, df.moved_up, df.moved_down) == (4, 2, 1, 1)
    assert df.frac_moved_up == pytest.approx(0.25) and df.frac_of_borderline_up == pytest.approx(0.5)
