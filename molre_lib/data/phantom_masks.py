"""Ground truth of a phantom scan on the model's grid: lesion masks and a tissue map, for scoring explanations.

A phantom data set written by :func:`molre_lib.data.synth.synthesize` carries ``phantom.json`` (rendering
settings and each scan's seeds), so a scan can be rendered again exactly. :class:`PhantomTruth` does that and
sends the masks through the *same* fitting as the images (:func:`molre_lib.data.dataset.fit_volume`: optional
resampling to a spacing, resize or centre pad/crop, the kept slices), with nearest-neighbour sampling
(``nearest-exact``: each output voxel takes the input voxel under its centre, which is the centre of the
block that area-averaging uses for the image). The tissue map is the noise-free rendering (site noise and
kernel off) fitted like the image, then cut into :data:`HU_BANDS`; the same bands serve real scans (no masks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .dataset import PreprocessConfig, fit_volume, slice_indices
from .io import Volume
from .phantom import PhantomConfig, make_subject

PHANTOM_RECORD = "phantom.json"

# Tissue classes by HU band: (name, lower bound inclusive); a voxel takes the last band whose bound it reaches.
HU_BANDS: tuple[tuple[str, float], ...] = (
    ("air", -np.inf), ("fat", -200.0), ("CSF/water", -10.0), ("brain/soft tissue", 20.0),
    ("blood/hyperdense", 55.0), ("bone/calcification", 200.0))
TISSUE_NAMES = tuple(name for name, _ in HU_BANDS)


def hu_bands(hu: np.ndarray) -> np.ndarray:
    """HU (any shape) -> int8 tissue class index into :data:`TISSUE_NAMES`."""
    bounds = np.array([lo for _, lo in HU_BANDS[1:]], np.float32)
    return np.searchsorted(bounds, np.asarray(hu, np.float32), side="right").astype(np.int8)


def fit_mask(mask: np.ndarray, spacing: tuple[float, float, float], cfg: PreprocessConfig) -> np.ndarray:
    """Bool (D, H, W) on the scan's grid -> bool (D', H', W') on the model grid, nearest-neighbour."""
    import torch

    from .resize import pad_or_crop, resize

    x = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None]  # (1, D, H, W)
    if cfg.spacing is not None:
        x = resize(x, [max(1, int(round(n * s / t))) for n, s, t in zip(x.shape[1:], spacing, cfg.spacing)],
                   "nearest-exact")
    if cfg.fit == "resize":
        x = resize(x, list(cfg.shape), "nearest-exact")
    else:
        x = pad_or_crop(x, cfg.shape, value=0.0)
    out = np.asarray(x[0]) > 0.5
    return out[slice_indices(out.shape[0], cfg.n_slices)]


def model_spacing(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                  cfg: PreprocessConfig) -> tuple[float, float, float]:
    """Voxel size (dz, dy, dx) mm of the model grid (evenly kept slices: their mean distance)."""
    size, sp = np.asarray(shape, float), np.asarray(spacing, float)
    if cfg.spacing is not None:
        new = np.maximum(1, np.round(size * sp / np.asarray(cfg.spacing, float)))
        sp, size = size * sp / new, new
    if cfg.fit == "resize":
        sp = size * sp / np.asarray(cfg.shape, float)
    depth = int(cfg.shape[0])
    kept = len(slice_indices(depth, cfg.n_slices))
    if kept > 1 and kept < depth:
        sp[0] *= (depth - 1) / (kept - 1)
    return tuple(float(v) for v in sp)  # type: ignore[return-value]


@dataclass
class ScanTruth:
    """One scan's ground truth on the model grid (D', H, W)."""

    scan_id: str
    masks: dict[str, np.ndarray]  # finding -> bool (D', H, W), every finding present in the scan
    tissue: np.ndarray  # int8 (D', H, W) index into TISSUE_NAMES (noise-free rendering)
    spacing: tuple[float, float, float]  # (dz, dy, dx) mm of the model grid

    def lesion(self) -> np.ndarray:
        """Union of all finding masks, bool (D', H, W)."""
        out = np.zeros(self.tissue.shape, bool)
        for m in self.masks.values():
            out |= m
        return out


class PhantomTruth:
    """Renders phantom scans again from ``<data root>/phantom.json`` and fits their masks like the images."""

    def __init__(self, root: str | Path, cfg: PreprocessConfig):
        self.root, self.cfg = Path(root), cfg
        path = self.root / PHANTOM_RECORD
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: lesion masks exist only for phantom data written by `molre data synth` / "
                "00_data (regenerate the data set to get it)")
        record = json.loads(path.read_text())
        self.phantom = PhantomConfig.from_dict(record["config"])
        self.seeds: dict[str, dict[str, int]] = record["scans"]
        self._cache: dict[str, ScanTruth] = {}  # rendered scans (two runs scored on the same scans render once)

    @classmethod
    def from_dataset(cls, dataset) -> "PhantomTruth":
        """From a run's dataset (a HeadCTDataset, possibly inside Subset / cache / augmentation wrappers)."""
        from .dataset import unwrap_dataset

        base = unwrap_dataset(dataset, ("cfg", "root"))
        return cls(base.root, base.cfg)

    def __contains__(self, scan_id: str) -> bool:
        return scan_id in self.seeds

    def __call__(self, scan_id: str) -> ScanTruth:
        if scan_id not in self.seeds:
            raise KeyError(f"scan {scan_id!r} is not in {self.root / PHANTOM_RECORD}")
        if scan_id not in self._cache:
            self._cache[scan_id] = self._render(scan_id)
        return self._cache[scan_id]

    def _render(self, scan_id: str) -> ScanTruth:
        s = self.seeds[scan_id]
        sub = make_subject(s["seed"], self.phantom, patient_seed=s["patient_seed"])
        clean_cfg = replace(self.phantom, site_noise_hu=(0.0,), site_sharpness=(0.0,))
        clean = make_subject(s["seed"], clean_cfg, patient_seed=s["patient_seed"])
        fitted = fit_volume(Volume(clean.hu, sub.spacing), self.cfg)
        tissue = hu_bands(fitted[slice_indices(fitted.shape[0], self.cfg.n_slices)])
        masks = {k: fit_mask(m, sub.spacing, self.cfg) for k, m in sub.masks.items()}
        return ScanTruth(scan_id, masks, tissue, model_spacing(sub.hu.shape, sub.spacing, self.cfg))
