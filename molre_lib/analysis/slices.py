"""Which axial slice to show for a finding, and where the head is.

One rule for the viewer, the overlays and the paper panel (04_gradcam):

1. a known lesion mask (the phantom's, resampled like the images): the slice where the mask is largest;
2. otherwise a CAM: the slice with the most CAM mass *inside the head* (a CAM that lights the air around
   the vertex must not pick that slice);
3. otherwise the middle slice.

``cam_location`` says, for a shown slice, what share of a CAM volume's mass lies on it and where its peak slice
is, so a panel cell that looks empty can say where the model looked.

``head_mask`` finds the head in HU or in a windowed view: voxels above ``threshold`` (HU > -500 = anything
denser than fat-and-air mixtures; for a window in [0, 1], any value above the window's floor), holes filled
per slice (ventricles, sinuses), and only the largest 3D connected component kept (drops the table,
cables and noise specks).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

HU_AIR_THRESHOLD = -500.0


def head_mask(volume: np.ndarray, threshold: float = HU_AIR_THRESHOLD) -> np.ndarray:
    """Boolean (D, H, W) mask of the head in ``volume`` (D, H, W).

    ``volume`` is in HU with the default threshold; for a windowed channel in [0, 1] (the model input) pass
    ``threshold=0.0`` and use a wide window (bone: floor -800 HU), so that everything but air is above it.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"head_mask needs a (D, H, W) volume, got shape {volume.shape}")
    mask = volume > threshold  # (D, H, W)
    mask = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def slice_scores(mask: Optional[np.ndarray] = None, cam: Optional[np.ndarray] = None,
                 head: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Per-slice score (D,) used by :func:`pick_slice`: lesion area, else CAM mass inside the head; None
    when neither gives anything (no mask voxel, no CAM mass)."""
    if mask is not None:
        area = np.asarray(mask, dtype=bool).sum(axis=(1, 2)).astype(np.float64)  # (D,)
        if area.any():
            return area
    if cam is not None:
        cam = np.asarray(cam, dtype=np.float64)
        if head is not None:
            if np.shape(head) != cam.shape:
                raise ValueError(f"head mask {np.shape(head)} and CAM {cam.shape} differ in shape")
            cam = cam * np.asarray(head, dtype=bool)
        mass = np.nan_to_num(cam).clip(min=0).sum(axis=(1, 2))  # (D,)
        if mass.any():
            return mass
    return None


def pick_slice(mask: Optional[np.ndarray] = None, cam: Optional[np.ndarray] = None,
               head: Optional[np.ndarray] = None, depth: Optional[int] = None) -> int:
    """The slice to show: the largest lesion slice if ``mask`` has voxels, else the slice with the most
    ``cam`` mass inside ``head`` (whole slice when no head mask), else the middle of the volume.

    All arrays are (D, H, W); ``depth`` is only needed when neither ``mask`` nor ``cam`` is given.
    """
    scores = slice_scores(mask, cam, head)
    if scores is not None:
        return int(scores.argmax())
    for arr in (mask, cam, head):
        if arr is not None:
            return int(np.shape(arr)[0] // 2)
    if depth is None:
        raise ValueError("pick_slice needs a mask, a CAM, a head mask or the depth")
    return int(depth // 2)


def cam_location(cam: np.ndarray, head: Optional[np.ndarray], shown: int) -> dict:
    """Where a CAM volume lies relative to the shown slice, for the CAM panel's caption of each cell.

    Args:
        cam: (D, H, W) map, non-negative where it matters (negative values count as 0).
        head: (D, H, W) head mask or None (whole volume); mass on the air does not count.
        shown: the slice index the figure shows.

    Returns:
        dict with ``shown`` (the slice), ``shown_share`` (share of the volume's in-head CAM mass on it, NaN when
        the volume has none), ``shown_peak`` (the slice's in-head maximum over the volume's, 0..1),
        ``peak_slice`` (the slice with the most mass) and ``peak_share`` (its share).
    """
    mass = slice_scores(None, cam, head)  # (D,) in-head mass per slice, None when the map is empty
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float64)).clip(min=0)
    inside = cam * np.asarray(head, dtype=bool) if head is not None else cam
    top = float(inside.max())
    if mass is None or top <= 0:
        return {"shown": int(shown), "shown_share": float("nan"), "shown_peak": 0.0, "peak_slice": int(shown),
                "peak_share": float("nan")}
    share = mass / mass.sum()
    return {"shown": int(shown), "shown_share": float(share[shown]), "shown_peak": float(inside[shown].max() / top),
            "peak_slice": int(share.argmax()), "peak_share": float(share.max())}
