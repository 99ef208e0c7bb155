"""Normal head anatomy of the phantom, in canonical millimetres and Hounsfield units.

Scalp, skull vault with diploe, skull base, grey/white matter with a gyral sulcal pattern,
deep grey nuclei, ventricles, cisterns and fissures, falx and tentorium, venous sinuses,
brainstem and cerebellum, orbits with globes, paranasal sinuses and mastoid air cells.
Per-subject variation (size, shape, tilt, ventricle size, age-like atrophy) is in ``Anatomy``;
``Mods`` carries the changes that structural and chronic findings make to the anatomy itself
(ventricle size, sulcal effacement, midline shift, skull thickness, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .phantom_geometry import Canvas, smooth_field

HU = {"air": -1000.0, "fat": -80.0, "csf": 7.0, "white": 28.0, "grey": 39.0, "soft": 30.0,
      "diploe": 650.0, "cortical": 1450.0, "base": 750.0, "blood": 72.0}
HEAD_CENTRE = np.array([0.0, 0.0, 0.0])
HEAD_RADII = np.array([76.0, 96.0, 95.0])


@dataclass
class Anatomy:
    """Per-subject anatomical parameters (from the patient seed)."""

    age: float
    scale: np.ndarray              # (sx, sy, sz) head size factors
    yaw: float
    pitch: float
    roll: float
    shift: np.ndarray              # world mm of the canonical origin (x, y, z)
    scalp_mm: float
    skull_mm: float
    ventricle: float               # ventricle size factor
    atrophy: float                 # 0 (none) .. 1 (severe), age-like
    texture_seed: int

    @staticmethod
    def sample(rng: np.random.Generator) -> "Anatomy":
        age = float(rng.uniform(18, 92))
        return Anatomy(
            age=age, scale=rng.uniform(0.93, 1.05) * rng.uniform(0.97, 1.03, size=3),
            yaw=float(rng.normal(0, 4)), pitch=float(rng.normal(0, 6)), roll=float(rng.normal(0, 2.5)),
            shift=rng.normal(0, [4.0, 5.0, 4.0]), scalp_mm=float(rng.uniform(4.5, 7.0)),
            skull_mm=float(rng.uniform(6.0, 8.5)), ventricle=float(rng.uniform(0.85, 1.2)),
            atrophy=float(np.clip((age - 55) / 100 + rng.normal(0, 0.04), 0.0, 0.35)),
            texture_seed=int(rng.integers(2**31)))


@dataclass
class Mods:
    """Changes to normal anatomy made by findings (set by ``phantom_findings``)."""

    ventricle_scale: float = 1.0
    temporal_horn_scale: float = 1.0
    third_ventricle_scale: float = 1.0
    side_ventricle: dict[int, float] = field(default_factory=dict)     # side (+1 left, -1 right) -> factor
    side_temporal_horn: dict[int, float] = field(default_factory=dict)
    atrophy: float | None = None
    cerebellar_atrophy: bool = False
    skull_extra_mm: float = 0.0
    shift_mm: float = 0.0            # signed: + moves the midline to the patient's left
    subfalcine_mm: float = 0.0
    effaced_sulci: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (centre, radius)
    efface_cisterns: bool = False
    herniate_uncus: int = 0          # side of uncal herniation, 0 none
    tonsils: bool = False


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def skull_base_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Floor of the cranial cavity (mm): anterior, middle and posterior fossae, raised sella/clivus."""
    # the middle -> posterior fossa step follows the V of the petrous ridges
    z = -24.0 - 22.0 * _sig((y + 26.0) / 4.0) - 14.0 * _sig((y - 6.0 - 0.5 * np.abs(x)) / 5.0)
    x2, y2 = (x / 14.0) ** 2, ((y + 14.0) / 16.0) ** 2
    return z + 13.0 * np.exp(-(x2 * x2) - (y2 * y2))


