"""Publication tables: one object that renders as a journal-ready LaTeX table and as a machine-readable CSV.

A :class:`PaperTable` holds the numbers under machine column names (``auc_lora``, ``delta_ci_low_molre``, ...,
full precision: that is the CSV) plus how to show them: human headers with units, grouped headers, numbers
with a fixed number of decimals aligned on the decimal point, a CI in one cell (``+0.012 [−0.004, 0.027]``),
the best value of a row in bold, a caption, a label and a footnote.

The LaTeX needs only ``\\usepackage{booktabs}`` (texlive-latex-recommended); decimal alignment uses plain
``r@{}l`` column pairs (integer part right-aligned, ``.fraction`` left-aligned), so a bold number stays
aligned too, and CI cells pad missing signs with ``\\phantom``. A test compiles every table with pdflatex.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from molre_lib.plots.tables import check_no_identifiers

KINDS = ("text", "num", "int", "ci", "p")
MINUS = "\u2212"  # typographic minus in CSV-free display text


@dataclass
class Column:
    """One shown column. ``key`` names the machine column; a ``ci`` column shows ``keys`` = (point, low, high)."""

    key: str
    header: str  # human header with unit, e.g. "Params (M)"; Unicode Δ / − are typeset in LaTeX
    kind: str = "num"  # text | num (fixed decimals) | int | ci (point [low, high]) | p (p-value)
    digits: int = 3
    group: str = ""  # spanning header over neighbouring columns with the same group
    keys: tuple[str, ...] = ()
    signed: bool = False  # show "+" on positive values (differences)
    point_signed: bool = True  # a ci column's point with its sign (a difference); False for an AUC [CI] cell
    missing: str = "--"  # what a missing value shows ("" for the blank cells of a grouped layout)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Column {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "ci" and len(self.keys) != 3:
            raise ValueError(f"Column {self.key!r}: a ci column needs keys=(point, low, high)")

    @property
    def data_keys(self) -> tuple[str, ...]:
        return self.keys if self.kind == "ci" else (self.key,)


@dataclass
class PaperTable:
    """Numbers (``data``, machine column names), the columns to show, and the table's words."""

    data: pd.DataFrame
    columns: list[Column]
    caption: str
    label: str
    notes: list[str] = field(default_factory=list)
    bold: set[tuple[int, str]] = field(default_factory=set)  # (row position, column key) shown in bold
    midrule_before: set[int] = field(default_factory=set)  # row positions preceded by a \midrule (e.g. "All")
    space_before: set[int] = field(default_factory=set)  # row positions preceded by booktabs' \addlinespace
    split_before: set[int] = field(default_factory=set)  # row positions that start a new float "(continued)"
    size: str = "\\small"  # font size of the table body (a wide table may use \footnotesize)
    tabcolsep: str = "4pt"  # space either side of a column (LaTeX's default is 6pt)

    def __post_init__(self) -> None:
        missing = [k for c in self.columns for k in c.data_keys if k not in self.data.columns]
        if missing:
            raise KeyError(f"table {self.label!r}: columns {missing} are not in its data {list(self.data.columns)}")

    # -- display ------------------------------------------------------------------------------------
    def display_frame(self) -> pd.DataFrame:
        """The table as text cells under human headers (grouped headers joined with ': '), for notebooks."""
        out = {}
        for col in self.columns:
            name = f"{col.group}: {col.header}" if col.group else col.header
            name = name.replace("\n", " ")
            out[name] = [_plain(self._cell_values(i, col), col) for i in range(len(self.data))]
        return pd.DataFrame(out)

    def _cell_values(self, i: int, col: Column) -> tuple:
        return tuple(self.data[k].iloc[i] for k in col.data_keys)

    def _ci_padding(self, col: Column) -> tuple[bool, bool]:
        """Whether the CI bounds of a ci column need a phantom minus to align (some bound below zero)."""
        if col.kind != "ci":
            return (False, False)
        return tuple(bool((self.data[k].astype(float).round(col.digits) < 0).any()) for k in col.keys[1:])

    # -- LaTeX --------------------------------------------------------------------------------------
    def to_latex(self, env: str = "table", placement: str = "tbp") -> str:
        """A complete ``table`` float: caption, label, booktabs tabular with aligned numbers, footnote."""
        spec, head, rows = [], [], []
        for col in self.columns:
            spec.append("r@{}l" if col.kind in ("num", "p") else ("l" if col.kind == "text" else "r"))
        width = {id(c): (2 if c.kind in ("num", "p") else 1) for c in self.columns}
        # header rows: groups (with cmidrules) above, column headers below
        groups, start = [], 1
        for col in self.columns:
            if groups and col.group and groups[-1][0] == col.group:
                groups[-1][2] += width[id(col)]
            else:
                groups.append([col.group, start, width[id(col)]])
            start += width[id(col)]
        has_groups = any(g for g, _, _ in groups)
        if has_groups:
            head.append(_join_cells(groups) + " \\\\")
            rules = " ".join(f"\\cmidrule(lr){{{s}-{s + n - 1}}}" for g, s, n in groups if g)
            head.append(rules)
        labels = []
        for col in self.columns:
            align = "l" if col.kind == "text" else "c"
            labels.append(f"\\multicolumn{{{width[id(col)]}}}{{{align}}}{{{_tex_header(col.header, align)}}}")
        head.append(" & ".join(labels) + " \\\\")
        chunks = [rows]
        for i in range(len(self.data)):
            if i in self.split_before and i > 0:
                rows = []
                chunks.append(rows)
            elif i in self.midrule_before:
                rows.append("\\midrule")
            elif i in self.space_before:
                rows.append("\\addlinespace")
            cells = []
            for col in self.columns:
                cell = _tex_cell(self._cell_values(i, col), col, self._ci_padding(col))
                if (i, col.key) in self.bold and col.kind in ("num", "p") and "multicolumn" not in cell:
                    cell = " & ".join(f"\\textbf{{{part}}}" if part else part for part in cell.split(" & "))
                elif (i, col.key) in self.bold:
                    cell = f"\\textbf{{{cell}}}"
                cells.append(cell)
            rows.append(" & ".join(cells) + " \\\\")
        lines = [f"% {self.label}: written by molre_lib.plots.PaperTable; needs \\usepackage{{booktabs}}"]
        for k, body in enumerate(chunks):  # one float per chunk (a table taller than a page continues)
            tabular = "\n".join([f"\\begin{{tabular}}{{@{{}}{''.join(spec)}@{{}}}}", "\\toprule", *head,
                                 "\\midrule", *body, "\\bottomrule", "\\end{tabular}"])
            caption, label = (self.caption, self.label) if k == 0 else (f"{self.caption} (continued)",
                                                                        f"{self.label}:{k + 1}")
            lines += [f"\\begin{{{env}}}[{placement}]", "\\centering", self.size,
                      f"\\setlength{{\\tabcolsep}}{{{self.tabcolsep}}}", f"\\caption{{{_tex_text(caption)}}}",
                      f"\\label{{{label}}}"]
            if self.notes and k == len(chunks) - 1:  # the note is set to the width of the tabular (box 0: scratch)
                note = " ".join(_tex_text(n) for n in self.notes)
                lines += ["\\sbox0{%", tabular + "}%", "\\usebox0\\par",
                          f"\\parbox{{\\wd0}}{{\\vspace{{3pt}}\\footnotesize {note}}}"]
            else:
                lines.append(tabular)
            lines.append(f"\\end{{{env}}}")
        return "\n".join(lines) + "\n"


