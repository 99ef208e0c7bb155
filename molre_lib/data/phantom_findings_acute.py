"""Signatures of acute findings: hemorrhage, infarction and trauma (where, what shape, what density)."""
from __future__ import annotations

import numpy as np

from .phantom_anatomy import HU
from .phantom_signatures import (BLOOD, CHRONIC, EDEMA, INFARCT, METAL, SUBACUTE, blob, cap, extra_axial, jitter,
                                 lateral_dir, rim_lesion, signature, skull_cap, surface_point, unit)


# ----------------------------------------------------------------------------- hemorrhage
@signature("epidural_hematoma")
def _edh(x):
    extra_axial(x, lateral_dir(x, x.rng.uniform(-0.3, 0.3), x.rng.uniform(0.1, 0.45)), x.rng.uniform(22, 30),
                x.rng.uniform(14, 20), BLOOD, lens=True)


@signature("acute_subdural_hematoma")
def _asdh(x):
    extra_axial(x, lateral_dir(x, x.rng.uniform(-0.4, 0.2), x.rng.uniform(0.3, 0.6)), x.rng.uniform(55, 70),
                x.rng.uniform(7, 11), BLOOD, lens=False)


@signature("subacute_subdural_hematoma")
def _sasdh(x):
    extra_axial(x, lateral_dir(x, x.rng.uniform(-0.3, 0.3), x.rng.uniform(0.3, 0.6)), x.rng.uniform(55, 70),
                x.rng.uniform(8, 12), SUBACUTE, lens=False)


@signature("chronic_subdural_hematoma")
def _csdh(x):
    extra_axial(x, lateral_dir(x, x.rng.uniform(-0.5, 0.0), x.rng.uniform(0.3, 0.6)), x.rng.uniform(55, 70),
                x.rng.uniform(9, 14), CHRONIC, lens=False)


@signature("subarachnoid_hemorrhage", lateral=False)
def _sah(x):
    c = x.c
    m = c.regions["cisterns"] & (c.Z > -48)
    c.paint(c.full(), m, 66.0, x.key)
    near = (c.Z < 30) & (np.abs(c.X) > 25) & (c.Y < 30)
    c.paint(c.full(), c.regions["sulci"] & near, 60.0, x.key)


@signature("intraparenchymal_hemorrhage")
def _iph(x):
    centre = np.array([x.s * 22.0, x.rng.choice([-2.0, 10.0]), 4.0]) + jitter(x, 2.0)
    rim_lesion(x, centre, x.rng.uniform(11, 16), BLOOD + 4, 4.0, EDEMA)


@signature("intraventricular_hemorrhage", lateral=False)
def _ivh(x):
    c = x.c
    level = 24.0 + x.rng.uniform(-4, 4)       # supine: blood layers posteriorly (dependent)
    m = c.regions["ventricles"] & ((c.Y > level) | (np.abs(c.X) < 3.0) & (c.Z < 6))
    c.paint(c.full(), m, BLOOD - 4, x.key)


@signature("hemorrhagic_contusion")
def _contusion(x):
    for s, y in ((x.s, -52.0), (x.s, -24.0)):
        centre = np.array([s * 26.0, y, -16.0 if y < -30 else -26.0]) + jitter(x, 3.0)
        blob(x, centre, 13.0, EDEMA, rough=0.2)
        sl, f = x.c.ellipsoid_f(centre, (11, 11, 9))
        if sl is not None:
            spots = np.cos(x.c.X[sl] * 0.7) * np.cos(x.c.Y[sl] * 0.7) > 0.0
            x.c.paint(sl, (f < 1) & spots, BLOOD, x.key, where="brain")


@signature("hemorrhagic_transformation", order=2)
def _ht(x):
    centre = np.array([x.s * 42.0, -6.0, 10.0]) + jitter(x, 3.0)
    blob(x, centre, 16.0, INFARCT, rough=0.2)
    sl, f = x.c.ellipsoid_f(centre, (10, 12, 10))
    if sl is not None:
        patch = np.cos(x.c.Y[sl] * 0.55) * np.cos(x.c.Z[sl] * 0.55) > -0.2
        x.c.paint(sl, (f < 1) & patch, 60.0, x.key, where="brain")


@signature("cerebellar_hemorrhage")
def _cbh(x):
    rim_lesion(x, np.array([x.s * 24.0, 46.0, -45.0]) + jitter(x, 2.0), x.rng.uniform(10, 13), BLOOD, 3.0, EDEMA)


@signature("brainstem_hemorrhage", lateral=False)
def _bsh(x):
    blob(x, np.array([x.s * 2.0, 4.0, -40.0]), 8.0, BLOOD, where="intracranial")


@signature("diffuse_axonal_injury", lateral=False)
def _dai(x):
    spots = [(0.0, x.rng.choice([-20.0, 22.0]), 20.0)]
    for _ in range(int(x.rng.integers(5, 9))):
        spots.append((x.rng.choice([-1, 1]) * x.rng.uniform(18, 40), x.rng.uniform(-45, 40), x.rng.uniform(5, 45)))
    for p in spots:
        sl, e = x.c.ellipsoid(p, (4.0, 4.0, 4.0))
        x.c.paint(sl, e, 85.0, x.key, where="intracranial")


