"""Read head CT as HU volumes in the workbook's (D, H, W) orientation.

``load_volume(path)`` accepts a NIfTI file (.nii / .nii.gz), a DICOM series folder or a single
DICOM file. DICOM pixel data may use any transfer syntax pydicom can decode (RLE, JPEG 2000 and
JPEG-LS through the pylibjpeg / pyjpegls plugins). HU = stored * RescaleSlope + RescaleIntercept
per slice; PixelPaddingValue (and range) voxels become air (-1024). Every volume is reoriented
so that D runs inferior->superior, H anterior->posterior and W patient right->left.

What is read is checked, never guessed: a DICOM whose Modality is not CT, a folder holding several series
(pick one with ``series_uid``; :func:`dicom_series_in` lists them) and NaN / inf voxels are errors naming the
file (``allow_non_ct`` / ``nonfinite="mask"`` override, and say so in ``Volume.meta``). :func:`check_extent`
refuses what is too short for a head CT (a single slice, a few slices).
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


def load_volume(path: str | Path, series_uid: str | None = None, allow_non_ct: bool = False,
                nonfinite: str = "error") -> Volume:
    """Load a NIfTI file, DICOM series folder or single DICOM file as HU (D, H, W).

    ``series_uid`` picks one series of a folder that holds several (otherwise an error listing them);
    ``allow_non_ct`` accepts a DICOM Modality other than CT; ``nonfinite`` is ``"error"`` (NaN / inf voxels
    refuse the file) or ``"mask"`` (they become air, counted in ``meta["masked_nonfinite"]``)."""
    if nonfinite not in ("error", "mask"):
        raise ValueError(f"nonfinite must be 'error' or 'mask', got {nonfinite!r}")
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(f"{p}: no such file or folder")
    if p.is_dir():
        files = _folder_files(p)
        vol = load_dicom_series(files, source=p, series_uid=series_uid, allow_non_ct=allow_non_ct)
    elif is_nifti(p):
        vol = load_nifti(p)
    else:
        vol = load_dicom_series([p], source=p, series_uid=series_uid, allow_non_ct=allow_non_ct)
    return _check_finite(vol, p, nonfinite)


def _folder_files(p: Path) -> list[Path]:
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))


def _check_finite(vol: Volume, where: Path, nonfinite: str) -> Volume:
    bad = ~np.isfinite(vol.hu)
    n = int(bad.sum())
    if n and nonfinite == "error":
        raise VolumeReadError(f"{where}: {n} of {bad.size} voxels are NaN or inf ({100 * n / bad.size:.2g}%); "
                              "fix the file, or mask them as air (molre predict --mask-nonfinite)")
    if n:
        vol.hu[bad] = AIR_HU
        vol.meta["masked_nonfinite"] = n
    return vol


def check_extent(vol: Volume, min_slices: int, min_extent_mm: float) -> None:
    """Refuse a volume too short along z for a head CT (a single slice, a scout, a partial scan)."""
    where = vol.meta.get("path", "volume")
    depth = vol.hu.shape[0]
    extent = depth * vol.spacing[0]
    if depth < min_slices or extent < min_extent_mm:
        raise VolumeReadError(f"{where}: {depth} slice(s) covering {extent:.0f} mm along z; a head CT needs at "
                              f"least {min_slices} slices and {min_extent_mm:.0f} mm (--min-slices / "
                              "--min-extent-mm to change)")


def dicom_series_in(folder: str | Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> files of a DICOM folder (headers only; non-DICOM files are ignored)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out: dict[str, list[Path]] = {}
    for f in _folder_files(Path(folder)):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (InvalidDicomError, OSError, ValueError):
            continue
        out.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append(f)
    return out


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


def load_dicom_series(files: list[Path], source: Path | None = None, series_uid: str | None = None,
                      allow_non_ct: bool = False) -> Volume:
    """One DICOM series as HU (D, H, W); files of several series need ``series_uid`` to pick one."""
    where = source or (files[0] if files else Path("."))
    items = _read_dicoms(files)
    if not items:
        raise VolumeReadError(f"{where}: no DICOM image files found")
    series: dict[str, list] = {}
    for f, ds in items:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((f, ds))
    if series_uid is not None:
        if series_uid not in series:
            raise VolumeReadError(f"{where}: no series {series_uid} here (found: {', '.join(series)})")
        uid, items = series_uid, series[series_uid]
    elif len(series) > 1:
        listed = "; ".join(f"{u} ({len(v)} files)" for u, v in sorted(series.items(), key=lambda kv: -len(kv[1])))
        raise VolumeReadError(f"{where}: holds {len(series)} DICOM series, expected one: {listed}; put each series "
                              "in its own folder (molre predict gives one row per series)")
    else:
        uid, items = next(iter(series.items()))
    ds0 = items[0][1]
    modality = str(getattr(ds0, "Modality", "") or "")
    if modality and modality != "CT" and not allow_non_ct:
        raise VolumeReadError(f"{where}: Modality is {modality}, not CT; the models here read head CT "
                              "(molre predict --allow-non-ct forces it)")
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
    meta = {"path": str(where), "format": "dicom", "series_uid": uid, "n_files": len(items), "modality": modality,
            "transfer_syntax": str(getattr(getattr(ds0, "file_meta", None), "TransferSyntaxUID", "")),
            "uneven_slice_spacing": uneven, "other_series": len(series) - 1, "affine_ras": aff}
    return Volume(hu, spacing, meta)


def file_signature(path: str | Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of a file or of every file in a series folder: the cache key of its content."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
