"""The 75-finding taxonomy: one source of truth, six categories, stable keys."""
import csv
from pathlib import Path

from molre_lib.data import taxonomy as tx

REPO = Path(__file__).resolve().parents[1]


def test_75_findings_in_six_categories_in_file_order():
    rows = list(csv.DictReader(open(REPO / "data_manifests" / "findings.csv")))
    assert [r["key"] for r in rows] == tx.FINDING_KEYS
    assert len(tx.FINDINGS) == 75 and len(set(tx.FINDING_KEYS)) == 75
    assert tx.CATEGORIES == ["hemorrhage", "infarction", "trauma", "mass", "structural", "chronic"]
    counts = {c: len(tx.keys_in(c)) for c in tx.CATEGORIES}
    assert counts == {"hemorrhage": 15, "infarction": 9, "trauma": 11, "mass": 11, "structural": 15, "chronic": 14}
    assert all(k == k.lower() and " " not in k for k in tx.FINDING_KEYS)
    assert all(f.name and f.description for f in tx.FINDINGS)


def test_issue_named_findings_present_and_parents_consistent():
    for key in ("epidural_hematoma", "acute_subdural_hematoma", "subacute_subdural_hematoma",
                "chronic_subdural_hematoma", "subarachnoid_hemorrhage", "intraparenchymal_hemorrhage",
                "intraventricular_hemorrhage", "hemorrhagic_contusion", "hemorrhagic_transformation",
                "calvarial_fracture", "skull_base_fracture", "facial_fracture", "orbital_fracture", "scalp_hematoma",
                "pneumocephalus", "vasogenic_edema", "calcified_lesion", "midline_shift", "mass_effect",
                "hydrocephalus", "effaced_basal_cisterns", "craniotomy", "ventricular_shunt", "cerebral_atrophy",
                "small_vessel_disease", "encephalomalacia", "paranasal_sinus_disease", "mastoid_opacification"):
        assert key in tx.CATEGORY_OF, key
    assert set(tx.PARENTS["subdural_hematoma"]) <= set(tx.PARENTS["intracranial_hemorrhage"])
    assert all(tx.CATEGORY_OF[k] == "hemorrhage" for k in tx.PARENTS["intracranial_hemorrhage"])
    assert tx.category_index()[tx.INDEX_OF["craniotomy"]] == tx.CATEGORIES.index("structural")
