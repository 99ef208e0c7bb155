"""A hospital-style PACS export tree of phantom head CTs, with every quirk ``molre convert pacs`` must handle.

``molre synth --format pacs --out DIR`` (and the tests) write it: five patients, six studies, each with a
lateral scout, the axial soft-tissue series, a bone-kernel series of the same slices and a dose report, some
with a thin series, a sagittal reformat or a dose SR; GE-style (``HEAD STD 5mm``, STANDARD / BONE) and
Siemens-style (``Head 5.0 H30s``, H30s / H70h) names; nested Patient/Study/Series folders with ``.dcm`` files
and a flat study folder holding every series in files without extensions; two studies of one patient; a 20 deg
gantry-tilt study, a 25 deg oblique study and a study whose only soft-tissue series misses a middle slice.
``labels.csv`` (by accession number) and ``expected.json`` (the series a correct converter picks per study)
are written next to the tree. Pixels are the phantom volume sampled on each series' true slice planes, so
the geometry of a corrected series can be checked against the phantom.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .phantom import PhantomConfig, make_subject
from .taxonomy import FINDING_KEYS

CT, SC, DOSE_SR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.67"
VENDORS = {"GE": {"manufacturer": "GE MEDICAL SYSTEMS", "soft": "STANDARD", "bone": "BONE", "scout": "STANDARD",
                  "desc": "HEAD STD {t:g}mm", "bone_desc": "HEAD BONE {t:g}mm", "scout_desc": "Scout"},
           "Siemens": {"manufacturer": "SIEMENS", "soft": "H30s", "bone": "H70h", "scout": "T20s",
                       "desc": "Head {t:.1f} H30s", "bone_desc": "Head {t:.1f} H70h", "scout_desc": "Topogram 0.6 T20s"}}


@dataclass
class StudyPlan:
    patient: str
    accession: str
    vendor: str
    layout: str = "nested"            # nested: Patient/Study/Series; flat: every series in one folder
    extension: str = ".dcm"
    thin: bool = False
    reformat: bool = False
    dose_sr: bool = False
    tilt_deg: float = 0.0             # gantry tilt of every axial series
    oblique_deg: float = 0.0          # rotation of every axial series about x
    drop_middle: bool = False         # the soft-tissue series misses its middle slice
    expected: str = "soft"            # series a correct converter picks ("" = none acceptable)
    labels: dict = field(default_factory=dict)


PLAN = (
    StudyPlan("PAT001", "ACC1001", "GE", thin=True, reformat=True, labels={"intracranial_hemorrhage": 1}),
    StudyPlan("PAT001", "ACC1002", "GE", dose_sr=True, labels={"intracranial_hemorrhage": 0}),
    StudyPlan("PAT002", "ACC2001", "Siemens", layout="flat", extension="", labels={"intracranial_hemorrhage": 0}),
    StudyPlan("PAT003", "ACC3001", "Siemens", extension="", tilt_deg=20.0, labels={"calvarial_fracture": 1}),
    StudyPlan("PAT004", "ACC4001", "GE", oblique_deg=25.0, labels={"intracranial_hemorrhage": 1}),
    StudyPlan("PAT005", "ACC5001", "GE", drop_middle=True, expected="", labels={"intracranial_hemorrhage": 0}),
)


def phantom_volume(seed: int, depth: int = 32, size: int = 32):
    """(hu (D, H, W), spacing (dz, dy, dx), origin LPS) of a phantom head: 5 mm slices over 160 mm."""
    s = make_subject(seed, PhantomConfig(shape=(depth, size, size), spacing=(160.0 / depth, 230.0 / size, 230.0 / size),
                                         pv_subsamples=1))
    return s.hu, s.spacing, s.origin


def sample_planes(hu: np.ndarray, spacing, origin, positions: np.ndarray, row: np.ndarray, col: np.ndarray,
                  rows: int, cols: int, pixel: tuple[float, float]) -> np.ndarray:
    """(k, rows, cols) HU of the phantom on the planes through ``positions`` (LPS of pixel (0, 0)) spanned by
    the unit vectors ``row`` (along a row, column index) and ``col`` (down a column); outside the phantom: air."""
    from scipy.ndimage import map_coordinates

    dz, dy, dx = spacing
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")            # (rows, cols)
    out = np.empty((len(positions), rows, cols), np.float32)
    for k, p in enumerate(positions):
        pts = p[:, None, None] + row[:, None, None] * ii * pixel[1] + col[:, None, None] * jj * pixel[0]  # (3, r, c)
        idx = np.stack([(pts[2] - origin[2]) / dz, (pts[1] - origin[1]) / dy, (pts[0] - origin[0]) / dx])
        out[k] = map_coordinates(hu, idx.reshape(3, -1), order=1, mode="constant", cval=-1024.0).reshape(rows, cols)
    return out


def axial_positions(spacing, origin, depth: int, size: int, tilt_deg: float = 0.0, oblique_deg: float = 0.0,
                    step: float | None = None):
    """(positions (k, 3), row, col) of an axial series over the phantom's field of view. A gantry tilt tilts the
    planes about x while positions advance along z (a sheared stack); an oblique series rotates planes and
    stacking direction together."""
    dz, dy, dx = spacing
    step = step or dz
    angle = np.radians(tilt_deg or oblique_deg)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row, col)
    centre = np.asarray(origin) + np.array([(size - 1) * dx, (size - 1) * dy, (depth - 1) * dz]) / 2
    n = int(round(depth * dz / step))
    half_plane = row * (size - 1) * dx / 2 + col * (size - 1) * dy / 2
    advance = np.array([0, 0, 1.0]) if tilt_deg else normal
    offsets = (np.arange(n) - (n - 1) / 2) * step
    return centre[None] - half_plane[None] + offsets[:, None] * advance[None], row, col


def write_series(folder: Path, name: str, images: np.ndarray | None, positions, row, col, pixel, attrs: dict,
                 uid_seed: str, extension: str = ".dcm") -> list[Path]:
    """Write one series (``images`` (k, rows, cols) HU, or None for a dose SR without pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    sop_class = attrs.pop("SOPClassUID", CT)
    n = 1 if images is None else len(images)
    series_uid = generate_uid(entropy_srcs=[uid_seed, "series"])
    paths = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, f"sop{k}"])
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.InstanceNumber = series_uid, k + 1
        for key, value in attrs.items():
            setattr(ds, key, value)
        if images is not None:
            if positions is not None:
                ds.ImagePositionPatient = [f"{v:.4f}" for v in positions[k]]
                ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
                ds.PixelSpacing = [f"{pixel[0]:.6f}", f"{pixel[1]:.6f}"]
            ds.Rows, ds.Columns = images.shape[1:]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.PixelData = (np.clip(np.rint(images[k]), -1024, 3071) + 1024).astype(np.uint16).tobytes()
        path = folder / f"{name}{k + 1:04d}{extension}"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def _study(root: Path, n: int, plan: StudyPlan, seed: int) -> dict:
    v = VENDORS[plan.vendor]
    hu, spacing, origin = phantom_volume(seed)
    depth, size = hu.shape[0], hu.shape[1]
    pixel = (spacing[1], spacing[2])
    study_uid = f"1.2.826.0.1.3680043.10.1234.{seed}.{n}"
    common = {"Modality": "CT", "Manufacturer": v["manufacturer"], "PatientID": plan.patient,
              "PatientName": f"PHANTOM^{plan.patient}", "StudyInstanceUID": study_uid, "AccessionNumber": plan.accession,
              "StudyDate": f"2024010{n + 1}", "StudyDescription": "CT HEAD WO CONTRAST", "FrameOfReferenceUID":
              f"{study_uid}.9"}
    study_dir = root / plan.patient / f"{plan.accession}_CT_HEAD"
    where = (lambda s: study_dir) if plan.layout == "flat" else (lambda s: study_dir / s)  # noqa: E731
    written: dict[str, dict] = {}

    def series(key, number, desc, kernel, image_type, images, pos, row, col, extra=None):
        attrs = {**common, "SeriesNumber": number, "SeriesDescription": desc, "ConvolutionKernel": kernel,
                 "ImageType": image_type, **(extra or {})}
        if images is not None and pos is not None:
            attrs["SliceThickness"] = f"{extra.get('_t', spacing[0]) if extra else spacing[0]:.2f}"
        attrs.pop("_t", None)
        px = attrs.pop("_pixel", pixel)
        folder = where(f"SE{number:03d}_{desc.replace(' ', '_').replace('.', '')}")
        files = write_series(folder, f"IM{number:03d}_" if plan.layout == "flat" else "IM", images, pos, row, col,
                             px, attrs, f"{study_uid}.{number}", plan.extension)
        written[key] = {"series_number": number, "description": desc, "folder": str(folder.relative_to(root)),
                        "n_files": len(files)}

    # lateral scout: one sagittal image of (z, y) through the midline
    mid = hu[:, :, size // 2][::-1]                                                      # (D, H): top row superior
    series("scout", 1, v["scout_desc"], v["scout"], ["ORIGINAL", "PRIMARY", "LOCALIZER"], mid[None],
           np.array([[0.0, origin[1], origin[2] + (depth - 1) * spacing[0]]]), np.array([0, 1.0, 0]),
           np.array([0, 0, -1.0]), {"_t": 1.0, "_pixel": (spacing[0], spacing[1])})
    pos, row, col = axial_positions(spacing, origin, depth, size, plan.tilt_deg, plan.oblique_deg)
    images = sample_planes(hu, spacing, origin, pos, row, col, size, size, pixel)
    tilt = {"GantryDetectorTilt": f"{plan.tilt_deg:g}"} if plan.tilt_deg else {}
    keep = np.arange(len(pos)) != (len(pos) // 2 if plan.drop_middle else -1)
    t = spacing[0]
    series("soft", 2, v["desc"].format(t=t), v["soft"], ["ORIGINAL", "PRIMARY", "AXIAL"], images[keep], pos[keep],
           row, col, tilt)
    series("bone", 3, v["bone_desc"].format(t=t), v["bone"], ["ORIGINAL", "PRIMARY", "AXIAL"], images[keep], pos[keep],
           row, col, tilt)
    if plan.thin:
        tpos, trow, tcol = axial_positions(spacing, origin, depth, size, step=t / 2)
        series("thin", 4, v["desc"].format(t=t / 2), v["soft"], ["ORIGINAL", "PRIMARY", "AXIAL"],
               sample_planes(hu, spacing, origin, tpos, trow, tcol, size, size, pixel), tpos, trow, tcol, {"_t": t / 2})
    if plan.reformat:                                                                    # sagittal MPR: planes (y, -z)
        xs = origin[0] + spacing[2] * np.arange(size)
        spos = np.stack([xs, np.full(size, origin[1]), np.full(size, origin[2] + (depth - 1) * spacing[0])], 1)
        series("reformat", 5, "SAG MPR", v["soft"], ["DERIVED", "SECONDARY", "REFORMATTED"],
               sample_planes(hu, spacing, origin, spos, np.array([0, 1.0, 0]), np.array([0, 0, -1.0]), depth, size,
                             (spacing[0], spacing[1])), spos, np.array([0, 1.0, 0]), np.array([0, 0, -1.0]),
               {"_pixel": (spacing[0], spacing[1])})
        written["reformat"]["n_files"] = size
    screen = np.full((1, size, size), -1024.0, np.float32)
    screen[0, 4:8, 4:28] = 2000                                                          # "text"
    series("dose", 900, "Dose Report", "", ["DERIVED", "SECONDARY", "OTHER"], screen, None, None, None,
           {"SOPClassUID": SC})
    if plan.dose_sr:
        series("dose_sr", 901, "Radiation Dose Information", "", [], None, None, None, None,
               {"SOPClassUID": DOSE_SR, "Modality": "SR"})
    return {"accession": plan.accession, "patient_id": plan.patient, "study_uid": study_uid, "vendor": plan.vendor,
            "layout": plan.layout, "expected": written[plan.expected]["series_number"] if plan.expected else None,
            "series": written, "tilt_deg": plan.tilt_deg, "oblique_deg": plan.oblique_deg, "seed": seed,
            "phantom": {"spacing": list(spacing), "origin": list(origin), "depth": depth, "size": size}}


def write_export_tree(out: str | Path, seed: int = 0, plan=PLAN) -> Path:
    """Write the export tree under ``out/export`` plus ``out/labels.csv`` and ``out/expected.json``; returns
    the tree's root folder. Seeds: study ``n`` renders phantom subject ``seed * 100 + n`` (one anatomy per
    patient: the two studies of PAT001 share it)."""
    out = Path(out)
    root = out / "export"
    first_study: dict[str, int] = {}
    studies = [_study(root, n, p, seed * 100 + first_study.setdefault(p.patient, n)) for n, p in enumerate(plan)]
    with open(out / "labels.csv", "w", newline="") as f:
        keys = [k for k in FINDING_KEYS if any(k in p.labels for p in plan)]
        w = csv.DictWriter(f, fieldnames=["accession", *keys], lineterminator="\n")
        w.writeheader()
        for p in plan:
            w.writerow({"accession": p.accession, **{k: p.labels.get(k, "") for k in keys}})
    (out / "expected.json").write_text(json.dumps({s["accession"]: s for s in studies}, indent=1))
    return root
