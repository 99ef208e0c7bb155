"""Free-text head-CT reports for phantom subjects, consistent with their true labels.

Each report has a FINDINGS and an IMPRESSION section (sometimes a CLINICAL HISTORY and a COMPARISON too), drawn
from varied templates: positive findings in several phrasings and synonyms (some hedged: "possible ...", "...
cannot be excluded"), negated normal findings ("No midline shift."; lists "No hemorrhage, mass effect or
hydrocephalus."), chronic incidental findings, comparisons with a prior study (an unchanged finding, or one that
"has resolved" and is absent now), a question in the history that is not a finding, and a few typos. The wording is
written here, independently of the labeller's phrase file, so ``molre label-reports`` on these reports measures
something (``molre demo`` prints its agreement with the truth).

Deterministic per seed: ``write_report(labels, np.random.default_rng(seed))``.
"""
from __future__ import annotations

import numpy as np

from .taxonomy import CATEGORY_OF, FINDING_KEYS, PARENTS

# Surface forms per finding (the first is the plainest). Parents are never written: their subtypes are.
FORMS: dict[str, list[str]] = {
    "epidural_hematoma": ["epidural hematoma", "extradural haematoma", "EDH", "lentiform epidural collection"],
    "acute_subdural_hematoma": ["acute subdural hematoma", "acute SDH", "hyperdense subdural collection",
                                "acute subdural haemorrhage"],
    "subacute_subdural_hematoma": ["subacute subdural hematoma", "subacute SDH", "isodense subdural collection"],
    "chronic_subdural_hematoma": ["chronic subdural hematoma", "chronic SDH", "hypodense chronic subdural collection"],
    "subarachnoid_hemorrhage": ["subarachnoid hemorrhage", "SAH", "subarachnoid blood", "subarachnoid haemorrhage"],
    "intraparenchymal_hemorrhage": ["intraparenchymal hemorrhage", "intraparenchymal hematoma", "IPH",
                                    "basal ganglia hemorrhage"],
    "intraventricular_hemorrhage": ["intraventricular hemorrhage", "IVH", "intraventricular blood"],
    "hemorrhagic_contusion": ["hemorrhagic contusion", "cerebral contusion", "haemorrhagic contusions"],
    "hemorrhagic_transformation": ["hemorrhagic transformation of the infarct", "hemorrhagic conversion"],
    "cerebellar_hemorrhage": ["cerebellar hemorrhage", "cerebellar hematoma"],
    "brainstem_hemorrhage": ["pontine hemorrhage", "brainstem hemorrhage"],
    "diffuse_axonal_injury": ["diffuse axonal injury", "shear hemorrhages", "DAI"],
    "intracranial_hemorrhage_fluid_level": ["fluid-fluid level within the hematoma", "hematocrit level"],
    "mca_territory_infarct": ["MCA territory infarct", "middle cerebral artery territory infarction",
                              "acute MCA infarct"],
    "aca_territory_infarct": ["ACA territory infarct", "anterior cerebral artery territory infarction"],
    "pca_territory_infarct": ["PCA territory infarct", "posterior cerebral artery territory infarction"],
    "watershed_infarct": ["watershed infarct", "border zone infarcts"],
    "lacunar_infarct": ["acute lacunar infarct", "lacunar infarct"],
    "cerebellar_infarct": ["cerebellar infarct", "cerebellar infarction"],
    "brainstem_infarct": ["brainstem infarct", "pontine infarct"],
    "hyperdense_artery_sign": ["hyperdense MCA sign", "hyperdense artery sign", "dense MCA sign"],
    "dural_venous_sinus_thrombosis": ["dural venous sinus thrombosis", "venous sinus thrombosis"],
    "calvarial_fracture": ["skull fracture", "calvarial fracture", "linear skull fracture"],
    "depressed_skull_fracture": ["depressed skull fracture", "depressed calvarial fracture"],
    "skull_base_fracture": ["skull base fracture", "basilar skull fracture"],
    "temporal_bone_fracture": ["temporal bone fracture", "petrous temporal bone fracture"],
    "orbital_fracture": ["orbital fracture", "orbital floor fracture"],
    "facial_fracture": ["facial bone fracture", "maxillary fracture", "zygomatic fracture"],
    "nasal_bone_fracture": ["nasal bone fracture", "nasal fracture"],
    "scalp_hematoma": ["scalp hematoma", "subgaleal hematoma", "scalp haematoma"],
    "pneumocephalus": ["pneumocephalus", "intracranial air"],
    "intracranial_foreign_body": ["intracranial foreign body", "metallic foreign body"],
    "hemosinus": ["blood in the sphenoid sinus", "hemosinus"],
    "intra_axial_mass": ["intra-axial mass", "parenchymal mass", "intra-axial tumour"],
    "extra_axial_mass": ["extra-axial mass", "meningioma", "dural-based mass"],
    "vasogenic_edema": ["vasogenic edema", "vasogenic oedema", "perilesional edema"],
    "cystic_necrotic_mass": ["cystic necrotic mass", "necrotic mass", "cystic-necrotic mass"],
    "multiple_lesions": ["multiple lesions", "multiple metastases", "multifocal lesions"],
    "posterior_fossa_mass": ["posterior fossa mass", "cerebellar mass"],
    "sellar_suprasellar_mass": ["sellar/suprasellar mass", "pituitary macroadenoma", "suprasellar mass"],
    "colloid_cyst": ["colloid cyst"],
    "arachnoid_cyst": ["arachnoid cyst"],
    "calcified_lesion": ["calcified lesion", "calcified granuloma", "calcified nodule"],
    "intracranial_lipoma": ["intracranial lipoma", "interhemispheric lipoma"],
    "midline_shift": ["midline shift", "rightward midline shift", "leftward midline shift"],
    "mass_effect": ["mass effect", "local mass effect"],
    "subfalcine_herniation": ["subfalcine herniation", "subfalcine herniation of the cingulate gyrus"],
    "transtentorial_herniation": ["transtentorial herniation", "uncal herniation"],
    "tonsillar_herniation": ["tonsillar herniation", "cerebellar tonsillar herniation"],
    "hydrocephalus": ["hydrocephalus", "obstructive hydrocephalus", "ventriculomegaly"],
    "entrapped_ventricle": ["entrapped ventricle", "trapped temporal horn"],
    "effaced_basal_cisterns": ["effacement of the basal cisterns", "effaced basal cisterns"],
    "sulcal_effacement": ["sulcal effacement", "effacement of the sulci"],
    "ventricular_effacement": ["effacement of the lateral ventricle", "ventricular effacement"],
    "craniotomy": ["craniotomy", "postoperative changes of craniotomy"],
    "craniectomy": ["craniectomy", "decompressive craniectomy"],
    "burr_hole": ["burr hole", "burr holes"],
    "ventricular_shunt": ["ventricular shunt", "VP shunt", "ventriculoperitoneal shunt catheter"],
    "cranioplasty": ["cranioplasty"],
    "cerebral_atrophy": ["cerebral atrophy", "generalised volume loss", "age-related volume loss"],
    "cerebellar_atrophy": ["cerebellar atrophy", "cerebellar volume loss"],
    "small_vessel_disease": ["chronic small vessel ischemic change", "periventricular white matter hypodensities",
                             "small vessel disease", "chronic microvascular ischaemic change"],
    "encephalomalacia": ["encephalomalacia", "encephalomalacia from prior infarct"],
    "chronic_lacunes": ["chronic lacunes", "old lacunar infarcts", "lacunes"],
    "ex_vacuo_dilatation": ["ex vacuo dilatation of the adjacent ventricle", "ex vacuo dilatation"],
    "basal_ganglia_calcification": ["basal ganglia calcification", "calcification of the basal ganglia"],
    "vascular_calcification": ["vascular calcification", "atherosclerotic calcification of the carotid siphons"],
    "falx_calcification": ["falx calcification", "calcification of the falx"],
    "paranasal_sinus_disease": ["paranasal sinus mucosal thickening", "sinusitis", "mucosal thickening in the "
                                "maxillary sinuses"],
    "mastoid_opacification": ["mastoid opacification", "opacification of the mastoid air cells"],
    "hyperostosis_frontalis_interna": ["hyperostosis frontalis interna"],
    "empty_sella": ["partially empty sella", "empty sella"],
    "calvarial_thickening": ["calvarial thickening", "diffuse thickening of the calvarium"],
}
WRITTEN = [k for k in FINDING_KEYS if k not in PARENTS]
assert set(FORMS) == set(WRITTEN), sorted(set(WRITTEN) ^ set(FORMS))