def tentorium_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tentorium cerebelli: supratentorial above, posterior fossa below (only where y > 6 mm)."""
    return -17.0 - 0.16 * np.maximum(y - 10.0, 0) - 0.12 * np.abs(x)


def warp_midline(c: Canvas, m: Mods) -> None:
    """Midline shift and subfalcine herniation as smooth lateral displacements of the canonical X."""
    if m.shift_mm:
        yy = ((c.Y + 5.0) / 75.0) ** 2
        g = np.exp(-(c.X / 38.0) ** 2 - yy * yy) * _sig((c.Z + 12.0) / 5.0)
        c.X -= (float(m.shift_mm) * g).astype(np.float32)
    if m.subfalcine_mm:
        g = np.exp(-(c.X / 14.0) ** 2 - ((c.Y + 14.0) / 22.0) ** 2 - ((c.Z - 16.0) / 12.0) ** 2)
        c.X -= (float(m.subfalcine_mm) * g).astype(np.float32)


def ventricle_parts(a: Anatomy, m: Mods, side: int) -> list[tuple[tuple, tuple, float]]:
    """Ellipsoids (centre, radii, yaw) of one lateral ventricle, scaled by anatomy and findings."""
    atrophy = a.atrophy if m.atrophy is None else m.atrophy
    v = a.ventricle * m.ventricle_scale * (1 + 0.7 * atrophy) * m.side_ventricle.get(side, 1.0)
    th = min(v, 1.6) * m.temporal_horn_scale * m.side_temporal_horn.get(side, 1.0)
    s = side
    return [((s * (6 + 2.0 * v), -18.0, 14.0), (4.2 * v, 13.0 + 2 * v, 7.0 * v ** 0.7), s * 12.0),  # frontal horn
            ((s * (7 + 2.5 * v), 4.0, 20.0), (4.8 * v, 20.0 + 2 * v, 5.5 * v ** 0.8), 0.0),     # body
            ((s * (15 + 2.5 * v), 30.0, 10.0), (6.0 * v, 12.0, 8.5 * v ** 0.8), -s * 20.0),    # atrium
            ((s * 31.0, -6.0, -19.0), (3.0 * th, 11.0, 3.5 * th), s * 10.0)]                  # temporal horn


def render_anatomy(c: Canvas, a: Anatomy, m: Mods) -> None:
    """Paint normal anatomy (modified by ``m``) into ``c.hu`` and register named regions."""
    # Long on purpose: one pass from the scalp inwards, each structure painted over the previous ones, with the
    # texture generator's draws in a fixed order. That order defines every seed's phantom (and so the demo's
    # numbers); split it only together with a test that the rendered volumes stay bit-identical.
    rng = np.random.default_rng(a.texture_seed)
    warp_midline(c, m)
    X, Y, Z = c.X, c.Y, c.Z
    atrophy = a.atrophy if m.atrophy is None else m.atrophy
    # ---- head surface and depth below it (radial approximation of distance to an ellipsoid)
    px, py, pz = X - float(HEAD_CENTRE[0]), Y - float(HEAD_CENTRE[1]), Z - float(HEAD_CENTRE[2])
    ra, rb, rc = (float(v) for v in HEAD_RADII)
    f = np.sqrt((px / ra) ** 2 + (py / rb) ** 2 + (pz / rc) ** 2) + 1e-6
    depth = np.sqrt(px * px + py * py + pz * pz) * (1.0 / f - 1.0)        # mm inside the scalp surface
    c.regions["depth"] = depth
    skull_mm = a.skull_mm + m.skull_extra_mm
    inner = a.scalp_mm + skull_mm
    c.regions["inner_mm"] = np.float32(inner)
    hu = c.hu
    np.copyto(hu, np.float32(HU["soft"]), where=depth > 0)
    sl, e = c.ellipsoid((0, -94, -58), (11, 12, 15))                        # nose
    c.paint(sl, e, HU["soft"])
    # ---- skull vault: outer table, diploe, inner table
    frac = (depth - a.scalp_mm) / skull_mm
    vault = (frac >= 0) & (frac <= 1)
    np.copyto(hu, np.where((frac < 0.3) | (frac > 0.72), np.float32(HU["cortical"]), np.float32(HU["diploe"])),
              where=vault)
    c.regions["skull"] = vault
    zb = skull_base_z(X, Y)
    base = (depth > a.scalp_mm) & (Z < zb)
    np.copyto(hu, np.float32(38.0), where=base & ~vault)                 # face and neck soft tissue
    np.copyto(hu, np.float32(HU["base"]), where=base & ~vault & (Z > zb - 7.0))   # cranial floor plate
    intracranial = (depth > inner) & (Z >= zb)
    c.regions["intracranial"] = intracranial
    # ---- CSF space, brain, cortex ribbon, sulci
    csf_mm = 1.2 + 4.0 * atrophy
    bdepth = depth - inner - csf_mm
    np.copyto(hu, np.float32(HU["csf"]), where=intracranial)
    brain = intracranial & (bdepth > 0)
    np.copyto(hu, np.where(bdepth < 3.5, np.float32(HU["grey"]), np.float32(HU["white"])), where=brain)
    zt = tentorium_z(X, Y)
    posterior = intracranial & (Y > 4 + 0.55 * np.abs(X)) & (Z < zt)        # petrous ridges form a V
    c.regions["posterior_fossa"] = posterior
    np.copyto(hu, np.float32(37.0), where=posterior & brain)
    t = smooth_field(c, rng, 4, (20.0, 34.0))
    width = 0.15 + 0.32 * atrophy
    sulci = brain & (bdepth < 9.0 + 10.0 * atrophy) & (np.abs(t) < width) & ~posterior
    for centre, radius in m.effaced_sulci:
        d2 = (X - centre[0]) ** 2 + (Y - centre[1]) ** 2 + (Z - centre[2]) ** 2
        sulci &= d2 > radius * radius
    np.copyto(hu, np.float32(HU["csf"]), where=sulci)
    c.regions["sulci"] = sulci
    folia_w = 0.12 + (0.35 if m.cerebellar_atrophy else 0.0)
    folia = posterior & brain & (np.abs(np.cos(Z * 0.9 + 0.25 * t * 6)) < folia_w) & (bdepth < 14)
    np.copyto(hu, np.float32(HU["csf"]), where=folia)
    c.regions["folia"] = folia
    tent = intracranial & (np.abs(Z - zt) < 1.0) & (Y > 6) & (np.abs(X) > 8)
    np.copyto(hu, np.float32(48.0), where=tent)
    # ---- deep grey nuclei
    for s in (-1, 1):
        for centre, radii in (((s * 12, -12, 10), (5, 8, 8)), ((s * 22, -2, 1), (6, 13, 8)),
                              ((s * 10, 12, 3), (8, 11, 8))):
            sl, e = c.ellipsoid(centre, radii)
            c.paint(sl, e, 38.0, where=brain)
    # ---- ventricles
    vent = np.zeros(c.shape, bool)
    for s in (-1, 1):
        for centre, radii, yaw in ventricle_parts(a, m, s):
            sl, e = c.ellipsoid(centre, radii, yaw_deg=yaw)
            if sl is not None:
                vent[sl] |= e
    v3 = a.ventricle * m.ventricle_scale * m.third_ventricle_scale * (1 + 0.7 * atrophy)
    sl, e = c.ellipsoid((0, 2, 0), (2.0 * v3, 13, 9))
    if sl is not None:
        vent[sl] |= e
    v4 = (1.8 if m.cerebellar_atrophy else 1.0) * min(m.ventricle_scale, 1.5)
    sl, e = c.ellipsoid((0, 20, -42), (6 * v4, 4 * v4, 7))
    if sl is not None:
        vent[sl] |= e
    vent &= intracranial
    np.copyto(hu, np.float32(HU["csf"] - 1.0), where=vent)
    c.regions["ventricles"] = vent
    # ---- cisterns, fissures, brainstem
    cis = np.zeros(c.shape, bool)
    cm = 1.5 if m.cerebellar_atrophy else 1.0
    for centre, radii, yaw in (((0, -14, -27), (13, 8, 5), 0.0), ((0, 8, -20), (15, 15, 9), 0.0),
                               ((0, -8, -42), (8, 4, 12), 0.0), ((0, 62, -55), (16 * cm, 12 * cm, 8 * cm), 0.0),
                               ((45, -14, -12), (3.5 + 3 * atrophy, 20, 11), 15.0),
                               ((-45, -14, -12), (3.5 + 3 * atrophy, 20, 11), -15.0)):
        sl, e = c.ellipsoid(centre, radii, yaw_deg=yaw)
        if sl is not None:
            cis[sl] |= e
    cis &= intracranial
    if m.herniate_uncus:
        s = m.herniate_uncus
        sl, e = c.ellipsoid((s * 7, -8, -24), (9, 12, 7))
        c.paint(sl, e, 36.0, where=cis, key="transtentorial_herniation")
        cis &= ~c.masks.get("transtentorial_herniation", np.zeros(c.shape, bool))
    np.copyto(hu, np.float32(HU["csf"]), where=cis)
    c.regions["cisterns"] = cis
    fiss = intracranial & (np.abs(X) < 1.8 + 2.0 * atrophy) & ~posterior & ((Z > 24) | (Y < -38) | (Y > 45))
    np.copyto(hu, np.float32(HU["csf"]), where=fiss)
    falx = fiss & (np.abs(X) < 0.9)
    np.copyto(hu, np.float32(55.0), where=falx)
    c.regions["falx"] = falx
    sl, e = c.ellipsoid((0, 8, -20), (10, 10, 9.5))                         # midbrain
    c.paint(sl, e, 33.0, where=intracranial)
    sl, e = c.capsule((0, 0, -42), (0, 14, -72), 10.0)                      # pons + medulla
    c.paint(sl, e, 33.0, where=intracranial)
    # ---- venous sinuses along the inner table
    band = intracranial & (depth - inner < 4.5)
    sss = band & (np.abs(X) < 5) & (Z > -18) & (Y > -75)
    trans = band & (np.abs(Z + 28) < 4.5) & (Y > 40) & (np.abs(X) > 6)
    np.copyto(hu, np.float32(50.0), where=sss | trans)
    c.regions["sss"], c.regions["transverse"] = sss, trans
    # ---- skull base: clivus, petrous ridges, sella, bony orbits, sinuses with walls, mastoids
    extra = (depth > a.scalp_mm) & ~intracranial
    sl, e = c.capsule((0, -22, -36), (0, 2, -64), 7.0)                      # clivus
    c.paint(sl, e, HU["base"], where=extra)
    for s in (-1, 1):
        sl, e = c.capsule((s * 54, 16, -46), (s * 13, -8, -40), 6.0)        # petrous ridge
        c.paint(sl, e, 1100.0, where=extra)
    sl, e = c.ellipsoid((0, -18, -38), (7, 6, 5))
    c.paint(sl, e, 40.0)
    c.regions["sella"] = _region(c, sl, e)
    for s in (-1, 1):
        sl, e = c.ellipsoid((s * 32, -60, -42), (17.5, 24, 16.5))           # bony orbit
        c.paint(sl, e, HU["base"], where=extra)
        sl, e = c.ellipsoid((s * 32, -60, -42), (15, 22, 14))
        c.paint(sl, e, HU["fat"])
        sl, e = c.ellipsoid((s * 32, -75, -42), (12, 12, 12))
        c.paint(sl, e, 12.0)
        sl, e = c.ellipsoid((s * 32, -86, -42), (4.5, 2.5, 4.0))
        c.paint(sl, e, 95.0)
        sl, e = c.ellipsoid((s * 30, -62, -66), (16, 16, 16))
        c.paint(sl, e, HU["base"], where=base)
        sl, e = c.ellipsoid((s * 30, -62, -66), (14, 14, 14))
        c.paint(sl, e, HU["air"], where=base)
        c.regions[f"maxillary_{s}"] = _region(c, sl, e) & base
        sl, e = c.ellipsoid((s * 56, 20, -48), (9, 11, 10))
        if sl is not None:
            cells = np.cos(c.X[sl] * 0.9) * np.cos(c.Y[sl] * 0.9) * np.cos(c.Z[sl] * 0.9) > -0.2
            c.paint(sl, e, np.where(cells, -700.0, 900.0).astype(np.float32), where=extra)
            c.regions[f"mastoid_{s}"] = _region(c, sl, e) & extra
    sl, e = c.ellipsoid((0, -84, -6), (19, 11, 14))                         # frontal sinus shell
    c.paint(sl, e, HU["cortical"], where=depth > a.scalp_mm)
    for name, centre, radii in (("frontal", (0, -84, -6), (15, 6, 10)), ("ethmoid", (0, -62, -42), (9, 15, 10)),
                                ("sphenoid", (0, -32, -50), (12, 10, 9)), ("nasal", (0, -80, -64), (10, 16, 12))):
        if name != "frontal":
            sl, e = c.ellipsoid(centre, tuple(r + 2.5 for r in radii))      # bony walls
            c.paint(sl, e, HU["base"], where=extra)
        sl, e = c.ellipsoid(centre, radii)
        c.paint(sl, e, -950.0, where=depth > a.scalp_mm)
        c.regions[f"sinus_{name}"] = _region(c, sl, e) & (depth > a.scalp_mm)
    # ---- parenchyma regions used by findings
    c.regions["brain"] = intracranial & (hu > 20) & (hu < 45) & ~vent & ~cis & ~sulci & ~fiss
    c.regions["white"] = c.regions["brain"] & (hu < 33) & ~posterior
    c.regions["supratentorial"] = intracranial & ~posterior & (Z > -30)


def _region(c: Canvas, sl, inside) -> np.ndarray:
    full = np.zeros(c.shape, bool)
    if sl is not None:
        full[sl] = inside
    return full
