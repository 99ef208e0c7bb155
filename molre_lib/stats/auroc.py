"""Per-finding AUROC with bootstrap confidence intervals, and macro / micro / category summaries.

All AUCs are rank-based (Mann-Whitney with midranks, identical to scikit-learn's ``roc_auc_score``).
The bootstrap resamples *scans* jointly across findings, so a replicate's macro AUC and category
means keep the correlation between findings. It is vectorised: each finding is sorted once
(the order does not depend on the replicate), and a replicate is a vector of per-scan counts, so
an AUC is a cumulative count of negatives read at the positives' positions (ties count half),
computed for all replicates at once with integer arithmetic.

Arrays: ``labels``, ``scores``, ``mask`` are (N scans, F findings); ``mask == 0`` marks unknown labels,
which are left out of every statistic of that finding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import sparse


@dataclass
class _RankPlan:
    """What a finding's AUC needs, independent of the bootstrap replicate."""

    pos_scans: np.ndarray  # (P,) scan index of each positive
    neg_scans: np.ndarray  # (Q,) scan index of each negative, sorted by score ascending
    lo: np.ndarray  # (P,) number of negatives scoring strictly below each positive
    hi: Optional[np.ndarray]  # (P,) number scoring <= each positive; None when no positive ties a negative


def _plan(scores: np.ndarray, labels: np.ndarray, scans: np.ndarray) -> _RankPlan:
    pos, neg = labels == 1, labels == 0
    order = np.argsort(scores[neg], kind="stable")
    neg_sorted = scores[neg][order]
    lo = np.searchsorted(neg_sorted, scores[pos], side="left")
    hi = np.searchsorted(neg_sorted, scores[pos], side="right")
    return _RankPlan(scans[pos], scans[neg][order], lo, None if np.array_equal(lo, hi) else hi)


def _auc_weighted(plan: _RankPlan, counts_t: np.ndarray, chunk: int) -> np.ndarray:
    """AUC under each column of per-scan counts ``counts_t`` (N, B) int32 -> (B,), NaN where a class is absent.

    A positive needs only the count of negatives below it, so the sorted negatives are summed in segments
    between the positives' positions (one sparse 0/1 matrix product, exact in int32) and only the segment
    sums are accumulated.
    """
    b_all = counts_t.shape[1]
    out = np.empty(b_all, dtype=np.float64)
    if plan.pos_scans.size == 0 or plan.neg_scans.size == 0:
        out.fill(np.nan)
        return out
    q = plan.neg_scans.size
    marks = plan.lo if plan.hi is None else np.concatenate([plan.lo, plan.hi])
    cuts = np.unique(marks[(marks > 0) & (marks < q)])  # sorted-negative positions where a prefix sum is read
    segment = np.searchsorted(cuts, np.arange(q), side="right")  # (Q,) segment of each sorted negative
    summer = sparse.csr_matrix((np.ones(q, np.int32), (segment, plan.neg_scans)),
                               shape=(cuts.size + 1, counts_t.shape[0]))  # (S, N); repeated scans add up
    edges = np.concatenate([[0], cuts, [q]])
    col_lo = np.searchsorted(edges, plan.lo)  # prefix row of each positive's "below"
    col_hi = col_lo if plan.hi is None else np.searchsorted(edges, plan.hi)  # ... and "below or tied"
    for start in range(0, b_all, chunk):
        w = counts_t[:, start:start + chunk]  # (N, b)
        seg = summer @ w  # (S, b) negatives per segment
        prefix = np.zeros((seg.shape[0] + 1, seg.shape[1]), dtype=np.int32)
        np.cumsum(seg, axis=0, out=prefix[1:])  # (S + 1, b): negatives below each edge
        below2 = prefix[col_lo] + prefix[col_hi]  # (P, b): 2 x (negatives below + half of the tied ones)
        w_pos = w[plan.pos_scans]  # (P, b)
        num2 = np.einsum("pb,pb->b", w_pos, below2, dtype=np.int64)
        den = w_pos.sum(0, dtype=np.int64) * prefix[-1].astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + chunk] = np.where(den > 0, 0.5 * num2 / np.maximum(den, 1), np.nan)
    return out


