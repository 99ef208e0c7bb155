"""``molre sweep --executor slurm`` against a real one-node SLURM started by the tests (tests/slurm_cluster.py).

One tiny phantom sweep goes end to end (prepare job -> training array -> dependent analysis job running
05_summary). Meanwhile one training job is requeued mid-training with ``scontrol requeue`` and a copy of it
runs under a one-minute time limit; both must resume and end with the metrics and predictions of an
uninterrupted copy. ``--status`` is checked for pending, requeued, running, done and failed, and a second
submission for skipping live and finished runs and resubmitting a failed one.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from molre_lib.cli import main
from molre_lib.workbook.slurm import SlurmConfig, minutes, read_records

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS))
ROOT = TESTS.parent
NOTEBOOKS = ROOT / "notebooks"

import slurm_cluster  # noqa: E402


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node SLURM on localhost for the session; SLURM_CONF points the client commands at it."""
    missing = slurm_cluster.missing_programs()
    if missing:
        pytest.fail(f"SLURM programs {missing} not found: apt-get install -y slurm-wlm munge (.ci/run does)")
    root = tmp_path_factory.mktemp("slurm")
    cluster = slurm_cluster.start(root)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        slurm_cluster.stop(root)


def test_slurm_options_from_sweep_file_and_flags():
    cfg = SlurmConfig.from_dict({"partition": "gpu", "gpus_per_run": 2, "time": "1-00:00:00", "sbatch": {"constraint": "a100"}})
    cfg = cfg.merged({"qos": "high", "time": "90", "sbatch": {"exclusive": True}})
    train = cfg.executor_parameters("train")
    assert train["gpus_per_node"] == 2 and train["ntasks_per_node"] == 2 and train["time"] == 90
    assert train["partition"] == "gpu" and train["qos"] == "high"
    assert train["additional_parameters"] == {"constraint": "a100", "exclusive": True}
    analysis = cfg.executor_parameters("analysis")
    assert analysis["gpus_per_node"] == 1 and analysis["ntasks_per_node"] == 1 and analysis["time"] == 120
    assert [minutes(v) for v in (5, "5", "1:30", "2:00:00", "1-0", "0-0:0:1")] == [5, 5, 2, 120, 1440, 1]
    with pytest.raises(ValueError, match="Unknown SlurmConfig key: 'gpus'"):
        SlurmConfig.from_dict({"gpus": 2})
    with pytest.raises(ValueError, match="not a time limit"):
        SlurmConfig.from_dict({"time": "soon"})
    with pytest.raises(ValueError, match="do not split evenly"):
        SlurmConfig.from_dict({"gpus_per_run": 3, "nodes": 2})


def test_bad_sbatch_flag_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "grid": {"SEED": [0]}, "slurm": {"partiton": "x"}}))
    assert main(["sweep", str(path), "--executor", "slurm"]) == 2
    assert "Unknown SlurmConfig key: 'partiton'" in capsys.readouterr().out


def test_status_table_states_from_folder_and_queue(tmp_path):
    """The --status mapping: metrics.json -> done; squeue states -> pending / requeued / running; a job gone
    from the queue without metrics.json -> failed with the notebook's exception or the log's last error."""
    from molre_lib.workbook.cluster_status import QueueEntry, format_table, status_rows
    from molre_lib.workbook.sweep import SweepConfig, expand_runs

    cfg = SweepConfig.from_dict({"name": "s", "runs_dir": str(tmp_path), "grid": {"SEED": [0, 1, 2, 3, 4, 5]}})
    runs = expand_runs(cfg)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "14_0_log.err").write_text("loading\nslurmstepd: error: *** JOB 14 CANCELLED AT 2026 DUE TO TIME LIMIT ***\n")
    records = {"runs": {f"seed{i}": {"job_id": str(10 + i), "log": str(logs / f"{10 + i}_0_log.err")} for i in range(5)},
               "steps": {}}
    runs[0].run_dir.mkdir(parents=True)
    (runs[0].run_dir / "metrics.json").write_text("{}")
    runs[3].run_dir.mkdir(parents=True)
    (runs[3].run_dir / "preemptions.jsonl").write_text('{"signal": "SIGTERM", "step": 7}\n')
    queue = {"11": QueueEntry("11", "PENDING", 0, "Dependency"), "12": QueueEntry("12", "RUNNING", 0, "None"),
             "13": QueueEntry("13", "PENDING", 1, "BeginTime"), "10": QueueEntry("10", "COMPLETING", 0, "None")}
    rows = {r["run"]: r for r in status_rows(tmp_path / "s", runs, "01_train.ipynb", records, queue)}
    assert [rows[f"seed{i}"]["state"] for i in range(6)] == ["done", "pending", "running", "requeued", "failed",
                                                             "not submitted"]
    assert rows["seed3"]["error"] == "stopped by SIGTERM at step 7; resumes from its checkpoint"
    assert "DUE TO TIME LIMIT" in rows["seed4"]["error"] and rows["seed4"]["log"].endswith("14_0_log.err")
    text = format_table(list(rows.values()))
    assert "waiting: Dependency" in text and "1 done; 1 pending; 1 running; 1 requeued; 1 failed; 1 not submitted" in text


