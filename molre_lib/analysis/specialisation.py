"""Do MoLRE's experts specialise by anatomy or pathology? Association tests of each token's dominant expert.

For every routed layer with per-token gates (``RoutingData.token_gates``, kept for the first scans at
collection), each patch token gets its dominant expert (largest gate) and two labels from maps on the model grid:

- **tissue**: the majority class of its pixels in a tissue map — for the phantom the noise-free rendering cut into
  HU bands (:func:`molre_lib.data.phantom_masks.hu_bands`), for real scans the same bands of the scan itself;
- **lesion**: whether at least ``lesion_fraction`` of its pixels lie in any finding mask (phantom only).

The association is Cramér's V of the expert × class contingency table (0 none, 1 a function of each other), with
the mutual information (nats) beside it. Tokens are not independent — neighbouring tokens share tissue and gates
— so the null keeps each map's spatial structure: every (scan, unit) expert grid is shifted circularly by a random
(dy, dx) against its label grid (a toroidal-shift test); ``null="shuffle"`` permutes tokens instead. The p-value is
(1 + #null V ≥ observed V) / (1 + n_perm). Per finding category, :func:`gates_by_category` gives each expert's
mean-gate difference between scans with and without a finding of the category, with scan-bootstrap CIs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .routing import RoutingData


# ----------------------------------------------------------------------------------------------- statistics
def contingency(a: np.ndarray, b: np.ndarray, n_a: int | None = None, n_b: int | None = None) -> np.ndarray:
    """Counts (n_a, n_b) of paired integer labels."""
    a, b = np.asarray(a, int).ravel(), np.asarray(b, int).ravel()
    n_a = int(a.max()) + 1 if n_a is None else n_a
    n_b = int(b.max()) + 1 if n_b is None else n_b
    return np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b).astype(float)


def cramers_v(table: np.ndarray) -> float:
    """Cramér's V of a contingency table (empty rows / columns dropped); 0 when either side has one level."""
    t = np.asarray(table, float)
    t = t[t.sum(1) > 0][:, t.sum(0) > 0]
    k = min(t.shape) - 1
    n = t.sum()
    if k < 1 or n == 0:
        return 0.0
    expected = t.sum(1, keepdims=True) * t.sum(0, keepdims=True) / n
    chi2 = float(((t - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * k)))


def mutual_information(table: np.ndarray) -> float:
    """Mutual information (nats) of the joint distribution given by a contingency table."""
    p = np.asarray(table, float)
    p = p / p.sum()
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def permutation_test(experts: np.ndarray, labels: np.ndarray, n_perm: int = 200, seed: int = 0,
                     null: str = "shift", valid: np.ndarray | None = None) -> dict[str, float]:
    """Cramér's V between expert and label grids (N, h, w) (N = scans × units) and its permutation p-value.

    null: "shift" (each expert grid circularly shifted by a random (dy, dx), spatial structure kept) or
    "shuffle" (tokens permuted within each grid). valid: bool (N, h, w), tokens that count (default all).
    """
    experts, labels = np.asarray(experts, int), np.asarray(labels, int)
    if experts.shape != labels.shape or experts.ndim != 3:
        raise ValueError(f"expert grid {experts.shape} and label grid {labels.shape} must both be (N, h, w)")
    if null not in ("shift", "shuffle"):
        raise ValueError(f"null must be 'shift' or 'shuffle', got {null!r}")
    valid = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
    n_e, n_c = int(experts.max()) + 1, int(labels.max()) + 1

    def stat(e: np.ndarray) -> tuple[float, float]:
        t = contingency(e[valid], labels[valid], n_e, n_c)
        return cramers_v(t), mutual_information(t)

    v, mi = stat(experts)
    rng = np.random.default_rng(seed)
    n, h, w = experts.shape
    null_v = np.empty(n_perm)
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    for k in range(n_perm):
        if null == "shift":
            dy, dx = rng.integers(0, h, n), rng.integers(0, w, n)
            moved = experts[np.arange(n)[:, None, None], (rows[None] + dy[:, None, None]) % h,
                            (cols[None] + dx[:, None, None]) % w]
        else:
            order = rng.permuted(np.tile(np.arange(h * w), (n, 1)), axis=1)
            moved = np.take_along_axis(experts.reshape(n, -1), order, axis=1).reshape(n, h, w)
        null_v[k] = stat(moved)[0]
    return {"v": v, "mi": mi, "v_null_mean": float(null_v.mean()) if n_perm else np.nan,
            "v_null_95": float(np.quantile(null_v, 0.95)) if n_perm else np.nan,
            "p": float((1 + (null_v >= v - 1e-12).sum()) / (1 + n_perm)), "n_tokens": int(valid.sum()), "n_perm": n_perm}


