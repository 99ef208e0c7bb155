"""Threshold-level and probability-level views of a run: operating points, calibration (ECE) and the
"confidence regime" shift between two runs (how many positives leave the borderline band).

Arrays are (N scans, F findings) probabilities in [0, 1]; ``mask == 0`` marks unknown labels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve


def _prep(labels, probs, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if labels.ndim == 1:
        labels, probs = labels[:, None], probs[:, None]
        mask = None if mask is None else np.asarray(mask)[:, None]
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {probs.shape} differ in shape")
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    return labels, probs, mask


def _keys(keys: Optional[Sequence[str]], f: int) -> list[str]:
    return list(keys) if keys is not None else [f"finding_{j}" for j in range(f)]


def operating_points(labels, probs, mask=None, finding_keys: Optional[Sequence[str]] = None,
                     thresholds: Sequence[float] = (0.5,), target_specificity: Sequence[float] = (0.9, 0.95)
                     ) -> pd.DataFrame:
    """Sensitivity and specificity per finding at fixed ``thresholds`` and at the highest-sensitivity
    threshold reaching each ``target_specificity`` (from scikit-learn's ROC curve). Long format:
    finding, rule, threshold, sensitivity, specificity, n_pos, n_neg."""
    y, p, m = _prep(labels, probs, mask)
    rows = []
    for j, key in enumerate(_keys(finding_keys, y.shape[1])):
        yy, pp = y[m[:, j], j], p[m[:, j], j]
        n_pos, n_neg = int((yy == 1).sum()), int((yy == 0).sum())
        base = {"finding": key, "n_pos": n_pos, "n_neg": n_neg}
        for t in thresholds:
            pred = pp >= t
            sens = float(pred[yy == 1].mean()) if n_pos else np.nan
            spec = float((~pred[yy == 0]).mean()) if n_neg else np.nan
            rows.append({**base, "rule": f"threshold={t:g}", "threshold": float(t), "sensitivity": sens,
                         "specificity": spec})
        for target in target_specificity:
            if n_pos == 0 or n_neg == 0:
                rows.append({**base, "rule": f"specificity>={target:g}", "threshold": np.nan,
                             "sensitivity": np.nan, "specificity": np.nan})
                continue
            fpr, tpr, thr = roc_curve(yy, pp)
            ok = np.flatnonzero(1 - fpr >= target)
            k = ok[np.argmax(tpr[ok])]  # fpr = 0 is always on the curve, so ok is never empty
            rows.append({**base, "rule": f"specificity>={target:g}", "threshold": float(min(thr[k], 1.0)),
                         "sensitivity": float(tpr[k]), "specificity": float(1 - fpr[k])})
    return pd.DataFrame(rows)


def expected_calibration_error(labels, probs, mask=None, n_bins: int = 15) -> tuple[np.ndarray, float]:
    """ECE with ``n_bins`` equal-width bins: sum over bins of (bin share) x |mean label - mean probability|.

    Returns (per-finding ECE (F,), pooled ECE over all known pairs). NaN for a finding with no known labels.
    """
    y, p, m = _prep(labels, probs, mask)
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins}: must be >= 1")
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)  # (N, F); p = 1 goes to the last bin

    def ece(yv: np.ndarray, pv: np.ndarray, bv: np.ndarray) -> float:
        if yv.size == 0:
            return float("nan")
        cnt = np.bincount(bv, minlength=n_bins)
        gap = np.abs(np.bincount(bv, yv, n_bins) - np.bincount(bv, pv, n_bins))  # |sum y - sum p| per bin
        return float(gap.sum() / cnt.sum())

    per = np.array([ece(y[m[:, j], j], p[m[:, j], j], bins[m[:, j], j]) for j in range(y.shape[1])])
    return per, ece(y[m], p[m], bins[m])


def confidence_regime_shift(labels, probs_a, probs_b, mask=None, finding_keys: Optional[Sequence[str]] = None,
                            band: tuple[float, float] = (0.3, 0.7)) -> pd.DataFrame:
    """Per finding, how positives move between confidence regimes from run A (e.g. LoRA) to run B (MoLRE).

    A positive is *borderline* when ``band[0] <= p <= band[1]`` and *confident* when ``p > band[1]``.
    Columns: n_pos, borderline_a, moved_up (borderline in A, confident in B), moved_down (the reverse:
    borderline in B, confident in A), frac_moved_up = moved_up / n_pos, frac_of_borderline_up =
    moved_up / borderline_a, confident_a, confident_b.
    """
    y, pa, m = _prep(labels, probs_a, mask)
    _, pb, _ = _prep(labels, probs_b, mask)
    if pa.shape != pb.shape:
        raise ValueError(f"run A probabilities {pa.shape} and run B {pb.shape} differ in shape")
    lo, hi = band
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"band={band}: need 0 <= low < high <= 1")
    pos = m & (y == 1)  # (N, F)
    border_a, border_b = pos & (pa >= lo) & (pa <= hi), pos & (pb >= lo) & (pb <= hi)
    conf_a, conf_b = pos & (pa > hi), pos & (pb > hi)
    n_pos = pos.sum(0)
    up, down = (border_a & conf_b).sum(0), (border_b & conf_a).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = pd.DataFrame({
            "finding": _keys(finding_keys, y.shape[1]), "n_pos": n_pos, "borderline_a": border_a.sum(0),
            "moved_up": up, "moved_down": down,
            "frac_moved_up": np.where(n_pos > 0, up / n_pos, np.nan),
            "frac_of_borderline_up": np.where(border_a.sum(0) > 0, up / border_a.sum(0), np.nan),
            "confident_a": conf_a.sum(0), "confident_b": conf_b.sum(0),
        })
    return df
