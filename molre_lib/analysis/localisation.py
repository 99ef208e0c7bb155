"""Does an explanation point at the lesion? Localisation scores of attribution maps against lesion masks.

Metrics for one map ``cam`` (D, H, W), lesion ``mask`` and ``head`` (both bool (D, H, W), on the model grid):

- **pointing game** (``hit``): the map's maximum (on a plateau its middle) lies inside the mask dilated by
  ``margin_mm`` (Euclidean, in mm, anisotropic voxels respected). ``hit_chance`` is the dilated mask's share
  of the head: the hit rate of a maximum dropped at random in the head. A maximum in the air is a miss.
- **energy inside the mask** (``energy``): share of the map's positive mass (over the *whole* volume, air
  included, so mass on the air counts against it) that lies in the mask; ``share`` = the mask's share of the
  head is its chance level (a map uniform over the head scores ``share``).
- **voxel AUROC** (``auroc``): the map's values as a score for "voxel in the mask", over head voxels only
  (ties count one half); 0.5 is chance, NaN when the head holds no lesion voxel or nothing else.

Aggregation (:func:`summarise`, :func:`paired`) bootstraps *scans* (a scan with several findings is resampled
as a whole), per finding or per category; :func:`paired` compares two models on the same (scan, finding).
Mechanism (:func:`score_dataset`): attribution maps from ``explain.ATTRIBUTIONS`` for every positive finding
that has a mask in every phantom scan of a dataset, truth from :class:`molre_lib.data.phantom_masks.PhantomTruth`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

DEFAULT_MARGIN_MM = 10.0
METRICS = ("hit", "energy", "auroc")
CHANCE = {"hit": "hit_chance", "energy": "share", "auroc": None}  # column with each metric's chance level


# ----------------------------------------------------------------------------------------------- metrics
def dilate_mm(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (Euclidean, mm) of the mask; the mask itself for margin 0."""
    mask = np.asarray(mask, bool)
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=tuple(float(s) for s in spacing)) <= margin_mm


def pointing_game(cam: np.ndarray, mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  margin_mm: float = DEFAULT_MARGIN_MM) -> bool:
    """True when the map's maximum (:func:`peak_voxel`) is inside the mask dilated by ``margin_mm``; a map with
    no positive value points nowhere (False)."""
    cam = np.asarray(cam, np.float64)
    if not np.isfinite(cam).any() or np.nanmax(cam) <= 0:
        return False
    return bool(dilate_mm(mask, spacing, margin_mm)[peak_voxel(cam, spacing)])