# ----------------------------------------------------------------------------------------------- token labels
def token_grid_labels(label_map: np.ndarray, n_units: int, grid: Sequence[int], n_classes: int | None = None,
                      reduce: str = "majority", min_fraction: float = 0.25) -> np.ndarray:
    """Label map (D, H, W) -> (U, h, w) token labels: unit u covers slices [u*D/U, (u+1)*D/U), a token its pixel
    block. reduce "majority": the most common class; "fraction": 1 when ≥ ``min_fraction`` of the block is > 0."""
    m = np.asarray(label_map)
    d, hh, ww = m.shape
    h, w = int(grid[0]), int(grid[1])
    if hh % h or ww % w:
        raise ValueError(f"a ({hh}, {ww}) slice does not split into a {h}x{w} token grid")
    out = np.zeros((n_units, h, w), int)
    for u in range(n_units):
        z0, z1 = u * d // n_units, max((u + 1) * d // n_units, u * d // n_units + 1)
        blocks = m[z0:z1].reshape(z1 - z0, h, hh // h, w, ww // w).transpose(1, 3, 0, 2, 4).reshape(h, w, -1)
        if reduce == "fraction":
            out[u] = ((blocks > 0).mean(-1) >= min_fraction).astype(int)
        else:
            k = int(m.max()) + 1 if n_classes is None else n_classes
            counts = np.stack([(blocks == c).sum(-1) for c in range(k)], -1)  # (h, w, k)
            out[u] = counts.argmax(-1)
    return out


def dominant_experts(data: RoutingData, layer: str, scan: int | str) -> np.ndarray:
    """(U, h, w) index of each token's largest gate for a scan whose token gates were kept."""
    sid = data.scan_ids[data.scan_index(scan)]
    if layer not in data.token_gates or sid not in data.token_scan_ids:
        raise KeyError(f"no token gates kept for scan {sid!r} in layer {layer!r}")
    grid = data.grids.get(layer)
    if grid is None:
        raise ValueError(f"layer {layer!r} tokens have no spatial grid ({data.unit_kind[layer]} routing)")
    g = data.token_gates[layer][data.token_scan_ids.index(sid)].astype(np.float32)  # (U, P, E)
    return g.argmax(-1).reshape(g.shape[0], *grid)


def specialisation_tests(data: RoutingData, tissue: Mapping[str, np.ndarray],
                         lesion: Mapping[str, np.ndarray] | None = None, n_perm: int = 200, seed: int = 0,
                         null: str = "shift", lesion_fraction: float = 0.25, layers: Sequence[str] | None = None,
                         exclude_air: bool = True) -> pd.DataFrame:
    """Per layer and target ("tissue", "lesion"): Cramér's V, mutual information, null mean and 95th percentile,
    p-value, tokens and scans, over the kept scans that have maps (scan_id -> (D, H, W) on the model grid).

    exclude_air: the lesion test counts only tokens whose majority tissue is not air (class 0), so "lesion vs
    brain" is not inflated by "head vs air", which the tissue test already covers.
    """
    rows = []
    scans = [s for s in data.token_scan_ids if s in tissue]
    if not scans:
        raise ValueError("none of the scans with kept token gates has a tissue map")
    for name in layers or data.layers:
        if name not in data.token_gates or data.grids.get(name) is None:
            continue
        experts = [dominant_experts(data, name, s) for s in scans]  # each (U, h, w)
        n_units, grid = experts[0].shape[0], experts[0].shape[1:]
        tis = [token_grid_labels(tissue[s], n_units, grid) for s in scans]
        e = np.concatenate(experts)
        t = np.concatenate(tis)
        rows.append({"layer": name, "target": "tissue", "n_scans": len(scans),
                     **permutation_test(e, t, n_perm, seed, null)})
        if lesion is not None:
            les = np.concatenate([token_grid_labels(lesion[s], n_units, grid, reduce="fraction",
                                                    min_fraction=lesion_fraction) for s in scans])
            valid = t > 0 if exclude_air else None
            if les[valid if valid is not None else slice(None)].any():
                rows.append({"layer": name, "target": "lesion", "n_scans": len(scans),
                             "lesion_tokens": int(les[valid].sum() if valid is not None else les.sum()),
                             **permutation_test(e, les, n_perm, seed, null, valid)})
    out = pd.DataFrame(rows, columns=None if rows else ["layer", "target", "n_scans", "v", "mi", "v_null_mean",
                                                          "v_null_95", "p", "n_tokens", "n_perm"])
    out.insert(1, "layer_index", [data.layers.index(n) for n in out["layer"]])
    return out


def gates_by_category(data: RoutingData, layer: str | None = None, n_boot: int = 1000, seed: int = 0,
                      category_of: Mapping[str, str] | None = None, ci: float = 0.95) -> pd.DataFrame:
    """Per finding category and expert: mean scan gate with any finding of the category (pos) and with none
    (neg), their difference and its bootstrap CI (scans resampled within pos and neg)."""
    if category_of is None:
        from molre_lib.data.taxonomy import CATEGORY_OF as category_of
    gates = data.scan_gates(layer)  # (S, E)
    known = data.label_mask > 0
    y = (data.labels == 1) & known
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    rows = []
    for cat in dict.fromkeys(category_of[k] for k in data.finding_keys if k in category_of):
        cols = [j for j, k in enumerate(data.finding_keys) if category_of.get(k) == cat]
        pos = y[:, cols].any(1)
        neg = ~pos & known[:, cols].all(1)
        if pos.sum() < 2 or neg.sum() < 2:
            continue
        gp, gn = gates[pos], gates[neg]
        bp = gp[rng.integers(0, len(gp), (n_boot, len(gp)))].mean(1)  # (B, E)
        bn = gn[rng.integers(0, len(gn), (n_boot, len(gn)))].mean(1)
        lo, hi = np.quantile(bp - bn, [alpha, 1 - alpha], axis=0)
        for e in range(gates.shape[1]):
            rows.append({"category": cat, "expert": e, "pos_mean": float(gp[:, e].mean()),
                         "neg_mean": float(gn[:, e].mean()), "diff": float(gp[:, e].mean() - gn[:, e].mean()),
                         "diff_lo": float(lo[e]), "diff_hi": float(hi[e]), "n_pos": int(pos.sum()),
                         "n_neg": int(neg.sum())})
    return pd.DataFrame(rows, columns=["category", "expert", "pos_mean", "neg_mean", "diff", "diff_lo", "diff_hi",
                                       "n_pos", "n_neg"])


def truth_maps(dataset, scan_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, str]:
    """Tissue (and, for phantom data, lesion) maps on the model grid for these scans of a run's dataset.

    Phantom data (``phantom.json`` beside the manifest): noise-free tissue bands and the union of finding masks;
    otherwise HU bands of each fitted scan and no lesion maps. Returns (tissue, lesion or None, source).
    """
    from molre_lib.data.dataset import slice_indices, unwrap_dataset
    from molre_lib.data.phantom_masks import PhantomTruth, hu_bands

    base = unwrap_dataset(dataset, ("fitted",))
    try:
        truth = PhantomTruth(base.root, base.cfg)
    except FileNotFoundError:
        truth = None
    tissue, lesion = {}, {}
    for sid in scan_ids:
        if truth is not None and sid in truth:
            t = truth(sid)
            tissue[sid], lesion[sid] = t.tissue, t.lesion()
        else:
            hu = base.fitted(base.scan_ids.index(sid))
            tissue[sid] = hu_bands(hu[slice_indices(hu.shape[0], base.cfg.n_slices)])
    source = "phantom tissue map (noise-free HU bands) and lesion masks" if len(lesion) == len(tissue) \
        else "HU bands of the scans"
    lesion = lesion if lesion and len(lesion) == len(tissue) else None
    return tissue, lesion, source
