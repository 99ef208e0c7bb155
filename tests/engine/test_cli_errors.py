"""User errors from the CLI are one line (exit 2) and no traceback; --debug shows the traceback."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from molre_lib.cli import main
from molre_lib.engine.run_files import write_predictions

TRAIN = ["--backbone", "phantom_vit", "--no-pretrained", "--reduced", "--device", "cpu"]


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_train_into_a_read_only_run_dir_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "molre-test-ro", str(ro)],
                             capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.fail("root without mount: cannot make a read-only folder here")
        ro.chmod(0o555)
    try:
        manifest = tmp_path / "m.csv"
        manifest.write_text("scan_id,patient_id,split,path\n")
        assert main(["train", "--run-dir", str(ro / "run"), "--manifest", str(manifest), *TRAIN]) == 2
        err = _err(capsys)
        assert len(err) == 1 and err[0].startswith(f"molre train: error: {ro / 'run'}: ")
        assert ("Read-only file system" in err[0]) or ("Permission denied" in err[0])
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
        ro.chmod(0o755)


def test_train_with_a_semicolon_manifest_names_the_separator(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("scan_id;patient_id;split;path;subdural_hematoma\ns1;p1;train;a.nii.gz;1\n")
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--manifest", str(manifest), *TRAIN]) == 2
    err = "\n".join(_err(capsys))
    assert "is semicolon-separated" in err and "Traceback" not in err


def test_compare_of_disjoint_test_sets_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    for name, ids in (("a", ["s1", "s2"]), ("b", ["s3", "s4"])):
        (tmp_path / name).mkdir()
        out = {"scan_id": ids, "labels": np.eye(2, dtype=np.float32), "mask": np.ones((2, 2), np.float32),
               "probs": np.full((2, 2), 0.5, np.float32)}
        write_predictions(tmp_path / name / "predictions_test.parquet", out, "test", ["f0", "f1"])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert _err(capsys) == [f"molre compare: error: {tmp_path / 'a'} and {tmp_path / 'b'} share no scan_id in split 'test'"]
    with pytest.raises(ValueError, match="share no scan_id"):
        main(["--debug", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
