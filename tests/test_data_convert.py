"""Converters on mini trees written in the exact RSNA-ICH 2019 and CQ500 layouts."""
import csv

import numpy as np
import pydicom
import pytest

from molre_lib.data.converters import CQ500_MAP, RSNA_SUBTYPES, convert_cq500, convert_rsna_ich
from molre_lib.data.io import load_volume
from molre_lib.data.manifest import labels_and_mask, read_manifest, validate_manifest
from molre_lib.data.phantom import PhantomConfig, make_subject
from molre_lib.data.writers import write_dicom_series

CFG = PhantomConfig(shape=(5, 24, 24), pv_subsamples=1)


def _series(folder, seed, patient, thickness=None, kernel="STANDARD", description="MoLRE phantom head CT"):
    s = make_subject(seed, CFG)
    files = write_dicom_series(folder, s.hu, s.spacing, s.origin, f"uid{seed}", patient, slice_thickness=thickness,
                               kernel=kernel, description=description)
    return s, files


@pytest.fixture()
def rsna(tmp_path):
    src = tmp_path / "rsna"
    dcm = src / "stage_2_train"
    dcm.mkdir(parents=True)
    labels, expected = [], {}
    rng = np.random.default_rng(0)
    for n, (seed, pattern) in enumerate([(1, "epidural"), (2, "negative"), (3, "unlabelled")]):
        s, files = _series(tmp_path / f"tmp{n}", seed, f"{n:04d}")
        expected[seed] = s
        order = rng.permutation(len(files))                          # RSNA file names carry no order
        for i, f in enumerate(files):
            sop = f"ID_{seed:02d}{order[i]:03d}abc"
            ds = pydicom.dcmread(str(f))
            ds.PatientID = f"ID_pat{n}"
            ds.save_as(str(dcm / f"{sop}.dcm"))
            if pattern == "unlabelled" and i == 0:
                continue
            for sub in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"):
                pos = pattern == "epidural" and i == 2 and sub in ("epidural", "any")
                labels.append({"ID": f"{sop}_{sub}", "Label": int(pos)})
    with open(src / "stage_2_train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["ID", "Label"], lineterminator="\n")
        w.writeheader()
        w.writerows(labels)
    return src, expected


def test_rsna_ich_groups_series_sorts_slices_and_takes_any_slice(tmp_path, rsna):
    src, expected = rsna
    manifest = convert_rsna_ich(src, tmp_path / "out" / "manifest.csv", split="test")
    assert not [p for p in validate_manifest(manifest, required_splits=("test",)) if p.level == "error"]
    df = read_manifest(manifest, required_splits=("test",))
    assert len(df) == 3 and set(df["patient_id"]) == {"ID_pat0", "ID_pat1", "ID_pat2"}
    labels, mask = labels_and_mask(df)
    by_patient = {p: i for i, p in enumerate(df["patient_id"])}
    from molre_lib.data.taxonomy import INDEX_OF

    assert set(RSNA_SUBTYPES.values()) <= set(INDEX_OF)

    e = by_patient["ID_pat0"]
    assert labels[e, INDEX_OF["epidural_hematoma"]] == 1 and labels[e, INDEX_OF["intracranial_hemorrhage"]] == 1
    assert labels[e, INDEX_OF["subdural_hematoma"]] == 0 and mask[e, INDEX_OF["subdural_hematoma"]] == 1
    neg = by_patient["ID_pat1"]
    assert mask[neg, INDEX_OF["hemorrhagic_contusion"]] == 1 and labels[neg].sum() == 0   # all blood ruled out
    unl = by_patient["ID_pat2"]
    assert mask[unl, INDEX_OF["epidural_hematoma"]] == 0                                  # one slice unlabelled
    assert mask[e, INDEX_OF["hydrocephalus"]] == 0                                        # not in RSNA: unknown
    for i, row in df.iterrows():                                       # slices sorted by position: same volume
        seed = int(row["patient_id"][-1]) + 1
        np.testing.assert_array_equal(load_volume(manifest.parent / row["path"]).hu,
                                      np.clip(np.rint(expected[seed].hu), -1024, 3071))


def test_rsna_bad_label_file_names_row(tmp_path, rsna):
    src, _ = rsna
    with open(src / "stage_2_train.csv", "a") as f:
        f.write("ID_zz_banana,1\n")
    with pytest.raises(ValueError, match=r"stage_2_train.csv: row \d+: cannot parse ID"):
        convert_rsna_ich(src, tmp_path / "m.csv")


def _cq500_tree(tmp_path):
    src = tmp_path / "cq500"
    fields = ["name", "Category"] + [f"R{r}:{k}" for r in (1, 2, 3) for k in
                                     ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "BleedLocation-Left",
                                      "BleedLocation-Right", "ChronicBleed", "Fracture", "CalvarialFracture",
                                      "OtherFracture", "MassEffect", "MidlineShift")]
    rows = []
    for n, (ich, edh, frac) in enumerate([((1, 1, 0), (1, 0, 1), (0, 0, 0)), ((0, 0, 0), (0, 0, 0), (1, 1, 1))]):
        row = {f: 0 for f in fields}
        row.update({"name": f"CQ500-CT-{n}", "Category": "B1"})
        for r in range(3):
            row[f"R{r + 1}:ICH"], row[f"R{r + 1}:EDH"] = ich[r], edh[r]
            row[f"R{r + 1}:Fracture"] = row[f"R{r + 1}:CalvarialFracture"] = frac[r]
        rows.append(row)
    src.mkdir()
    with open(src / "reads.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    # patient 0 extracted as "CQ500CT0 CQ500CT0/Unknown Study/<series>", patient 1 as "CQ500-CT-1/..."
    study0 = src / "CQ500CT0 CQ500CT0" / "Unknown Study"
    _series(study0 / "CT PLAIN THIN", 10, "0", thickness=0.625, description="PLAIN THIN")
    plain0, _ = _series(study0 / "CT Plain", 11, "0", thickness=5.0, description="CT Plain")
    _series(study0 / "CT BONE", 12, "0", thickness=5.0, kernel="BONE", description="CT BONE")
    study1 = src / "CQ500-CT-1" / "Unknown Study"
    plain1, _ = _series(study1 / "CT 5mm", 13, "1", thickness=5.0, description="CT 5mm")
    return src, {"CQ500-CT-0": plain0, "CQ500-CT-1": plain1}


def test_cq500_majority_vote_mapping_and_series_choice(tmp_path):
    src, plain = _cq500_tree(tmp_path)
    manifest = convert_cq500(src, tmp_path / "out" / "cq500.csv", split="test")
    df = read_manifest(manifest, required_splits=("test",))
    assert list(df["scan_id"]) == ["CQ500-CT-0", "CQ500-CT-1"]
    assert list(df["meta_series"]) == ["CT Plain", "CT 5mm"]          # non-bone, closest to 5 mm
    labels, mask = labels_and_mask(df)
    from molre_lib.data.taxonomy import INDEX_OF

    i = INDEX_OF
    assert labels[0, i["intracranial_hemorrhage"]] == 1 and labels[0, i["epidural_hematoma"]] == 1   # 2 of 3
    assert labels[0, i["calvarial_fracture"]] == 0 and mask[0, i["skull_base_fracture"]] == 1      # Fracture 0
    assert labels[1, i["calvarial_fracture"]] == 1 and mask[1, i["skull_base_fracture"]] == 0
    assert mask[1, i["hemorrhagic_contusion"]] == 1 and labels[1, i["hemorrhagic_contusion"]] == 0
    assert mask[0, i["hydrocephalus"]] == 0 and set(CQ500_MAP.values()) <= set(i)
    for _, row in df.iterrows():
        np.testing.assert_array_equal(load_volume(manifest.parent / row["path"]).hu,
                                      np.clip(np.rint(plain[row["scan_id"]].hu), -1024, 3071))
    every = read_manifest(convert_cq500(src, tmp_path / "all" / "m.csv", series="all", split="test"),
                          required_splits=("test",))
    assert len(every) == 4 and every["patient_id"].tolist().count("CQ500-CT-0") == 3
