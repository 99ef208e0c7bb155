"""The report labeller on sentences written for each rule it must get right (issue 23 item 2).

Each case: a report (or sentence) and the labels it must produce; findings not named are not checked, except where
``absent`` lists findings that must stay unlabelled (None).
"""
from __future__ import annotations

import pytest

from molre_lib.data.taxonomy import FINDING_KEYS, PARENTS
from molre_lib.reports.labeller import label_report
from molre_lib.reports.phrases import compile_phrase, load_phrases, parse_phrases


def _labels(text: str) -> dict:
    return label_report(text).labels


NEGATION = [
    ("No intracranial hemorrhage.", {"intracranial_hemorrhage": 0}),
    ("There is no midline shift.", {"midline_shift": 0}),
    ("Large left MCA territory infarct without hemorrhagic transformation.",
     {"mca_territory_infarct": 1, "hemorrhagic_transformation": 0}),
    ("Negative for acute subdural hematoma.", {"acute_subdural_hematoma": 0}),
    ("No evidence of skull fracture.", {"calvarial_fracture": 0}),
    ("No hemorrhage, mass effect, or midline shift.",
     {"intracranial_hemorrhage": 0, "mass_effect": 0, "midline_shift": 0}),
    ("No hydrocephalus, extra-axial collection, pneumocephalus or herniation.",
     {"hydrocephalus": 0, "pneumocephalus": 0, "epidural_hematoma": 0, "subdural_hematoma": 0,
      "transtentorial_herniation": 0}),
    ("Hydrocephalus is not seen.", {"hydrocephalus": 0}),
    ("Midline shift is absent.", {"midline_shift": 0}),
    ("No SAH but there is a small right frontal contusion.",
     {"subarachnoid_hemorrhage": 0, "hemorrhagic_contusion": 1}),
    ("No change in the small left frontal meningioma.", {"extra_axial_mass": 1}),
]

UNCERTAINTY = [
    ("Possible small subarachnoid hemorrhage in the left sylvian fissure.", {"subarachnoid_hemorrhage": -1}),
    ("Hypodensity in the right frontal lobe may represent a contusion.", {"hemorrhagic_contusion": -1}),
    ("Small subdural hematoma cannot be excluded.", {"subdural_hematoma": -1}),
    ("A small lacunar infarct is not excluded.", {"lacunar_infarct": -1}),
    ("Hyperdensity in the basal ganglia: hemorrhage versus calcification.", {"intracranial_hemorrhage": -1}),
    ("Contusion versus small intraparenchymal hemorrhage.",
     {"hemorrhagic_contusion": -1, "intraparenchymal_hemorrhage": -1}),
    ("Findings are suspicious for dural venous sinus thrombosis.", {"dural_venous_sinus_thrombosis": -1}),
]

RESOLVED_PRIOR = [
    ("Interval resolution of the subarachnoid hemorrhage.", {"subarachnoid_hemorrhage": 0}),
    ("The previously seen intraventricular hemorrhage has resolved.", {"intraventricular_hemorrhage": 0}),
    ("Encephalomalacia in the left frontal lobe from prior infarct.", {"encephalomalacia": 1},
     ["mca_territory_infarct", "aca_territory_infarct"]),
    ("Old right PCA territory infarct.", {}, ["pca_territory_infarct"]),
    ("History of prior subdural hematoma; none is seen now.", {}, ["acute_subdural_hematoma"]),
    ("Status post right craniotomy.", {"craniotomy": 1}),
]

ACUTE_CHRONIC = [
    ("Chronic lacune in the left basal ganglia.", {"chronic_lacunes": 1}, ["lacunar_infarct"]),
    ("Old lacunar infarct in the right thalamus.", {"chronic_lacunes": 1}, ["lacunar_infarct"]),
    ("Acute lacunar infarct in the right internal capsule.", {"lacunar_infarct": 1}, ["chronic_lacunes"]),
    ("Chronic left subdural hematoma measuring 9 mm.",
     {"chronic_subdural_hematoma": 1, "subdural_hematoma": 1, "intracranial_hemorrhage": 1},
     ["acute_subdural_hematoma"]),
    ("Acute on chronic right subdural hematoma.",
     {"acute_subdural_hematoma": 1, "chronic_subdural_hematoma": 1, "subdural_hematoma": 1}),
    ("Subacute bilateral subdural collections.", {"subacute_subdural_hematoma": 1, "subdural_hematoma": 1}),
]