_SIDES = ["left", "right", "bilateral", ""]
_SIZES = ["small", "moderate", "large", "", "tiny", "mild"]
_POSITIVE = ["There is a {size} {side_f}.", "{Side_f}.", "{F} is noted.", "{F} is present.",
             "Findings are consistent with {f}.", "There is {f}.", "{Side_f} is seen."]
_HEDGED = ["Possible {f}.", "{F} cannot be excluded.", "Findings may represent {f}.", "Questionable {f}.",
           "Subtle changes, {f} not excluded."]
_NEG_ONE = ["No {f}.", "There is no {f}.", "No evidence of {f}.", "Negative for {f}.", "{F} is not seen."]
# Normal statements a report makes about a negative finding (finding keys that must all be 0 for the statement).
_NORMALS = [
    ("No intracranial hemorrhage.", ["intracranial_hemorrhage"]),
    ("No acute intracranial haemorrhage.", ["intracranial_hemorrhage"]),
    ("No midline shift.", ["midline_shift"]),
    ("No hydrocephalus.", ["hydrocephalus"]),
    ("The ventricles are normal in size.", ["hydrocephalus", "ex_vacuo_dilatation"]),
    ("No mass effect.", ["mass_effect"]),
    ("No skull fracture.", ["calvarial_fracture"]),
    ("No extra-axial collection.", ["epidural_hematoma", "subdural_hematoma"]),
    ("The basal cisterns are patent.", ["effaced_basal_cisterns"]),
    ("The paranasal sinuses are clear.", ["paranasal_sinus_disease", "hemosinus"]),
    ("The mastoid air cells are clear.", ["mastoid_opacification"]),
    ("Grey-white matter differentiation is preserved.",
     ["mca_territory_infarct", "aca_territory_infarct", "pca_territory_infarct", "watershed_infarct"]),
    ("No pneumocephalus.", ["pneumocephalus"]),
]
_HISTORY = ["fall, headache", "evaluate for hemorrhage", "? stroke", "trauma, rule out fracture", "confusion",
            "known mass, follow-up", "dizziness", "seizure", "head injury, ? bleed", "weakness"]
