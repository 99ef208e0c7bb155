"""Seed-level comparison statistics against independent references: brute-force enumeration and
scipy.stats.permutation_test for the sign-flip p, Mann-Whitney U for P(A > B), and a plain loop over
scikit-learn AUCs on the same draws for the hierarchical bootstrap."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from molre_lib.stats.seeds import compare_seeds, hierarchical_delta, hierarchical_draws, p_better, sign_flip_p


@pytest.mark.parametrize("deltas", [[0.01, 0.02, -0.005, 0.03, 0.012, 0.004], [0.1, -0.1, 0.05], [0.02] * 6,
                                    [0.003, -0.001, 0.002, 0.0, 0.004]])
def test_sign_flip_p_is_the_exact_permutation_p(deltas):
    d = np.array(deltas)
    brute = np.mean([abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12
                     for s in itertools.product((1, -1), repeat=len(d))])
    assert sign_flip_p(d) == pytest.approx(brute)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=10_000,
                                 alternative="two-sided").pvalue  # one sample: scipy flips the signs, exactly
    assert sign_flip_p(d) == pytest.approx(ref)
    greater = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater").pvalue
    assert sign_flip_p(d, "greater") == pytest.approx(greater)


def test_six_seeds_all_in_favour_reach_the_smallest_p():
    assert sign_flip_p([0.01] * 6) == pytest.approx(2 / 2**6)
    assert sign_flip_p([0.01] * 5) == pytest.approx(2 / 2**5) and sign_flip_p([0.01] * 5) > 0.05


def test_p_better_is_mann_whitney_u_over_pairs():
    a, b = np.array([0.71, 0.69, 0.73, 0.70]), np.array([0.70, 0.68, 0.70, 0.66])
    u = stats.mannwhitneyu(a, b, alternative="greater").statistic
    assert p_better(a, b) == pytest.approx(u / (len(a) * len(b)))
    assert p_better(a, a) == 0.5


def _fake(n_scans=60, n_find=3, n_seeds=3, seed=0, gap=0.3):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_scans, n_find)) < 0.4).astype(float)
    mask = np.ones_like(labels)
    mask[:5, 0] = 0  # unknown labels are left out
    a = [labels * gap + rng.random(labels.shape) for _ in range(n_seeds)]
    b = [labels * gap * 0.5 + rng.random(labels.shape) for _ in range(n_seeds)]
    return labels, mask, a, b


def test_hierarchical_bootstrap_matches_a_loop_over_sklearn_aucs():
    labels, mask, a, b = _fake()
    n_boot = 15
    seeds, counts = hierarchical_draws(len(a), len(labels), n_boot, seed=3)
    expected = []
    for r in range(n_boot):
        idx = np.repeat(np.arange(len(labels)), counts[r])
        deltas = []
        for s in seeds[r]:
            macro = []
            for probs in (a[s], b[s]):
                aucs = []
                for j in range(labels.shape[1]):
                    keep = idx[mask[idx, j] > 0]
                    aucs.append(roc_auc_score(labels[keep, j], probs[keep, j]))
                macro.append(np.mean(aucs))
            deltas.append(macro[0] - macro[1])
        expected.append(np.mean(deltas))
    np.testing.assert_allclose(hierarchical_delta(labels, a, b, mask, n_boot, seed=3), expected, atol=1e-12)


def test_compare_seeds_summarises_a_clear_and_a_null_difference():
    labels, mask, a, b = _fake(n_scans=200, n_seeds=6)
    res = compare_seeds(labels, a, b, mask, n_boot=300)
    assert res.n_seeds == 6 and res.wins == 6 and res.p_better > 0.9
    assert res.sign_flip_p == pytest.approx(2 / 64) and 0 < res.ci_low <= res.mean_delta <= res.ci_high
    same = compare_seeds(labels, a, a, mask, n_boot=50)
    assert same.mean_delta == 0 and same.ci_low == 0 and same.ci_high == 0 and same.sign_flip_p == 1.0