# ---------------------------------------------------------------------------------------------- real SLURM

TRAIN = {"BACKBONE": "phantom_vit", "RANK": 2, "EPOCHS": 2, "BATCH_SIZE": 4, "PRETRAINED": False, "REDUCED": True,
         "EVAL_BOOTSTRAP": 10, "DEVICE": "cpu", "NUM_WORKERS": 0}


def _sweep(tmp: Path, name: str, grid: dict, slurm: dict, manifest: str, **extra) -> Path:
    cfg = {"name": name, "notebooks_dir": str(NOTEBOOKS), "kernel": "molre", "runs_dir": str(tmp / "runs"),
           "figures_dir": str(tmp / "figures"), "grid": {"BACKBONE": ["phantom_vit"], **grid},
           "parameters": {**TRAIN, "MANIFEST": manifest, "CACHE_DIR": str(tmp / "cache"),
                          "FIGURES_DIR": "{figures_dir}/{run}"},
           "overrides": {"ADAPTER": {"lora": {"N_EXPERTS": 1}, "molre": {"N_EXPERTS": 2}}},
           "slurm": {"cpus_per_gpu": 1, "array_parallelism": 4, **slurm}, **extra}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _status(path: Path, capsys) -> dict[str, dict]:
    main(["sweep", str(path), "--status"])
    capsys.readouterr()
    table = pd.read_csv(path.parent / "runs" / yaml.safe_load(path.read_text())["name"] / "cluster_status.csv",
                        dtype=str).fillna("")
    return {r["run"]: r for r in table.to_dict("records")}


def _until(what: str, check, timeout: float = 900, poll: float = 1.0):
    start = time.time()
    while time.time() - start < timeout:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _job(path: Path, run: str) -> str:
    sweep_dir = path.parent / "runs" / yaml.safe_load(path.read_text())["name"]
    return read_records(sweep_dir)["runs"][run]["job_id"]


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True).stdout


def _kernels_of(job_id: str, task: str | None = None) -> list[int]:
    """The notebook kernels running inside SLURM job ``job_id`` (with ``task``: that task of array ``job_id``);
    root sees every process's environment."""
    want = [f"SLURM_JOB_ID={job_id}".encode()] if task is None else [
        f"SLURM_ARRAY_JOB_ID={job_id}".encode(), f"SLURM_ARRAY_TASK_ID={task}".encode()]
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ipykernel" in cmd and all(w in env for w in want):
            pids.append(int(proc.name))
    return pids


def _same_results(run_a: Path, run_b: Path) -> None:
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (run_a, run_b))
    for split in ("val", "test"):
        assert ma[split] == mb[split], f"{split} metrics differ between {run_a.name} and {run_b.name}"
    assert ma["steps"] == mb["steps"] and ma["best_step"] == mb["best_step"]
    for split in ("val", "test"):
        pa, pb = (pd.read_parquet(r / f"predictions_{split}.parquet") for r in (run_a, run_b))
        pd.testing.assert_frame_equal(pa, pb)


