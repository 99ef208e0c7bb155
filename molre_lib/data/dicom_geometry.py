"""Geometry corrections applied to a DICOM stack before it becomes a (D, H, W) volume.

* :func:`fill_gaps`: slices at uneven positions (a tolerated missing slice) are interpolated along the stack
  onto uniform positions, so a gap is not spread over every slice.
* :func:`resample_axial`: a gantry-tilted (sheared) or oblique stack is resampled with trilinear interpolation
  onto an axis-aligned LPS grid covering the whole acquired volume (outside it: air), as dcm2niix corrects
  gantry tilt. The grid keeps the in-plane pixel spacing and takes the distance between slices as z spacing.

Coordinates: the stack is ``(k, rows, cols)``; ``affine`` maps voxel ``(i=col, j=row, k)`` to LPS mm.
"""
from __future__ import annotations

import numpy as np

AIR_HU = -1024.0


def fill_gaps(stack: np.ndarray, offsets: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(stack on uniform offsets, those offsets): linear interpolation along k between the acquired slices.

    Args:
        stack: (k, rows, cols) HU, sorted by ``offsets``.
        offsets: (k,) slice positions along the stack direction, mm, increasing.
        step: the uniform distance wanted (the series' median step).
    """
    n = int(round((offsets[-1] - offsets[0]) / step)) + 1
    grid = offsets[0] + step * np.arange(n)
    hi = np.clip(np.searchsorted(offsets, grid, side="left"), 1, len(offsets) - 1)
    lo = hi - 1
    w = ((grid - offsets[lo]) / np.maximum(offsets[hi] - offsets[lo], 1e-9)).clip(0, 1)[:, None, None]
    out = stack[lo] * (1 - w) + stack[hi] * w                                   # (n, rows, cols)
    return out.astype(np.float32), grid


def resample_axial(stack: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Resample a (k, rows, cols) stack with voxel->LPS ``affine`` onto an axis-aligned grid.

    Args:
        stack: (k, rows, cols) HU.
        affine: (4, 4) maps (i=col, j=row, k, 1) to LPS (x, y, z, 1) mm; may be sheared (gantry tilt) or rotated.
        spacing: (dz, dy, dx) mm of the output grid.

    Returns:
        (hu (D, H, W) float32 with D along +z, H along +y, W along +x; the LPS position of voxel (0, 0, 0)).
    """
    from scipy.ndimage import map_coordinates

    k, rows, cols = stack.shape
    corners = np.array([[i, j, kk, 1.0] for i in (0, cols - 1) for j in (0, rows - 1) for kk in (0, k - 1)])
    lps = corners @ affine.T                                                     # (8, 4)
    lo, hi = lps[:, :3].min(0), lps[:, :3].max(0)                               # (x, y, z) mm
    dz, dy, dx = spacing
    size = np.floor((hi - lo) / np.array([dx, dy, dz]) + 1e-6).astype(int) + 1   # (nx, ny, nz)
    inv = np.linalg.inv(affine)
    yy, xx = np.meshgrid(lo[1] + dy * np.arange(size[1]), lo[0] + dx * np.arange(size[0]), indexing="ij")  # (H, W)
    src = stack.astype(np.float32)
    out = np.empty((size[2], size[1], size[0]), np.float32)                     # (D, H, W)
    for d in range(size[2]):                                                     # one plane at a time: bounded memory
        pts = np.stack([xx, yy, np.full_like(xx, lo[2] + dz * d), np.ones_like(xx)]).reshape(4, -1)
        ijk = (inv @ pts)[:3]                                                    # (3, H*W): i, j, k
        out[d] = map_coordinates(src, ijk[[2, 1, 0]], order=1, mode="constant", cval=AIR_HU).reshape(xx.shape)
    return out, lo
