"""What a DICOM series is, from its headers, and whether the workbook may read it: one check for every path.

:func:`describe_series` summarises one series (number, description, SOP class, ImageType, kernel and its class,
orientation, gantry tilt, slice count / thickness / spacing, missing slices) from its datasets, headers alone
being enough. :func:`check_series` applies a :class:`SeriesPolicy` to that summary and returns a
:class:`SeriesVerdict` (refused with a one-line reason, or accepted with warnings and the geometry correction
the loader will apply). ``molre convert pacs``, ``molre validate``, the dataset behind preprocess / train /
evaluate, and ``molre predict`` all call :func:`check_series`, so a scout, a dose report, a bone-kernel series
or a sheared stack is refused (or flagged) the same way everywhere.

Kernel names are classified by the editable table ``data_manifests/ct_kernels.csv`` (vendor, regular
expression, class). Gantry tilt is the angle between the slice normal and the direction the slice positions
advance (dcm2niix's test); obliquity is the angle between the slice normal and the nearest patient axis.
"""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from molre_lib.common.config_keys import check_known_keys

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
DERIVED_WORDS = ("REFORMATTED", "MPR", "MIP", "MINIP", "PROJECTION IMAGE", "CURVED", "VRT")
LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")
AXES = ("sagittal", "coronal", "axial")                       # slice normal along x, y, z