@signature("intracranial_hemorrhage_fluid_level")
def _fluid_level(x):
    centre = np.array([x.s * 36.0, 14.0, 22.0]) + jitter(x, 2.0)
    sl, f = x.c.ellipsoid_f(centre, (16, 20, 15))
    if sl is not None:
        dependent = x.c.Y[sl] > centre[1] + 2       # posterior half in a supine patient
        x.c.paint(sl, f <= 1, np.where(dependent, 84.0, 30.0).astype(np.float32), x.key, where="intracranial")


# ----------------------------------------------------------------------------- infarction
def _territory(x, mask, hu=INFARCT):
    x.c.paint(x.c.full(), mask & x.c.regions["brain"], hu, x.key)


@signature("mca_territory_infarct", order=0)
def _mca(x):
    c = x.c
    yy = c.Y + 4.0
    r = np.sqrt(c.X * c.X + yy * yy) + 1e-3
    wedge = (c.X * x.s / r > np.cos(np.deg2rad(52))) & (r > 15)      # sector from the insula to the convexity
    _territory(x, wedge & (c.Z > -22) & (c.Z < 36) & c.regions["supratentorial"])


@signature("aca_territory_infarct", order=0)
def _aca(x):
    c = x.c
    _territory(x, (c.X * x.s > 0) & (c.X * x.s < 20) & (c.Y < 25) & (c.Z > 14 - 0.3 * np.minimum(c.Y + 30, 0)))


@signature("pca_territory_infarct", order=0)
def _pca(x):
    c = x.c
    _territory(x, (c.X * x.s > 0) & (c.X * x.s < 38) & (c.Y > 42) & (c.Z > -22) & (c.Z < 24) &
               c.regions["supratentorial"])


@signature("watershed_infarct", order=0)
def _watershed(x):
    for y in np.linspace(-30, 36, 6):
        sl, e = x.c.ellipsoid((x.s * 27.0, y, 26.0 - 0.1 * y), (4.5, 7.0, 6.0))
        x.c.paint(sl, e, INFARCT - 2, x.key, where="brain")


@signature("lacunar_infarct", order=0)
def _lacune(x):
    blob(x, np.array([x.s * 17.0, 2.0, 6.0]) + jitter(x, 1.5), 6.5, 19.0, rough=0.1)


@signature("cerebellar_infarct", order=0)
def _cb_infarct(x):
    sl, e = x.c.ellipsoid((x.s * 30.0, 50.0, -50.0), (15, 18, 10))
    x.c.paint(sl, e, INFARCT, x.key, where=x.c.regions["posterior_fossa"] & (x.c.hu > 20))


@signature("brainstem_infarct", order=0)
def _bs_infarct(x):
    sl, e = x.c.ellipsoid((x.s * 4.5, 2.0, -42.0), (5, 7, 9))
    x.c.paint(sl, e, 14.0, x.key, where="intracranial")


@signature("hyperdense_artery_sign", order=2)
def _hdas(x):
    sl, e = x.c.capsule((x.s * 6.0, -14.0, -24.0), (x.s * 40.0, -9.0, -20.0), 3.0)
    x.c.paint(sl, e, 88.0, x.key, where="intracranial")


@signature("dural_venous_sinus_thrombosis", order=2)
def _dvst(x):
    c = x.c
    m = c.regions["sss"] | (c.regions["transverse"] & (c.X * x.s > 0))
    grow = c.regions["intracranial"] & (c.regions["depth"] - c.regions["inner_mm"] < 7) & (np.abs(c.X) < 7) & \
        (c.Z > 0) & (c.Y > 0)
    c.paint(c.full(), m | grow, 82.0, x.key)


# ----------------------------------------------------------------------------- trauma
def _bone(x, sl):
    return x.c.hu[sl] > 250


@signature("calvarial_fracture")
def _calv_fx(x):
    u = lateral_dir(x, x.rng.uniform(-0.4, 0.6), x.rng.uniform(0.2, 0.7))
    sl, m, _ = skull_cap(x, u, 24.0)
    if sl is not None:
        t = np.cross(u, unit(*x.rng.normal(size=3)))
        m &= x.c.slab(sl, surface_point(u, 8.0), t, 2.2)
        x.c.paint(sl, m, 40.0, x.key)


@signature("depressed_skull_fracture")
def _depressed(x):
    u = lateral_dir(x, x.rng.uniform(-0.6, 0.3), x.rng.uniform(0.3, 0.8))
    sl, m, _ = skull_cap(x, u, 15.0)
    x.c.paint(sl, m, 35.0, x.key)
    inner = float(x.c.regions["inner_mm"])
    sl, m, _ = cap(x, u, 13.0, x.a.scalp_mm + 8.0, inner + 8.0)
    x.c.paint(sl, m, HU["cortical"], x.key)


