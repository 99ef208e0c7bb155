"""The claim rules of SLURM tuning tasks (molre_lib.workbook.tune_slurm) on a real Optuna journal, without a
cluster: the queue is a set of live task ids. The tasks on a real one-node SLURM are tested in test_slurm.py."""
from __future__ import annotations

import pytest

from molre_lib.workbook.cluster_status import QueueEntry
from molre_lib.workbook.sweep import SweepConfig
from molre_lib.workbook.tune import arms
from molre_lib.workbook.tune_slurm import claim, training_groups
from molre_lib.workbook.tune_status import tune_status_rows
from molre_lib.workbook.tune_trials import finish, open_study, storage_for


def _cfg(tmp_path, n_trials: int = 2) -> SweepConfig:
    return SweepConfig.from_dict({
        "name": "t", "runs_dir": str(tmp_path / "runs"), "grid": {"ADAPTER": ["lora", "molre"], "SEED": [0, 1]},
        "tune": {"n_trials": n_trials, "space": {"LR": {"low": 1e-4, "high": 1e-1, "log": True}}}})


def test_tasks_claim_within_the_budget_resume_their_own_and_orphaned_trials(tmp_path):
    cfg = _cfg(tmp_path)
    arm = arms(cfg)[0]
    study = open_study(cfg, arm, storage_for(cfg, "slurm"))
    assert (tmp_path / "runs" / "t" / "tune" / "studies.journal").is_file()
    live = {"10_0", "10_1", "10_2"}
    assert claim(cfg, arm, study, "10_0", live)[0] == 0
    assert claim(cfg, arm, study, "10_1", live)[0] == 1
    assert claim(cfg, arm, study, "10_2", live) is None          # two trials running: the budget is taken
    assert claim(cfg, arm, study, "10_0", live)[0] == 0          # requeued task 10_0: its own trial again
    assert claim(cfg, arm, study, "10_3", None) is None          # squeue unreachable: no trial is taken
    lr1 = study.trials[1].params["LR"]
    number, tuned = claim(cfg, arm, study, "10_2", {"10_0", "10_2"})  # 10_1 left the queue: its trial is orphaned
    assert (number, tuned["LR"]) == (1, lr1) and study.trials[1].user_attrs["owner"]["job"] == "10_2"
    assert finish(study, 0, tmp_path / "nowhere", "the kernel died") == "FAIL"
    number, tuned = claim(cfg, arm, study, "10_4", {"10_2", "10_4"})  # the failed trial's retry, same parameters
    assert number == 2 and tuned["LR"] == study.trials[0].params["LR"]
    assert study.trials[2].user_attrs["retry_of"] == 0
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "RUNNING"]


def test_status_rows_and_training_groups_follow_the_tuning(tmp_path):
    cfg = _cfg(tmp_path)
    lora, molre = arms(cfg)
    storage = storage_for(cfg, "slurm")
    study = open_study(cfg, lora, storage)
    claim(cfg, lora, study, "10_0", {"10_0"})
    records = {"tune": {"lora": [{"job_id": "10_0", "log": "l"}], "molre": [{"job_id": "10_1", "log": "m"}]}}
    queue = {"10_0": QueueEntry("10_0", "RUNNING", 0, "None"), "10_1": QueueEntry("10_1", "PENDING", 0, "Priority")}
    rows = {r["run"]: r for r in tune_status_rows(cfg, records, queue)}
    assert rows["[tune] lora"]["state"] == "tuning" and rows["[tune] lora"]["reason"] == "0/2 trials done, 1 running, 0 failed"
    assert rows["[tune] molre"]["state"] == "pending"
    rows = {r["run"]: r for r in tune_status_rows(cfg, records, {})}  # both tasks gone: trial 0 is an orphan
    assert rows["[tune] lora"]["state"] == "failed" and rows["[tune] lora"]["reason"].endswith("1 orphaned")
    from molre_lib.workbook.grid import expand_runs

    runs = expand_runs(cfg)
    groups = training_groups(cfg, runs, {"lora": ["10_0"], "molre": ["10_1"]}, log=lambda *_: None)
    assert [([r.name for r in members], after) for members, after in groups] == [
        (["lora_seed0", "lora_seed1"], ["10_0"]), (["molre_seed0", "molre_seed1"], ["10_1"])]
    blocked = []
    assert training_groups(cfg, runs, None, log=blocked.append) == []  # --skip-tune, nothing tuned: all blocked
    assert len(blocked) == 4 and "arm lora is not tuned yet" in blocked[0]


def test_a_locally_tuned_sweep_is_not_forked_onto_slurm(tmp_path):
    cfg = _cfg(tmp_path)
    storage_for(cfg, "local")
    with pytest.raises(ValueError, match="tuned locally"):
        storage_for(cfg, "slurm")


def test_a_bad_tuned_parameter_stops_the_submission(tmp_path):
    from pathlib import Path

    from molre_lib.workbook.slurm import SlurmConfig
    from molre_lib.workbook.tune_slurm import submit_tuning

    cfg = SweepConfig.from_dict({
        "name": "t", "runs_dir": str(tmp_path / "runs"), "notebooks_dir": str(Path(__file__).parents[2] / "notebooks"),
        "grid": {"ADAPTER": ["lora"]}, "parameters": {"MANIFEST": "m.csv"},
        "tune": {"space": {"LRATE": {"low": 1e-4, "high": 1e-1, "log": True}}}})
    with pytest.raises(ValueError, match="unknown parameter LRATE"):
        submit_tuning(cfg, SlurmConfig(), {}, {}, None, None, [], str(tmp_path))