@dataclass
class SeriesPolicy:
    """What a series must be to be read as a head CT, and what is corrected instead of refused."""

    bone_kernel: str = field(default="refuse", metadata={
        "help": "refuse | warn: a bone / lung (sharp) reconstruction kernel, named in the message"})
    gantry_tilt: str = field(default="correct", metadata={
        "help": "correct (resample the sheared stack onto an axial grid, as dcm2niix does) | refuse"})
    oblique: str = field(default="resample", metadata={
        "help": "resample (an oblique axial series onto an axial grid) | refuse; sagittal / coronal is always refused"})
    max_angle_deg: float = field(default=1.0, metadata={
        "help": "tilt or obliquity below this many degrees is treated as none (rounding in the headers)"})
    max_oblique_deg: float = field(default=30.0, metadata={
        "help": "an axial series whose normal is further than this from z is refused as not axial"})
    max_missing_slices: int = field(default=0, metadata={
        "help": "missing slices (gaps in the positions) tolerated; tolerated gaps are interpolated with a warning"})
    allow_derived: bool = field(default=False, metadata={
        "help": "read ImageType DERIVED reformats / projections (MPR, MIP) instead of refusing them"})
    allow_non_ct: bool = field(default=False, metadata={"help": "read a Modality other than CT (stated as a warning)"})
    min_images: int = field(default=1, metadata={
        "help": "fewest images a series needs; the manifest check and the training datasets use 2 (a single image "
                "is a scout or screen save, never a volume); predict counts slices with --min-slices instead"})

    def __post_init__(self):
        for name, allowed in (("bone_kernel", ("refuse", "warn")), ("gantry_tilt", ("correct", "refuse")),
                              ("oblique", ("resample", "refuse"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SeriesPolicy.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "SeriesPolicy":
        check_known_keys(cls, d)
        return cls(**d)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_pairs(cls, pairs) -> "SeriesPolicy":
        """From ``["bone_kernel=warn", "max_missing_slices=1"]`` (CLI flags, TrainConfig.series_policy); an unknown
        key or a bad value raises naming it."""
        kinds = {f.name: str(f.type) for f in fields(cls)}
        values: dict = {}
        for pair in pairs or ():
            key, eq, value = str(pair).partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in kinds:
                raise ValueError(f"series policy {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(kinds))}")
            tp = kinds[key]
            try:
                values[key] = (value.strip().lower() in ("1", "true", "yes")) if tp == "bool" else \
                    int(value) if tp == "int" else float(value) if tp == "float" else value.strip()
            except ValueError:
                raise ValueError(f"series policy {pair!r}: {value!r} is not a {tp}") from None
        return cls(**values)


@dataclass
class SeriesInfo:
    """One series as its headers describe it (the inventory row of ``molre convert pacs``)."""

    series_uid: str
    series_number: str = ""
    description: str = ""
    sop_class: str = ""
    image_type: str = ""
    kernel: str = ""
    kernel_class: str = ""
    manufacturer: str = ""
    modality: str = ""
    orientation: str = ""          # axial / coronal / sagittal / "" (no geometry)
    obliquity_deg: float = 0.0     # slice normal vs the nearest patient axis
    tilt_deg: float = 0.0          # slice normal vs the direction positions advance (gantry tilt)
    n_images: int = 0
    thickness_mm: float | None = None
    spacing_mm: float | None = None   # median distance between neighbouring slice positions
    extent_mm: float = 0.0            # along the slice axis, n_images x spacing
    missing: list = field(default_factory=list)      # [(n missing, z mm)] per gap
    duplicates: int = 0
    study_uid: str = ""
    accession: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_description: str = ""
    files: list = field(default_factory=list, repr=False)

    def label(self) -> str:
        """'series 3 "HEAD STD 5mm" (kernel H30s)': how messages name a series (its UID is in the inventory)."""
        number = f"series {self.series_number}" if self.series_number else f"series {self.series_uid[-12:]}"
        desc = f' "{self.description}"' if self.description else ""
        return f"{number}{desc}" + (f" (kernel {self.kernel})" if self.kernel else "")

    def missing_text(self) -> str:
        return "; ".join(f"{n} slice(s) missing near z = {z:.1f} mm" for n, z in self.missing)


@dataclass
class SeriesVerdict:
    ok: bool
    reason: str = ""                                      # why refused (empty when ok)
    warnings: list = field(default_factory=list)
    resample: bool = False                                # tilted / oblique: the loader resamples onto an axial grid
    fill_gaps: bool = False                               # tolerated missing slices: interpolated along z


@functools.lru_cache(maxsize=4)
def kernel_table(path: str | None = None) -> tuple[tuple[str, re.Pattern, str], ...]:
    """(vendor, compiled pattern, class) rows of the kernel table (the shipped one by default)."""
    if path is None:
        from importlib import resources

        text = resources.files("molre_lib").joinpath("resources/ct_kernels.csv").read_text(encoding="utf-8")
        where = "molre_lib/resources/ct_kernels.csv"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    rows = []
    for n, r in enumerate(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")), start=1):
        if r.get("class") not in ("soft", "bone", "lung"):
            raise ValueError(f"{where}: row {n}: class must be soft, bone or lung, got {r.get('class')!r}")
        try:
            rows.append((r["vendor"], re.compile(r["pattern"].strip(), re.IGNORECASE), r["class"]))
        except re.error as err:
            raise ValueError(f"{where}: row {n}: bad pattern {r['pattern']!r} ({err})") from None
    return tuple(rows)


_DESC_BONE = re.compile(r"\b(bone|osseous|knochen|temporal|iac|inner ear|lung)\b", re.I)


def kernel_class(kernel: str, description: str = "", table: str | None = None) -> str:
    """soft | bone | lung by the kernel table; unknown kernels fall back on words of the description
    ("bone", "lung", ...); otherwise "unknown" (read, and said so in the inventory)."""
    name = kernel.split("\\")[0].strip()
    for _, pattern, cls in kernel_table(table):
        if name and pattern.fullmatch(name):
            return cls
    if _DESC_BONE.search(f"{description} {kernel}"):
        return "lung" if "lung" in f"{description} {kernel}".lower() else "bone"
    return "unknown"


def _text(ds, name: str) -> str:
    v = ds.get(name, "")
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _float(ds, name: str) -> float | None:
    try:
        return float(ds.get(name))
    except (TypeError, ValueError):
        return None


def sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else ""


def describe_series(items: list, table: str | None = None) -> SeriesInfo:
    """Summarise one series from ``[(path, dataset), ...]`` (headers are enough; pixels are not read)."""
    f0, ds0 = items[0]
    sop = str(ds0.get("SOPClassUID", "") or getattr(getattr(ds0, "file_meta", None), "MediaStorageSOPClassUID", ""))
    info = SeriesInfo(series_uid=str(ds0.get("SeriesInstanceUID", "")), series_number=_text(ds0, "SeriesNumber"),
                      description=_text(ds0, "SeriesDescription"), sop_class=sop, image_type=_text(ds0, "ImageType"),
                      kernel=_text(ds0, "ConvolutionKernel"), manufacturer=_text(ds0, "Manufacturer"),
                      modality=_text(ds0, "Modality"), n_images=len(items), thickness_mm=_float(ds0, "SliceThickness"),
                      study_uid=_text(ds0, "StudyInstanceUID"), accession=_text(ds0, "AccessionNumber"),
                      patient_id=_text(ds0, "PatientID"), study_date=_text(ds0, "StudyDate"),
                      study_description=_text(ds0, "StudyDescription"), files=[f for f, _ in items])
    info.kernel_class = kernel_class(info.kernel, info.description, table) if info.kernel or info.description else ""
    _geometry(info, [ds for _, ds in items])
    return info


def _geometry(info: SeriesInfo, datasets: list) -> None:
    try:
        iop = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient], np.float64)
        pos = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in datasets], np.float64)
    except (AttributeError, TypeError, ValueError):
        return                                                         # no geometry: check_series says so
    normal = np.cross(iop[:3], iop[3:])
    normal /= max(np.linalg.norm(normal), 1e-9)
    axis = int(np.argmax(np.abs(normal)))
    info.orientation = AXES[axis]
    info.obliquity_deg = round(float(np.degrees(np.arccos(min(1.0, abs(normal[axis]))))), 2)
    pos = pos[np.argsort(pos @ normal, kind="stable")]
    gantry = _float(datasets[0], "GantryDetectorTilt")
    if len(pos) < 2:
        info.tilt_deg = abs(gantry or 0.0)
        info.spacing_mm = info.thickness_mm
        info.extent_mm = float(info.thickness_mm or 0.0)
        return
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    info.duplicates = int((steps < 1e-3).sum())
    real = steps[steps >= 1e-3]
    if not len(real):
        return
    step = float(np.median(real))
    info.spacing_mm = round(step, 4)
    direction = (pos[-1] - pos[0]) / max(np.linalg.norm(pos[-1] - pos[0]), 1e-9)
    info.tilt_deg = round(float(np.degrees(np.arccos(min(1.0, abs(direction @ normal))))), 2)
    for i, s in enumerate(steps):
        n = int(round(s / step)) - 1
        if s > 1.5 * step and n >= 1:
            info.missing.append((n, float((pos[i][2] + pos[i + 1][2]) / 2)))
    info.extent_mm = round(float((len(pos) + sum(n for n, _ in info.missing)) * step), 2)


