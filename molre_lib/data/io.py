"""Read head CT as HU volumes in the workbook's (D, H, W) orientation.

``load_volume(path)`` accepts a NIfTI file (.nii / .nii.gz), a DICOM series folder or a single
DICOM file. DICOM pixel data may use any transfer syntax pydicom can decode (RLE, JPEG 2000 and
JPEG-LS through the pylibjpeg / pyjpegls plugins). HU = stored * RescaleSlope + RescaleIntercept
per slice; PixelPaddingValue (and range) voxels become air (-1024). Every volume is reoriented
so that D runs inferior->superior, H anterior->posterior and W patient right->left.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AIR_HU = -1024.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeReadError(ValueError):
    """A file or folder could not be read as a CT volume; the message names it and says why."""


@dataclass
class Volume:
    hu: np.ndarray                        # (D, H, W) float32 Hounsfield units
    spacing: tuple[float, float, float]   # (dz, dy, dx) mm
    meta: dict = field(default_factory=dict)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_volume(path: str | Path) -> Volume:
    """Load a NIfTI file, DICOM series folder or single DICOM file as HU (D, H, W)."""
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(f"{p}: no such file or folder")
    if p.is_dir():
        return load_dicom_series(sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")),
                                 source=p)
    if is_nifti(p):
        return load_nifti(p)
    return load_dicom_series([p], source=p)


def _to_dhw(data: np.ndarray, ras_affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Reorient voxel data (i, j, k) to LPS axis codes and transpose to (D, H, W)."""
    from nibabel import orientations as nio

    current = nio.io_orientation(ras_affine)
    target = nio.axcodes2ornt(("L", "P", "S"))
    transform = nio.ornt_transform(current, target)
    data = nio.apply_orientation(data, transform)
    affine = ras_affine @ nio.inv_ornt_aff(transform, data.shape)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))                       # (sx, sy, sz)
    return (np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32),
            (float(zooms[2]), float(zooms[1]), float(zooms[0])), affine)


def load_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)                # applies scl_slope / scl_inter
    except Exception as err:  # noqa: BLE001 - nibabel, gzip and zlib raise many types
        raise VolumeReadError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeReadError(f"{path}: expected a 3D volume, got shape {data.shape}")
    affine = img.affine if img.affine is not None else np.eye(4)
    hu, spacing, aff = _to_dhw(data, np.asarray(affine, np.float64))
    return Volume(hu, spacing, {"path": str(path), "format": "nifti", "affine_ras": aff})


def _read_dicoms(files: list[Path]):
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except InvalidDicomError:
            if len(files) == 1:
                raise VolumeReadError(f"{f}: not a DICOM file (no DICM preamble) and not .nii/.nii.gz") from None
            continue                                                      # DICOMDIR-less folders hold other files
        except Exception as err:  # noqa: BLE001
            raise VolumeReadError(f"{f}: unreadable DICOM ({type(err).__name__}: {err})") from err
        if "PixelData" not in ds:
            continue
        out.append((f, ds))
    return out


def _slice_hu(f: Path, ds) -> np.ndarray:
    try:
        raw = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - decoder plugins raise their own types
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise VolumeReadError(f"{f}: cannot decode pixel data (transfer syntax {ts}: {err})") from err
    if raw.ndim != 2:
        raise VolumeReadError(f"{f}: expected one 2D frame per file, got pixel array shape {raw.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    hu = raw.astype(np.float32) * slope + intercept
    pad = getattr(ds, "PixelPaddingValue", None)
    if pad is not None:
        limit = getattr(ds, "PixelPaddingRangeLimit", None)
        lo, hi = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
        hu[(raw >= lo) & (raw <= hi)] = AIR_HU
    return np.maximum(hu, AIR_HU)


def load_dicom_series(files: list[Path], source: Path | None = None) -> Volume:
    """One DICOM series (the largest one if files from several series are given) as HU (D, H, W)."""
    where = source or (files[0] if files else Path("."))
    items = _read_dicoms(files)
    if not items:
        raise VolumeReadError(f"{where}: no DICOM image files found")
    series: dict[str, list] = {}
    for f, ds in items:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((f, ds))
    uid, items = max(series.items(), key=lambda kv: len(kv[1]))
    ds0 = items[0][1]
    try:
        iop = np.asarray([float(v) for v in ds0.ImageOrientationPatient], np.float64)
        row, col = iop[:3], iop[3:]
        normal = np.cross(row, col)
        pos = [np.asarray([float(v) for v in ds.ImagePositionPatient], np.float64) for _, ds in items]
        order = np.argsort([p @ normal for p in pos])
        dr, dc = (float(v) for v in ds0.PixelSpacing)                 # row spacing, column spacing
    except (AttributeError, TypeError, ValueError) as err:
        raise VolumeReadError(f"{where}: missing or invalid geometry tags "
                              f"(ImageOrientationPatient / ImagePositionPatient / PixelSpacing): {err}") from err
    items = [items[i] for i in order]
    pos = [pos[i] for i in order]
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(shapes) > 1:
        raise VolumeReadError(f"{where}: slices of series {uid} have different sizes {sorted(shapes)}")
    stack = np.stack([_slice_hu(f, ds) for f, ds in items])            # (k, rows, cols)
    if len(items) > 1:
        steps = np.array([(b - a) @ normal for a, b in zip(pos[:-1], pos[1:])])
        step = (pos[-1] - pos[0]) / (len(items) - 1)
        uneven = bool(np.ptp(steps) > 0.1 * max(abs(float(np.median(steps))), 1e-3))
    else:
        step = normal * float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
        uneven = False
    if len(items) > 1 and np.linalg.norm(step) < 1e-3:
        raise VolumeReadError(f"{where}: all slices of series {uid} share one position (duplicates?)")
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, step, pos[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    hu, spacing, aff = _to_dhw(stack.transpose(2, 1, 0), ras)         # (cols, rows, k) = (i, j, k)
    meta = {"path": str(where), "format": "dicom", "series_uid": uid, "n_files": len(items),
            "transfer_syntax": str(getattr(getattr(ds0, "file_meta", None), "TransferSyntaxUID", "")),
            "uneven_slice_spacing": uneven, "other_series": len(series) - 1, "affine_ras": aff}
    return Volume(hu, spacing, meta)


def file_signature(path: str | Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of a file or of every file in a series folder: the cache key of its content."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
