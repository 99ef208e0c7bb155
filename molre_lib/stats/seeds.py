"""Comparing two methods over training seeds: per-seed differences, an exact paired sign-flip test, the
probability that A beats B, and a hierarchical bootstrap CI of the macro-AUC difference.

A seed is one training run of each method (the same seed for both: a *paired* design). The uncertainty of a
comparison has two sources, training randomness (seeds) and the finite test set (scans); the hierarchical
bootstrap resamples both, seeds first, then scans, and scores both methods on the same resampled scans.

* :func:`sign_flip_p` — under "no difference" each per-seed Δ is as likely positive as negative; the exact
  p-value counts the 2^n sign assignments whose mean |Δ| is at least the observed one. With n seeds the
  smallest two-sided p is 2 / 2^n: 6 seeds are needed for p < 0.05.
* :func:`p_better` — P(A > B): the chance that a seed of A scores above a seed of B (all n_A x n_B pairs, ties
  half; the Mann-Whitney U / n_A n_B, "probability of improvement").
* :func:`hierarchical_delta` — the bootstrap distribution of mean-over-seeds Δ macro AUC.

Arrays: per seed s, ``probs_a[s]`` and ``probs_b[s]`` are (N scans, F findings) on the same scans, with one
``labels`` / ``mask`` (N, F) (``mask == 0``: unknown label, left out).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .auroc import bootstrap_counts, per_finding_auc

MAX_EXACT = 20  # 2^20 sign assignments; beyond it the test is Monte Carlo


def sign_flip_p(deltas: Sequence[float], alternative: str = "two-sided", n_random: int = 100_000,
                seed: int = 0) -> float:
    """Exact paired sign-flip (permutation) p-value of mean Δ = 0 over seeds.

    Args:
        deltas: (n,) per-seed differences A - B.
        alternative: ``two-sided``, ``greater`` (A > B) or ``less``.
        n_random: sign assignments drawn when n > 20 (then p counts the observed one, Monte Carlo).
    Returns:
        p in (0, 1]; 1.0 when every Δ is 0.
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"sign_flip_p needs a non-empty vector of finite per-seed differences, got {deltas!r}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    if d.size <= MAX_EXACT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))  # (2^n, n), the identity first
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(d.size), rng.choice((1.0, -1.0), size=(n_random, d.size))])
    null = signs @ d / d.size  # (K,) mean difference under each assignment
    observed = d.mean()
    tol = 1e-12 * max(1.0, np.abs(d).max())  # the observed assignment always counts, despite rounding
    if alternative == "two-sided":
        hits = np.abs(null) >= abs(observed) - tol
    elif alternative == "greater":
        hits = null >= observed - tol
    else:
        hits = null <= observed + tol
    return float(hits.mean())


def p_better(a: Sequence[float], b: Sequence[float]) -> float:
    """P(A > B) across seeds: the share of (seed of A, seed of B) pairs where A scores higher, ties half."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("p_better needs at least one seed of each method")
    diff = a[:, None] - b[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def macro_auc(labels: np.ndarray, probs: np.ndarray, mask: Optional[np.ndarray] = None,
              counts: Optional[np.ndarray] = None) -> np.ndarray:
    """Mean AUC over the findings that have both classes: () or, with bootstrap ``counts`` (B, N), (B,)."""
    auc = per_finding_auc(labels, probs, mask, counts)
    with np.errstate(invalid="ignore"):
        return np.nanmean(auc, axis=-1)


@dataclass
class SeedComparison:
    """A vs B over paired seeds (Δ = A - B in macro AUC on the test scans)."""

    n_seeds: int
    auc_a: np.ndarray          # (S,) macro AUC of A per seed
    auc_b: np.ndarray          # (S,)
    deltas: np.ndarray         # (S,) A - B per seed
    mean_delta: float
    ci_low: float              # hierarchical bootstrap (seeds, then scans) percentile interval
    ci_high: float
    sign_flip_p: float         # exact, two-sided
    p_better: float            # P(A > B) across seeds
    wins: int                  # seeds where A > B
    n_boot: int
    level: float

    def row(self) -> dict[str, float]:
        return {"n_seeds": self.n_seeds, "mean_auc_a": float(self.auc_a.mean()), "mean_auc_b": float(self.auc_b.mean()),
                "mean_delta": self.mean_delta, "delta_ci_low": self.ci_low, "delta_ci_high": self.ci_high,
                "sign_flip_p": self.sign_flip_p, "p_better": self.p_better, "wins": self.wins,
                "min_delta": float(self.deltas.min()), "max_delta": float(self.deltas.max())}


def hierarchical_draws(n_seeds: int, n_scans: int, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(seed indices (B, S), scan counts (B, N)): each replicate draws S seeds with replacement, then N scans
    with replacement, shared by both methods and every drawn seed."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return seeds, bootstrap_counts(n_scans, n_boot, int(rng.integers(0, 2**31 - 1)))


def hierarchical_delta(labels: np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray],
                       mask: Optional[np.ndarray] = None, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(B,) bootstrap replicates of the mean over seeds of macro AUC(A) - macro AUC(B); see the module doc."""
    if len(probs_a) != len(probs_b) or not len(probs_a):
        raise ValueError(f"paired seeds needed: {len(probs_a)} runs of A, {len(probs_b)} of B")
    seeds, counts = hierarchical_draws(len(probs_a), labels.shape[0], n_boot, seed)
    per_seed = np.stack([macro_auc(labels, pa, mask, counts) - macro_auc(labels, pb, mask, counts)
                         for pa, pb in zip(probs_a, probs_b)], axis=1)  # (B, S): Δ of seed s on replicate b's scans
    return np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)


def compare_seeds(labels: np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray],
                  mask: Optional[np.ndarray] = None, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> SeedComparison:
    """Every statistic of A vs B over paired seeds (the lists are in seed order, pair i = seed i of both)."""
    auc_a = np.array([macro_auc(labels, p, mask) for p in probs_a])
    auc_b = np.array([macro_auc(labels, p, mask) for p in probs_b])
    deltas = auc_a - auc_b
    reps = hierarchical_delta(labels, probs_a, probs_b, mask, n_boot, seed) if n_boot else np.array([np.nan])
    lo, hi = np.nanquantile(reps, [(1 - level) / 2, (1 + level) / 2]) if n_boot else (np.nan, np.nan)
    return SeedComparison(len(deltas), auc_a, auc_b, deltas, float(deltas.mean()), float(lo), float(hi),
                          sign_flip_p(deltas), p_better(auc_a, auc_b), int((deltas > 0).sum()), n_boot, level)
