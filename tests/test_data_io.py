"""NIfTI and DICOM written by synth load back to the same HU, in the contract's (D, H, W) orientation."""
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from molre_lib.data.io import VolumeReadError, load_volume
from molre_lib.data.phantom import PhantomConfig, make_subject
from molre_lib.data.synth import synthesize
from molre_lib.data.writers import write_dicom_series, write_nifti

CFG = PhantomConfig(shape=(10, 40, 36), pv_subsamples=1)


@pytest.fixture(scope="module")
def subject():
    return make_subject(2, CFG, present={"epidural_hematoma": True}, side={"epidural_hematoma": "left"})


def _expected(s):
    return np.clip(np.rint(s.hu), -1024, 3071)


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_synth_round_trip_hu(tmp_path, fmt):
    manifest = synthesize(tmp_path, 3, shape=(8, 32, 28), fmt=fmt, seed=4, workers=1)
    import pandas as pd

    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for i, row in df.iterrows():
        vol = load_volume(tmp_path / row["path"])
        ref = make_subject(4 * 1_000_003 + i, PhantomConfig(shape=(8, 32, 28)),
                           patient_seed=4 * 1_000_003 + 500_000 + int(row["patient_id"][1:]))
        np.testing.assert_array_equal(vol.hu, _expected(ref))
        assert vol.spacing == pytest.approx(ref.spacing, rel=1e-4)


def test_nifti_affine_and_reorientation(tmp_path, subject):
    path = write_nifti(tmp_path / "a.nii.gz", subject.hu, subject.spacing, subject.origin)
    img = nib.load(str(path))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    x0, y0, z0 = subject.origin
    np.testing.assert_allclose(img.affine @ [0, 0, 0, 1], [-x0, -y0, z0, 1])        # RAS of voxel 0 = LPS negated
    # the same image stored RAS+ (flipped axes) and as (k, j, i)-permuted array loads identically
    data = np.asarray(img.dataobj)
    flip = nib.Nifti1Image(data[::-1, ::-1, :].copy(), img.affine @ _flip_aff(data.shape))
    nib.save(flip, str(tmp_path / "ras.nii.gz"))
    np.testing.assert_array_equal(load_volume(tmp_path / "ras.nii.gz").hu, _expected(subject))
    np.testing.assert_array_equal(load_volume(path).hu, _expected(subject))
    # "left" finding is at larger W (patient right -> left)
    w = subject.masks["epidural_hematoma"].sum((0, 1))
    assert (w * np.arange(len(w))).sum() / w.sum() > len(w) / 2


def _flip_aff(shape):
    f = np.eye(4)
    f[0, 0], f[0, 3] = -1, shape[0] - 1
    f[1, 1], f[1, 3] = -1, shape[1] - 1
    return f


def test_dicom_series_tags_and_geometry(tmp_path, subject):
    files = write_dicom_series(tmp_path / "s", subject.hu, subject.spacing, subject.origin, "u1", "0007")
    dss = [pydicom.dcmread(str(f)) for f in files]
    assert len(files) == CFG.shape[0] and all(d.Modality == "CT" for d in dss)
    assert len({d.StudyInstanceUID for d in dss}) == 1 and len({d.SeriesInstanceUID for d in dss}) == 1
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    assert dss[0].PatientID == "PHANTOM-0007" and str(dss[0].PatientName) == "PHANTOM^0007"
    assert float(dss[0].RescaleIntercept) == -1024 and float(dss[0].RescaleSlope) == 1
    assert [float(v) for v in dss[0].PixelSpacing] == pytest.approx(subject.spacing[1:], rel=1e-5)
    assert float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2]) == pytest.approx(
        subject.spacing[0], rel=1e-4)
    # shuffled file names do not change the loaded order (sorted by position along the slice normal)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for i, f in enumerate(reversed(files)):
        shutil.copy(f, shuffled / f"x{i:03d}.dcm")
    np.testing.assert_array_equal(load_volume(shuffled).hu, _expected(subject))
    one = load_volume(files[3])                                      # a single DICOM file
    np.testing.assert_array_equal(one.hu[0], _expected(subject)[3])


@pytest.mark.parametrize("compression", ["rle", "jpeg2000", "jpegls"])
def test_compressed_dicom_round_trip(tmp_path, subject, compression):
    from pydicom.pixels import get_encoder
    from molre_lib.data.writers import TRANSFER_SYNTAXES

    if not get_encoder(getattr(pydicom.uid, TRANSFER_SYNTAXES[compression])).is_available:
        pytest.skip(f"no {compression} encoder installed")
    write_dicom_series(tmp_path / "c", subject.hu, subject.spacing, subject.origin, "u2", "1", compression=compression)
    vol = load_volume(tmp_path / "c")
    assert vol.meta["transfer_syntax"] == getattr(pydicom.uid, TRANSFER_SYNTAXES[compression])
    np.testing.assert_array_equal(vol.hu, _expected(subject))


def test_padding_value_and_rescale(tmp_path, subject):
    files = write_dicom_series(tmp_path / "p", subject.hu, subject.spacing, subject.origin, "u3", "1",
                               padding_value=63536 % 65536)
    ds = pydicom.dcmread(str(files[0]))
    assert ds.PixelPaddingValue == 63536
    vol = load_volume(tmp_path / "p")
    assert vol.hu.min() == -1024 and np.array_equal(vol.hu, _expected(subject))
    # a different slope/intercept is applied per slice
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    arr = ds.pixel_array.astype(np.int32)
    ds.PixelData = (np.where(arr == 63536, 63536, arr // 2)).astype(np.uint16).tobytes()
    ds.save_as(str(files[0]))
    assert np.abs(load_volume(tmp_path / "p").hu[0] - _expected(subject)[0]).max() <= 2


def test_corrupt_and_missing_files_name_file_and_reason(tmp_path, subject):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(VolumeReadError, match=r"bad\.nii\.gz.*not a readable NIfTI"):
        load_volume(bad)
    with pytest.raises(VolumeReadError, match="no such file"):
        load_volume(tmp_path / "nope.nii")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello")
    with pytest.raises(VolumeReadError, match="junk.dcm"):
        load_volume(junk)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(VolumeReadError, match="no DICOM image files"):
        load_volume(empty)
    files = write_dicom_series(tmp_path / "t", subject.hu, subject.spacing, subject.origin, "u4", "1")
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[: len(raw) - 300])                     # truncated pixel data
    with pytest.raises(VolumeReadError, match="slice_0002.dcm"):
        load_volume(tmp_path / "t")
