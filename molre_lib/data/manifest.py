"""Scan manifests: one CSV row per scan, checked for everything a user can get wrong.

Columns: ``scan_id``, ``patient_id``, ``split`` (train / val / test), ``path`` (relative to the
root: a NIfTI file or a DICOM series folder), then one column per taxonomy finding key holding
1, 0 or empty (unknown). Optional ``series_uid`` picks one series of a folder holding several (``molre convert
pacs`` writes it; every loader honours it). Other columns are kept; name them ``meta_*`` when they hold only 0/1,
otherwise they are taken for a misspelt finding. The root defaults to the manifest's folder.

With ``check_files``, every DICOM path passes the same series check as the loaders
(:func:`molre_lib.data.dicom_series.check_series`, headers only): a folder holding several series without a
``series_uid``, a scout, a dose report, a reformat or a bone-kernel series is an error naming the series by
number, description and kernel, before any training step.
"""
from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import is_nifti, subfolders_message
from .taxonomy import FINDING_KEYS

REQUIRED = ("scan_id", "patient_id", "split", "path")
OPTIONAL = ("series_uid",)
SPLITS = ("train", "val", "test")
POSITIVE, NEGATIVE, UNKNOWN = ("1", "1.0"), ("0", "0.0"), ("",)


@dataclass(frozen=True)
class Problem:
    level: str                 # "error" or "warning"
    message: str
    row: int | None = None     # 1-based data row (the line after the header is row 1)
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row} (line {self.row + 1})")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{self.level}: " + (", ".join(where) + ": " if where else "") + self.message


class ManifestError(ValueError):
    """A manifest with errors; ``problems`` lists every one (and the warnings)."""

    def __init__(self, path, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.level == "error"]
        super().__init__(f"{path}: {len(errors)} problem(s):\n" + "\n".join(format_problems(errors)))


def _ranges(rows: list[int], show: int = 4) -> str:
    """'3, 7, 9-12' for sorted row numbers (at most ``show`` runs, then '... (+N rows)')."""
    runs: list[list[int]] = []
    for r in sorted(set(rows)):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:show])
    if len(runs) > show:
        text += f" ... (+{sum(b - a + 1 for a, b in runs[show:])} rows)"
    return text


def format_problems(problems: list[Problem]) -> list[str]:
    """One line per distinct problem: repeats of the same message (the same bad value in many cells or rows)
    become one line with the count, the rows and the columns, so 400 cells holding 'True' are one line."""
    groups: dict[tuple[str, str], list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.level, p.message), []).append(p)
    lines = []
    for (level, message), members in groups.items():
        if len(members) == 1:
            lines.append(str(members[0]))
            continue
        rows = [p.row for p in members if p.row is not None]
        cols = list(dict.fromkeys(p.column for p in members if p.column is not None))
        if rows and not cols:
            lines.append(f"{level}: {len(members)} rows ({_ranges(rows)}): {message}")
            continue
        where = [f"column {cols[0]!r}" if len(cols) == 1 else
                 f"{len(cols)} columns ({', '.join(map(repr, cols[:3]))}{' ...' if len(cols) > 3 else ''})"] if cols else []
        if rows:
            where.append(f"rows {_ranges(rows)}")
        what = f"{len(members)} cells" if rows else f"{len(members)} times"
        lines.append(f"{level}: {what}{' in ' + ', '.join(where) if where else ''}: {message}")
    return lines


_SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _wrong_separator(header: list[str]) -> str | None:
    """The name of the separator a one-column header was written with (Excel in many locales: ';')."""
    if len(header) != 1:
        return None
    counts = {sep: header[0].count(sep) for sep in _SEPARATORS}
    sep = max(counts, key=counts.get)
    return _SEPARATORS[sep] if counts[sep] >= 3 else None


def resolve(root: Path, rel: str) -> Path:
    """Lexically normalised ``root / rel`` (symlinks inside the root may point anywhere)."""
    return Path(os.path.normpath(root / rel))


