"""Signatures of mass lesions, structural changes and chronic changes.

Structural and chronic findings that reshape the anatomy (ventricle size, sulci, midline,
skull thickness) set ``Mods`` in a ``@modifier`` and mark the changed region in their painter.
"""
from __future__ import annotations

import numpy as np

from .phantom_anatomy import Mods, ventricle_parts
from .phantom_signatures import (CALCIUM, EDEMA, Ctx, blob, cap, extra_axial, modifier, rim_lesion, signature,
                                 skull_cap, surface_point, unit)

TUMOUR = 47.0


def _sphere(x: Ctx, centre, radius: float) -> np.ndarray:
    c = x.c
    return (c.X - centre[0]) ** 2 + (c.Y - centre[1]) ** 2 + (c.Z - centre[2]) ** 2 < radius * radius


# ----------------------------------------------------------------------------- mass
@signature("intra_axial_mass")
def _intra(x):
    blob(x, x.at_site(), x.rng.uniform(13, 17), TUMOUR, where="intracranial", rough=0.25)


@signature("extra_axial_mass")
def _extra(x):
    u = unit(x.s * x.rng.uniform(0.3, 0.7), -0.7, x.rng.uniform(0.5, 0.8))
    extra_axial(x, u, x.rng.uniform(17, 22), x.rng.uniform(18, 24), 60.0, lens=True)


@signature("vasogenic_edema", order=0)
def _edema(x):
    c = x.c
    near = _sphere(x, x.at_site(), x.rng.uniform(30, 38))
    c.paint(c.full(), near & c.regions["white"], EDEMA, x.key)


@signature("cystic_necrotic_mass")
def _cystic(x):
    centre = np.array([x.s * 30.0, 30.0, 24.0]) + x.rng.normal(0, 3, 3)
    r = x.rng.uniform(15, 18)
    blob(x, centre, r, TUMOUR + 3, where="intracranial", rough=0.1)
    sl, e = x.c.ellipsoid(centre, (r - 5, r - 5, r - 5))
    x.c.paint(sl, e, 12.0, x.key)


@signature("multiple_lesions", lateral=False)
def _mets(x):
    for _ in range(int(x.rng.integers(4, 7))):
        p = (x.rng.choice([-1, 1]) * x.rng.uniform(22, 44), x.rng.uniform(-50, 45), x.rng.uniform(0, 42))
        rim_lesion(x, p, 5.0, TUMOUR, 5.0, EDEMA, where="intracranial")


@signature("posterior_fossa_mass")
def _pf_mass(x):
    blob(x, (x.s * 10.0, 40.0, -42.0), x.rng.uniform(12, 15), TUMOUR, where=x.c.regions["posterior_fossa"])


@signature("sellar_suprasellar_mass", lateral=False)
def _sellar(x):
    sl, e = x.c.ellipsoid((0.0, -17.0, -31.0), (11, 10, 12))
    x.c.paint(sl, e, 50.0, x.key)


@signature("colloid_cyst", lateral=False)
def _colloid(x):
    sl, e = x.c.ellipsoid((0.0, -6.0, 9.0), (6.0, 6.0, 6.0))
    x.c.paint(sl, e, 72.0, x.key, where="intracranial")


@signature("arachnoid_cyst")
def _arachnoid(x):
    sl, e = x.c.ellipsoid((x.s * 40.0, -30.0, -30.0), (14, 16, 13))
    x.c.paint(sl, e, 5.0, x.key, where="intracranial")


@signature("calcified_lesion")
def _calcified(x):
    p = (x.s * x.rng.uniform(25, 42), x.rng.uniform(-40, 40), x.rng.uniform(0, 35))
    sl, e = x.c.ellipsoid(p, (6.5, 6.5, 6.5))
    x.c.paint(sl, e, CALCIUM, x.key, where="intracranial")


@signature("intracranial_lipoma", lateral=False)
def _lipoma(x):
    sl, e = x.c.ellipsoid((0.0, x.rng.uniform(-8, 8), 27.0), (5.5, 15, 5.5))
    x.c.paint(sl, e, -90.0, x.key, where="intracranial")


# ----------------------------------------------------------------------------- structural
@modifier("midline_shift")
def _mls_mod(m: Mods, x):
    m.shift_mm += -x.s * x.rng.uniform(8, 13)          # pushed away from the lesion side