_TYPOS = {"hemorrhage": "hemorrage", "there": "thre", "noted": "notde", "present": "presnet",
          "subdural": "subdual", "fracture": "fractrue", "consistent": "consistant"}


def _cap(s: str) -> str:
    s = " ".join(s.split())
    return s[:1].upper() + s[1:]


def _positive_sentence(key: str, rng: np.random.Generator, hedge: bool) -> str:
    f = FORMS[key][int(rng.integers(len(FORMS[key])))]
    templates = _HEDGED if hedge else _POSITIVE
    template = templates[int(rng.integers(len(templates)))]
    lateral = CATEGORY_OF[key] in ("hemorrhage", "infarction", "trauma", "mass")
    side = _SIDES[int(rng.integers(len(_SIDES)))] if lateral else ""
    size = _SIZES[int(rng.integers(len(_SIZES)))]
    side_f = f"{side} {f}".strip()
    return _cap(template.format(f=f, F=_cap(f), side_f=side_f, Side_f=_cap(side_f), size=size))


def _typo(sentence: str, rng: np.random.Generator) -> str:
    words = sentence.split(" ")
    cands = [i for i, w in enumerate(words) if w.lower().strip(".,") in _TYPOS]
    if not cands:
        return sentence
    i = cands[int(rng.integers(len(cands)))]
    w = words[i]
    core = w.strip(".,")
    words[i] = w.replace(core, _TYPOS[core.lower()] if core.islower() else _cap(_TYPOS[core.lower()]))
    return " ".join(words)