PARENTS_FOLLOW = [
    ("Acute SDH along the left convexity.",
     {"acute_subdural_hematoma": 1, "subdural_hematoma": 1, "intracranial_hemorrhage": 1}),
    ("Small left parietal epidural hematoma.", {"epidural_hematoma": 1, "intracranial_hemorrhage": 1}),
    ("Possible small IVH.", {"intraventricular_hemorrhage": -1, "intracranial_hemorrhage": -1}),
    ("No intracranial hemorrhage.", {k: 0 for k in PARENTS["intracranial_hemorrhage"] + ["subdural_hematoma"]}),
    ("No acute hemorrhage. Small chronic subdural hematoma.",
     {"intracranial_hemorrhage": 1, "chronic_subdural_hematoma": 1, "acute_subdural_hematoma": 0,
      "subarachnoid_hemorrhage": 0}),
]

SYNONYMS = [
    ("Left SDH.", {"subdural_hematoma": 1}),
    ("Diffuse SAH.", {"subarachnoid_hemorrhage": 1}),
    ("Small IVH layering in the occipital horns.", {"intraventricular_hemorrhage": 1}),
    ("Right basal ganglia IPH.", {"intraparenchymal_hemorrhage": 1}),
    ("Temporal EDH.", {"epidural_hematoma": 1}),
    ("No intracranial haemorrhage.", {"intracranial_hemorrhage": 0}),
    ("Right frontal subdural haematoma.", {"subdural_hematoma": 1}),
    ("Left parietal extradural haematoma.", {"epidural_hematoma": 1}),
    ("Right frontal approach VP shunt in situ.", {"ventricular_shunt": 1}),
    ("Scattered lacunes in the basal ganglia.", {"chronic_lacunes": 1}, ["lacunar_infarct"]),
    ("Vasogenic oedema around the mass.", {"vasogenic_edema": 1}),
    ("Periventricular white matter hypodensities consistent with chronic small vessel ischaemic change.",
     {"small_vessel_disease": 1}),
]

SECTIONS = [
    ("CLINICAL HISTORY: Fall, evaluate for hemorrhage.\nFINDINGS: Normal.", {}, ["intracranial_hemorrhage"]),
    ("INDICATION: ? SAH\nFINDINGS: No hydrocephalus.", {"hydrocephalus": 0}, ["subarachnoid_hemorrhage"]),
    ("COMPARISON: CT 3/1/2024 which showed a left subdural hematoma.\nFINDINGS: No hydrocephalus.",
     {"hydrocephalus": 0}, ["subdural_hematoma"]),
    ("FINDINGS: Possible small SAH.\nIMPRESSION: No subarachnoid hemorrhage.", {"subarachnoid_hemorrhage": 0}),
    ("FINDINGS: No midline shift.\nIMPRESSION: 3 mm rightward midline shift.", {"midline_shift": 1}),
    ("FINDINGS: Small left SDH. IMPRESSION: Small left subdural hematoma; no midline shift.",
     {"subdural_hematoma": 1, "midline_shift": 0}),
    ("Findings: no hydrocephalus. Impression: hydrocephalus cannot be excluded.", {"hydrocephalus": -1}),
    ("TECHNIQUE: Axial CT without contrast. Findings: Acute SAH.", {"subarachnoid_hemorrhage": 1}),
]

HEADERS_SAME_LINE_AND_CASE = [
    ("IMPRESSION: No acute intracranial hemorrhage.", {"intracranial_hemorrhage": 0}),
    ("FINDINGS: No SDH.", {"subdural_hematoma": 0}),
    ("impression: NO MIDLINE SHIFT.", {"midline_shift": 0}),
    ("FINDINGS:\nACUTE RIGHT SUBDURAL HEMATOMA.", {"acute_subdural_hematoma": 1}),
    ("Findings - no hydrocephalus.", {"hydrocephalus": 0}),
    ("no Hemorrhage.", {"intracranial_hemorrhage": 0}),
]


def _cases(cases):
    for case in cases:
        text, expect, *rest = case
        yield pytest.param(text, expect, rest[0] if rest else [], id=text[:50])