@signature("midline_shift")
def _mls(x):
    c = x.c
    c.mark(x.key, c.full(), c.regions["intracranial"] & (np.abs(c.X) < 4) & (c.Z > 0) & (c.Z < 36) &
           (c.Y > -40) & (c.Y < 30))


@modifier("mass_effect")
def _me_mod(m: Mods, x):
    m.effaced_sulci.append((x.at_site(), 42.0))
    m.side_ventricle[x.s] = m.side_ventricle.get(x.s, 1.0) * 0.65


@signature("mass_effect")
def _me(x):
    c = x.c
    vent = np.zeros(c.shape, bool)
    for centre, radii, yaw in ventricle_parts(x.a, Mods(), x.s)[:3]:
        sl, e = c.ellipsoid(centre, radii, yaw_deg=yaw)
        if sl is not None:
            vent[sl] |= e
    cortex = c.regions["intracranial"] & (c.regions["depth"] - c.regions["inner_mm"] < 14)
    c.mark(x.key, c.full(), (_sphere(x, x.at_site(), 42.0) & cortex) | vent)


@modifier("subfalcine_herniation")
def _sf_mod(m: Mods, x):
    m.subfalcine_mm += -x.s * 8.0


@signature("subfalcine_herniation")
def _sf(x):
    c = x.c
    c.mark(x.key, c.full(), c.regions["intracranial"] & (np.abs(c.X) < 10) & (c.Y > -35) & (c.Y < 2) &
           (c.Z > 4) & (c.Z < 30) & (np.abs(c.hu) < 45))


@modifier("transtentorial_herniation")
def _tt_mod(m: Mods, x):
    m.herniate_uncus = x.s


@signature("transtentorial_herniation")
def _tt(x):
    pass  # drawn by the anatomy (uncus filling the suprasellar/ambient cistern) and marked there


@signature("tonsillar_herniation", lateral=False)
def _tonsils(x):
    c = x.c
    c.paint(c.full(), c.regions["cisterns"] & (c.Y > 40) & (c.Z < -44), 37.0, x.key)
    for s in (-1, 1):
        sl, e = c.ellipsoid((s * 7.0, 36.0, -62.0), (7, 8, 9))
        c.paint(sl, e, 37.0, x.key, where=c.regions["depth"] > c.regions["inner_mm"])


@modifier("hydrocephalus")
def _hydro_mod(m: Mods, x):
    m.ventricle_scale *= 1.9
    m.temporal_horn_scale *= 2.3
    m.third_ventricle_scale *= 2.4


@signature("hydrocephalus", lateral=False)
def _hydro(x):
    c = x.c
    c.mark(x.key, c.full(), c.regions["ventricles"] & ~c.regions["posterior_fossa"])


@modifier("entrapped_ventricle")
def _trap_mod(m: Mods, x):
    m.side_temporal_horn[x.s] = m.side_temporal_horn.get(x.s, 1.0) * 3.2
    m.side_ventricle[x.s] = m.side_ventricle.get(x.s, 1.0) * 1.3


@signature("entrapped_ventricle")
def _trap(x):
    c = x.c
    c.mark(x.key, c.full(), c.regions["ventricles"] & (c.X * x.s > 2) & (c.Z < 12))


@signature("effaced_basal_cisterns", lateral=False)
def _eff_cis(x):
    c = x.c
    c.paint(c.full(), c.regions["cisterns"] & (c.Z > -38) & (c.Z < -10) & (np.abs(c.X) < 22), 36.0, x.key)


@modifier("sulcal_effacement")
def _eff_sulci_mod(m: Mods, x):
    m.effaced_sulci.append((np.array([x.s * 55.0, -5.0, 25.0]), 62.0))


@signature("sulcal_effacement")
def _eff_sulci(x):
    c = x.c
    cortex = c.regions["intracranial"] & (c.regions["depth"] - c.regions["inner_mm"] < 12)
    c.mark(x.key, c.full(), cortex & _sphere(x, (x.s * 55.0, -5.0, 25.0), 62.0) & ~c.regions["posterior_fossa"])


@modifier("ventricular_effacement")
def _eff_vent_mod(m: Mods, x):
    m.side_ventricle[x.s] = m.side_ventricle.get(x.s, 1.0) * 0.35


@signature("ventricular_effacement")
def _eff_vent(x):
    c = x.c
    for centre, radii, yaw in ventricle_parts(x.a, Mods(), x.s)[:3]:
        sl, e = c.ellipsoid(centre, radii, yaw_deg=yaw)
        if sl is not None:
            c.mark(x.key, sl, e)


