"""molre predict checks what it is given: MR, a single CT slice, a folder with two series and NaN voxels are
rows with status=error naming the file (or forced / masked with a warning), the other inputs are still
predicted, --out is checked before inference, and --pseudonymize hides the paths."""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from molre_lib.cli import main

MR = get_testdata_file("MR_small.dcm")
CT_SLICE = get_testdata_file("CT_small.dcm")


@pytest.fixture(scope="module")
def run_and_scans(tmp_path_factory):
    from molre_lib.data.synth import synthesize

    tmp = tmp_path_factory.mktemp("predict")
    manifest = synthesize(tmp / "data", 12, shape=(12, 32, 32), seed=0, workers=1, splits=(0.5, 0.25, 0.25))
    rc = main(["train", "--run-dir", str(tmp / "run"), "--manifest", str(manifest), "--backbone", "phantom_vit",
               "--reduced", "--no-pretrained", "--volume-shape", "12", "32", "32", "--max-steps", "1",
               "--batch-size", "2", "--adapter", "lora", "--rank", "2", "--device", "cpu", "--eval-bootstrap", "0"])
    assert rc == 0
    scans = sorted(str(p) for p in (tmp / "data").rglob("*.nii.gz"))
    return tmp, tmp / "run", scans


def _predict(run, *inputs, extra=()):
    out = run.parent / "pred.csv"
    out.unlink(missing_ok=True)
    rc = main(["predict", str(run), *map(str, inputs), "--out", str(out), "--device", "cpu", *extra])
    return rc, pd.read_csv(out, keep_default_na=False)


def test_mr_and_single_slice_are_error_rows_and_good_inputs_still_predicted(run_and_scans, capsys):
    tmp, run, scans = run_and_scans
    rc, df = _predict(run, scans[0], MR, CT_SLICE, tmp / "missing.nii.gz", scans[1])
    assert rc == 2 and list(df.columns[:5]) == ["input", "series_uid", "status", "warning", "error"]
    assert list(df["status"]) == ["ok", "error", "error", "error", "ok"]
    assert df.loc[1, "error"] == f"{MR}: Modality is MR, not CT; the models here read head CT (molre predict --allow-non-ct forces it)"
    assert df.loc[2, "error"].startswith(f"{CT_SLICE}: 1 slice(s) covering 5 mm along z; a head CT needs at least 10")
    assert "no such file" in df.loc[3, "error"]
    assert df.loc[1, "intracranial_hemorrhage"] == "" and 0 <= float(df.loc[0, "intracranial_hemorrhage"]) <= 1
    err = capsys.readouterr().err
    assert "3 of 5 input(s) failed" in err and "Traceback" not in err


def test_allow_non_ct_is_stated_in_the_warning_column(run_and_scans):
    _, run, _ = run_and_scans
    rc, df = _predict(run, MR, extra=["--allow-non-ct", "--min-slices", "1", "--min-extent-mm", "0"])
    assert rc == 0 and df.loc[0, "status"] == "ok"
    assert "Modality MR forced with --allow-non-ct" in df.loc[0, "warning"]


def test_nan_voxels_are_an_error_or_masked_with_a_warning(run_and_scans):
    tmp, run, scans = run_and_scans
    img = nib.load(scans[0])
    data = np.asarray(img.dataobj, np.float32)
    data[:4, :4, :2] = np.nan
    bad = tmp / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), str(bad))
    rc, df = _predict(run, bad)
    assert rc == 2 and df.loc[0, "error"] == f"{bad}: 32 of 12288 voxels are NaN or inf (0.26%); fix the file, or mask them as air (molre predict --mask-nonfinite)"
    rc, df = _predict(run, bad, extra=["--mask-nonfinite"])
    assert rc == 0 and df.loc[0, "warning"] == "32 NaN/inf voxels masked as air (--mask-nonfinite)"


def test_folder_with_two_series_gives_one_row_per_series(run_and_scans):
    from molre_lib.data.synth import synthesize

    tmp, run, _ = run_and_scans
    both = tmp / "two_series"
    both.mkdir(exist_ok=True)
    for seed in (1, 2):
        m = synthesize(tmp / f"dcm{seed}", 1, shape=(12, 32, 32), fmt="dicom", seed=seed, workers=1)
        folder = m.parent / pd.read_csv(m)["path"].iloc[0]
        for f in sorted(folder.iterdir()):
            shutil.copy(f, both / f"s{seed}_{f.name}")
    rc, df = _predict(run, both)
    assert rc == 0 and len(df) == 2 and df["series_uid"].nunique() == 2 and (df["status"] == "ok").all()
    assert (df["warning"] == "folder holds 2 series; this row is one of them").all()
    from molre_lib.data.io import VolumeReadError, load_volume
    with pytest.raises(VolumeReadError, match="holds 2 DICOM series, expected one"):
        load_volume(both)                                       # the training loaders refuse it


def test_out_is_checked_before_inference_and_pseudonymize_hides_paths(run_and_scans, capsys):
    tmp, run, scans = run_and_scans
    assert main(["predict", str(run), scans[0], "--out", str(tmp / "no_such_dir" / "p.csv")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"molre predict: error: --out {tmp / 'no_such_dir' / 'p.csv'}: folder {tmp / 'no_such_dir'} does not exist; create it first"
    id_map = tmp / "ids.csv"
    rc, df = _predict(run, scans[0], MR, extra=["--pseudonymize", "--id-map", str(id_map)])
    assert list(df["input_id"]) == ["input-0001", "input-0002"] and "input" not in df.columns
    assert not any(str(tmp) in str(v) or MR in str(v) for v in df.to_numpy().ravel())
    assert df.loc[1, "error"].startswith("input-0002: Modality is MR")
    assert pd.read_csv(id_map)["path"].tolist() == [scans[0], MR]