def check_series(info: SeriesInfo, policy: SeriesPolicy | None = None) -> SeriesVerdict:
    """Refuse what is not an axial head-CT volume, with one line naming the series; accept the rest with its
    warnings and the correction the loader applies (resampling a tilted / oblique stack, filling tolerated gaps)."""
    policy = policy or SeriesPolicy()
    name = info.label()
    refuse = lambda why: SeriesVerdict(False, f"{name}: {why}")  # noqa: E731
    itype = info.image_type.upper()
    if info.sop_class and info.sop_class not in (CT_IMAGE, ENHANCED_CT):
        kind = sop_class_name(info.sop_class) or info.sop_class
        if "Secondary Capture" in kind or "Image Storage" not in kind:
            return refuse(f"SOP class {kind}, not CT Image Storage: a screen save, report or other non-image "
                          "object, not a CT volume")
    if info.sop_class == ENHANCED_CT:
        return refuse("Enhanced CT (multi-frame) is not read here; export the series as classic CT Image Storage")
    warnings = []
    if info.modality and info.modality != "CT":
        if not policy.allow_non_ct:
            return SeriesVerdict(False, f"Modality is {info.modality}, not CT; the models here read head CT "
                                        "(molre predict --allow-non-ct forces it)")
        warnings.append(f"Modality {info.modality} forced with --allow-non-ct: not a CT, probabilities are not meaningful")
    if any(w in itype.split("\\") for w in LOCALIZER_WORDS) or re.search(r"\b(scout|topogram|localizer|surview)\b",
                                                                         info.description, re.I):
        return refuse(f"a localizer (ImageType {info.image_type or '-'}), not a head CT volume")
    if info.n_images < policy.min_images:
        return refuse("a single image, not a volume (a localizer, screen save or one slice); export the whole series")
    if not info.orientation:
        return refuse("missing or invalid geometry tags (ImageOrientationPatient / ImagePositionPatient)")
    if not policy.allow_derived and any(w in itype.split("\\") for w in DERIVED_WORDS):
        return refuse(f"a derived reformat or projection (ImageType {info.image_type}); pick the acquired axial "
                      "series (or allow_derived)")
    if info.orientation != "axial" or info.obliquity_deg > policy.max_oblique_deg:
        return refuse(f"{info.orientation} slices ({info.obliquity_deg:.0f} deg from the nearest axis), not axial: "
                      "a reformat; pick the axial series")
    if info.kernel_class in ("bone", "lung"):
        msg = f"{info.kernel_class}-kernel reconstruction {info.kernel or info.description!r}, not soft tissue"
        if policy.bone_kernel == "refuse":
            return refuse(msg + " (pick the soft-tissue series, or bone_kernel=warn to read it)")
        warnings.append(msg)
    if info.duplicates:
        return refuse(f"{info.duplicates} slice(s) share a position with another (two acquisitions in one series?)")
    verdict = SeriesVerdict(True, warnings=warnings)
    if info.missing:
        n = sum(k for k, _ in info.missing)
        if n > policy.max_missing_slices:
            return refuse(f"{info.missing_text()} (tolerance {policy.max_missing_slices}); re-export the series")
        warnings.append(info.missing_text() + " (interpolated)")
        verdict.fill_gaps = True
    tilted = info.tilt_deg > policy.max_angle_deg
    oblique = info.obliquity_deg > policy.max_angle_deg and not tilted
    if tilted:
        if policy.gantry_tilt == "refuse":
            return refuse(f"gantry tilt {info.tilt_deg:.1f} deg (sheared stack); gantry_tilt=correct resamples it")
        warnings.append(f"gantry tilt {info.tilt_deg:.1f} deg corrected by resampling onto an axial grid")
        verdict.resample = True
    if oblique:
        if policy.oblique == "refuse":
            return refuse(f"oblique axial slices ({info.obliquity_deg:.1f} deg); oblique=resample resamples them")
        warnings.append(f"oblique slices ({info.obliquity_deg:.1f} deg) resampled onto an axial grid")
        verdict.resample = True
    return verdict