def _vault_dir(x, y_lo=-0.6, y_hi=0.4):
    return unit(x.s * 1.0, x.rng.uniform(y_lo, y_hi), x.rng.uniform(0.5, 0.9))


@signature("craniotomy")
def _craniotomy(x):
    u = _vault_dir(x)
    sl, m, ang = skull_cap(x, u, 22.0)
    if sl is not None:
        x.c.mark(x.key, sl, m)
        x.c.paint(sl, m & (ang > 0.86), 30.0, x.key)
        for phi in x.rng.uniform(0, 2 * np.pi, 3):
            w = unit(*np.cross(u, [np.cos(phi), np.sin(phi), 0.3]))
            v = unit(*(np.cos(np.deg2rad(20)) * u + np.sin(np.deg2rad(20)) * w))
            sl2, m2, _ = skull_cap(x, v, 4.5)
            x.c.paint(sl2, m2, 30.0, x.key)


@signature("craniectomy")
def _craniectomy(x):
    sl, m, _ = skull_cap(x, _vault_dir(x, -0.4, 0.3), 34.0)
    x.c.paint(sl, m, 30.0, x.key)


@signature("burr_hole")
def _burr(x):
    sl, m, _ = skull_cap(x, unit(x.s * 0.7, -0.3, 1.0), 5.5)
    x.c.paint(sl, m, 25.0, x.key)


@signature("ventricular_shunt", order=3)
def _shunt(x):
    entry = surface_point(unit(x.s * 0.55, 0.75, 0.55), x.a.scalp_mm)
    sl, e = x.c.capsule(entry, (x.s * 8.0, -14.0, 14.0), 2.2)
    x.c.paint(sl, e, 1600.0, x.key)
    sl, e = x.c.ellipsoid(surface_point(unit(x.s * 0.55, 0.75, 0.55), 0.0), (6, 6, 6))
    x.c.paint(sl, e, 400.0, x.key)


@signature("cranioplasty", order=2)
def _cranioplasty(x):
    u = _vault_dir(x, -0.2, 0.6)
    sl, m, _ = skull_cap(x, u, 26.0)
    x.c.paint(sl, m, 30.0, x.key)
    sl, m, _ = cap(x, u, 26.0, x.a.scalp_mm, x.a.scalp_mm + 3.0)
    if sl is not None:
        mesh = np.cos(x.c.X[sl] * 0.8) * np.cos(x.c.Y[sl] * 0.8) * np.cos(x.c.Z[sl] * 0.8) > -0.5
        x.c.paint(sl, m & mesh, 2600.0, x.key)


# ----------------------------------------------------------------------------- chronic
@modifier("cerebral_atrophy")
def _atrophy_mod(m: Mods, x):
    m.atrophy = max(x.a.atrophy, 0.85)


@signature("cerebral_atrophy", lateral=False)
def _atrophy(x):
    c = x.c
    extra = c.regions["intracranial"] & (c.hu < 15) & ~c.regions["posterior_fossa"]
    c.mark(x.key, c.full(), extra)


@modifier("cerebellar_atrophy")
def _cb_atrophy_mod(m: Mods, x):
    m.cerebellar_atrophy = True


@signature("cerebellar_atrophy", lateral=False)
def _cb_atrophy(x):
    c = x.c
    c.mark(x.key, c.full(), c.regions["posterior_fossa"] & (c.hu < 15))


@signature("small_vessel_disease", order=0, lateral=False)
def _svd(x):
    c = x.c
    for s in (-1, 1):
        for centre, radii, yaw in ventricle_parts(x.a, Mods(), s)[:3]:
            sl, e = c.ellipsoid(centre, (radii[0] + 9, radii[1] + 7, radii[2] + 8), yaw_deg=yaw)
            c.paint(sl, e, 15.0, x.key, where="white")
    for _ in range(6):
        p = (x.rng.choice([-1, 1]) * x.rng.uniform(15, 30), x.rng.uniform(-30, 30), x.rng.uniform(15, 35))
        sl, e = c.ellipsoid(p, (5, 6, 5))
        c.paint(sl, e, 15.0, x.key, where="white")


