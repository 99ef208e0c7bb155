"""Write HU volumes (D, H, W) as NIfTI or as a DICOM CT series, with correct geometry.

Both writers take the LPS position (x, y, z) mm of voxel (0, 0, 0) and the (dz, dy, dx) spacing;
voxels are axis-aligned (D = +z superior, H = +y posterior, W = +x patient left). DICOM files
carry synthetic identifiers only (``PHANTOM-…``) and deterministic UIDs derived from ``uid_seed``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TRANSFER_SYNTAXES = {"none": None, "rle": "RLELossless", "jpeg2000": "JPEG2000Lossless", "jpegls": "JPEGLSLossless"}


def lps_to_ras_affine(spacing, origin) -> np.ndarray:
    """NIfTI (RAS) affine of an array stored as (i, j, k) = (W, H, D)."""
    dz, dy, dx = spacing
    x0, y0, z0 = origin
    return np.array([[-dx, 0, 0, -x0], [0, -dy, 0, -y0], [0, 0, dz, z0], [0, 0, 0, 1]], np.float64)


def write_nifti(path: str | Path, hu: np.ndarray, spacing, origin) -> Path:
    """Save HU (D, H, W) as int16 NIfTI-1 with a scanner-aligned (LPS-stored) affine."""
    import nibabel as nib

    data = np.clip(np.rint(hu), -1024, 3071).astype(np.int16).transpose(2, 1, 0)   # (W, H, D) = (i, j, k)
    img = nib.Nifti1Image(data, lps_to_ras_affine(spacing, origin))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_dicom_series(folder: str | Path, hu: np.ndarray, spacing, origin, uid_seed: str, patient_id: str,
                       slice_thickness: float | None = None, compression: str = "none",
                       description: str = "MoLRE phantom head CT", kernel: str = "STANDARD",
                       padding_value: int | None = None) -> list[Path]:
    """One CT Image Storage file per axial slice; HU = stored + RescaleIntercept (-1024).

    compression: none | rle | jpeg2000 | jpegls (lossless). padding_value: stored value written into
    PixelPaddingValue (voxels at -1024 HU outside the head get it), to exercise readers.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    if compression not in TRANSFER_SYNTAXES:
        raise ValueError(f"unknown compression {compression!r} (allowed: {sorted(TRANSFER_SYNTAXES)})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dz, dy, dx = spacing
    x0, y0, z0 = origin
    stored = (np.clip(np.rint(hu), -1024, 3071) + 1024).astype(np.uint16)        # (D, H, W)
    if padding_value is not None:
        stored[stored == 0] = padding_value
    uid = lambda what: generate_uid(entropy_srcs=[uid_seed, what])  # noqa: E731
    study, series, frame = uid("study"), uid("series"), uid("frame")
    paths = []
    for k in range(stored.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid(f"sop{k}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.Manufacturer, ds.ConvolutionKernel, ds.KVP = "CT", "MoLRE synthetic phantom", kernel, 120
        ds.PatientName, ds.PatientID = f"PHANTOM^{patient_id}", f"PHANTOM-{patient_id}"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20000101", "000000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, 1, k + 1
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{x0:.4f}", f"{y0:.4f}", f"{z0 + k * dz:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z0 + k * dz:.4f}"
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]                              # row spacing, column spacing
        ds.SliceThickness = f"{(slice_thickness or dz):.4f}"
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 80
        if padding_value is not None:
            ds.PixelPaddingValue = int(padding_value)
        ds.PixelData = stored[k].tobytes()
        if TRANSFER_SYNTAXES[compression]:
            ds.compress(getattr(pydicom.uid, TRANSFER_SYNTAXES[compression]))
        path = folder / f"slice_{k:04d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths
