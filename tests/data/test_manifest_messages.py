"""validate groups repeated problems into one line each and names a wrong separator instead of listing
every column as missing."""
from __future__ import annotations

from molre_lib.cli import main
from molre_lib.data.manifest import ManifestError, read_manifest
from molre_lib.data.taxonomy import FINDING_KEYS


def _manifest(path, n=400, sep=",", positive="1", negative="0"):
    header = ["scan_id", "patient_id", "split", "path", *FINDING_KEYS]
    lines = [sep.join(header)]
    for i in range(n):
        split = ("train", "val", "test")[i % 3]
        labels = [positive if (i + j) % 7 == 0 else negative for j in range(len(FINDING_KEYS))]
        lines.append(sep.join([f"s{i}", f"p{i}", split, f"scans/s{i}.nii.gz", *labels]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_true_false_labels_are_two_grouped_lines_not_thousands(tmp_path, capsys):
    path = _manifest(tmp_path / "m.csv", positive="True", negative="False")
    assert main(["validate", str(path), "--no-file-check"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) <= 8, out
    cells = len(FINDING_KEYS) * 400
    n_true = sum((i + j) % 7 == 0 for i in range(400) for j in range(len(FINDING_KEYS)))
    assert any(line.startswith(f"error: {n_true} cells in 75 columns (") and line.endswith(
        "rows 1-400: label must be 1, 0 or empty, got 'True' (write 1 for true/yes and 0 for false/no)") for line in out)
    assert any(line.startswith(f"error: {cells - n_true} cells in 75 columns") and "got 'False'" in line for line in out)
    assert "warning: 400 rows (1-400): every label of this scan is unknown" in out
    assert out[-1].startswith(f"{path}: INVALID ({cells} error(s), ")
    assert main(["validate", str(path), "--no-file-check", "--every"]) == 2
    assert len(capsys.readouterr().out.splitlines()) > cells          # --every still lists each cell


def test_grouped_errors_keep_single_problems_as_they_were(tmp_path):
    path = _manifest(tmp_path / "m.csv", n=6)
    text = path.read_text().replace("s3,p3,", "s2,p3,")                  # one duplicate scan_id
    path.write_text(text)
    try:
        read_manifest(path, check_files=False)
    except ManifestError as err:
        assert str(err).splitlines()[1] == "error: row 4 (line 5), column 'scan_id': duplicate scan_id 's2' (first in row 3)"
    else:
        raise AssertionError("a duplicate scan_id must be an error")


def test_semicolon_file_is_named_as_such(tmp_path, capsys):
    path = _manifest(tmp_path / "excel.csv", n=5, sep=";")
    assert main(["validate", str(path), "--no-file-check"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == (f"error: {path} is semicolon-separated (its header is one column: "
                      f"{';'.join(['scan_id', 'patient_id', 'split', 'path', *FINDING_KEYS])[:60]!r}...); a manifest is comma-separated: "
                      "save it as CSV with commas (in Excel: 'CSV UTF-8 (comma delimited)')")
    assert len(out) == 2 and "missing required column" not in "\n".join(out)
