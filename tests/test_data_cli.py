"""End-to-end: `molre synth`, `molre validate`, `molre convert`, `molre gallery` as a user runs them."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

MOLRE = str(Path(sys.executable).parent / "molre")
pytestmark = pytest.mark.slow


def run(*args):
    return subprocess.run([MOLRE, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "dicom"
    r = run("synth", "--out", str(out), "--n-scans", "8", "--shape", "32,32,6", "--format", "dicom",
            "--seed", "2", "--label-noise", "0.1", "--splits", "0.5,0.25,0.25", "--dicom-compression", "rle",
            "--workers", "1")
    assert r.returncode == 0, r.stderr
    return out


def test_synth_writes_dicom_series_and_a_valid_manifest(dicom_set):
    rows = list(csv.DictReader(open(dicom_set / "manifest.csv")))
    assert len(rows) == 8 and len(list((dicom_set / rows[0]["path"]).glob("*.dcm"))) == 6
    assert (dicom_set / "labels_true.csv").exists()
    r = run("validate", str(dicom_set / "manifest.csv"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid (0 error(s)" in r.stdout


def test_validate_invalid_prints_every_problem_and_exits_2(dicom_set, tmp_path):
    rows = list(csv.DictReader(open(dicom_set / "manifest.csv")))
    rows[0]["split"] = "training"
    rows[2]["path"] = "scans/none"
    rows[3]["epidural_hematoma"] = "2"
    bad = dicom_set / "bad.csv"
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    r = run("validate", str(bad), "--root", str(dicom_set))
    assert r.returncode == 2
    out = r.stdout
    assert "error: row 1 (line 2), column 'split': unknown split 'training'" in out
    assert "error: row 3 (line 4), column 'path':" in out and "does not exist" in out
    assert "error: row 4 (line 5), column 'epidural_hematoma': label must be 1, 0 or empty, got '2'" in out
    assert "INVALID (3 error(s)" in out


def test_convert_cq500_from_the_command_line(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_data_convert import _cq500_tree

    src, _ = _cq500_tree(tmp_path)
    r = run("convert", "cq500", str(src), "--out", str(tmp_path / "m" / "cq500.csv"), "--split", "test")
    assert r.returncode == 0, r.stderr
    r = run("validate", str(tmp_path / "m" / "cq500.csv"), "--require-splits", "test")
    assert r.returncode == 0, r.stdout


def test_gallery_writes_png_pdf_svg(tmp_path):
    r = run("gallery", "--out", str(tmp_path / "fig"), "--shape", "32,32,8", "--category", "mass")
    assert r.returncode == 0, r.stderr
    for ext in ("png", "pdf", "svg"):
        assert (tmp_path / "fig" / f"phantom_mass.{ext}").stat().st_size > 10_000
    from PIL import Image

    dpi = Image.open(tmp_path / "fig" / "phantom_mass.png").info.get("dpi", (0, 0))
    assert round(dpi[0]) == 300
