"""Geometry for the head phantom: a voxel canvas in a subject's canonical millimetre frame.

The canonical frame is head-centred, in mm: X patient right -> left, Y anterior -> posterior,
Z inferior -> superior (the DICOM LPS directions, so array axes (D, H, W) = (Z, Y, X) in the
world). A subject's size, tilt and position are a similarity transform between the world grid
and this frame; every anatomical part and finding is written in canonical mm and rasterised
through it. Primitives evaluate only inside a bounding box, which keeps a 64x64x24 head fast.
"""
from __future__ import annotations

import numpy as np

Slices = tuple[slice, slice, slice]


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix (canonical -> world): yaw about Z, pitch about X, roll about Y."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


class Canvas:
    """World voxel grid (D, H, W) with canonical coordinates ``X, Y, Z`` (each (D, H, W) float32).

    ``hu`` is painted in place; ``masks`` collects each finding's region.
    """

    def __init__(self, zw: np.ndarray, yw: np.ndarray, xw: np.ndarray, scale: np.ndarray, rot: np.ndarray,
                 shift: np.ndarray):
        # world coordinates (mm, increasing) of voxel centres along each axis, LPS directions
        self.zw, self.yw, self.xw = (np.asarray(v, np.float32) for v in (zw, yw, xw))
        self.shape = (len(self.zw), len(self.yw), len(self.xw))
        self.scale = np.asarray(scale, np.float64)  # (sx, sy, sz) head size factors
        self.rot = np.asarray(rot, np.float64)      # canonical -> world rotation
        self.shift = np.asarray(shift, np.float64)  # world position of the canonical origin (x, y, z)
        rt = self.rot.T
        px = (self.xw - shift[0])[None, None, :]
        py = (self.yw - shift[1])[None, :, None]
        pz = (self.zw - shift[2])[:, None, None]
        # canonical = R^T (p - t) / s       # (D, H, W) each
        self.X = ((rt[0, 0] * px + rt[0, 1] * py + rt[0, 2] * pz) / self.scale[0]).astype(np.float32)
        self.Y = ((rt[1, 0] * px + rt[1, 1] * py + rt[1, 2] * pz) / self.scale[1]).astype(np.float32)
        self.Z = ((rt[2, 0] * px + rt[2, 1] * py + rt[2, 2] * pz) / self.scale[2]).astype(np.float32)
        self.hu = np.full(self.shape, -1000.0, np.float32)
        self.masks: dict[str, np.ndarray] = {}
        self.regions: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ boxes
    def box(self, centre, radius: float) -> Slices | None:
        """Voxel slices covering a canonical sphere (centre (x, y, z) mm, radius mm); None if outside."""
        c = self.shift + self.rot @ (self.scale * np.asarray(centre, np.float64))
        r = float(radius) * float(self.scale.max()) + 1.0
        out = []
        for axis, ax in ((2, self.zw), (1, self.yw), (0, self.xw)):
            lo = int(np.searchsorted(ax, c[axis] - r, side="left"))
            hi = int(np.searchsorted(ax, c[axis] + r, side="right"))
            if hi <= lo:
                return None
            out.append(slice(lo, hi))
        return tuple(out)  # type: ignore[return-value]

    def local(self, sl: Slices, centre) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Canonical coordinates inside ``sl`` relative to ``centre``."""
        cx, cy, cz = (float(v) for v in centre)
        return self.X[sl] - cx, self.Y[sl] - cy, self.Z[sl] - cz

    # ------------------------------------------------------------- primitives
    def ellipsoid(self, centre, radii, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                  power: float = 2.0) -> tuple[Slices | None, np.ndarray | None]:
        """Boolean inside-test of an (optionally rotated, super-) ellipsoid within its bounding box."""
        sl = self.box(centre, max(radii))
        if sl is None:
            return None, None
        x, y, z = self.local(sl, centre)
        if yaw_deg or pitch_deg:
            r = rotation(yaw_deg, pitch_deg).T
            x, y, z = (r[0, 0] * x + r[0, 1] * y + r[0, 2] * z, r[1, 0] * x + r[1, 1] * y + r[1, 2] * z,
                       r[2, 0] * x + r[2, 1] * y + r[2, 2] * z)
        a, b, cc = (float(v) for v in radii)
        if power == 2.0:
            f = (x / a) ** 2 + (y / b) ** 2 + (z / cc) ** 2
        else:
            f = np.abs(x / a) ** power + np.abs(y / b) ** power + np.abs(z / cc) ** power
        return sl, f <= 1.0

    def ellipsoid_f(self, centre, radii) -> tuple[Slices | None, np.ndarray | None]:
        """Normalised squared radius ((x/a)^2 + (y/b)^2 + (z/c)^2) inside the bounding box."""
        sl = self.box(centre, max(radii))
        if sl is None:
            return None, None
        x, y, z = self.local(sl, centre)
        a, b, cc = (float(v) for v in radii)
        return sl, (x / a) ** 2 + (y / b) ** 2 + (z / cc) ** 2

    def capsule(self, p0, p1, radius: float) -> tuple[Slices | None, np.ndarray | None]:
        """Inside-test of a segment p0 -> p1 thickened by ``radius`` (catheters, vessels, fracture lines)."""
        p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        mid, half = (p0 + p1) / 2, np.linalg.norm(p1 - p0) / 2
        sl = self.box(mid, half + radius)
        if sl is None:
            return None, None
        x, y, z = self.local(sl, p0)
        d0, d1, d2 = (float(v) for v in (p1 - p0))
        t = np.clip((x * d0 + y * d1 + z * d2) / max(d0 * d0 + d1 * d1 + d2 * d2, 1e-6), 0.0, 1.0)
        dist2 = (x - t * d0) ** 2 + (y - t * d1) ** 2 + (z - t * d2) ** 2
        return sl, dist2 <= radius * radius

    def slab(self, sl: Slices, point, normal, half_width: float) -> np.ndarray:
        """Points inside ``sl`` within ``half_width`` mm of the plane through ``point`` with ``normal``."""
        n = np.asarray(normal, np.float64)
        n0, n1, n2 = (float(v) for v in n / np.linalg.norm(n))
        x, y, z = self.local(sl, point)
        return np.abs(x * n0 + y * n1 + z * n2) <= half_width

    # ---------------------------------------------------------------- painting
    def paint(self, sl: Slices | None, inside: np.ndarray | None, value, key: str | None = None,
              where: str | np.ndarray | None = None) -> None:
        """Set ``hu[sl][inside & where] = value`` and add the voxels to finding ``key``'s mask.

        ``where`` restricts painting to an anatomical region name (``self.regions``) or a full-size mask.
        ``value`` is a scalar or an array shaped like ``hu[sl]``.
        """
        if sl is None or inside is None:
            return
        m = inside
        if where is not None:
            region = self.regions[where] if isinstance(where, str) else where
            m = m & region[sl]
        if not m.any():
            return
        target = self.hu[sl]
        target[m] = value[m] if isinstance(value, np.ndarray) else value
        if key is not None:
            self.mark(key, sl, m)

    def mark(self, key: str, sl: Slices, m: np.ndarray) -> None:
        """Add voxels to a finding's mask without painting."""
        full = self.masks.get(key)
        if full is None:
            full = self.masks[key] = np.zeros(self.shape, bool)
        full[sl] |= m

    def full(self) -> Slices:
        return (slice(None), slice(None), slice(None))


def smooth_field(canvas: Canvas, rng: np.random.Generator, n_waves: int = 3,
                 wavelength_mm: tuple[float, float] = (18.0, 30.0)) -> np.ndarray:
    """A smooth random field (sum of plane waves) in canonical mm, range about [-1, 1].

    Its zero crossings make a gyral-looking pattern for sulci; thresholds make patchy lesions.
    """
    field = np.zeros(canvas.shape, np.float32)
    for _ in range(n_waves):
        k = rng.normal(size=3)
        k *= 2 * np.pi / (np.linalg.norm(k) * rng.uniform(*wavelength_mm))
        k0, k1, k2 = (float(v) for v in k)
        field += np.cos(k0 * canvas.X + k1 * canvas.Y + k2 * canvas.Z + float(rng.uniform(0, 2 * np.pi)))
    return field / float(np.sqrt(n_waves / 2.0))