def absolute_path_message(rel: str) -> str:
    """Why an absolute manifest path is refused, and what to do (every reader says the same)."""
    return (f"path {rel!r} is absolute; write paths relative to one root folder and pass that folder "
            "(molre validate --root FOLDER, molre train --data-root FOLDER, molre preprocess --root FOLDER)")


def _check_path(root: Path, rel: str, series_uid: str = "", policy=None) -> tuple[str | None, list[str]]:
    """(why ``rel`` is not a usable scan path or None, warnings of its series)."""
    if not rel.strip():
        return "missing path", []
    if os.path.isabs(rel):
        return absolute_path_message(rel), []
    p = resolve(root, rel)
    if p != root and root not in p.parents:
        return f"path {rel!r} escapes the root {root} (pass the folder above it with --root / --data-root)", []
    if not p.exists():
        return f"{p} does not exist", []
    if not os.access(p, os.R_OK):
        return f"{p} is not readable (permissions)", []
    try:
        if p.is_dir():
            files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
            if not files:
                return subfolders_message(p) or f"{p} is an empty folder (expected a DICOM series)", []
            return _check_series_files(p, sorted(files), series_uid, policy)
        if is_nifti(p):
            import nibabel as nib

            nib.load(str(p))                                         # header only
            return None, []
        return _check_series_files(p, [p], series_uid, policy)
    except Exception as err:  # noqa: BLE001 - report whatever the reader says
        return f"{p} is unreadable ({type(err).__name__}: {err})", []


def _is_dicom(f: Path) -> bool:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        pydicom.dcmread(str(f), stop_before_pixels=True)
    except InvalidDicomError:
        return False
    return True


_SERIES_MEMO: dict = {}


def _check_series_files(p: Path, files: list[Path], series_uid: str, policy) -> tuple[str | None, list[str]]:
    """The loaders' series check on headers: one series (or the one ``series_uid`` names) that passes."""
    from dataclasses import replace

    from .dicom_series import SeriesPolicy, check_series, describe_choices, series_of, sop_class_name
    from .io import file_signature

    key = (str(p), tuple(file_signature(p)))
    series = _SERIES_MEMO.get(key)
    if series is None:
        series = _SERIES_MEMO.setdefault(key, series_of(files))
    if not series:                                                      # a study folder with a README beside
        sub = subfolders_message(p, files) if p.is_dir() else None      # its series folders, or not DICOM at all
        if sub:
            return sub, []
        if not _is_dicom(files[0]):
            return (f"{files[0]}: not a DICOM file (no DICM preamble) and not .nii/.nii.gz" if len(files) == 1 else
                    f"{p}: no DICOM files among its {len(files)} file(s) (e.g. {files[0].name}: no DICM preamble)"), []
        return f"{p}: no DICOM files found", []
    if series_uid:
        if series_uid not in series:
            return f"{p}: no series {series_uid} here (found: {describe_choices(series)})", []
        info = series[series_uid]
    else:
        images = {u: i for u, i in series.items() if not i.sop_class or "Image Storage" in sop_class_name(i.sop_class)}
        images = images or series                          # a stray SR / presentation state beside one image series
        if len(images) > 1:
            return (f"{p} holds {len(images)} DICOM series: {describe_choices(images)}; add a series_uid column "
                    "naming the one to read (molre convert pacs writes it)"), []
        info = next(iter(images.values()))
    policy = policy or SeriesPolicy()
    verdict = check_series(info, replace(policy, min_images=max(policy.min_images, 2)))
    return (None if verdict.ok else f"{p}: {verdict.reason}"), [f"{p}: {w}" for w in verdict.warnings]


class _Sheet:
    """A manifest's header and non-empty rows, plus where problems go."""

    def __init__(self, header: list[str], rows: list[list[str]]) -> None:
        self.header, self.rows = header, rows
        self.idx = {h: i for i, h in enumerate(header)}
        self.label_cols = [h for h in header if h in FINDING_KEYS]
        self.problems: list[Problem] = []

    def cell(self, r: list[str], c: str) -> str:
        return r[self.idx[c]].strip() if self.idx[c] < len(r) else ""

    def err(self, msg: str, row: int | None = None, col: str | None = None) -> None:
        self.problems.append(Problem("error", msg, row, col))

    def warn(self, msg: str, row: int | None = None, col: str | None = None) -> None:
        self.problems.append(Problem("warning", msg, row, col))


