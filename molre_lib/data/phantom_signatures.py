"""Registry and drawing helpers for the image signatures of the 75 findings.

Each finding registers a painter with ``@signature(key)``; findings that change the anatomy
itself (ventricle size, sulcal effacement, midline shift, skull thickness) also register a
``@modifier(key)`` that edits ``Mods`` before the anatomy is rendered, and their painter then
only marks the changed region. Painters get a ``Ctx`` with the canvas, the subject's anatomy,
the finding's own random stream and its side (+1 patient left, -1 right), so removing or
moving one finding leaves every other finding of the subject unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .phantom_anatomy import HEAD_CENTRE, HEAD_RADII, Anatomy, Mods
from .phantom_geometry import Canvas

BLOOD, SUBACUTE, CHRONIC, INFARCT, EDEMA, CALCIUM, METAL = 74.0, 44.0, 16.0, 17.0, 17.0, 420.0, 3000.0


@dataclass
class Ctx:
    """What a painter sees: the canvas, the subject's anatomy, its own random stream and side."""

    c: Canvas
    a: Anatomy
    rng: np.random.Generator
    s: int                      # side: +1 patient left, -1 patient right
    key: str
    site: np.ndarray            # shared lesion site (canonical mm): a mass, its edema and mass effect coincide

    def at_site(self) -> np.ndarray:
        """The shared lesion site moved to this finding's side."""
        return np.array([self.s * abs(self.site[0]), self.site[1], self.site[2]])


SIGNATURES: dict[str, Callable[[Ctx], None]] = {}
MODIFIERS: dict[str, Callable[[Mods, Ctx], None]] = {}
PAINT_ORDER: dict[str, int] = {}   # lower paints first (edema, infarcts), higher last (dense objects)
LATERALISED: set[str] = set()


def signature(key: str, order: int = 1, lateral: bool = True):
    def wrap(fn):
        SIGNATURES[key], PAINT_ORDER[key] = fn, order
        if lateral:
            LATERALISED.add(key)
        return fn
    return wrap


def modifier(key: str):
    def wrap(fn):
        MODIFIERS[key] = fn
        return fn
    return wrap


# ----------------------------------------------------------------------------- helpers
def unit(*v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def surface_point(u: np.ndarray, depth: float) -> np.ndarray:
    """Canonical point ``depth`` mm below the scalp along direction ``u`` from the head centre."""
    r = 1.0 / np.sqrt(np.sum((u / HEAD_RADII) ** 2))
    return HEAD_CENTRE + u * (r - depth)


def cap(x: Ctx, u: np.ndarray, half_deg: float, lo: float, hi, extra: float = 0.0):
    """Voxels within ``half_deg`` of direction ``u`` whose depth below the scalp is in [lo, hi(angle))."""
    c = x.c
    r = 1.0 / np.sqrt(np.sum((u / HEAD_RADII) ** 2))
    sl = c.box(surface_point(u, 0.0), 2 * r * np.sin(np.deg2rad(half_deg) / 2) + 25 + extra)
    if sl is None:
        return None, None, None
    px, py, pz = c.local(sl, HEAD_CENTRE)
    cosang = (px * u[0] + py * u[1] + pz * u[2]) / (np.sqrt(px * px + py * py + pz * pz) + 1e-6)
    ang = np.degrees(np.arccos(np.clip(cosang, -1, 1))) / half_deg      # 0 at centre, 1 at the rim
    depth = c.regions["depth"][sl]
    upper = hi(ang) if callable(hi) else hi
    return sl, (ang < 1) & (depth >= lo) & (depth < upper), ang


def extra_axial(x: Ctx, u, half_deg: float, thickness: float, hu: float, lens: bool, key: str | None = None):
    """Lentiform (epidural, meningioma) or crescentic (subdural) collection under the inner table."""
    inner = float(x.c.regions["inner_mm"])
    prof = (lambda t: inner + thickness * (1 - t ** 2)) if lens else \
        (lambda t: inner + thickness * np.sqrt(np.clip(1 - t ** 6, 0, 1)))
    sl, m, _ = cap(x, u, half_deg, inner - 0.5, prof)
    if sl is not None:
        m &= x.c.regions["supratentorial"][sl]
        x.c.paint(sl, m, hu, key or x.key)


def blob(x: Ctx, centre, radius: float, hu, where="brain", rough: float = 0.2, key=None, radii=None):
    """Lobulated ellipsoid lesion."""
    radii = radii or (radius, radius, radius)
    sl, f = x.c.ellipsoid_f(centre, radii)
    if sl is None:
        return sl, None
    k = x.rng.normal(size=3) * 0.35
    lx, ly, lz = x.c.local(sl, centre)
    wobble = 1 + rough * np.cos(float(k[0]) * lx + float(k[1]) * ly + float(k[2]) * lz + float(x.rng.uniform(0, 6)))
    inside = f <= wobble
    x.c.paint(sl, inside, hu, key or x.key, where=where)
    return sl, inside


def rim_lesion(x: Ctx, centre, radius: float, core_hu: float, rim_mm: float, rim_hu: float, where="brain"):
    """A lesion with a surrounding rim (edema around blood or tumour)."""
    blob(x, centre, radius + rim_mm, rim_hu, where=where, rough=0.1)
    blob(x, centre, radius, core_hu, where=where, rough=0.15)


def skull_cap(x: Ctx, u, half_deg: float):
    a = x.a
    return cap(x, u, half_deg, a.scalp_mm - 0.5, float(x.c.regions["inner_mm"]) + 0.5)


def lateral_dir(x: Ctx, y: float, z: float) -> np.ndarray:
    return unit(x.s * 1.0, y, z)


def jitter(x: Ctx, sd: float = 4.0) -> np.ndarray:
    return x.rng.normal(0, sd, size=3)
