"""Read head CT as HU volumes in the workbook's (D, H, W) orientation.

``load_volume(path)`` accepts a NIfTI file (.nii / .nii.gz), a DICOM series folder or a single
DICOM file. DICOM pixel data may use any transfer syntax pydicom can decode (RLE, JPEG 2000 and
JPEG-LS through the pylibjpeg / pyjpegls plugins). HU = stored * RescaleSlope + RescaleIntercept
per slice; PixelPaddingValue (and range) voxels become air (-1024). Every volume is reoriented
so that D runs inferior->superior, H anterior->posterior and W patient right->left.

What is read is checked, never guessed: a DICOM whose Modality is not CT, a folder holding several series
(pick one with ``series_uid``; :func:`dicom_series_in` lists them) and NaN / inf voxels are errors naming the
file (``allow_non_ct`` / ``nonfinite="mask"`` override, and say so in ``Volume.meta``). Every DICOM series
passes :func:`molre_lib.data.dicom_series.check_series` (the one check of validate, convert pacs, the datasets
behind preprocess / train / evaluate, and predict): localizers, screen saves, dose reports, reformats and
bone kernels are refused by a :class:`~molre_lib.data.dicom_series.SeriesPolicy`, a gantry-tilted or oblique
stack is resampled onto an axial grid (:mod:`molre_lib.data.dicom_geometry`), missing slices are refused
above the policy's tolerance. :func:`check_extent` refuses what is too short for a head CT, counted along the
series' own slice axis (a one-image lateral scout is one slice, whatever its rows).
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
    """A CT volume in Hounsfield units, as :func:`load_volume` returns it."""

    hu: np.ndarray                        # (D, H, W) float32 Hounsfield units
    spacing: tuple[float, float, float]   # (dz, dy, dx) mm
    meta: dict = field(default_factory=dict)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_volume(path: str | Path, series_uid: str | None = None, allow_non_ct: bool = False,
                nonfinite: str = "error", policy=None) -> Volume:
    """Load a NIfTI file, DICOM series folder or single DICOM file as HU ``(D, H, W)``.

    Axes are normalised whatever the file's orientation: D inferior -> superior, H anterior -> posterior,
    W patient right -> left. DICOM slices are sorted along the slice normal, HU = stored x RescaleSlope +
    RescaleIntercept per slice, and ``PixelPaddingValue`` voxels become -1024.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, a folder of one DICOM series, or one DICOM file.
        series_uid: the series to read from a folder that holds several (otherwise an error listing them).
        allow_non_ct: accept a DICOM Modality other than CT.
        nonfinite: ``"error"`` (NaN / inf voxels refuse the file) or ``"mask"`` (they become air, counted in
            ``meta["masked_nonfinite"]``).
        policy (SeriesPolicy | None): the ``molre_lib.data.dicom_series.SeriesPolicy`` a DICOM series must pass
            (default: its defaults).

    Returns:
        A ``Volume``: ``hu`` (D, H, W) float32 HU, ``spacing`` (dz, dy, dx) in mm, ``meta``.

    Raises:
        VolumeReadError: a ``ValueError`` naming the file and the reason (unreadable, not CT, several series,
            NaN / inf voxels, ...).

    Example:
        ```python
        vol = load_volume("scan1.nii.gz")
        vol.hu.shape, vol.spacing            # (D, H, W), (dz, dy, dx)
        ```
    """
    if nonfinite not in ("error", "mask"):
        raise ValueError(f"nonfinite must be 'error' or 'mask', got {nonfinite!r}")
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(f"{p}: no such file or folder")
    if p.is_dir():
        files = _folder_files(p)
        if not files:
            _only_subfolders(p)
        vol = load_dicom_series(files, source=p, series_uid=series_uid, allow_non_ct=allow_non_ct, policy=policy)
    elif is_nifti(p):
        vol = load_nifti(p)
    else:
        vol = load_dicom_series([p], source=p, series_uid=series_uid, allow_non_ct=allow_non_ct, policy=policy)
    return _check_finite(vol, p, nonfinite)


def _folder_files(p: Path) -> list[Path]:
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))


def subfolders_message(p: Path, other_files: list[Path] = ()) -> str | None:
    """'X holds no files, only 5 subfolder(s): ...' for a folder of series folders (a study / patient folder);
    with ``other_files`` (none of them DICOM: a README, a DICOMDIR), 'X holds no DICOM files (1 other file:
    README.TXT), only 5 subfolder(s): ...'."""
    subs = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subs:
        return None
    shown = ", ".join(subs[:6]) + (f" ... (+{len(subs) - 6})" if len(subs) > 6 else "")
    held = "no files"
    if other_files:
        names = ", ".join(f.name for f in list(other_files)[:3]) + (" ..." if len(other_files) > 3 else "")
        held = f"no DICOM files ({len(other_files)} other file(s): {names})"
    return (f"{p} holds {held}, only {len(subs)} subfolder(s): {shown}; give one series folder, or index the "
            "export tree with molre convert pacs")