def _join_cells(groups: list) -> str:
    """The group header row: a spanning cell per group; an ungrouped run of width n adds n - 1 separators."""
    return " & ".join(f"\\multicolumn{{{n}}}{{c}}{{{_tex_text(g)}}}" if g else "&" * (n - 1) for g, _, n in groups)


def save_paper_table(table: PaperTable, out_dir: str | Path, name: str, forbidden=()) -> list[Path]:
    """Write ``name.tex`` (the table float) and ``name.csv`` (its numbers, machine column names, full precision)."""
    if not name or Path(name).name != name or Path(name).suffix in {".csv", ".tex"}:
        raise ValueError(f"table name must be a bare stem without directory or extension, got {name!r}")
    check_no_identifiers(table.data, forbidden, where=f"table {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, tex_path = out / f"{name}.csv", out / f"{name}.tex"
    table.data.to_csv(csv_path, index=False)
    tex_path.write_text(table.to_latex())
    return [csv_path, tex_path]


# -- number formatting -------------------------------------------------------------------------------
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (not isinstance(v, str) and pd.isna(v))


def _fixed(v: float, digits: int, signed: bool = False) -> str:
    text = f"{float(v):+.{digits}f}" if signed else f"{float(v):.{digits}f}"
    return "+0." + "0" * digits if signed and float(text) == 0 else text  # no "-0.000"


def format_p(p: float) -> str:
    """p-values with 3 decimals, ``<0.001`` below that."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _plain(values: tuple, col: Column) -> str:
    """Display text (Unicode minus) of one cell."""
    if col.kind == "ci":
        point, lo, hi = values
        if _missing(point):
            return col.missing.replace("--", "–")
        text = _fixed(point, col.digits, signed=col.point_signed)
        if not (_missing(lo) or _missing(hi)):
            text += f" [{_fixed(lo, col.digits)}, {_fixed(hi, col.digits)}]"
        return text.replace("-", MINUS)
    (v,) = values
    if _missing(v):
        return col.missing.replace("--", "–")
    if col.kind == "text":
        return str(v)
    if col.kind == "int":
        return f"{int(v):,}"
    if col.kind == "p":
        return format_p(float(v))
    return _fixed(v, col.digits, col.signed).replace("-", MINUS)


def _tex_number(text: str) -> str:
    """A formatted number with a math minus / plus (so all signs have one width)."""
    return text.replace("-", "$-$").replace("+", "$+$").replace("<", "$<$")


def _tex_cell(values: tuple, col: Column, pad: tuple[bool, bool] = (True, True)) -> str:
    if col.kind == "ci":
        point, lo, hi = values
        if _missing(point):
            return col.missing
        parts = [_tex_number(_fixed(point, col.digits, signed=col.point_signed))]
        if not (_missing(lo) or _missing(hi)):
            bounds = [_fixed(b, col.digits) for b in (lo, hi)]
            bounds = [_tex_number(b) if b.startswith("-") else (f"\\phantom{{$-$}}{b}" if need else b)
                      for b, need in zip(bounds, pad)]
            parts.append(f"[{bounds[0]}, {bounds[1]}]")
        return " ".join(parts)
    (v,) = values
    if col.kind in ("num", "p"):  # two tabular columns: integer part & .fraction
        if _missing(v):
            return f"\\multicolumn{{2}}{{c}}{{{col.missing}}}"
        text = format_p(float(v)) if col.kind == "p" else _fixed(v, col.digits, col.signed)
        whole, _, frac = text.partition(".")
        return f"{_tex_number(whole)} & {'.' + frac if frac else ''}"
    if _missing(v):
        return col.missing
    if col.kind == "int":
        return f"{int(v):,}".replace(",", "{,}")
    return _tex_text(str(v))


_TEX_SPECIAL = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
_TEX_UNICODE = {"Δ": "$\\Delta$", MINUS: "$-$", "–": "--", "—": "---", "±": "$\\pm$", "×": "$\\times$",
                "≥": "$\\geq$", "≤": "$\\leq$", "<": "$<$", ">": "$>$", "α": "$\\alpha$", "·": "$\\cdot$",
                "²": "$^2$", "³": "$^3$", "’": "'", "“": "``", "”": "''"}


def _tex_header(text: str, align: str) -> str:
    """A header cell; a line break (``\\n``) becomes a stacked header (a nested tabular, no package needed)."""
    lines = [_tex_text(t) for t in str(text).split("\n")]
    if len(lines) == 1:
        return lines[0]
    body = " \\\\ ".join(lines)
    return f"\\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{body}\\end{{tabular}}"


def _tex_text(text: str) -> str:
    """Escape LaTeX specials and typeset the few Unicode symbols tables use (pdflatex reads ASCII safely)."""
    out = "".join(_TEX_SPECIAL.get(ch, _TEX_UNICODE.get(ch, ch)) for ch in str(text))
    bad = re.findall(r"[^\x00-\x7f]", out)
    if bad:
        raise ValueError(f"table text {text!r} has characters pdflatex cannot typeset here: {sorted(set(bad))}")
    return out
