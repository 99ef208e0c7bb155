"""Which findings a phantom subject has: long-tailed prevalences with clinical co-occurrence.

Labels come from a few clinical "events" (trauma, stroke, spontaneous hemorrhage, tumour,
ageing) so that findings co-occur the way they do in head-CT reports: a mass brings edema
and mass effect, trauma brings fractures, scalp hematoma and extra-axial blood, mass effect
brings midline shift and herniation, obstruction brings hydrocephalus and shunts. Every
decision consumes exactly one uniform draw, so ``prevalence_scale`` changes rates but never
which random number a later decision sees.
"""
from __future__ import annotations

import numpy as np

from .taxonomy import FINDING_KEYS, PARENTS


class _Draw:
    def __init__(self, rng: np.random.Generator, scale: float):
        self.rng, self.scale, self.on = rng, scale, set()

    def __call__(self, key: str | None, p: float, scaled: bool = True) -> bool:
        u = self.rng.random()
        hit = u < min(1.0, p * (self.scale if scaled else 1.0))
        if hit and key is not None:
            self.on.add(key)
        return hit

    def choice(self, options: dict[str, float]) -> str:
        keys, probs = list(options), np.asarray(list(options.values()), float)
        return keys[int(np.searchsorted(np.cumsum(probs / probs.sum()), self.rng.random()))]


