"""``molre label-reports`` / ``molre label-agreement`` end to end, and every bad input as one line + exit 2."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from molre_lib.cli import main
from molre_lib.data.taxonomy import FINDING_KEYS

FIXTURES = Path(__file__).parent / "fixtures"


def _write(path: Path, rows: list[list[str]], sep: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=sep, lineterminator="\n").writerows(rows)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_label_reports_then_agreement_on_the_handwritten_set(tmp_path, capsys):
    out = tmp_path / "labels.csv"
    assert main(["label-reports", str(FIXTURES / "handwritten_reports.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "50 reports" in printed and "subarachnoid_hemorrhage" in printed
    labels = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(labels.columns) == ["report_id", *FINDING_KEYS] and len(labels) == 50
    assert set(labels[FINDING_KEYS].to_numpy().ravel()) <= {"1", "0", "-1", ""}
    evidence = pd.read_csv(tmp_path / "labels.evidence.csv", dtype=str, keep_default_na=False)
    summary = pd.read_csv(tmp_path / "labels.summary.csv")
    # every set label has a used evidence row saying why
    set_cells = {(r, k) for r, row in labels.set_index("report_id").iterrows() for k, v in row.items() if v != ""}
    used = evidence[evidence["used"] == "1"]
    assert set_cells == set(zip(used["report_id"], used["finding"]))
    assert summary.set_index("finding").loc["subarachnoid_hemorrhage", "mentioned"] == \
        (labels["subarachnoid_hemorrhage"] != "").sum()

    agree = tmp_path / "agree"
    assert main(["label-agreement", str(out), str(FIXTURES / "handwritten_gold.csv"), "--out", str(agree),
                 "--n-boot", "50"]) == 0
    table = pd.read_csv(agree / "agreement.csv")
    assert {"3-class", "u->pos", "u->neg"} == set(table["mode"])
    assert (agree / "label_agreement.pdf").is_file() and (agree / "disagreements.csv").is_file()
    overall = table[(table["level"] == "all") & (table["mode"] == "u->neg")].iloc[0]
    assert overall["kappa"] >= 0.9 and overall["kappa_lo"] <= overall["kappa"] <= overall["kappa_hi"]

    sample = tmp_path / "sample.csv"
    assert main(["label-agreement", str(out), "--sample", "10", "--out", str(sample)]) == 0
    assert len(pd.read_csv(sample)) == 10


def test_uncertain_policy(tmp_path):
    reports = _write(tmp_path / "r.csv", [["id", "text"], ["a", "Possible small SAH."]])
    for policy, value in (("keep", "-1"), ("positive", "1"), ("negative", "0")):
        out = tmp_path / f"{policy}.csv"
        assert main(["label-reports", str(reports), "--out", str(out), "--id-column", "id", "--text-column", "text",
                     "--uncertain", policy, "--quiet"]) == 0
        assert pd.read_csv(out, dtype=str).loc[0, "subarachnoid_hemorrhage"] == value


BAD_REPORTS = [
    ([["id", "report"], ["a", "No SAH."]], {}, "row 0 (header): no column 'report_id'"),
    ([["report_id", "text"], ["a", "No SAH."]], {}, "row 0 (header): no column 'report'"),
    ([["report_id", "report"], ["a", "No SAH."], ["a", "SAH."]], {}, "row 2, column 'report_id': duplicate id 'a'"),
    ([["report_id", "report"], ["a", "No SAH."], ["b", "  "]], {}, "row 2, column 'report': empty report text"),
    ([["report_id", "report"], ["", "No SAH."]], {}, "row 1, column 'report_id': empty report id"),
    ([["report_id", "report"], ["a", "No SAH."]], {"sep": ";"}, "row 0 (header): one column 'report_id;report'; "
                                                                "the file looks semicolon-separated"),
    ([["report_id", "report"], ["a", "No SAH."]], {"sep": "\t"}, "tab-separated"),
    ([["report_id", "report"], ["a", "No SAH.", "extra"]], {}, "row 1 (line 2): 3 cells"),
]


@pytest.mark.parametrize("rows,kw,message", BAD_REPORTS, ids=[m for _, _, m in BAD_REPORTS])
def test_bad_reports_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, rows, kw, message):
    path = _write(tmp_path / "reports.csv", rows, **kw)
    out = tmp_path / "labels.csv"
    assert main(["label-reports", str(path), "--out", str(out)]) == 2
    err = _error(capsys)
    assert str(path) in err and message in err
    assert list(tmp_path.iterdir()) == [path]                  # no labels, evidence, summary or temp file


@pytest.mark.parametrize("content,where", [
    ("report_id,report\na,No SAH.\nb,Small h\xe6matoma.\n", "row 2, column 'report' (line 3): not UTF-8"),
    ("report_id,report\n\xe6,No SAH.\n", "row 1, column 'report_id' (line 2): not UTF-8"),
    ("report_id,r\xe9port\na,No SAH.\n", "row 0 (header), column 2 (line 1): not UTF-8"),
])
def test_non_utf8_reports_name_row_and_column(tmp_path, capsys, content, where):
    path, err = _refused(tmp_path, capsys, content.encode("latin-1"))
    assert where in err and str(path) in err


def _refused(tmp_path, capsys, data: bytes):
    """label-reports on a reports file holding ``data``: exit 2, nothing written; (path, the error line)."""
    path = tmp_path / "reports.csv"
    path.write_bytes(data)
    assert main(["label-reports", str(path), "--out", str(tmp_path / "l.csv")]) == 2
    err = _error(capsys)
    assert list(tmp_path.iterdir()) == [path]
    return path, err


@pytest.mark.parametrize("content,where", [
    ('report_id,report\na,"No SAH.\nb,"Acute SDH."\nc,Normal.\n', "row 1, column 'report' (line 2)"),
    ('report_id,report\na,"No SAH.\nb,Acute SDH.\nc,Normal.\n', "row 1, column 'report' (line 2)"),
    ('report_id,report\na,No SAH.\n"b,Acute SDH.\n', "row 2, column 'report_id' (line 3)"),
])
def test_an_unclosed_quote_is_an_error_not_swallowed_rows(tmp_path, capsys, content, where):
    """Read leniently, the quote would swallow the rows after it into one report: b and c silently lost."""
    path, err = _refused(tmp_path, capsys, content.encode("utf-8"))
    assert f"{path}: {where}: a quoted cell does not close" in err


def test_quotes_written_as_csv_writers_write_them_are_read(tmp_path):
    path = tmp_path / "reports.csv"
    path.write_text('report_id,report\na,"Reads ""no bleed"", then: SAH."\nb,Plain "quoted" text\n', encoding="utf-8")
    assert main(["label-reports", str(path), "--out", str(tmp_path / "l.csv"), "--quiet"]) == 0
    assert list(pd.read_csv(tmp_path / "l.csv")["report_id"]) == ["a", "b"]


def _gold_case(tmp_path, header, row):
    reports = _write(tmp_path / "r.csv", [["report_id", "report"], ["a", "No SAH."], ["b", "Acute SDH."]])
    labels = tmp_path / "labels.csv"
    assert main(["label-reports", str(reports), "--out", str(labels), "--quiet"]) == 0
    return labels, _write(tmp_path / "gold.csv", [header, row])


@pytest.mark.parametrize("header,row,message", [
    (["report_id", "sah"], ["a", "1"], "row 0 (header), column 2 'sah' is not a finding key"),
    (["report_id", "subarachnoid_hemorrhage"], ["a", "yes"], "row 1, column 'subarachnoid_hemorrhage': value 'yes'"),
    (["report_id", "subarachnoid_hemorrhage"], ["a", "2"], "value '2' (allowed: 1, 0, -1 or empty)"),
    (["report_id", "subarachnoid_hemorrhage"], ["zz", "1"], "row 1, column 'report_id': id 'zz' is not in"),
    (["id", "subarachnoid_hemorrhage"], ["a", "1"], "row 0 (header): no column 'report_id'"),
    (["report_id;subarachnoid_hemorrhage"], ["a;1"], "the file looks semicolon-separated"),
    (["report_id", "subarachnoid_hemorrhage", "subarachnoid_hemorrhage"], ["a", "1", "1"],
     "column 'subarachnoid_hemorrhage' appears twice"),
])
def test_bad_gold_file_is_one_line_exit_2(tmp_path, capsys, header, row, message):
    labels, gold = _gold_case(tmp_path, header, row)
    capsys.readouterr()
    out = tmp_path / "agree"
    assert main(["label-agreement", str(labels), str(gold), "--out", str(out), "--n-boot", "0"]) == 2
    err = _error(capsys)
    assert message in err and str(gold) in err
    assert not out.exists()


def test_bad_gold_rows_duplicate_id_and_non_utf8(tmp_path, capsys):
    labels, gold = _gold_case(tmp_path, ["report_id", "subarachnoid_hemorrhage"], ["a", "0"])
    out = tmp_path / "agree"
    for content, message in (("report_id,subarachnoid_hemorrhage\na,0\na,1\n",
                               "row 2, column 'report_id': duplicate id 'a' (first on row 1)"),
                              ("report_id,subarachnoid_hemorrhage\na,0\nb,\xb1\n",
                               "row 2, column 'subarachnoid_hemorrhage' (line 3): not UTF-8")):
        gold.write_bytes(content.encode("latin-1"))
        capsys.readouterr()
        assert main(["label-agreement", str(labels), str(gold), "--out", str(out), "--n-boot", "0"]) == 2
        err = _error(capsys)
        assert message in err and str(gold) in err
        assert not out.exists()