def peak_voxel(cam: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[int, ...]:
    """The map's maximum; on a plateau (ties, e.g. an occluded patch) the tied voxel nearest (mm) to the
    plateau's centroid, so a block-shaped maximum points at its middle, not its corner."""
    cam = np.nan_to_num(np.asarray(cam, np.float64), nan=-np.inf)
    top = cam.max()
    peaks = np.argwhere(cam >= top - 1e-9 * max(abs(top), 1.0))  # (n, 3)
    if len(peaks) == 1:
        return tuple(int(v) for v in peaks[0])
    mm = peaks * np.asarray(spacing, float)
    return tuple(int(v) for v in peaks[np.argmin(((mm - mm.mean(0)) ** 2).sum(1))])


def energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass inside the mask (0 when the map has no positive mass)."""
    pos = np.clip(np.nan_to_num(np.asarray(cam, np.float64)), 0, None)
    total = pos.sum()
    return float(pos[np.asarray(mask, bool)].sum() / total) if total > 0 else 0.0


def voxel_auroc(cam: np.ndarray, mask: np.ndarray, head: np.ndarray) -> float:
    """AUROC of the map's values for mask vs non-mask voxels inside the head (Mann-Whitney, ties 1/2)."""
    head = np.asarray(head, bool)
    y = np.asarray(mask, bool)[head]
    s = np.nan_to_num(np.asarray(cam, np.float64)[head])
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score_map(cam: np.ndarray, mask: np.ndarray, head: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
              margin_mm: float = DEFAULT_MARGIN_MM) -> dict[str, float]:
    """All metrics of one map with their chance levels (see module docstring)."""
    mask, head = np.asarray(mask, bool), np.asarray(head, bool)
    if np.shape(cam) != mask.shape or mask.shape != head.shape:
        raise ValueError(f"map {np.shape(cam)}, mask {mask.shape} and head {head.shape} must have one shape")
    n_head = max(int(head.sum()), 1)
    dilated = dilate_mm(mask, spacing, margin_mm)
    return {"hit": float(pointing_game(cam, mask, spacing, margin_mm)),
            "hit_chance": float((dilated & head).sum() / n_head),
            "energy": energy_in_mask(cam, mask), "share": float((mask & head).sum() / n_head),
            "auroc": voxel_auroc(cam, mask, head), "mask_voxels": int(mask.sum())}


# ----------------------------------------------------------------------------------------------- aggregation
def _cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of ``values`` resampling whole clusters (scans): (n_boot,)."""
    ok = np.isfinite(values)
    values, clusters = values[ok], clusters[ok]
    if values.size == 0:
        return np.full(n_boot, np.nan)
    ids, inv = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(ids))
    counts = np.bincount(inv, minlength=len(ids)).astype(float)
    pick = rng.integers(0, len(ids), size=(n_boot, len(ids)))  # (B, n_scans)
    return sums[pick].sum(1) / counts[pick].sum(1)


def summarise(table: pd.DataFrame, by: str | Sequence[str] = ("model", "method", "finding"),
              metrics: Sequence[str] = METRICS, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean of each metric per group with a percentile bootstrap CI over scans, its chance level and counts.

    Columns per metric m: m, m_lo, m_hi, m_chance (mean chance level, NaN for AUROC whose chance is 0.5).
    """
    by = [by] if isinstance(by, str) else list(by)
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    rows = []
    for key, g in table.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row.update({"n_pairs": len(g), "n_scans": g["scan_id"].nunique()})
        for m in metrics:
            v = g[m].to_numpy(float)
            boot = _cluster_bootstrap(v, g["scan_id"].to_numpy(), n_boot, rng) if n_boot else np.array([np.nan])
            row[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            row[f"{m}_lo"], row[f"{m}_hi"] = (float(np.nanquantile(boot, q)) if np.isfinite(boot).any() else np.nan
                                              for q in (alpha, 1 - alpha))
            chance = CHANCE.get(m)
            row[f"{m}_chance"] = float(g[chance].mean()) if chance else (0.5 if m == "auroc" else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def paired(table: pd.DataFrame, reference: str, other: str, by: str | Sequence[str] = ("method", "finding"),
           metrics: Sequence[str] = METRICS, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """``other`` minus ``reference`` model on the same (method, scan, finding): mean difference per group
    with a scan-bootstrap CI and a two-sided bootstrap p-value (2 × (1 + resamples on the far side of 0) / (1 + B)).
    Groups may be ("method",) for all findings together, ("method", "finding") or ("method", "category")."""
    by = [by] if isinstance(by, str) else list(by)
    keys = ["method", "scan_id", "finding"]
    a = table[table["model"] == reference].set_index(keys)
    b = table[table["model"] == other].set_index(keys)
    both = a.index.intersection(b.index)
    if len(both) == 0:
        raise ValueError(f"models {reference!r} and {other!r} share no (method, scan, finding) to pair")
    diff = (b.loc[both, list(metrics)] - a.loc[both, list(metrics)]).reset_index()
    extra = [c for c in by if c not in diff.columns]
    if extra:
        diff = diff.join(a.loc[both, extra].reset_index(drop=True))
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    rows = []
    for key, g in diff.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row.update({"reference": reference, "other": other, "n_pairs": len(g), "n_scans": g["scan_id"].nunique()})
        for m in metrics:
            v = g[m].to_numpy(float)
            boot = _cluster_bootstrap(v, g["scan_id"].to_numpy(), n_boot, rng)
            row[f"d_{m}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            good = boot[np.isfinite(boot)]
            row[f"d_{m}_lo"], row[f"d_{m}_hi"] = ((float(np.quantile(good, q)) for q in (alpha, 1 - alpha))
                                                  if good.size else (np.nan, np.nan))
            tail = min(int((good <= 0).sum()), int((good >= 0).sum()))
            row[f"p_{m}"] = float(min(1.0, 2 * (tail + 1) / (good.size + 1))) if good.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- mechanism
def head_from_image(image: np.ndarray, windows: Sequence[Sequence[float]]) -> np.ndarray:
    """Head mask (D, H, W) from a windowed model input (C, D, H, W): the channel whose window starts lowest
    (the bone window's floor is about -800 HU), anything above its floor, via ``slices.head_mask``."""
    from .slices import head_mask

    floors = [level - width / 2 for level, width in windows]
    return head_mask(np.asarray(image)[int(np.argmin(floors))], threshold=0.0)


def score_dataset(model, dataset, truth, model_name: str, methods: Sequence[str] = ("gradcam",),
                  findings: Iterable[str] | None = None, max_scans: int | None = None,
                  margin_mm: float = DEFAULT_MARGIN_MM, windows: Sequence[Sequence[float]] | None = None,
                  method_kwargs: dict[str, dict] | None = None, scan_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (method, scan, finding) for every finding present with a non-empty mask in each scan.

    truth: ``scan_id -> ScanTruth`` (e.g. :class:`~molre_lib.data.phantom_masks.PhantomTruth`); findings:
    restrict to these keys; max_scans: the first N scans of the dataset that have any scored finding;
    scan_ids: score exactly these scans (so two models see the same ones). Columns: model, method, scan_id,
    finding, category, probability and the metrics of :func:`score_map`.
    """
    import torch

    from molre_lib.data.taxonomy import CATEGORY_OF, FINDING_KEYS
    from .explain import ATTRIBUTIONS

    unknown = [m for m in methods if m not in ATTRIBUTIONS]
    if unknown:
        raise ValueError(f"unknown attribution methods {unknown}; known: {sorted(ATTRIBUTIONS)}")
    wanted = set(findings) if findings is not None else None
    windows = windows or _dataset_windows(dataset)
    method_kwargs = method_kwargs or {}
    device = next(model.parameters()).device
    rows, done = [], 0
    for i in range(len(dataset)):
        if max_scans is not None and done >= max_scans:
            break
        item = dataset[i]
        sid = str(item["scan_id"])
        if (scan_ids is not None and sid not in scan_ids) or sid not in truth:
            continue
        t = truth(sid)
        keys = [k for k, m in t.masks.items() if m.any() and (wanted is None or k in wanted)]
        if not keys:
            continue
        done += 1
        image = item["image"].unsqueeze(0).to(device)  # (1, C, D, H, W)
        head = head_from_image(item["image"].numpy(), windows)
        with torch.no_grad():
            prob = torch.sigmoid(model(image))[0].float().cpu().numpy()
        for method in methods:
            kw = dict(method_kwargs.get(method, {}))
            if method == "occlusion" and "baseline" not in kw:  # occlude with the head's median tissue
                kw["baseline"] = [float(np.median(c[head])) for c in item["image"].numpy()]
            maps = ATTRIBUTIONS[method](model, image, keys, **kw)
            for k in keys:
                rows.append({"model": model_name, "method": method, "scan_id": sid, "finding": k,
                             "category": CATEGORY_OF.get(k, ""), "probability": float(prob[FINDING_KEYS.index(k)]),
                             **score_map(maps[k], t.masks[k], head, t.spacing, margin_mm)})
    return pd.DataFrame(rows)


def _dataset_windows(dataset) -> Sequence[Sequence[float]]:
    from molre_lib.data.dataset import unwrap_dataset

    try:
        return unwrap_dataset(dataset, ("cfg",)).cfg.windows
    except TypeError:
        raise TypeError(f"cannot find the preprocessing windows of {type(dataset).__name__}; pass windows=") from None
