"""Paired comparison of two runs: DeLong's test per finding, with Holm and Benjamini-Hochberg correction.

DeLong, DeLong & Clarke-Pearson (1988) give the covariance of correlated AUCs from the placement
values (structural components); Sun & Xu (2014) compute those from midranks in O(N log N).
Checked against pROC's published ``roc.test`` results on the aSAH data (tests/test_engine_metrics.py).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, norm, rankdata


def placements(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Midrank placements (Sun & Xu 2014) for K score sets on the same cases.

    ``scores`` (K, N), ``labels`` (N,) 0/1. Returns (auc (K,), v_pos (K, m), v_neg (K, n)): ``v_pos[k, i]``
    is the fraction of negatives a positive outranks (ties count half), ``v_neg[k, j]`` the fraction of
    positives that outrank a negative.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    labels = np.asarray(labels)
    pos, neg = labels == 1, labels == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs positives and negatives (got {m} positives, {n} negatives)")
    x, y = scores[:, pos], scores[:, neg]  # (K, m), (K, n)
    tx, ty = rankdata(x, axis=1), rankdata(y, axis=1)  # midranks within each class
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)  # (K, m + n) midranks overall
    v_pos = (tz[:, :m] - tx) / n
    v_neg = 1.0 - (tz[:, m:] - ty) / m
    auc = v_pos.mean(1)
    return auc, v_pos, v_neg


def delong_from_placements(v_pos: np.ndarray, v_neg: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Paired DeLong test of AUC[0] - AUC[1] from placements (2, m) and (2, n)."""
    m, n = v_pos.shape[1], v_neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs >= 2 positives and >= 2 negatives (got {m}, {n})")
    auc = v_pos.mean(1)
    s = np.cov(v_pos) / m + np.cov(v_neg) / n  # (2, 2) covariance of the two AUCs
    diff = float(auc[0] - auc[1])
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    se = np.sqrt(max(var, 0.0))
    if se == 0.0:
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)  # identical rankings: no evidence, as pROC
    else:
        z = diff / se
    p = float(2 * norm.sf(abs(z)))
    half = norm.ppf(0.5 + level / 2) * se
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": float(se), "z": float(z), "p": p,
            "ci_low": diff - half, "ci_high": diff + half}


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Two-sided paired DeLong test; ``diff``/``z`` are for AUC(a) - AUC(b)."""
    _, v_pos, v_neg = placements(np.stack([scores_a, scores_b]), labels)
    return delong_from_placements(v_pos, v_neg, level)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error); NaN entries stay NaN and are not counted."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    order = np.argsort(q, kind="stable")
    k = q.size
    adj = np.maximum.accumulate((k - np.arange(k)) * q[order])
    res = np.empty_like(q)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), via SciPy; NaN entries stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


def paired_delong(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, mask: Optional[np.ndarray] = None,
                  finding_keys: Optional[Sequence[str]] = None, level: float = 0.95) -> pd.DataFrame:
    """Per-finding paired DeLong test of run B against run A on the same scans, with corrected p-values.

    Inputs are (N, F). ``delta_auc = auc_b - auc_a``. Findings with fewer than 2 positives or negatives get
    p = NaN and a ``reason`` (AUCs are still given when both classes exist); they do not count towards the
    correction.
    """
    labels, scores_a, scores_b = (np.asarray(a, dtype=np.float64) for a in (labels, scores_a, scores_b))
    if not labels.shape == scores_a.shape == scores_b.shape:
        raise ValueError(f"labels {labels.shape}, scores_a {scores_a.shape}, scores_b {scores_b.shape} must match")
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    f = labels.shape[1]
    keys = list(finding_keys) if finding_keys is not None else [f"finding_{j}" for j in range(f)]
    rows = []
    for j in range(f):
        k = mask[:, j]
        y = labels[k, j]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        row = {"finding": keys[j], "n_pos": n_pos, "n_neg": n_neg}
        if n_pos < 2 or n_neg < 2:
            nan = dict(se=np.nan, z=np.nan, p=np.nan, ci_low=np.nan, ci_high=np.nan)
            if n_pos and n_neg:  # AUCs exist, their variance does not
                a, b = (placements(s[k, j], y)[0][0] for s in (scores_a, scores_b))
                row.update(auc_a=a, auc_b=b, delta_auc=b - a, **nan,
                           reason=f"DeLong needs >= 2 positives and >= 2 negatives ({n_pos}, {n_neg})")
            else:
                row.update(auc_a=np.nan, auc_b=np.nan, delta_auc=np.nan, **nan,
                           reason="no positives" if n_pos == 0 else "no negatives")
        else:
            r = delong_test(y, scores_b[k, j], scores_a[k, j], level)  # diff = b - a
            row.update(auc_a=r["auc_b"], auc_b=r["auc_a"], delta_auc=r["diff"], se=r["se"], z=r["z"], p=r["p"],
                       ci_low=r["ci_low"], ci_high=r["ci_high"], reason="")
        rows.append(row)
    df = pd.DataFrame(rows)
    df["p_holm"] = holm(df["p"].to_numpy())
    df["p_bh"] = benjamini_hochberg(df["p"].to_numpy())
    return df[["finding", "n_pos", "n_neg", "auc_a", "auc_b", "delta_auc", "ci_low", "ci_high", "se", "z", "p",
               "p_holm", "p_bh", "reason"]]
