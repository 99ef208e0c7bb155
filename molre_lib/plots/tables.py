"""Tables for the paper (CSV + LaTeX booktabs) and the guard that keeps patient identifiers out of them.

Scan ids are the only subject reference allowed in outputs. :func:`check_no_identifiers` rejects a table
whose columns (or index names) are DICOM identifier keywords, in any spelling (``PatientID``,
``patient_id``, ``Patient Name``), and optionally cells equal to known identifier values.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

# DICOM keywords of attributes that identify a person, institution or study instance (PS3.15 Annex E,
# basic de-identification profile, the subset that shows up in exported tables).
DICOM_IDENTIFIER_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames",
    "OtherPatientIDsSequence", "IssuerOfPatientID", "PatientInsurancePlanCodeSequence", "MedicalRecordLocator",
    "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence", "EthnicGroup", "Occupation",
    "PatientComments", "AdditionalPatientHistory", "ResponsiblePerson", "PersonName",
    "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "StudyDate", "StudyTime", "SeriesDate", "AcquisitionDate", "ContentDate",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
)
_NORMALISED = {re.sub(r"[^a-z0-9]", "", k.lower()): k for k in DICOM_IDENTIFIER_KEYWORDS}


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def identifier_columns(df: pd.DataFrame) -> list[str]:
    """Columns / index names of ``df`` that spell a DICOM identifier keyword."""
    names = [str(c) for c in df.columns] + [str(n) for n in df.index.names if n is not None]
    return [n for n in names if _normalise(n) in _NORMALISED]


def check_no_identifiers(df: pd.DataFrame, forbidden: Iterable[str] = (), where: str = "table") -> None:
    """Raise ValueError if ``df`` has a DICOM identifier column or a cell equal to a ``forbidden`` value."""
    bad = identifier_columns(df)
    if bad:
        raise ValueError(
            f"{where}: columns {bad} are DICOM patient/study identifiers; drop them (scan_id is the only "
            "subject reference allowed in figures and tables)"
        )
    forbidden = {str(v).strip() for v in forbidden if str(v).strip()}
    if forbidden:
        cells = pd.concat([df.reset_index()[c].astype(str).str.strip() for c in df.reset_index().columns])
        hits = sorted(set(cells[cells.isin(forbidden)]))
        if hits:
            raise ValueError(f"{where}: contains {len(hits)} forbidden identifier value(s)")


def check_text_for_identifiers(texts: Iterable[str], forbidden: Iterable[str] = (), where: str = "figure") -> None:
    """Raise ValueError if a text names a DICOM identifier keyword or contains a ``forbidden`` value."""
    forbidden = [str(v).strip() for v in forbidden if str(v).strip()]
    for text in texts:
        if not text:
            continue
        norm = _normalise(text)
        keyword = next((k for n, k in _NORMALISED.items() if n in norm), None)
        if keyword is not None:
            raise ValueError(f"{where}: text {text[:40]!r} mentions DICOM identifier {keyword}")
        if any(v in text for v in forbidden):
            raise ValueError(f"{where}: a text element contains a forbidden identifier value")


def save_table(
    df: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    float_format: str = "{:.3f}",
    caption: str | None = None,
    label: str | None = None,
    index: bool = False,
    forbidden: Iterable[str] = (),
) -> list[Path]:
    """Write ``df`` as ``out_dir/name.csv`` (full precision) and ``name.tex`` (booktabs); return both paths."""
    if not name or Path(name).name != name or Path(name).suffix in {".csv", ".tex"}:
        raise ValueError(f"table name must be a bare stem without directory or extension, got {name!r}")
    check_no_identifiers(df, forbidden, where=f"table {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, tex_path = out / f"{name}.csv", out / f"{name}.tex"
    df.to_csv(csv_path, index=index)
    formatters = {c: float_format.format for c in df.columns if pd.api.types.is_float_dtype(df[c])}
    latex = df.to_latex(
        index=index, escape=True, formatters=formatters, caption=caption, label=label, na_rep="--"
    )  # pandas emits \toprule/\midrule/\bottomrule: needs \usepackage{booktabs}
    tex_path.write_text(latex)
    return [csv_path, tex_path]


def plot_table(df: pd.DataFrame, title: str | None = None, float_format: str = "{:.3f}", col_width: float = 1.0):
    # col_width scales the figure width estimated from the longest text of each column
    """Render ``df`` as a matplotlib table figure (for slides / the summary notebook); returns the Figure."""
    import matplotlib.pyplot as plt

    check_no_identifiers(df, where="plotted table")
    cells = [[float_format.format(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    n_rows, n_cols = len(cells), len(df.columns)
    chars = [max([len(str(c))] + [len(row[j]) for row in cells]) + 2 for j, c in enumerate(df.columns)]
    width = max(3.0, col_width * 0.062 * sum(chars))  # ~0.062 in per character at 7 pt (bold headers)
    row_h, title_h = 0.22, (0.3 if title else 0.0)
    height = row_h * (n_rows + 1) + title_h + 0.04
    fig, ax = plt.subplots(figsize=(width, height))
    # the table fills the axes, and the axes the figure below the title: nothing is cropped at any bbox setting
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.02 / height, top=1 - (title_h + 0.02) / height)
    ax.axis("off")
    table = ax.table(cellText=cells or [[""] * n_cols], colLabels=[str(c) for c in df.columns], cellLoc="center",
                     bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (row, col), cell in table.get_celld().items():
        cell.set_width(chars[col] / sum(chars))
        cell.set_linewidth(0.3)
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#EEEEEE")
    if title:
        fig.suptitle(title, y=1 - 0.04 / height, va="top")
    return fig