def _sig(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def sample_labels(rng: np.random.Generator, age: float, prevalence_scale: float = 1.0) -> dict[str, int]:
    """True labels (taxonomy order) for one subject of the given age."""
    # Long on purpose: a table of conditional draws, one line per finding, read top to bottom as the clinical
    # dependency tree (trauma -> fractures -> bleeds ...). The order of the draws defines every seed's labels.
    d = _Draw(rng, prevalence_scale)
    on = d.on
    # ---- trauma
    if d(None, 0.16):
        d("scalp_hematoma", 0.55)
        d("calvarial_fracture", 0.35)
        d("skull_base_fracture", 0.14)
        d("temporal_bone_fracture", 0.10)
        d("depressed_skull_fracture", 0.06)
        d("orbital_fracture", 0.08)
        d("facial_fracture", 0.08)
        d("nasal_bone_fracture", 0.07)
        d("pneumocephalus", 0.06 + 0.3 * bool(on & {"skull_base_fracture", "depressed_skull_fracture"}))
        d("intracranial_foreign_body", 0.03)
        d("hemosinus", 0.04 + 0.45 * bool(on & {"skull_base_fracture", "facial_fracture", "orbital_fracture"}))
        d("epidural_hematoma", 0.05 + 0.30 * ("calvarial_fracture" in on))
        d("acute_subdural_hematoma", 0.30)
        d("subarachnoid_hemorrhage", 0.30)
        d("hemorrhagic_contusion", 0.25)
        d("diffuse_axonal_injury", 0.07)
        d("intraventricular_hemorrhage", 0.05)
    # ---- ischemic stroke (one territory) with its companions
    if d(None, 0.13):
        territory = d.choice({"mca_territory_infarct": 0.45, "aca_territory_infarct": 0.08,
                              "pca_territory_infarct": 0.14, "watershed_infarct": 0.07,
                              "lacunar_infarct": 0.19, "cerebellar_infarct": 0.05, "brainstem_infarct": 0.03})
        on.add(territory)
        d("hyperdense_artery_sign", 0.4 if territory == "mca_territory_infarct" else 0.0)
        d("hemorrhagic_transformation",
          0.14 if territory in ("mca_territory_infarct", "pca_territory_infarct", "aca_territory_infarct") else 0.0)
    # ---- spontaneous (hypertensive / coagulopathic) hemorrhage
    if d(None, 0.07):
        kind = d.choice({"intraparenchymal_hemorrhage": 0.62, "cerebellar_hemorrhage": 0.13,
                         "brainstem_hemorrhage": 0.07, "intracranial_hemorrhage_fluid_level": 0.18})
        on.add(kind)
        d("intraventricular_hemorrhage", 0.35)
        d("subarachnoid_hemorrhage", 0.12)
    if d("subarachnoid_hemorrhage", 0.02):           # aneurysmal
        d("intraventricular_hemorrhage", 0.2)
    # ---- tumours and other masses
    if d(None, 0.09):
        kind = d.choice({"intra_axial_mass": 0.40, "extra_axial_mass": 0.30, "posterior_fossa_mass": 0.08,
                         "sellar_suprasellar_mass": 0.08, "multiple_lesions": 0.14})
        on.add(kind)
        d("vasogenic_edema", {"intra_axial_mass": 0.85, "multiple_lesions": 0.95, "extra_axial_mass": 0.35,
                              "posterior_fossa_mass": 0.5}.get(kind, 0.0))
        d("cystic_necrotic_mass", 0.4 if kind == "intra_axial_mass" else 0.0)
        d("calcified_lesion", 0.3 if kind == "extra_axial_mass" else 0.0)
        d("craniotomy", 0.15)
    d("calcified_lesion", 0.015)
    d("colloid_cyst", 0.006)
    d("arachnoid_cyst", 0.02)
    d("intracranial_lipoma", 0.006)
    d("dural_venous_sinus_thrombosis", 0.01)
    d("chronic_subdural_hematoma", 0.015 + 0.05 * _sig((age - 72) / 5))
    d("subacute_subdural_hematoma", 0.015)
    # ---- mass effect and its consequences
    big = {"intra_axial_mass", "extra_axial_mass", "cystic_necrotic_mass", "posterior_fossa_mass",
           "intraparenchymal_hemorrhage", "acute_subdural_hematoma", "epidural_hematoma", "mca_territory_infarct",
           "intracranial_hemorrhage_fluid_level", "chronic_subdural_hematoma", "multiple_lesions",
           "subacute_subdural_hematoma"}
    if d("mass_effect", 0.6 if on & big else 0.004):
        if d("midline_shift", 0.55 if on & (big - {"posterior_fossa_mass"}) else 0.1):
            d("subfalcine_herniation", 0.5)
            d("transtentorial_herniation", 0.2)
            d("entrapped_ventricle", 0.12)
        d("ventricular_effacement", 0.5)
        d("sulcal_effacement", 0.6)
        d("effaced_basal_cisterns", 0.8 if "transtentorial_herniation" in on else 0.2)
    d("tonsillar_herniation", 0.3 if on & {"posterior_fossa_mass", "cerebellar_hemorrhage", "cerebellar_infarct"}
      else 0.002)
    p_hydro = 0.02 + 0.4 * ("posterior_fossa_mass" in on) + 0.7 * ("colloid_cyst" in on) \
        + 0.35 * ("intraventricular_hemorrhage" in on) + 0.15 * ("subarachnoid_hemorrhage" in on)
    d("hydrocephalus", p_hydro)
    d("ventricular_shunt", 0.01 + 0.3 * ("hydrocephalus" in on))
    # ---- post-operative
    d("craniotomy", 0.025)
    d("craniectomy", 0.01 + 0.1 * bool(on & {"acute_subdural_hematoma", "epidural_hematoma"}))
    d("burr_hole", 0.01 + 0.4 * ("chronic_subdural_hematoma" in on))
    d("cranioplasty", 0.008)
    # ---- chronic, mostly age-related
    d("cerebral_atrophy", 0.5 * _sig((age - 70) / 6))
    d("cerebellar_atrophy", 0.01 + 0.06 * _sig((age - 70) / 6))
    d("small_vessel_disease", 0.45 * _sig((age - 66) / 7))
    d("chronic_lacunes", 0.01 + 0.35 * ("small_vessel_disease" in on))
    d("encephalomalacia", 0.04)
    d("ex_vacuo_dilatation", 0.004 + 0.45 * ("encephalomalacia" in on))
    d("basal_ganglia_calcification", 0.04)
    d("vascular_calcification", 0.4 * _sig((age - 62) / 7))
    d("falx_calcification", 0.12)
    d("paranasal_sinus_disease", 0.22)
    d("mastoid_opacification", 0.04 + 0.5 * ("temporal_bone_fracture" in on))
    d("hyperostosis_frontalis_interna", 0.035)
    d("empty_sella", 0.03)
    d("calvarial_thickening", 0.008 + 0.3 * ("ventricular_shunt" in on))
    labels = {k: int(k in on) for k in FINDING_KEYS}
    return derive_parents(labels)


def derive_parents(labels: dict[str, int]) -> dict[str, int]:
    """Set each parent finding (any subdural, any hemorrhage) to the union of its children."""
    out = dict(labels)
    for parent in ("subdural_hematoma", "intracranial_hemorrhage"):
        out[parent] = int(any(out[k] for k in PARENTS[parent]))
    return out


def apply_presence(labels: dict[str, int], present: dict[str, bool]) -> dict[str, int]:
    """Force findings on or off. Forcing a parent on adds its first child; off removes all children."""
    out = dict(labels)
    for key, value in present.items():
        if key not in out:
            raise ValueError(f"unknown finding key {key!r} in present=...")
        children = [c for c in PARENTS.get(key, []) if c not in PARENTS]
        if key in PARENTS:
            if not value:
                for c in PARENTS[key]:
                    out[c] = 0
                    for g in PARENTS.get(c, []):
                        out[g] = 0
            elif not any(out[c] for c in PARENTS[key]):
                out[{"intracranial_hemorrhage": "intraparenchymal_hemorrhage",
                     "subdural_hematoma": "acute_subdural_hematoma"}.get(key, children[0])] = 1
        else:
            out[key] = int(bool(value))
    return derive_parents(out)
