"""A sweep checks every run's parameters and every run folder's lock before it executes anything."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import nbformat
import yaml

from molre_lib.cli import main
from molre_lib.engine.run_lock import RunLock

ROOT = Path(__file__).parents[2]


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_bad_grid_key_string_epochs_and_unknown_backbone_are_all_listed_before_anything_runs(tmp_path, capsys):
    sweep = {"name": "late", "notebooks_dir": str(ROOT / "notebooks"), "runs_dir": str(tmp_path / "runs"),
             "figures_dir": str(tmp_path / "figures"),
             "grid": {"BACKBONE": ["phantom_vit", "no_such_vit"], "ADAPTER": ["lora"], "EPOCH": [2]},
             "parameters": {"EPOCHS": "2", "MANIFEST": "{sweep_dir}/data/manifest.csv"},
             "prepare": [{"notebook": "00_data.ipynb", "parameters": {"OUT_DIR": "{sweep_dir}/data", "N_SCANS": 8}}],
             "analysis": [{"notebook": "03_per_finding_auc.ipynb", "per": "sweep",
                           "parameters": {"RUN_DIRS": "{run_dirs}", "BOOTSTRAP": -1}}]}
    path = tmp_path / "late.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    assert main(["sweep", str(path)]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "sweep late: 4 parameter problem(s), nothing was run:" in text
    assert ("01_train.ipynb for phantom_vit_lora_epoch2, no_such_vit_lora_epoch2: unknown parameter EPOCH=2 "
            "(did you mean 'EPOCHS'?)") in text
    assert "01_train.ipynb for phantom_vit_lora_epoch2, no_such_vit_lora_epoch2: EPOCHS='2': expected int, got str" in text
    assert "01_train.ipynb for no_such_vit_lora_epoch2: BACKBONE='no_such_vit': must be one of" in text
    assert "03_per_finding_auc.ipynb for sweep: BOOTSTRAP=-1: must be >= 0" in text
    assert not (tmp_path / "runs").exists()                 # not even 00_data ran


def test_a_locked_run_folder_stops_the_sweep_naming_the_holder(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "train.ipynb", 'RUN_DIR = ""\nSEED = 0',
              'import pathlib, json\npathlib.Path(RUN_DIR).mkdir(parents=True, exist_ok=True)\n'
              '(pathlib.Path(RUN_DIR) / "metrics.json").write_text(json.dumps({"steps": 1}))')
    sweep = {"name": "locked", "notebooks_dir": str(nbs), "train_notebook": "train.ipynb", "kernel": "python3",
             "runs_dir": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "figures"), "grid": {"SEED": [0, 1]}}
    path = tmp_path / "locked.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    run_dir = (tmp_path / "runs" / "locked" / "seed1").resolve()
    lock = RunLock(run_dir).acquire()                      # another trainer is writing seed1
    try:
        assert main(["sweep", str(path)]) == 2
        text = "".join(capsys.readouterr())
        assert "sweep locked: 1 run folder(s) are being written by another process" in text
        assert f"seed1: {run_dir} is in use by pid {os.getpid()} on {socket.gethostname()} since" in text
        assert not (tmp_path / "runs" / "locked" / "seed0" / "metrics.json").exists()
    finally:
        lock.release()
    assert main(["sweep", str(path)]) == 0
    assert (run_dir / "metrics.json").is_file()
