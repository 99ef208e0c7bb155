"""``manifest_from_reports`` (00_data's ``LABELS_FROM = "reports"``): labels from reports, the rest of the manifest kept."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from molre_lib.data.taxonomy import FINDING_KEYS
from molre_lib.reports.manifest import manifest_from_reports

REPORTS = {
    "s1": "IMPRESSION: Acute left subdural hematoma. No skull fracture.",
    "s2": "IMPRESSION: Possible small subarachnoid hemorrhage.",
    "s3": "FINDINGS: Chronic lacune in the right thalamus.",
}


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def _inputs(tmp_path: Path, scans=("s1", "s2", "s3"), reports=REPORTS) -> tuple[Path, Path]:
    header = ["scan_id", "path", "split", *FINDING_KEYS]
    rows = [[s, f"scans/{s}.nii.gz", "train" if i else "test", *(["1"] * len(FINDING_KEYS))]
            for i, s in enumerate(scans)]
    manifest = _write(tmp_path / "manifest.csv", [header, *rows])
    texts = _write(tmp_path / "reports.csv", [["report_id", "report"], *[[k, v] for k, v in reports.items()]])
    return manifest, texts


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("scan_id")


def test_labels_come_from_the_reports_and_the_rest_is_kept(tmp_path):
    manifest, reports = _inputs(tmp_path)
    out = manifest_from_reports(manifest, reports, tmp_path / "manifest_reports.csv")
    m = _read(out)
    assert list(m.columns) == ["path", "split", *FINDING_KEYS]                # same columns, same order
    assert m.loc["s1", "path"] == "scans/s1.nii.gz" and m.loc["s1", "split"] == "test"
    assert m.loc["s1", ["subdural_hematoma", "acute_subdural_hematoma", "intracranial_hemorrhage"]].tolist() == \
        ["1", "1", "1"]
    assert m.loc["s1", "calvarial_fracture"] == "0"
    assert m.loc["s2", "subarachnoid_hemorrhage"] == "1"                      # uncertain -> positive (default)
    assert m.loc["s3", "chronic_lacunes"] == "1" and m.loc["s3", "lacunar_infarct"] == "0"  # unmentioned -> 0
    assert set(m[FINDING_KEYS].to_numpy().ravel()) <= {"0", "1"}
    # the labeller's outputs beside it (uncertain mapped as asked), the evidence keeps the hedge
    labels = pd.read_csv(tmp_path / "manifest_reports.labels.csv", dtype=str, keep_default_na=False)
    assert labels.set_index("report_id").loc["s2", "subarachnoid_hemorrhage"] == "1"
    evidence = pd.read_csv(tmp_path / "manifest_reports.labels.evidence.csv", dtype=str, keep_default_na=False)
    hedge = evidence[(evidence["report_id"] == "s2") & (evidence["finding"] == "subarachnoid_hemorrhage")]
    assert hedge["value"].tolist() == ["-1"] and hedge["rule"].tolist() == ["uncertain"]


@pytest.mark.parametrize("uncertain,unmentioned,sah,lacunar", [
    ("negative", "negative", "0", "0"),
    ("unknown", "unknown", "", ""),
    ("positive", "unknown", "1", ""),
])
def test_uncertain_and_unmentioned_mapping(tmp_path, uncertain, unmentioned, sah, lacunar):
    manifest, reports = _inputs(tmp_path)
    m = _read(manifest_from_reports(manifest, reports, tmp_path / "m.csv", uncertain, unmentioned))
    assert m.loc["s2", "subarachnoid_hemorrhage"] == sah
    assert m.loc["s3", "lacunar_infarct"] == lacunar


def test_a_scan_without_a_report_is_an_error_naming_row_and_column(tmp_path):
    manifest, reports = _inputs(tmp_path, scans=("s1", "s2", "s3", "s4"))
    with pytest.raises(ValueError, match=r"manifest.csv: row 4, column 'scan_id': no report for 's4'"):
        manifest_from_reports(manifest, reports, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.labels.csv").exists()


def test_a_report_without_a_scan_is_an_error(tmp_path):
    manifest, reports = _inputs(tmp_path, scans=("s1", "s2"))
    with pytest.raises(ValueError, match=r"reports.csv: report 's3' has no scan in .*manifest.csv"):
        manifest_from_reports(manifest, reports, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_bad_mapping_names_are_errors(tmp_path):
    manifest, reports = _inputs(tmp_path)
    with pytest.raises(ValueError, match="uncertain must be one of"):
        manifest_from_reports(manifest, reports, tmp_path / "m.csv", uncertain="maybe")
    with pytest.raises(ValueError, match="unmentioned must be one of"):
        manifest_from_reports(manifest, reports, tmp_path / "m.csv", unmentioned="positive")