def read_headers(files: list[Path], tags: tuple[str, ...] | None = None) -> tuple[list, list[Path]]:
    """([(path, header dataset)], non-DICOM files) without reading pixel data."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out, other = [], []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=list(tags) if tags else None)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            other.append(f)
            continue
        if not str(ds.get("SeriesInstanceUID", "")) and "SOPClassUID" not in ds:
            other.append(f)                                            # DICOMDIR and the like
            continue
        out.append((f, ds))
    return out, other


HEADER_TAGS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SOPClassUID", "ImageType",
               "ConvolutionKernel", "Manufacturer", "Modality", "SliceThickness", "ImageOrientationPatient",
               "ImagePositionPatient", "GantryDetectorTilt", "StudyInstanceUID", "AccessionNumber", "PatientID",
               "StudyDate", "StudyDescription", "InstanceNumber")


def series_of(files: list[Path], table: str | None = None) -> dict[str, SeriesInfo]:
    """SeriesInstanceUID -> :class:`SeriesInfo` of the DICOM files given (headers only, selected tags)."""
    items, _ = read_headers(files, HEADER_TAGS)
    groups: dict[str, list] = {}
    for f, ds in items:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    return {uid: describe_series(g, table) for uid, g in groups.items()}


def describe_choices(series: dict[str, SeriesInfo]) -> str:
    """'series 2 "HEAD 5mm" (kernel H30s, 24 images); series 3 ...' for a folder holding several series."""
    ordered = sorted(series.values(), key=lambda s: (_num(s.series_number), s.series_uid))
    return "; ".join(f"{s.label()[:-1] + ', ' if s.kernel else s.label() + ' ('}{s.n_images} image(s)) uid {s.series_uid}"
                     for s in ordered)


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")