def _only_subfolders(p: Path) -> None:
    msg = subfolders_message(p)
    if msg:
        raise VolumeReadError(msg)


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
    depth = vol.meta.get("acquired_slices", vol.hu.shape[0])                   # along the series' own slice axis
    extent = vol.meta.get("acquired_extent_mm", depth * vol.spacing[0])
    axis = "z" if vol.meta.get("orientation", "axial") == "axial" else f"its slice axis ({vol.meta['orientation']})"
    if depth < min_slices or extent < min_extent_mm:
        raise VolumeReadError(f"{where}: {depth} slice(s) covering {extent:.0f} mm along {axis}; a head CT needs at "
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


def _read_dicoms(files: list[Path], folder: bool = False):
    """[(path, dataset)] of the DICOM files (pixel data included); non-DICOM files of a folder are skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except InvalidDicomError:
            if len(files) == 1 and not folder:
                raise VolumeReadError(f"{f}: not a DICOM file (no DICM preamble) and not .nii/.nii.gz") from None
            continue                                                      # DICOMDIR-less folders hold other files
        except Exception as err:  # noqa: BLE001
            raise VolumeReadError(f"{f}: unreadable DICOM ({type(err).__name__}: {err})") from err
        if "PixelData" not in ds and "SeriesInstanceUID" not in ds:
            continue                                                      # DICOMDIR and the like
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


def _pick(where: Path, items: list, series_uid: str | None) -> tuple[str, list, int]:
    """(uid, items, number of image series) of the one series to read; several without ``series_uid``: an error
    naming each by number, description and kernel."""
    from .dicom_series import describe_choices, describe_series

    series: dict[str, list] = {}
    for f, ds in items:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((f, ds))
    images = {u: v for u, v in series.items() if any("PixelData" in ds for _, ds in v)}
    if series_uid is not None:
        if series_uid not in series:
            found = describe_choices({u: describe_series(v) for u, v in series.items()})
            raise VolumeReadError(f"{where}: no series {series_uid} here (found: {found})")
        return series_uid, series[series_uid], len(images)
    candidates = images or series                    # stray SR / presentation states beside one image series
    if len(candidates) > 1:
        listed = describe_choices({u: describe_series(v) for u, v in candidates.items()})
        raise VolumeReadError(f"{where}: holds {len(candidates)} DICOM series, expected one: {listed}; pick one "
                              "with the manifest's series_uid column (molre convert pacs writes it) or put each series "
                              "in its own folder (molre predict gives one row per series)")
    uid = next(iter(candidates))
    return uid, candidates[uid], len(images)


def load_dicom_series(files: list[Path], source: Path | None = None, series_uid: str | None = None,
                      allow_non_ct: bool = False, policy=None) -> Volume:
    """One DICOM series as HU (D, H, W), checked by :func:`~molre_lib.data.dicom_series.check_series`;
    files of several series need ``series_uid`` to pick one."""
    from dataclasses import replace

    from .dicom_geometry import fill_gaps, resample_axial
    from .dicom_series import SeriesPolicy, check_series, describe_series

    where = source or (files[0] if files else Path("."))
    folder = source is not None and source.is_dir()
    items = _read_dicoms(files, folder)
    if not items:
        raise VolumeReadError((folder and subfolders_message(source, files)) or f"{where}: no DICOM image files found")
    uid, items, n_image_series = _pick(where, items, series_uid)
    ds0 = items[0][1]
    modality = str(getattr(ds0, "Modality", "") or "")
    policy = policy or SeriesPolicy()
    if allow_non_ct:
        policy = replace(policy, allow_non_ct=True)
    info = describe_series(items)
    verdict = check_series(info, policy)
    if not verdict.ok:
        raise VolumeReadError(f"{where}: {verdict.reason}")
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
        raise VolumeReadError(f"{where}: {info.label()}: slices have different sizes {sorted(shapes)}")
    stack = np.stack([_slice_hu(f, ds) for f, ds in items])            # (k, rows, cols)
    if len(items) > 1:
        steps = np.array([(b - a) @ normal for a, b in zip(pos[:-1], pos[1:])])
        step = (pos[-1] - pos[0]) / (len(items) - 1)
        uneven = bool(np.ptp(steps) > 0.1 * max(abs(float(np.median(steps))), 1e-3))
    else:
        step = normal * float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
        uneven = False
    if len(items) > 1 and np.linalg.norm(step) < 1e-3:
        raise VolumeReadError(f"{where}: {info.label()}: all slices share one position (duplicates?)")
    if verdict.fill_gaps:                                              # tolerated missing slices: uniform positions
        direction = (pos[-1] - pos[0]) / np.linalg.norm(pos[-1] - pos[0])
        stack, offsets = fill_gaps(stack, np.array([(p - pos[0]) @ direction for p in pos]), info.spacing_mm)
        step, uneven = direction * info.spacing_mm, False
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, step, pos[0]
    corrected = ""
    if verdict.resample:                                               # gantry tilt / oblique: onto an axial grid
        grid, origin = resample_axial(stack, lps, (float(np.linalg.norm(step)), dr, dc))   # (D, H, W)
        lps = np.diag([dc, dr, float(np.linalg.norm(step)), 1.0])
        lps[:3, 3] = origin
        stack = grid                                                   # (D, H, W) = (k, rows, cols), axis-aligned
        corrected = "gantry tilt" if info.tilt_deg > policy.max_angle_deg else "oblique"
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    hu, spacing, aff = _to_dhw(stack.transpose(2, 1, 0), ras)         # (cols, rows, k) = (i, j, k)
    meta = {"path": str(where), "format": "dicom", "series_uid": uid, "n_files": len(items), "modality": modality,
            "transfer_syntax": str(getattr(getattr(ds0, "file_meta", None), "TransferSyntaxUID", "")),
            "uneven_slice_spacing": uneven, "other_series": max(n_image_series - 1, 0), "affine_ras": aff,
            "series_number": info.series_number, "series_description": info.description, "kernel": info.kernel,
            "kernel_class": info.kernel_class, "orientation": info.orientation, "tilt_deg": info.tilt_deg,
            "acquired_slices": info.n_images, "acquired_extent_mm": info.extent_mm,
            "series_warnings": list(verdict.warnings), "corrected": corrected}
    return Volume(hu, spacing, meta)


def file_signature(path: str | Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of a file or of every file in a series folder: the cache key of its content."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