@signature("skull_base_fracture")
def _base_fx(x):
    c = x.c
    sl, e = c.ellipsoid((x.s * 8.0, -30.0, -44.0), (20, 20, 14))
    if sl is not None:
        line = c.slab(sl, (x.s * 8.0, -30.0, -44.0), (1.0, 0.35, 0.1), 2.2) & _bone(x, sl)
        c.paint(sl, e & line, 40.0, x.key)
    sph = c.regions["sinus_sphenoid"] & (c.Y > -32 + x.rng.uniform(-3, 3))
    c.paint(c.full(), sph, 50.0, x.key)


@signature("temporal_bone_fracture")
def _temporal_fx(x):
    c = x.c
    p = (x.s * 50.0, 6.0, -42.0)
    sl, e = c.ellipsoid(p, (18, 18, 14))
    if sl is not None:
        c.paint(sl, e & c.slab(sl, p, (0.35, 1.0, 0.2), 2.2) & _bone(x, sl), 40.0, x.key)
    mastoid = c.regions.get(f"mastoid_{x.s}")
    if mastoid is not None:
        c.paint(c.full(), mastoid & (c.hu < 0), 35.0, x.key)


@signature("orbital_fracture")
def _orbital_fx(x):
    c = x.c
    sl, e = c.ellipsoid((x.s * 32.0, -60.0, -57.0), (11, 13, 5))
    c.paint(sl, e, HU["fat"], x.key)
    maxillary = c.regions.get(f"maxillary_{x.s}")
    if maxillary is not None:
        c.paint(c.full(), maxillary & (c.Z > -60), 55.0, x.key)


@signature("facial_fracture")
def _facial_fx(x):
    c = x.c
    p = (x.s * 52.0, -58.0, -46.0)
    sl, e = c.ellipsoid(p, (14, 16, 14))
    if sl is not None:
        c.paint(sl, e & c.slab(sl, p, (0.2, 1.0, 0.3), 2.2) & _bone(x, sl), 40.0, x.key)
    sl, e = c.ellipsoid((x.s * 66.0, -50.0, -46.0), (10, 20, 14))
    if sl is not None:
        c.paint(sl, e & (c.hu[sl] < -500), 45.0, x.key)


@signature("nasal_bone_fracture")
def _nasal_fx(x):
    c = x.c
    sl, e = c.ellipsoid((0.0, -104.0, -56.0), (15, 9, 14))
    if sl is not None:
        c.paint(sl, e & (c.hu[sl] < -500), 45.0, x.key)
    sl, e = c.ellipsoid((x.s * 9.0, -103.0, -52.0), (3.5, 3.0, 7.0))
    c.paint(sl, e, HU["cortical"], x.key)


@signature("scalp_hematoma")
def _scalp(x):
    u = lateral_dir(x, x.rng.uniform(-0.8, 0.8), x.rng.uniform(0.1, 0.9))
    thick = x.rng.uniform(11, 16)
    sl, m, ang = cap(x, u, x.rng.uniform(22, 30), -thick - 1, 0.5, extra=thick)
    if sl is not None:
        m &= x.c.regions["depth"][sl] >= -thick * (1 - ang ** 2)
        x.c.paint(sl, m, 56.0, x.key)


@signature("pneumocephalus", order=2, lateral=False)
def _pneumo(x):
    inner = float(x.c.regions["inner_mm"])
    for _ in range(int(x.rng.integers(3, 6))):
        p = surface_point(unit(x.rng.uniform(-0.5, 0.5), -1.0, x.rng.uniform(0.1, 0.7)), inner + 3.5)
        sl, e = x.c.ellipsoid(p, (5.0, 4.0, 4.5))
        x.c.paint(sl, e, HU["air"], x.key, where="intracranial")


@signature("intracranial_foreign_body", order=3)
def _foreign_body(x):
    c = x.c
    p = np.array([x.s * 28.0, x.rng.uniform(-25, 20), x.rng.uniform(18, 38)])
    sl = c.box(p, 45.0)
    if sl is not None:
        lx, ly, lz = c.local(sl, p)
        r = np.sqrt(lx * lx + ly * ly) + 1e-3
        streak = 260.0 * np.cos(8 * np.arctan2(ly, lx)) * np.exp(-r / 22.0) * (np.abs(lz) < 4.0)
        head = c.regions["depth"][sl] > 0
        c.hu[sl] += np.where(head, streak, 0).astype(np.float32)
        c.mark(x.key, sl, head & (r < 15) & (np.abs(lz) < 4.0))
    sl, e = c.ellipsoid(p, (4.0, 4.0, 4.0))
    c.paint(sl, e, METAL, x.key)


@signature("hemosinus")
def _hemosinus(x):
    c = x.c
    region = c.regions["sinus_sphenoid"] if x.rng.random() < 0.5 else c.regions.get(f"maxillary_{x.s}")
    if region is not None:
        c.paint(c.full(), region & (c.Y > np.float32(-60 if region is not c.regions["sinus_sphenoid"] else -33)),
                58.0, x.key)