@pytest.mark.slow
def test_sweep_on_slurm_survives_requeue_and_time_limit(slurm, tmp_path, capsys):
    started = time.time()
    tiny = _sweep(tmp_path, "tiny", {"ADAPTER": ["lora", "molre"], "SEED": [0]}, {"time": 30},
                  "{sweep_dir}/data/manifest.csv",
                  prepare=[{"notebook": "00_data.ipynb", "parameters": {
                      "OUT_DIR": "{sweep_dir}/data", "N_SCANS": 36, "SHAPE": [8, 48, 48], "FIGURES_DIR": "{figures_dir}/00"}}],
                  analysis=[{"notebook": "05_summary.ipynb", "per": "sweep", "parameters": {
                      "SWEEP_DIR": "{sweep_dir}", "BOOTSTRAP": 20, "FIGURES_DIR": "{figures_dir}/05"}}])
    sweep = tmp_path / "runs" / "tiny"
    manifest = str(sweep / "data" / "manifest.csv")
    ref = _sweep(tmp_path, "ref", {"ADAPTER": ["molre"], "SEED": [0]}, {"time": 30}, manifest)
    limit = _sweep(tmp_path, "limit", {"ADAPTER": ["molre"], "SEED": [0]}, {"time": 2, "signal_delay_s": 60}, manifest)
    broken = _sweep(tmp_path, "broken", {"ADAPTER": ["molre"], "SEED": [0]}, {"time": 5}, manifest,
                    overrides={"ADAPTER": {"molre": {"N_EXPERTS": 0}}})  # fails 01_train's parameter check

    assert main(["sweep", str(tiny), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "prepare: submitted job" in out and "analysis: submitted job" in out
    states = _status(tiny, capsys)
    assert states["phantom_vit_molre_seed0"]["state"] == "pending"  # waits for the prepare job
    assert states["[prepare]"]["state"] in ("pending", "running")

    # a second submission while the jobs are queued submits nothing for those runs
    assert main(["sweep", str(tiny), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "skip phantom_vit_molre_seed0: job" in out and "submitted phantom" not in out

    _until("the prepared manifest", lambda: Path(manifest).is_file() and _status(tiny, capsys)["[prepare]"]["state"] == "done")
    for path in (limit, ref, broken):
        assert main(["sweep", str(path), "--executor", "slurm"]) == 0
    capsys.readouterr()

    # requeue the MoLRE run of `tiny` once it has trained a few steps
    molre = sweep / "phantom_vit_molre_seed0"
    _until("two logged training steps", lambda: (molre / "train_log.csv").is_file()
           and len((molre / "train_log.csv").read_text().splitlines()) > 2, poll=0.3)
    job = _job(tiny, "phantom_vit_molre_seed0")
    _scontrol("requeue", job)
    states = _until("the requeued state", lambda: (lambda s: s if s["state"] in ("requeued", "running") and s["restarts"] == "1"
                                                   else None)(_status(tiny, capsys)["phantom_vit_molre_seed0"]))
    assert states["job_id"] == job

    # the time-limited copy: SLURM warns it (SIGUSR2) 60 s before its 2-minute limit, submitit requeues it.
    # Its trainer is paused until the warning came, so that a fast machine cannot finish before the limit.
    limit_job = _job(limit, "phantom_vit_molre_seed0")
    limited = tmp_path / "runs" / "limit" / "phantom_vit_molre_seed0"
    limit_out = Path(read_records(limited.parent)["runs"]["phantom_vit_molre_seed0"]["out"])
    warned = lambda: limit_out.is_file() and "Caught signal SIGUSR2" in limit_out.read_text()  # noqa: E731
    _until("the time-limited run to train", lambda: warned() or (limited / "train_log.csv").is_file()
           and len((limited / "train_log.csv").read_text().splitlines()) > 1, poll=0.2)
    kernels = [] if warned() else _kernels_of(limit_job)
    for pid in kernels:
        os.kill(pid, signal.SIGSTOP)
    try:
        _until("SLURM's time-limit warning", warned)
    finally:
        for pid in kernels:  # the warning's requeue may already have ended the paused kernel
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    _until("the time-limit requeue", lambda: "Restarts=1" in _scontrol("show", "job", limit_job))
    _scontrol("update", f"JobId={limit_job}", "TimeLimit=30")  # the requeued job may now finish in one go

    st = _until("the broken run to fail", lambda: (lambda s: s if s["state"] == "failed" else None)(
        _status(broken, capsys)["phantom_vit_molre_seed0"]))
    assert "N_EXPERTS" in st["error"] and st["log"].endswith("_log.err")

    from molre_lib.workbook.cluster_status import wait_for_jobs
    from molre_lib.workbook.sweep import SweepConfig

    for path in (tiny, ref, limit):
        wait_for_jobs(SweepConfig.from_yaml(path), poll_s=2, timeout_s=1500, log=lambda *_: None)
    states = _status(tiny, capsys)
    assert {s["state"] for s in states.values()} == {"done"}, states

    # requeued by scontrol (SIGTERM): the trainer checkpointed and stopped, the job resumed to the same result
    stops = [json.loads(line) for line in (molre / "preemptions.jsonl").read_text().splitlines()]
    assert stops and stops[0]["signal"] == "SIGTERM" and stops[0]["slurm_restart_count"] == 0
    _same_results(molre, tmp_path / "runs" / "ref" / "phantom_vit_molre_seed0")
    # past the time limit: requeued by submitit after SLURM's warning signal, then finished identically
    assert "this job is timed-out" in limit_out.read_text()
    _same_results(limited, tmp_path / "runs" / "ref" / "phantom_vit_molre_seed0")

    # the dependent analysis job ran 05_summary over both runs; the status table is there for 05 to read
    status = pd.read_csv(sweep / "sweep_status.csv", dtype=str).fillna("")
    summary = status[status["step"] == "05_summary"].iloc[0]
    assert summary["status"] == "ok" and summary["action"] == "ran"
    assert (sweep / "cluster_status.csv").is_file()

    # submitting again: both runs finished, nothing trains; the broken run is resubmitted as a new job
    assert main(["sweep", str(tiny), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "skip phantom_vit_lora_seed0: metrics.json present" in out and "submitted phantom" not in out
    old = _job(broken, "phantom_vit_molre_seed0")
    assert main(["sweep", str(broken), "--executor", "slurm"]) == 0
    assert "submitted phantom_vit_molre_seed0" in capsys.readouterr().out and _job(broken, "phantom_vit_molre_seed0") != old
    print(f"SLURM sweep test: {time.time() - started:.0f} s, load {os.getloadavg()}")


DDP_SRC = """
import json, os, pathlib
import torch
from molre_lib.engine import distributed as D
info = D.setup("cpu")
total = D.all_reduce_sum(torch.tensor([float(info.rank + 1)]), info)
ranks = D.all_gather_objects({"rank": info.rank, "local_rank": info.local_rank, "master": os.environ["MASTER_ADDR"]}, info)
if info.is_main:
    pathlib.Path(RUN_DIR).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(RUN_DIR) / "metrics.json").write_text(json.dumps({"world_size": info.world_size, "sum": total.item(),
                                                                    "ranks": ranks}))
D.teardown(info)
"""


@pytest.mark.slow
def test_multi_task_run_joins_one_process_group(slurm, tmp_path, capsys):
    """--tasks-per-run 2 (what --gpus-per-run 2 does on GPUs): each task runs the notebook with torch's env://
    variables from SLURM's, and the trainer's process-group set-up joins them (gloo on CPU)."""
    import nbformat

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('RUN_DIR = ""', metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(DDP_SRC)]
    nb.metadata["kernelspec"] = {"name": "molre", "display_name": "molre", "language": "python"}
    nbformat.write(nb, nbs / "01_train.ipynb")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({"name": "ddp", "notebooks_dir": str(nbs), "runs_dir": str(tmp_path / "runs"),
                                    "grid": {"SEED": [0]}, "slurm": {"cpus_per_gpu": 1, "time": 10}}))
    assert main(["sweep", str(path), "--executor", "slurm", "--tasks-per-run", "2", "--wait"]) == 0
    assert "seed0" in capsys.readouterr().out
    run = tmp_path / "runs" / "ddp" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["sum"] == 3.0
    assert [r["rank"] for r in metrics["ranks"]] == [0, 1] and [r["local_rank"] for r in metrics["ranks"]] == [0, 1]
    assert (run / "01_train.ipynb").is_file() and (run / "01_train.rank1.ipynb").is_file()


@pytest.mark.slow
def test_tuning_trials_share_one_journal_as_array_tasks(slurm, tmp_path, capsys):
    """A tune: section on SLURM (workbook.tune_slurm): the trials run as array tasks on one Optuna journal, two
    at once; a task requeued mid-trial resumes that trial (same number, same folder); every trial is told once;
    the final run waits for the tuning (afterany) and trains with the selected learning rate."""
    import datetime

    from molre_lib.data.synth import synthesize
    from molre_lib.workbook.tune import read_selected, read_trials

    started = time.time()
    manifest = synthesize(tmp_path / "data", 40, shape=(8, 32, 32), seed=0)
    path = _sweep(tmp_path, "tuned", {"ADAPTER": ["lora"], "SEED": [0]}, {"time": 10, "array_parallelism": 2},
                  str(manifest), tune={"n_trials": 3, "final_seeds": 1,
                                       "space": {"LR": {"low": 1e-3, "high": 5e-2, "log": True}}})
    cfg = yaml.safe_load(path.read_text())
    cfg["parameters"].update(EPOCHS=1, MAX_STEPS=40, BATCH_SIZE=2, VOLUME_SHAPE=[8, 32, 32], THREADS=1,
                             EVAL_BOOTSTRAP=0, CACHE_DIR="")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sweep = tmp_path / "runs" / "tuned"
    arm = sweep / "tune" / "phantom_vit_lora"

    assert main(["sweep", str(path), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "tune phantom_vit_lora: 0/3 trials done, 0 task(s) queued or running, 3 to submit" in out
    assert "submitted phantom_vit_lora_seed0" in out
    tasks = read_records(sweep)["tune"]["phantom_vit_lora"]
    final = _job(path, "phantom_vit_lora_seed0")
    assert len(tasks) == 3 and "afterany" in _scontrol("show", "job", final).split("Dependency=")[1].split()[0]

    # requeue the task of trial 0 while it trains: SIGTERM, the trainer checkpoints, the task resumes trial 0
    trial0 = arm / "trial000"
    _until("trial 0 to train", lambda: (trial0 / "train_log.csv").is_file()
           and len((trial0 / "train_log.csv").read_text().splitlines()) > 2, timeout=300, poll=0.2)
    training_0 = datetime.datetime.now()  # trial 0 is training now
    owner = _journal_trials(sweep)[0].user_attrs["owner"]["job"]
    kernels = _kernels_of(*owner.split("_"))  # paused, so that the tiny trial cannot end before the signal
    for pid in kernels:
        os.kill(pid, signal.SIGSTOP)
    try:
        _scontrol("requeue", owner)
        time.sleep(1)
    finally:
        for pid in kernels:  # the warning's requeue may already have ended the paused kernel
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    _until("trial 0's stop on SIGTERM", lambda: (trial0 / "preemptions.jsonl").is_file(), timeout=120)

    from molre_lib.workbook.cluster_status import wait_for_jobs
    from molre_lib.workbook.sweep import SweepConfig

    wait_for_jobs(SweepConfig.from_yaml(path), poll_s=2, timeout_s=900, log=lambda *_: None)
    trials = _journal_trials(sweep)
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert trials[0].user_attrs["owner"]["job"] == owner  # resumed by its own requeued task, not a fourth trial
    assert sorted(p.name for p in arm.iterdir()) == ["trial000", "trial001", "trial002"]
    stops = [json.loads(line) for line in (trial0 / "preemptions.jsonl").read_text().splitlines()]
    assert [s["signal"] for s in stops] == ["SIGTERM"]
    # two trials ran at the same time, in two tasks, on the one journal: trial 1 was asked before the moment
    # trial 0 was seen training, and told after trial 0 was asked
    a, b = trials[0], trials[1]
    assert a.user_attrs["owner"]["job"] != b.user_attrs["owner"]["job"]
    assert b.datetime_start < training_0 and a.datetime_start < b.datetime_complete
    table, selected = read_trials(sweep), read_selected(sweep)
    assert list(table["trial"]) == [0, 1, 2] and set(table["state"]) == {"COMPLETE"}
    best = table.loc[table["val_auc"].idxmax()]
    assert selected.loc[0, "best_trial"] == best["trial"] and selected.loc[0, "n_trials"] == 3
    run = sweep / "phantom_vit_lora_seed0"
    params = yaml.safe_load((run / "01_train.params.yaml").read_text())
    assert params["LR"] == pytest.approx(best["param_LR"]) and params["SEED"] == 0
    assert "test" in json.loads((run / "metrics.json").read_text())
    assert all("test" not in json.loads((arm / t / "metrics.json").read_text()) for t in ("trial000", "trial001"))

    states = _status(path, capsys)
    assert states["[tune] phantom_vit_lora"]["state"] == "tuned"
    assert states["[tune] phantom_vit_lora"]["reason"].startswith("3/3 trials done, 0 running, 0 failed")
    assert main(["sweep", str(path), "--executor", "slurm"]) == 0  # a rerun continues: nothing left to do
    out = capsys.readouterr().out
    assert "3/3 trials done, 0 task(s) queued or running, 0 to submit" in out and "submitted" not in out
    print(f"SLURM tuning test: {time.time() - started:.0f} s, load {os.getloadavg()}")


def _journal_trials(sweep: Path, arm: str = "phantom_vit_lora") -> list:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(sweep / "tune" / "studies.journal")
    storage = optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    return optuna.load_study(study_name=arm, storage=storage).get_trials(deepcopy=False)


STAND_IN = """
import json, pathlib, time
from molre_lib.engine.run_lock import RunLock
run = pathlib.Path(RUN_DIR)
lock = RunLock(RUN_DIR).acquire()
with open(LOG, "a") as fh:
    fh.write(f"{run.name} {LR:.6g} {TEST_SPLIT!r}\\n")
while pathlib.Path(HOLD).exists():
    time.sleep(0.2)
val = {"summary": {"macro_auc": {"value": 0.9 - abs(LR - 0.01)}}}
(run / "metrics.json").write_text(json.dumps({"steps": 1, "val": val, **({"test": val} if TEST_SPLIT else {})}))
lock.release()
"""


def _stand_in_sweep(tmp_path: Path, name: str, body: str, tune: dict) -> tuple[Path, Path, Path]:
    """A one-arm tuned sweep whose 01_train is a stand-in notebook running ``body`` (it logs each run to ``log``
    and may wait while ``hold`` exists): (sweep file, hold file (created), log file)."""
    import nbformat

    nbs, hold, log = tmp_path / "nbs", tmp_path / "hold", tmp_path / "exec.log"
    nbs.mkdir()
    hold.touch()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('RUN_DIR = ""\nLR = 0.001\nSEED = 0\nTEST_SPLIT = "test"\nMANIFEST = ""\n'
                                          'DATA_ROOT = ""\nLOG = ""\nHOLD = ""\nADAPTER = "lora"',
                                          metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, nbs / "01_train.ipynb")
    (tmp_path / "manifest.csv").write_text("scan_id,split,path\ns0,train,a\ns1,val,b\ns2,test,c\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "notebooks_dir": str(nbs), "kernel": "python3", "device_param": None,
        "runs_dir": str(tmp_path / "runs"), "grid": {"ADAPTER": ["lora"]},
        "parameters": {"MANIFEST": str(tmp_path / "manifest.csv"), "LOG": str(log), "HOLD": str(hold)},
        "slurm": {"cpus_per_gpu": 1, "array_parallelism": 2, "time": 10}, "tune": tune}))
    return path, hold, log


@pytest.mark.slow
def test_tuning_trials_of_a_cancelled_task_are_resumed_not_recounted(slurm, tmp_path, capsys):
    """scancel of a tuning task mid-trial (a stand-in notebook holds both trials): its trial stays RUNNING, --status
    calls it orphaned, and the sibling task resumes it under the same number; two trials in all."""
    path, hold, log = _stand_in_sweep(tmp_path, "held", STAND_IN, {
        "n_trials": 2, "final_seeds": 1, "space": {"LR": {"low": 1e-3, "high": 1e-1, "log": True}}})
    sweep = tmp_path / "runs" / "held"
    assert main(["sweep", str(path), "--executor", "slurm"]) == 0
    _until("both trials to be held", lambda: log.is_file() and len(log.read_text().splitlines()) == 2, timeout=300)
    victim = _journal_trials(sweep, "lora")[0].user_attrs["owner"]["job"]
    subprocess.run(["scancel", victim], capture_output=True)
    _until("the cancelled task's trial to be orphaned", lambda: _status(path, capsys)["[tune] lora"]["reason"]
           .endswith("1 orphaned"), timeout=120)
    hold.unlink()
    from molre_lib.workbook.cluster_status import wait_for_jobs
    from molre_lib.workbook.sweep import SweepConfig

    wait_for_jobs(SweepConfig.from_yaml(path), poll_s=2, timeout_s=600, log=lambda *_: None)
    trials = _journal_trials(sweep, "lora")
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert trials[0].user_attrs["owner"]["job"] == trials[1].user_attrs["owner"]["job"] != victim
    started = sorted(line.split()[0] for line in log.read_text().splitlines())
    best = max(trials, key=lambda t: t.value).params["LR"]
    assert started == ["lora_seed0", "trial000", "trial000", "trial001"]  # trial 0 started twice, told once
    assert f"lora_seed0 {best:.6g} 'test'" in log.read_text()


COLLAPSING = """
import json, pathlib, time
from molre_lib.engine.run_lock import RunLock
run = pathlib.Path(RUN_DIR)
lock = RunLock(RUN_DIR).acquire()
with open(LOG, "a") as fh:
    fh.write(f"{run.name} {LR:.6g} {SEED} {TEST_SPLIT!r}\\n")
while pathlib.Path(HOLD).exists() and SEED == 1001 and LR < 0.05:  # hold the good LR's confirmation run
    time.sleep(0.2)
value = 0.9 if LR < 0.05 else (0.95 if SEED == 1000 else 0.5)  # LR 0.1: a lucky trial, collapses elsewhere
val = {"summary": {"macro_auc": {"value": value}}}
(run / "metrics.json").write_text(json.dumps({"steps": 1, "val": val, **({"test": val} if TEST_SPLIT else {})}))
lock.release()
"""


@pytest.mark.slow
def test_confirmation_runs_on_slurm_are_claimed_once_and_a_cancelled_one_is_resumed(slurm, tmp_path, capsys):
    """confirm_top on SLURM: the task that tells the arm's last trial runs its confirmation runs; one cancelled
    mid-run is taken over by the next submission's task (its owner left the queue); the arm then takes the LR
    whose mean over seeds is best (0.01), not the lucky trial's (0.1), and the final run trains with it."""
    path, hold, log = _stand_in_sweep(tmp_path, "confirm", COLLAPSING, {
        "n_trials": 2, "final_seeds": 1, "sampler": "grid", "space": {"LR": {"choices": [0.01, 0.1]}},
        "confirm_top": 2, "confirm_seeds": [1001]})
    sweep = tmp_path / "runs" / "confirm"
    assert main(["sweep", str(path), "--executor", "slurm"]) == 0

    def started() -> list[str]:
        return sorted(" ".join(line.split()[:3]) for line in log.read_text().splitlines()) if log.is_file() else []

    _until("the good LR's confirmation run to be held", lambda: "trial001_seed1001 0.01 1001" in started()
           or "trial000_seed1001 0.01 1001" in started(), timeout=300)
    held = next(s.split()[0] for s in started() if s.endswith("0.01 1001"))
    owner = json.loads((sweep / "tune" / "claims" / f"lora_{held}.json").read_text())["job"]
    status = _status(path, capsys)["[tune] lora"]
    assert status["reason"].startswith("2/2 trials done") and "1/2 confirmation runs done" in status["reason"]
    subprocess.run(["scancel", owner], capture_output=True)
    from molre_lib.workbook.cluster_status import wait_for_jobs
    from molre_lib.workbook.sweep import SweepConfig

    wait_for_jobs(SweepConfig.from_yaml(path), poll_s=2, timeout_s=600, log=lambda *_: None)
    assert not (sweep / "lora_seed0" / "metrics.json").exists()  # no selection yet: the final run could not train
    hold.unlink()
    assert main(["sweep", str(path), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "tune lora: 1 confirmation run(s) left (tune.confirm_top)" in out
    wait_for_jobs(SweepConfig.from_yaml(path), poll_s=2, timeout_s=600, log=lambda *_: None)
    lucky = "trial000" if held.startswith("trial001") else "trial001"
    assert started() == sorted([f"{held} 0.01 1001"] * 2 + [f"{lucky}_seed1001 0.1 1001", "lora_seed0 0.01 0",
                                f"{held.split('_')[0]} 0.01 1000", f"{lucky} 0.1 1000"])
    chosen = json.loads((sweep / "tune" / "selected.json").read_text())["lora"]
    assert chosen["params"] == {"LR": 0.01} and chosen["mean_val_auc"] == pytest.approx(0.9)
    assert json.loads((sweep / "lora_seed0" / "metrics.json").read_text())["test"]