@pytest.mark.parametrize("text,expect,absent", [
    *_cases(NEGATION), *_cases(UNCERTAINTY), *_cases(RESOLVED_PRIOR), *_cases(ACUTE_CHRONIC),
    *_cases(PARENTS_FOLLOW), *_cases(SYNONYMS), *_cases(SECTIONS), *_cases(HEADERS_SAME_LINE_AND_CASE)])
def test_rules(text, expect, absent):
    labels = _labels(text)
    got = {k: labels[k] for k in expect}
    assert got == expect, [e for e in label_report(text).evidence if e["finding"] in expect]
    assert {k: labels[k] for k in absent} == {k: None for k in absent}


def test_evidence_names_sentence_span_section_and_trigger():
    text = "INDICATION: headache.\nFINDINGS: No hydrocephalus. Possible SAH.\nIMPRESSION: Possible SAH."
    result = label_report(text, report_id="R7")
    rows = [e for e in result.evidence if e["finding"] == "subarachnoid_hemorrhage"]
    assert len(rows) == 2 and sum(r["used"] for r in rows) == 1
    used = next(r for r in rows if r["used"])
    assert used["section"] == "impression" and used["rule"] == "uncertain" and used["trigger"] == "Possible"
    assert text[used["start"]:used["end"]] == "SAH" and used["report_id"] == "R7"
    neg = next(e for e in result.evidence if e["finding"] == "hydrocephalus")
    assert (neg["value"], neg["rule"], neg["trigger"], neg["sentence"]) == (0, "negated", "No", "No hydrocephalus.")


def test_historical_mention_is_recorded_not_dropped_silently():
    ev = label_report("Old left MCA territory infarct.").evidence
    assert [(e["finding"], e["value"], e["used"]) for e in ev] == [("mca_territory_infarct", "", 0)]
    assert ev[0]["rule"].startswith(("historical", "chronic"))


def test_labels_cover_every_finding_in_taxonomy_order():
    assert list(_labels("Normal.")) == FINDING_KEYS
    assert set(load_phrases().findings) == set(FINDING_KEYS)


def test_phrase_syntax():
    rx = compile_phrase("mass effect")
    assert rx.search("mild MASS-EFFECT") and rx.search("mass  effects") and not rx.search("massive effect")
    assert compile_phrase("calcif*").search("calcifications")
    assert compile_phrase("hemorrhage", {"hem": "ha?em"}).search("haemorrhage")
    assert compile_phrase("re:\\bsdh\\b").search("small SDH")


def test_a_site_adds_a_phrase_without_code(tmp_path):
    import yaml

    from molre_lib.reports.labeller import Labeller

    data = yaml.safe_load((load_phrases.__globals__["resources"].files("molre_lib")
                           .joinpath("resources/report_phrases.yaml")).read_text(encoding="utf-8"))
    text = "Blooming cerebral microbleeds."
    assert Labeller(parse_phrases(data)).label(text).labels["diffuse_axonal_injury"] is None
    data["findings"]["diffuse_axonal_injury"]["match"].append("cerebral microbleed")
    path = tmp_path / "site_phrases.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert Labeller(load_phrases(path)).label(text).labels["diffuse_axonal_injury"] == 1


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["findings"].update(not_a_finding={"match": ["x"]}), "findings.not_a_finding: not a finding key"),
    (lambda d: d["findings"]["hydrocephalus"].update(synonyms=["x"]), "findings.hydrocephalus: unknown key"),
    (lambda d: d["modifiers"]["negated"]["before"].append(False), "quote it"),
    (lambda d: d["findings"].pop("hydrocephalus"), "missing"),
    (lambda d: d.update(extra=1), "top level: unknown key"),
])
def test_phrase_file_errors_name_the_key(edit, message):
    import yaml

    from molre_lib.reports import phrases as ph

    data = yaml.safe_load(ph.resources.files("molre_lib").joinpath("resources/report_phrases.yaml")
                          .read_text(encoding="utf-8"))
    edit(data)
    with pytest.raises(ValueError, match=message) as err:
        parse_phrases(data, "site.yaml")
    assert str(err.value).startswith("site.yaml: ") and "\n" not in str(err.value)
