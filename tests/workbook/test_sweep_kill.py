"""kill -9 of `molre sweep` while a notebook trains: the rerun refuses while the kernel still writes, the
kernel dies with the sweep (papermill runs under child_guard), and then the rerun trains the run once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

from molre_lib.cli import main
from molre_lib.engine.run_lock import lock_path, read_holder

TRAIN = """
import pathlib, time
from molre_lib.engine.run_lock import RunLock
lock = RunLock(RUN_DIR).acquire()          # what engine.train does for the life of a training
with open(LOG, "a") as fh:
    fh.write("start\\n")
while pathlib.Path(HOLD).exists():
    time.sleep(0.2)
(pathlib.Path(RUN_DIR) / "metrics.json").write_text("{}")
lock.release()
"""


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                   # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_kill_9_of_a_sweep_then_rerun_never_gives_a_second_writer(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('RUN_DIR = ""\nHOLD = ""\nLOG = ""\nSEED = 0', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(TRAIN)]
    nb.metadata["kernelspec"] = {"name": "molre", "display_name": "Python (molre)", "language": "python"}
    nbformat.write(nb, nbs / "train.ipynb")
    hold, log = tmp_path / "hold", tmp_path / "starts.log"
    hold.touch()
    sweep = {"name": "k", "notebooks_dir": str(nbs), "train_notebook": "train.ipynb", "kernel": "molre",
             "runs_dir": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "figures"), "grid": {"SEED": [0]},
             "parameters": {"HOLD": str(hold), "LOG": str(log)}, "device_param": None}
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    run_dir = (tmp_path / "runs" / "k" / "seed0").resolve()
    first = subprocess.Popen([sys.executable, "-c", "import sys; from molre_lib.cli import main; sys.exit(main(sys.argv[1:]))",
                              "sweep", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: read_holder(run_dir) is not None, 180, "the notebook's kernel to lock the run folder")
        kernel_pid = int(lock_path(run_dir).read_text().split()[0].split("=")[1])
        assert kernel_pid != first.pid

        assert main(["sweep", str(path)]) == 2          # a second sweep while the first one's kernel trains
        text = "".join(capsys.readouterr())
        assert f"seed0: {run_dir} is in use by pid {kernel_pid} on" in text

        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        _wait(lambda: not _alive(kernel_pid), 60, f"kernel {kernel_pid} to die with the killed sweep")
        assert read_holder(run_dir) is None
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    hold.unlink()
    assert main(["sweep", str(path)]) == 0
    assert (run_dir / "metrics.json").is_file()
    assert log.read_text().split() == ["start", "start"]  # the killed one and the rerun, never two at once