def validate_manifest(path: str | Path, root: str | Path | None = None, required_splits=SPLITS,
                      check_files: bool = True, policy=None) -> list[Problem]:
    """Every problem of a manifest (errors and warnings); an empty error list means it is valid. ``policy``: the
    :class:`~molre_lib.data.dicom_series.SeriesPolicy` DICOM paths are checked with (default: its defaults)."""
    path = Path(path)
    root = Path(root).resolve() if root is not None else path.resolve().parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [r for r in reader if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [Problem("error", f"cannot read {path}: {e}")]
    if not header:
        return [Problem("error", f"{path} is empty (no header)")]
    if sep := _wrong_separator(header):
        return [Problem("error", f"{path} is {sep}-separated (its header is one column: {header[0][:60]!r}...); "
                                 "a manifest is comma-separated: save it as CSV with commas (in Excel: "
                                 "'CSV UTF-8 (comma delimited)')")]
    sheet = _Sheet([h.strip() for h in header], rows)
    _check_columns(sheet)
    split_rows = _check_rows(sheet, root, check_files, policy)
    if "split" in sheet.idx:
        _check_splits(sheet, split_rows, required_splits)
    return sheet.problems


def _check_columns(sheet: _Sheet) -> None:
    """Duplicate / missing required columns, rows with the wrong field count, misspelt and missing findings."""
    header, rows = sheet.header, sheet.rows
    for col in sorted({h for h in header if header.count(h) > 1}):
        sheet.err("column appears more than once", col=col)
    for col in REQUIRED:
        if col not in header:
            sheet.err("missing required column", col=col)
    for n, r in enumerate(rows, start=1):
        if len(r) != len(header):
            sheet.err(f"has {len(r)} fields, header has {len(header)}", row=n)
    for h in header:  # unknown finding columns
        if h in REQUIRED or h in OPTIONAL or h in FINDING_KEYS or h.startswith("meta_") or not h:
            continue
        close = difflib.get_close_matches(h, FINDING_KEYS, n=1, cutoff=0.8)
        values = {sheet.cell(r, h) for r in rows}
        if close:
            sheet.err(f"not a taxonomy finding key; did you mean {close[0]!r}?", col=h)
        elif values <= set(POSITIVE + NEGATIVE + UNKNOWN) and values - set(UNKNOWN):
            sheet.err("holds 1/0 labels but is not a taxonomy finding key (use a key from data_manifests/findings.csv, "
                      "or prefix the name with meta_ to keep it as an extra column)", col=h)
    missing = [k for k in FINDING_KEYS if k not in header]
    if missing and len(missing) < len(FINDING_KEYS):
        sheet.warn(f"{len(missing)} taxonomy findings have no column and are unknown for every scan: "
                   f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    elif missing:
        sheet.warn("no finding columns at all: every label is unknown")


def _check_rows(sheet: _Sheet, root: Path, check_files: bool, policy=None) -> dict[str, list[int]]:
    """Per row: scan id, split, patient (one split per patient), path and labels; returns the rows of each split."""
    first_scan: dict[str, int] = {}
    patient_split: dict[str, tuple[str, int]] = {}
    split_rows: dict[str, list[int]] = {s: [] for s in SPLITS}
    idx, cell = sheet.idx, sheet.cell
    missing = 0
    for n, r in enumerate(sheet.rows, start=1):
        if "scan_id" in idx:
            sid = cell(r, "scan_id")
            if not sid:
                sheet.err("empty scan_id", n, "scan_id")
            elif sid in first_scan:
                sheet.err(f"duplicate scan_id {sid!r} (first in row {first_scan[sid]})", n, "scan_id")
            else:
                first_scan[sid] = n
        split = cell(r, "split") if "split" in idx else None
        if split is not None:
            if split not in SPLITS:
                sheet.err(f"unknown split {split!r} (allowed: {', '.join(SPLITS)})", n, "split")
            else:
                split_rows[split].append(n)
        if "patient_id" in idx:
            pid = cell(r, "patient_id")
            if not pid:
                sheet.err("empty patient_id", n, "patient_id")
            elif split in SPLITS:
                seen = patient_split.setdefault(pid, (split, n))
                if seen[0] != split:
                    sheet.err(f"patient {pid!r} is in split {split!r} here but in {seen[0]!r} in row {seen[1]} "
                              "(splits must be by patient)", n, "split")
        if "path" in idx and check_files:
            uid = cell(r, "series_uid") if "series_uid" in idx else ""
            why, warnings = _check_path(root, cell(r, "path"), uid, policy)
            if why:
                sheet.err(why, n, "path")
                missing += why.endswith(" does not exist")
            for w in warnings:
                sheet.warn(w, n, "path")
        _check_labels(sheet, r, n)
    if sheet.rows and missing == len(sheet.rows):
        sheet.err(f"none of the {missing} path(s) exists under {root}; if they are relative to another folder, pass "
                  "it (molre validate --root FOLDER, molre train --data-root FOLDER)", col="path")
    return split_rows


_WORDS = {"true", "false", "yes", "no", "y", "n", "t", "f", "pos", "neg", "positive", "negative"}


def _check_labels(sheet: _Sheet, r: list[str], n: int) -> None:
    known = 0
    for k in sheet.label_cols:
        v = sheet.cell(r, k)
        if v in POSITIVE or v in NEGATIVE:
            known += 1
        elif v not in UNKNOWN:
            hint = " (write 1 for true/yes and 0 for false/no)" if v.lower() in _WORDS else ""
            sheet.err(f"label must be 1, 0 or empty, got {v!r}{hint}", n, k)
    if sheet.label_cols and known == 0:
        sheet.warn("every label of this scan is unknown", n)


def _check_splits(sheet: _Sheet, split_rows: dict[str, list[int]], required_splits) -> None:
    """Required splits present; findings without a positive scan in a split (a warning)."""
    for s in required_splits:
        if not split_rows[s]:
            sheet.err(f"split {s!r} has no rows", col="split")
    for s, members in split_rows.items():
        if not members:
            continue
        none = [k for k in sheet.label_cols if not any(sheet.cell(sheet.rows[i - 1], k) in POSITIVE for i in members)]
        if none:
            sheet.warn(f"split {s!r}: {len(none)} finding(s) have no positive scan: {', '.join(none[:8])}"
                       f"{' ...' if len(none) > 8 else ''}", col="split")


def read_manifest(path: str | Path, root: str | Path | None = None, required_splits=SPLITS,
                  check_files: bool = True, policy=None):
    """The manifest as a pandas DataFrame of strings (extra columns kept); raises ManifestError on any error."""
    import pandas as pd

    problems = validate_manifest(path, root, required_splits, check_files, policy)
    if any(p.level == "error" for p in problems):
        raise ManifestError(path, problems)
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    df.columns = [c.strip() for c in df.columns]
    df.attrs["root"] = str(Path(root).resolve() if root is not None else Path(path).resolve().parent)
    df.attrs["warnings"] = [str(p) for p in problems]
    return df


def labels_and_mask(df) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, 75), mask (N, 75)) float32 in taxonomy order; missing columns are unknown."""
    n = len(df)
    labels = np.zeros((n, len(FINDING_KEYS)), np.float32)
    mask = np.zeros((n, len(FINDING_KEYS)), np.float32)
    for j, k in enumerate(FINDING_KEYS):
        if k not in df.columns:
            continue
        v = df[k].astype(str).str.strip()
        labels[:, j] = v.isin(POSITIVE).to_numpy(np.float32)
        mask[:, j] = (v.isin(POSITIVE) | v.isin(NEGATIVE)).to_numpy(np.float32)
    return labels, mask
