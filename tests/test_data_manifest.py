"""Every manifest mistake a user can make is reported with its 1-based data row and column."""
import csv
import os

import numpy as np
import pytest

from molre_lib.data.manifest import ManifestError, labels_and_mask, read_manifest, validate_manifest
from molre_lib.data.synth import synthesize
from molre_lib.data.taxonomy import FINDING_KEYS


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    manifest = synthesize(root, 12, shape=(6, 16, 16), seed=1, workers=1, unknown_fraction=0.1)
    rows = list(csv.DictReader(open(manifest)))
    return root, rows


def _write(path, rows, header=None):
    header = header or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _errors(path, **kw):
    return [p for p in validate_manifest(path, **kw) if p.level == "error"]


def _has(errors, row, column, text):
    return any(e.row == row and e.column == column and text in e.message for e in errors), errors


def test_synth_manifest_is_valid_and_labels_parse(good):
    root, rows = good
    problems = validate_manifest(root / "manifest.csv")
    assert not [p for p in problems if p.level == "error"], problems
    df = read_manifest(root / "manifest.csv")
    labels, mask = labels_and_mask(df)
    assert labels.shape == mask.shape == (12, 75) and labels.dtype == np.float32
    assert 0.0 < mask.mean() < 1.0 and (labels <= mask).all()        # unknowns masked, never positive
    assert list(df.columns[:4]) == ["scan_id", "patient_id", "split", "path"] and "meta_site" in df.columns


def test_every_case_is_rejected_with_row_and_column(good, tmp_path):
    root, rows = good
    rows = [dict(r) for r in rows]
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    rows[1]["scan_id"] = rows[0]["scan_id"]                            # duplicate scan_id -> row 2
    rows[2]["path"] = "scans/missing.nii.gz"                           # missing file -> row 3
    rows[3]["path"] = "../../etc/passwd"                               # escapes root -> row 4
    rows[4]["split"] = "tran"                                          # unknown split -> row 5
    rows[5][FINDING_KEYS[3]] = "yes"                                   # bad label -> row 6
    rows[6]["path"] = ""                                               # missing path -> row 7
    (root / "scans" / "corrupt.nii.gz").write_bytes(b"not a nifti")
    rows[7]["path"] = "scans/corrupt.nii.gz"                           # unreadable -> row 8
    # one patient in two splits: give row 9 the patient of the first train row but another split
    rows[8]["patient_id"] = rows[train[0]]["patient_id"]
    rows[8]["split"] = "val" if rows[train[0]]["split"] != "val" else "test"
    for r in rows:
        r["hemorrhage_epidural"] = "0"                                 # finding column not in taxonomy (1/0)
        r["epidural_hematom"] = ""                                     # typo of a taxonomy key
    path = _write(root / "bad.csv", rows)
    errs = _errors(path)
    for row, col, text in [(2, "scan_id", "duplicate scan_id"), (3, "path", "does not exist"),
                           (4, "path", "escapes the root"), (5, "split", "unknown split 'tran'"),
                           (6, FINDING_KEYS[3], "label must be 1, 0 or empty"), (7, "path", "missing path"),
                           (8, "path", "unreadable"), (9, "split", "splits must be by patient"),
                           (None, "hemorrhage_epidural", "not a taxonomy finding key"),
                           (None, "epidural_hematom", "did you mean 'epidural_hematoma'")]:
        ok, _ = _has(errs, row, col, text)
        assert ok, (row, col, text, [str(e) for e in errs])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert "row 3 (line 4), column 'path'" in str(info.value)         # every problem, with row and column
    assert str(info.value).count("\n") == len(errs)


def test_missing_columns_and_empty_split(good, tmp_path):
    root, rows = good
    header = [h for h in rows[0] if h != "patient_id"]
    errs = _errors(_write(root / "nocol.csv", rows, header))
    assert _has(errs, None, "patient_id", "missing required column")[0]
    only_train = [dict(r, split="train") for r in rows]
    errs = _errors(_write(root / "onesplit.csv", only_train))
    assert _has(errs, None, "split", "split 'val' has no rows")[0]
    assert _has(errs, None, "split", "split 'test' has no rows")[0]
    assert not _errors(root / "onesplit.csv", required_splits=("train",))


def test_warnings_do_not_invalidate(good):
    root, rows = good
    problems = validate_manifest(root / "manifest.csv")
    warnings = [p for p in problems if p.level == "warning"]
    assert any("have no positive scan" in p.message for p in warnings)
    assert all(p.level in ("error", "warning") for p in problems)


def test_meta_columns_kept_and_missing_finding_columns_unknown(good):
    root, rows = good
    header = ["scan_id", "patient_id", "split", "path", "epidural_hematoma", "meta_contrast"]
    path = _write(root / "few.csv", [dict(r, meta_contrast="1") for r in rows], header)
    problems = validate_manifest(path)
    assert not [p for p in problems if p.level == "error"]
    assert any("no column" in p.message for p in problems)
    df = read_manifest(path)
    labels, mask = labels_and_mask(df)
    assert mask[:, FINDING_KEYS.index("epidural_hematoma")].all() and mask.sum() == len(rows)
    assert "meta_contrast" in df.columns


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_permissions(good, tmp_path):
    root, rows = good
    target = root / rows[0]["path"]
    target.chmod(0)
    try:
        assert _has(_errors(root / "manifest.csv"), 1, "path", "not readable")[0]
    finally:
        target.chmod(0o644)
