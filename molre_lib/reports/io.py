"""Reading report / label CSVs with one-line errors, and writing the labeller's three outputs atomically.

``molre label-reports REPORTS.csv --out LABELS.csv`` writes ``LABELS.csv`` (id + 75 finding columns: 1 / 0 / -1 /
empty), ``LABELS.evidence.csv`` (one row per mention and derived label) and ``LABELS.summary.csv`` (per finding:
reports mentioning it, positive, negative, uncertain). Every problem in the input is an error naming the file, row
and column (``ValueError``; the CLI prints it on one line and exits 2) raised before anything is written.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from molre_lib.common.files import atomic_write
from molre_lib.data.taxonomy import CATEGORY_OF, FINDING_KEYS

from .labeller import EVIDENCE_COLUMNS, Labeller

UNCERTAIN_POLICIES = ("keep", "positive", "negative")
_SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def read_table(path: str | Path, what: str = "file") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A comma-separated UTF-8 file -> (header, [(row number, cells)]); rows count from 1 after the header."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: {_undecodable_cell(raw, err)}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                         f"offset {err.start}); re-save the {what} as UTF-8") from None
    # strict: a quote that opens a cell and never closes (or closes mid-cell) is an error, not a cell that
    # silently swallows the rows after it
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty file (expected a header row)") from None
    except csv.Error as err:
        raise ValueError(f"{path}: row 0 (header), line 1: {err}; check the quotes") from None
    if len(header) == 1:
        for sep, name in _SEPARATORS.items():
            if sep in header[0]:
                raise ValueError(f"{path}: row 0 (header): one column {header[0][:60]!r}; the file looks "
                                 f"{name}-separated; save it comma-separated (CSV)")
    header = [h.strip() for h in header]
    rows = []
    i, row_line = 0, reader.line_num + 1             # the row being read, and the line it starts on
    try:
        for i, cells in enumerate(reader, start=1):
            if cells and len(cells) != len(header):
                raise ValueError(f"{path}: row {i} (line {reader.line_num}): {len(cells)} cells, the header has "
                                 f"{len(header)}; quote cells that contain commas or line breaks")
            if cells:
                rows.append((i, cells))
            row_line = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(f"{path}: {_unbalanced_quote(text, header, i + 1, row_line)}: a quoted cell does not "
                         f"close where it should ({err}); a quote that opens a cell must close it, and a quote "
                         f"inside a quoted cell is written twice (\"\")") from None
    return header, rows


def _unbalanced_quote(text: str, header: list[str], row: int, line: int) -> str:
    """'row R, column C (line L)' for a row whose quoting breaks: the column is the cell open at the end of the
    row's first line (where an unclosed quote starts), read leniently."""
    lines = io.StringIO(text, newline="").readlines()
    where = f"row {row} (line {line})"
    if 0 < line <= len(lines):
        cells = next(csv.reader([lines[line - 1]]), [])
        if 0 < len(cells) <= len(header):
            where = f"row {row}, column {header[len(cells) - 1]!r} (line {line})"
    return where


def _undecodable_cell(raw: bytes, err: UnicodeDecodeError) -> str:
    """Where the first undecodable byte sits: 'row R, column C (line L)' (row 0 is the header), else 'line L'."""
    line = raw[:err.start].count(b"\n") + 1
    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig", errors="surrogateescape"), newline=""))
    try:
        header = next(reader)
        for i, cells in enumerate([header, *reader]):
            for j, cell in enumerate(cells):
                if any("\udc80" <= ch <= "\udcff" for ch in cell):
                    name = header[j].strip() if i > 0 and j < len(header) else ""
                    column = f"column {name!r}" if name and name.isprintable() and name.isascii() else \
                        f"column {j + 1}"
                    return f"row {i}{' (header)' if i == 0 else ''}, {column} (line {line})"
    except (csv.Error, StopIteration):
        pass
    return f"line {line}"


def _column(path: Path, header: list[str], name: str, option: str) -> int:
    if name not in header:
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise ValueError(f"{path}: row 0 (header): no column {name!r} (columns: {shown}); name it with {option}")
    return header.index(name)


def read_reports(path: str | Path, id_column: str = "report_id", text_column: str = "report") -> list[tuple[str, str]]:
    """(report id, text) per row; missing columns, empty or duplicate ids and empty text are errors."""
    path = Path(path)
    header, rows = read_table(path, "reports file")
    i_id = _column(path, header, id_column, "--id-column")
    i_text = _column(path, header, text_column, "--text-column")
    seen: dict[str, int] = {}
    out = []
    for i, cells in rows:
        rid, text = cells[i_id].strip(), cells[i_text]
        if not rid:
            raise ValueError(f"{path}: row {i}, column {id_column!r}: empty report id")
        if rid in seen:
            raise ValueError(f"{path}: row {i}, column {id_column!r}: duplicate id {rid!r} (first on row {seen[rid]})")
        seen[rid] = i
        if not text.strip():
            raise ValueError(f"{path}: row {i}, column {text_column!r}: empty report text (id {rid!r}); "
                             "remove the row or fill in the report")
        out.append((rid, text))
    if not out:
        raise ValueError(f"{path}: no reports (only a header row)")
    return out


def apply_uncertain(value: int | None, policy: str) -> int | None:
    """Map an uncertain (-1) label for training: keep it, or count it positive / negative."""
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"--uncertain must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    if value == -1 and policy != "keep":
        return 1 if policy == "positive" else 0
    return value


def label_table(reports: list[tuple[str, str]], id_column: str = "report_id", uncertain: str = "keep",
                labeller: Labeller | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels (id + 75 columns, nullable Int64) and evidence of many reports."""
    labeller = labeller or Labeller()
    apply_uncertain(None, uncertain)
    rows, evidence = [], []
    for rid, text in reports:
        result = labeller.label(text, rid)
        rows.append({id_column: rid, **{k: apply_uncertain(result.labels[k], uncertain) for k in FINDING_KEYS}})
        evidence.extend(result.evidence)
    labels = pd.DataFrame(rows, columns=[id_column, *FINDING_KEYS])
    labels[FINDING_KEYS] = labels[FINDING_KEYS].astype("Int64")
    ev = pd.DataFrame(evidence, columns=EVIDENCE_COLUMNS)
    return labels, ev


def summarise(labels: pd.DataFrame) -> pd.DataFrame:
    """Per finding: reports labelled (mentioned), positive, negative, uncertain, and not mentioned."""
    rows = []
    for k in FINDING_KEYS:
        col = labels[k]
        rows.append({"finding": k, "category": CATEGORY_OF[k], "mentioned": int(col.notna().sum()),
                     "positive": int((col == 1).sum()), "negative": int((col == 0).sum()),
                     "uncertain": int((col == -1).sum()), "not_mentioned": int(col.isna().sum())})
    return pd.DataFrame(rows)


def sibling(path: str | Path, suffix: str) -> Path:
    """``labels.csv`` -> ``labels.<suffix>.csv`` beside it."""
    path = Path(path)
    stem = path.name[:-4] if path.name.lower().endswith(".csv") else path.name
    return path.with_name(f"{stem}.{suffix}.csv")


def write_outputs(out: str | Path, labels: pd.DataFrame, evidence: pd.DataFrame, summary: pd.DataFrame) -> list[Path]:
    """Labels, evidence and summary CSVs, each written atomically (labels last: its presence means all three)."""
    out = Path(out)
    paths = [sibling(out, "evidence"), sibling(out, "summary"), out]
    for path, frame in zip(paths, (evidence, summary, labels)):
        atomic_write(path, frame.to_csv(index=False, lineterminator="\n"))
    return paths