def write_report(labels: dict[str, int], rng: np.random.Generator, hedge_rate: float = 0.05,
                 typo_rate: float = 0.03) -> str:
    """A report for one subject whose true labels are ``labels`` (finding key -> 0 / 1).

    Positive findings are each mentioned (a ``hedge_rate`` share hedged, which a labeller should call uncertain);
    a random set of true normals is stated; ``typo_rate`` of sentences carry a misspelling."""
    pos = [k for k in WRITTEN if labels.get(k)]
    findings, hedged = [], set()
    for k in rng.permutation(pos):
        if rng.random() < hedge_rate:
            hedged.add(str(k))
        findings.append(_positive_sentence(str(k), rng, hedge=str(k) in hedged))
    say = lambda k: f"possible {FORMS[k][0]}" if k in hedged else FORMS[k][0]  # noqa: E731 - the impression agrees
    normals = [s for s, keys in _NORMALS if all(not labels.get(k) for k in keys)]
    chosen = [normals[i] for i in sorted(rng.choice(len(normals), size=min(len(normals), int(rng.integers(1, 5))),
                                                    replace=False))] if normals else []
    neg_keys = [k for k in ("mass_effect", "midline_shift", "hydrocephalus") if not labels.get(k)]
    if len(neg_keys) >= 2 and rng.random() < 0.4:                  # a negated list
        names = [{"mass_effect": "mass effect", "midline_shift": "midline shift", "hydrocephalus": "hydrocephalus"}[k]
                 for k in neg_keys]
        chosen.append(f"No {', '.join(names[:-1])} or {names[-1]}.")
    findings.extend(chosen)
    prior = ""
    if rng.random() < 0.25:                                          # a comparison with a prior study
        gone = [k for k in ("subarachnoid_hemorrhage", "intraventricular_hemorrhage", "pneumocephalus")
                if not labels.get(k)]
        if gone and rng.random() < 0.5:
            k = gone[int(rng.integers(len(gone)))]
            findings.append(f"Interval resolution of the previously seen {FORMS[k][0]}.")
            prior = f"COMPARISON: Prior CT, which showed {FORMS[k][0]}.\n"
        elif pos:
            k = pos[int(rng.integers(len(pos)))]
            findings.append(f"The {FORMS[k][0]} is unchanged compared with the prior study.")
            prior = "COMPARISON: Prior CT head.\n"
    findings = [_typo(s, rng) if rng.random() < typo_rate else s for s in findings]
    acute = [k for k in pos if CATEGORY_OF[k] in ("hemorrhage", "infarction", "trauma")
             or k in ("mass_effect", "midline_shift")]
    if not acute and not labels.get("intracranial_hemorrhage") and rng.random() < 0.7:
        impression = "No acute intracranial abnormality."
        if pos:
            impression += " " + _cap("; ".join(say(k) for k in pos[:3])) + "."
    elif pos:
        top = (acute or pos)[:3]
        if rng.random() < 0.5:
            impression = " ".join(f"{i}. {_cap(say(k))}." for i, k in enumerate(top, 1))
        else:
            impression = _cap("; ".join(say(k) for k in top)) + "."
    else:
        impression = "Normal CT head."
    history = f"CLINICAL HISTORY: {_HISTORY[int(rng.integers(len(_HISTORY)))]}.\n" if rng.random() < 0.6 else ""
    header = "FINDINGS: " if rng.random() < 0.7 else "Findings:\n"
    return f"{history}{prior}{header}{' '.join(findings)}\nIMPRESSION: {impression}"