@signature("encephalomalacia")
def _malacia(x):
    c = x.c
    centre = (x.s * 44.0, x.rng.choice([-45.0, 40.0]), x.rng.uniform(5, 20))
    sl, e = c.ellipsoid(centre, (17, 19, 16))
    if sl is not None:
        shallow = c.regions["depth"][sl] - c.regions["inner_mm"] < 28
        c.paint(sl, e & shallow, 8.0, x.key, where="intracranial")


@signature("chronic_lacunes", order=0, lateral=False)
def _lacunes(x):
    for _ in range(int(x.rng.integers(3, 5))):
        p = (x.rng.choice([-1, 1]) * x.rng.uniform(16, 24), x.rng.uniform(-8, 10), x.rng.uniform(-2, 10))
        sl, e = x.c.ellipsoid(p, (4.5, 4.5, 4.5))
        x.c.paint(sl, e, 8.0, x.key, where="brain")


@modifier("ex_vacuo_dilatation")
def _exvacuo_mod(m: Mods, x):
    m.side_ventricle[x.s] = m.side_ventricle.get(x.s, 1.0) * 1.6


@signature("ex_vacuo_dilatation")
def _exvacuo(x):
    c = x.c
    c.mark(x.key, c.full(), c.regions["ventricles"] & (c.X * x.s > 2) & (c.Z > 0))


@signature("basal_ganglia_calcification", order=2, lateral=False)
def _bg_calc(x):
    for s in (-1, 1):
        sl, e = x.c.ellipsoid((s * 19.0, -2.0, 0.0), (4.5, 5.5, 4.5))
        x.c.paint(sl, e, CALCIUM, x.key)


@signature("vascular_calcification", order=2, lateral=False)
def _vasc_calc(x):
    for s in (-1, 1):
        for p0, p1 in (((s * 14.0, -22.0, -46.0), (s * 14.0, -14.0, -30.0)),
                       ((s * 7.0, 24.0, -66.0), (s * 4.0, 10.0, -50.0))):
            sl, e = x.c.capsule(p0, p1, 2.6)
            x.c.paint(sl, e, 480.0, x.key)


@signature("falx_calcification", order=2, lateral=False)
def _falx_calc(x):
    for _ in range(int(x.rng.integers(2, 4))):
        sl, e = x.c.ellipsoid((0.0, x.rng.uniform(-40, 50), x.rng.uniform(35, 60)), (2.8, 8.0, 4.0))
        x.c.paint(sl, e, 600.0, x.key, where="intracranial")


@signature("paranasal_sinus_disease", lateral=False)
def _sinus(x):
    c = x.c
    for name, centre, radii in (("maxillary_1", (30, -62, -66), (14, 14, 14)), ("maxillary_-1", (-30, -62, -66),
                                (14, 14, 14)), ("sinus_ethmoid", (0, -62, -42), (9, 15, 10)),
                                ("sinus_sphenoid", (0, -32, -50), (12, 10, 9))):
        region = c.regions.get(name)
        sl, f = c.ellipsoid_f(centre, radii)
        if region is not None and sl is not None:
            c.paint(sl, f > 0.35, 32.0, x.key, where=region)
    level = c.regions["maxillary_1" if x.s > 0 else "maxillary_-1"] & (c.Y > -62)
    c.paint(c.full(), level, 24.0, x.key)


@signature("mastoid_opacification")
def _mastoid(x):
    c = x.c
    for s in ((x.s,) if x.rng.random() < 0.6 else (-1, 1)):
        c.paint(c.full(), c.regions[f"mastoid_{s}"] & (c.hu < 0), 35.0, x.key)


@signature("hyperostosis_frontalis_interna", lateral=False)
def _hfi(x):
    inner = float(x.c.regions["inner_mm"])
    for s in (-1, 1):
        u = unit(s * 0.45, -1.0, 0.45)
        sl, m, ang = cap(x, u, 28.0, inner - 1.0, lambda t: inner + 7.0 * (1 - t ** 2))
        if sl is not None:
            x.c.paint(sl, m & (np.abs(x.c.X[sl]) > 7) & (np.cos(x.c.Y[sl] * 0.5) > -0.6), 1100.0, x.key)


@signature("empty_sella", lateral=False)
def _empty_sella(x):
    x.c.paint(x.c.full(), x.c.regions["sella"], 5.0, x.key)


@modifier("calvarial_thickening")
def _thick_mod(m: Mods, x):
    m.skull_extra_mm += 7.0


@signature("calvarial_thickening", lateral=False)
def _thick(x):
    x.c.mark(x.key, x.c.full(), x.c.regions["skull"])