def _scan_major(counts: np.ndarray, n: int) -> np.ndarray:
    """(B, N) replicate counts -> (N, B): gathering scans is then a row gather, cheap and contiguous."""
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"counts must be (replicates, {n} scans), got {counts.shape}")
    return np.ascontiguousarray(counts.T, dtype=np.int32)


def _chunk_for(n_items: int, budget: int = 8_000_000) -> int:
    return max(1, budget // max(n_items, 1))


def _check(labels: np.ndarray, scores: np.ndarray, mask: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
        mask = None if mask is None else np.asarray(mask)[:, None]
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    mask = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask {mask.shape} and labels {labels.shape} differ in shape")
    if not np.isfinite(scores[mask]).all():
        raise ValueError("scores contain NaN or inf where the label is known")
    bad = mask & ~np.isin(labels, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"labels must be 0/1 where known; row {r}, finding {c} is {labels[r, c]!r}")
    return (labels * mask).astype(np.int8) + np.where(mask, 0, -1).astype(np.int8), scores, mask


def bootstrap_counts(n_scans: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_scans) multiplicity of each scan in each resample (scans drawn with replacement)."""
    rng = np.random.default_rng(seed)
    dtype = np.int16 if n_scans < np.iinfo(np.int16).max else np.int32
    counts = np.empty((n_boot, n_scans), dtype=dtype)
    rows = _chunk_for(n_scans, 2_000_000)
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        idx = rng.integers(0, n_scans, size=(b, n_scans)) + (np.arange(b) * n_scans)[:, None]
        counts[start:start + b] = np.bincount(idx.ravel(), minlength=b * n_scans).reshape(b, n_scans)
    return counts


def per_finding_auc(labels: np.ndarray, scores: np.ndarray, mask: Optional[np.ndarray] = None,
                    counts: Optional[np.ndarray] = None) -> np.ndarray:
    """AUROC per finding: (F,) or, with bootstrap ``counts`` (B, N), (B, F). NaN without both classes."""
    y, s, _ = _check(labels, scores, mask)
    n, f = y.shape
    scans = np.arange(n)
    w = np.ones((n, 1), dtype=np.int32) if counts is None else _scan_major(counts, n)  # (N, B)
    out = np.empty((w.shape[1], f))
    for j in range(f):
        plan = _plan(s[:, j], y[:, j], scans)
        out[:, j] = _auc_weighted(plan, w, _chunk_for(plan.neg_scans.size + plan.pos_scans.size))
    return out[0] if counts is None else out


def micro_auc(labels: np.ndarray, scores: np.ndarray, mask: Optional[np.ndarray] = None,
              counts: Optional[np.ndarray] = None) -> float | np.ndarray:
    """AUROC over all known (scan, finding) pairs pooled; with ``counts`` one value per replicate."""
    y, s, m = _check(labels, scores, mask)
    scans = np.broadcast_to(np.arange(y.shape[0])[:, None], y.shape)
    plan = _plan(s[m], y[m], scans[m])
    w = np.ones((y.shape[0], 1), dtype=np.int32) if counts is None else _scan_major(counts, y.shape[0])
    out = _auc_weighted(plan, w, _chunk_for(plan.neg_scans.size + plan.pos_scans.size))
    return float(out[0]) if counts is None else out


def _nan_reason(n_pos: int, n_neg: int) -> str:
    if n_pos == 0 and n_neg == 0:
        return "no known labels"
    if n_pos == 0:
        return "no positives"
    return "no negatives" if n_neg == 0 else ""


def _ci(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring replicates where the statistic is undefined."""
    tail = 100 * (1 - level) / 2
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(reps, [tail, 100 - tail], axis=0)
    return lo, hi


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(a)
    cnt = ok.sum(-1)
    return np.where(cnt > 0, np.where(ok, a, 0).sum(-1) / np.maximum(cnt, 1), np.nan)


def default_categories(finding_keys: Sequence[str]) -> Optional[dict[str, str]]:
    """Category of each finding from ``molre_lib.data.taxonomy`` when the keys are taxonomy keys."""
    from molre_lib.data.taxonomy import CATEGORY_OF

    return dict(CATEGORY_OF) if all(k in CATEGORY_OF for k in finding_keys) else None


def auc_report(labels: np.ndarray, scores: np.ndarray, mask: Optional[np.ndarray] = None,
               finding_keys: Optional[Sequence[str]] = None, categories: Optional[Mapping[str, str]] = None,
               n_boot: int = 1000, seed: int = 0, level: float = 0.95, micro_ci: bool = True) -> dict:
    """Per-finding AUROC table and macro / micro / category summaries with bootstrap CIs.

    Returns ``{"per_finding": DataFrame(finding, category, auc, ci_low, ci_high, n_pos, n_neg, reason),
    "summary": DataFrame(metric, value, ci_low, ci_high, n_findings)}``. ``categories`` maps finding
    key -> category (default: the taxonomy when the keys are taxonomy keys). ``n_boot = 0`` skips CIs.
    The macro AUC averages the findings with a defined AUC; a replicate averages those defined in it.
    """
    y, s, m = _check(labels, scores, mask)
    n, f = y.shape
    keys = list(finding_keys) if finding_keys is not None else [f"finding_{j}" for j in range(f)]
    if len(keys) != f:
        raise ValueError(f"{len(keys)} finding keys for {f} score columns")
    categories = dict(categories) if categories is not None else default_categories(keys)
    point = per_finding_auc(y, s, m)
    n_pos, n_neg = (y == 1).sum(0), (y == 0).sum(0)
    counts = bootstrap_counts(n, n_boot, seed) if n_boot > 0 else None
    reps = per_finding_auc(y, s, m, counts) if counts is not None else np.full((0, f), np.nan)  # (B, F)
    lo, hi = _ci(reps, level) if n_boot > 0 else (np.full(f, np.nan), np.full(f, np.nan))
    table = pd.DataFrame({
        "finding": keys,
        "category": [categories.get(k, "") if categories else "" for k in keys],
        "auc": point, "ci_low": lo, "ci_high": hi, "n_pos": n_pos, "n_neg": n_neg,
        "reason": [_nan_reason(int(p), int(q)) for p, q in zip(n_pos, n_neg)],
    })
    rows = []

    def add(name: str, value: float, rep: np.ndarray, n_findings: int) -> None:
        l, h = _ci(rep[:, None], level) if rep.size else (np.array([np.nan]), np.array([np.nan]))
        rows.append({"metric": name, "value": value, "ci_low": float(l[0]), "ci_high": float(h[0]),
                     "n_findings": n_findings})

    defined = ~np.isnan(point)
    add("macro_auc", float(point[defined].mean()) if defined.any() else float("nan"),
        _nanmean_rows(reps[:, defined]) if n_boot else np.empty(0), int(defined.sum()))
    micro_reps = micro_auc(y, s, m, counts) if (n_boot > 0 and micro_ci) else np.empty(0)
    add("micro_auc", micro_auc(y, s, m), micro_reps, f)
    if categories:
        for cat in dict.fromkeys(table["category"]):
            sel = (table["category"] == cat).to_numpy() & defined
            if not cat or not sel.any():
                continue
            add(f"category:{cat}", float(point[sel].mean()), _nanmean_rows(reps[:, sel]) if n_boot else np.empty(0),
                int(sel.sum()))
    return {"per_finding": table, "summary": pd.DataFrame(rows)}
