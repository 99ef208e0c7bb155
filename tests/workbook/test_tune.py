"""Tuning as a sweep stage (molre_lib.workbook.tune): tiny throwaway notebooks stand in for 01_train, so the
bookkeeping is tested in seconds — every arm gets its trials on train + val only, the best trial's parameters reach
the final seeds, a rerun continues the studies, and a ``kill -9`` mid-trial is resumed, counted once."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from molre_lib.cli import main
from molre_lib.workbook.sweep import SweepConfig, expand_runs
from molre_lib.workbook.tune import TuneConfig, read_selected, read_trials

# val AUC peaks at LR = 1e-2; MoLRE a little higher; the test AUC exists only when the test split is predicted
TRAIN_SRC = """
import csv, json, math, pathlib, time
from molre_lib.engine.run_lock import RunLock
run = pathlib.Path(RUN_DIR)
lock = RunLock(RUN_DIR).acquire()
with open(LOG, "a") as fh:
    fh.write(f"{run.parent.name}/{run.name} {SEED} {LR:.6g} {TEST_SPLIT!r} {pathlib.Path(MANIFEST).name}\\n")
while HOLD and pathlib.Path(HOLD).exists():
    time.sleep(0.2)
rows = list(csv.DictReader(open(MANIFEST)))
splits = {r["split"] for r in rows}
assert "test" not in splits or TEST_SPLIT == "test", "a tuning trial was given test rows"
val = 0.9 - 0.1 * (math.log10(LR) + 2) ** 2 + 0.02 * (ADAPTER == "molre")
if COLLAPSE_ABOVE and LR > COLLAPSE_ABOVE:  # a lucky trial seed, collapse on every other seed
    val = val + 0.15 if SEED == 1000 else 0.5
metrics = {"steps": 7, "val": {"summary": {"macro_auc": {"value": val, "ci_low": val, "ci_high": val}}}}
if TEST_SPLIT:
    t = val - 0.01 * SEED
    metrics["test"] = {"summary": {"macro_auc": {"value": t, "ci_low": t, "ci_high": t}}}
(run / "metrics.json").write_text(json.dumps(metrics))
lock.release()
"""
PARAMS = ('BACKBONE = "x"\nADAPTER = "lora"\nSEED = 0\nLR = 0.001\nLORA_ALPHA = None\nRANK = 4\nRUN_DIR = ""\n'
          'MANIFEST = ""\nDATA_ROOT = ""\nTEST_SPLIT = "test"\nLOG = ""\nHOLD = ""\nCOLLAPSE_ABOVE = 0.0')


def _notebook(path: Path, params: str, body: str, kernel: str = "python3") -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, path)


def _manifest(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [("s0", "p0", "train"), ("s1", "p1", "val"), ("s2", "p2", "test"), ("s3", "p3", "test")]
    path.write_text("scan_id,patient_id,split,path,ich\n" + "".join(f"{s},{p},{sp},{s}.nii.gz,1\n" for s, p, sp in rows))


def _sweep(tmp_path: Path, n_trials: int = 2, arms=("lora", "molre"), hold: str = "", collapse: float = 0.0,
           **tune) -> Path:
    nbs = tmp_path / "nbs"
    nbs.mkdir(exist_ok=True)
    _notebook(nbs / "01_train.ipynb", PARAMS, TRAIN_SRC)
    _manifest(tmp_path / "data" / "manifest.csv")
    cfg = {"name": "t", "notebooks_dir": str(nbs), "kernel": "python3", "cwd": str(tmp_path), "device_param": None,
           "runs_dir": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "figures"),
           "grid": {"ADAPTER": list(arms), "SEED": [0, 1]},
           "parameters": {"MANIFEST": str(tmp_path / "data" / "manifest.csv"), "LOG": str(tmp_path / "exec.log"),
                          "HOLD": hold, "COLLAPSE_ABOVE": collapse},
           "tune": {"n_trials": n_trials, "space": {"LR": {"low": "1e-4", "high": 1.0, "log": True}}, **tune}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _executions(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "exec.log"
    return [line.split() for line in log.read_text().splitlines()] if log.is_file() else []


def test_tune_section_is_checked_and_adds_the_final_seeds():
    with pytest.raises(ValueError, match="Unknown TuneConfig key: 'trials'"):
        TuneConfig.from_dict({"trials": 3, "space": {"LR": {"low": 1e-4, "high": 1e-1}}})
    with pytest.raises(ValueError, match="log: true needs low > 0"):
        TuneConfig.from_dict({"space": {"LR": {"low": 0, "high": 1e-1, "log": True}}})
    with pytest.raises(ValueError, match="trial_seed 3 is also a final seed"):
        SweepConfig.from_dict({"name": "x", "grid": {"SEED": [2, 3]}, "tune": {"trial_seed": 3, "space": {"LR": {"low": 1e-4, "high": 1e-1}}}})
    space = {"LR": {"low": 1e-4, "high": 1e-1}}
    with pytest.raises(ValueError, match="confirm_top and confirm_seeds go together"):
        TuneConfig.from_dict({"confirm_top": 2, "space": space})
    with pytest.raises(ValueError, match=r"confirm_top: expected an integer from 0 to n_trials \(3\)"):
        TuneConfig.from_dict({"n_trials": 3, "confirm_top": 4, "confirm_seeds": [1001], "space": space})
    with pytest.raises(ValueError, match="confirm_seeds: 1000 is the trial_seed"):
        TuneConfig.from_dict({"confirm_top": 1, "confirm_seeds": [1000], "space": space})
    with pytest.raises(ValueError, match=r"confirm_seeds \[2\] are also final seeds in grid.SEED"):
        SweepConfig.from_dict({"name": "x", "grid": {"SEED": [2, 3]},
                               "tune": {"confirm_top": 1, "confirm_seeds": [2, 1001], "space": space}})
    cfg = SweepConfig.from_dict({"name": "x", "grid": {"ADAPTER": ["lora"]},
                                 "tune": {"final_seeds": 3, "space": {"LR": {"low": "1e-4", "high": 1e-1, "log": True}}}})
    assert [r.name for r in expand_runs(cfg)] == ["lora_seed0", "lora_seed1", "lora_seed2"]


@pytest.mark.slow
def test_tuned_sweep_runs_end_to_end_and_a_rerun_continues(tmp_path):
    path = _sweep(tmp_path)
    assert main(["sweep", str(path), "--skip-tune"]) == 1  # nothing tuned yet: the final runs are blocked, listed
    assert _executions(tmp_path) == []
    assert main(["sweep", str(path)]) == 0
    sweep_dir = tmp_path / "runs" / "t"
    trials, selected = read_trials(sweep_dir), read_selected(sweep_dir)
    assert sorted(trials.groupby("arm").size().items()) == [("lora", 2), ("molre", 2)]
    assert set(trials["state"]) == {"COMPLETE"} and set(trials["steps"]) == {7}
    for arm, group in trials.groupby("arm"):
        best = group.loc[group["val_auc"].idxmax()]
        row = selected.set_index("arm").loc[arm]
        assert row["best_trial"] == best["trial"] and row["best_val_auc"] == pytest.approx(best["val_auc"])
        assert row["n_trials"] == 2 and row["param_LR"] == pytest.approx(best["param_LR"])
    runs = {e[0]: e for e in _executions(tmp_path)}
    # trials: the tuning seed, no test split, the manifest view; final runs: their own seeds, the chosen LR, test
    trial_runs = [e for name, e in runs.items() if "trial" in name]
    assert len(trial_runs) == 4 and {e[1] for e in trial_runs} == {"1000"} and {e[3] for e in trial_runs} == {"''"}
    assert all(e[4].startswith("manifest_no_test_") for e in trial_runs)
    view = next((sweep_dir / "tune").glob("manifest_no_test_*.csv"))
    assert {r["split"] for r in csv.DictReader(open(view))} == {"train", "val"}
    for arm in ("lora", "molre"):
        chosen = float(selected.set_index("arm").loc[arm, "param_LR"])
        for seed in (0, 1):
            name = f"t/{arm}_seed{seed}"
            lr = runs[name][2]
            assert float(lr) == pytest.approx(chosen, rel=1e-5) and runs[name][3] == "'test'"
    with open(sweep_dir / "runs.csv") as fh:
        assert [(r["run"], r["SEED"]) for r in csv.DictReader(fh)] == [
            ("lora_seed0", "0"), ("lora_seed1", "1"), ("molre_seed0", "0"), ("molre_seed1", "1")]
    n = len(_executions(tmp_path))
    assert main(["sweep", str(path)]) == 0  # a rerun: studies loaded, nothing executed again
    assert len(_executions(tmp_path)) == n
    path = _sweep(tmp_path, n_trials=3)  # a larger budget continues each study with one trial more
    assert main(["sweep", str(path), "--tune-only"]) == 0
    assert len(_executions(tmp_path)) == n + 2 and len(read_trials(sweep_dir)) == 6


def test_a_wider_grid_reruns_the_sweep_summary_but_not_the_final_runs(tmp_path):
    """A grid extended on rerun (the phantom study's LR 0.009) runs only its new points; the final runs keep their
    choice, but the sweep-level summary, which reads the tuning tables, is redone; a plain rerun redoes nothing."""
    path = _sweep(tmp_path)
    nbs = tmp_path / "nbs"
    _notebook(nbs / "05_summary.ipynb", 'LOG = ""\nSWEEP_DIR = ""',
              'import pathlib, csv\nn = len(list(csv.DictReader(open(pathlib.Path(SWEEP_DIR) / "tune" / "trials.csv"))))\n'
              'open(LOG, "a").write(f"summary {n} trials\\n")')

    def write(lrs):
        cfg = yaml.safe_load(path.read_text())
        cfg["tune"] = {"n_trials": len(lrs), "sampler": "grid", "space": {"LR": {"choices": lrs}}}
        cfg["analysis"] = [{"notebook": "05_summary.ipynb", "per": "sweep",
                            "parameters": {"LOG": str(tmp_path / "exec.log"), "SWEEP_DIR": "{sweep_dir}"}}]
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    write([0.01, 0.001])
    assert main(["sweep", str(path)]) == 0
    assert main(["sweep", str(path)]) == 0  # nothing new: nothing redone
    write([0.01, 0.001, 1.0])               # val AUC peaks at 0.01: the new point does not change the choice
    assert main(["sweep", str(path)]) == 0
    lines = [e for e in _executions(tmp_path)]
    trials = [e for e in lines if "trial" in e[0]]
    assert sorted(float(e[2]) for e in trials) == [0.001, 0.001, 0.01, 0.01, 1.0, 1.0]  # 3 points per arm, once each
    assert [e for e in lines if e[0] == "summary"] == [["summary", "4", "trials"], ["summary", "6", "trials"]]
    assert len([e for e in lines if "seed" in e[0]]) == 4  # the final runs trained once


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_kill_9_mid_trial_then_rerun_counts_every_trial_once(tmp_path):
    from molre_lib.engine.run_lock import lock_path, read_holder

    hold = tmp_path / "hold"
    hold.touch()
    path = _sweep(tmp_path, arms=("lora",), hold=str(hold))
    trial0 = tmp_path / "runs" / "t" / "tune" / "lora" / "trial000"
    first = subprocess.Popen([sys.executable, "-c", "import sys; from molre_lib.cli import main; sys.exit(main(sys.argv[1:]))",
                              "sweep", str(path), "--tune-only"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: read_holder(trial0) is not None, 120, "trial 0's notebook to lock its run folder")
        kernel = int(lock_path(trial0).read_text().split()[0].split("=")[1])
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        _wait(lambda: not _alive(kernel), 60, "the trial's kernel to die with the killed sweep")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    hold.unlink()
    assert main(["sweep", str(path), "--tune-only"]) == 0
    trials = read_trials(tmp_path / "runs" / "t")
    assert list(trials["trial"]) == [0, 1] and set(trials["state"]) == {"COMPLETE"}  # resumed, not a third trial
    started = [e[0] for e in _executions(tmp_path)]
    assert started == ["lora/trial000", "lora/trial000", "lora/trial001"]
    assert len(read_selected(tmp_path / "runs" / "t")) == 1


def test_grid_sampler_covers_each_point_once_when_the_study_is_reopened_per_trial(tmp_path):
    """Every trial opens the study afresh (as each sweep process and SLURM task does); the grid must still be
    walked point by point. It was not: the grid's shuffle followed the per-open seed, and trial 1 repeated trial 0."""
    from molre_lib.workbook.tune import arms
    from molre_lib.workbook.tune_trials import open_study

    cfg = SweepConfig.from_dict({"name": "g", "runs_dir": str(tmp_path), "grid": {"ADAPTER": ["lora"]},
                                 "tune": {"n_trials": 4, "sampler": "grid", "space": {
                                     "LR": {"choices": [0.002, 0.006]}, "LORA_ALPHA_PER_RANK": {"choices": [0.5, 2.0]}}}})
    arm = arms(cfg)[0]
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    seen = []
    for _ in range(4):
        study = open_study(cfg, arm, storage)
        trial = study.ask()
        seen.append((trial.suggest_categorical("LR", [0.002, 0.006]),
                     trial.suggest_categorical("LORA_ALPHA_PER_RANK", [0.5, 2.0])))
        study.tell(trial, 0.5)
    assert sorted(seen) == [(0.002, 0.5), (0.002, 2.0), (0.006, 0.5), (0.006, 2.0)]


def _walk_grid(tmp_path, stages, sampler):
    """Trials of one LoRA arm over a grid of LR x alpha/r whose LR choices and n_trials change per stage, the
    study reopened for every trial as each sweep process does: the (LR, alpha/r) each trial asked for, and the
    class of the sampler each one was drawn with."""
    from molre_lib.workbook.tune import arms, suggested_parameters
    from molre_lib.workbook.tune_trials import open_study

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    seen, samplers = [], set()
    for lrs, n_trials in stages:
        cfg = SweepConfig.from_dict({"name": "g", "runs_dir": str(tmp_path), "grid": {"ADAPTER": ["lora"]},
                                     "tune": {"n_trials": n_trials, "sampler": sampler, "space": {
                                         "LR": {"choices": lrs}, "LORA_ALPHA_PER_RANK": {"choices": [0.5, 2.0]}}}})
        arm = arms(cfg)[0]
        while len(seen) < n_trials:
            study = open_study(cfg, arm, storage)
            samplers.add(type(study.sampler).__name__)
            trial = study.ask()
            values = suggested_parameters(arm, trial)  # what a sweep's trial asks for
            seen.append((values["LR"], values["LORA_ALPHA_PER_RANK"]))
            study.tell(trial, 0.5)
    return seen, samplers


def test_a_grid_extended_on_rerun_runs_only_its_new_points(tmp_path):
    """The phantom study's grid stopped at its best corner; adding a learning rate (and n_trials 4 -> 6) must run
    the two new points only. Optuna's GridSampler matched old trials by the whole search space, so an extended
    grid counted none of them and repeated points already run."""
    seen, _ = _walk_grid(tmp_path, [([0.001, 0.003], 4), ([0.001, 0.003, 0.009], 6)], "grid")
    assert sorted(seen[:4]) == [(0.001, 0.5), (0.001, 2.0), (0.003, 0.5), (0.003, 2.0)]
    assert sorted(seen[4:]) == [(0.009, 0.5), (0.009, 2.0)]


def test_an_auto_sampled_grid_stays_a_grid_when_choices_outgrow_n_trials(tmp_path):
    """sampler auto walked a 2 x 2 grid; a learning rate added with n_trials raised to 5 (not to the new grid's 6)
    switched the study to TPE, which met the grid's stored parameters and stopped with Optuna's error. The study
    stays a grid: the fifth trial is one of the two new points."""
    seen, samplers = _walk_grid(tmp_path, [([0.001, 0.003], 4), ([0.001, 0.003, 0.009], 5)], "auto")
    assert samplers == {"AskTellGridSampler"}
    assert sorted(seen[:4]) == [(0.001, 0.5), (0.001, 2.0), (0.003, 0.5), (0.003, 2.0)]
    assert seen[4] in [(0.009, 0.5), (0.009, 2.0)]


@pytest.mark.slow
def test_confirmation_seeds_choose_the_configuration_that_holds_up_not_the_lucky_trial(tmp_path):
    """LR 0.1 has the best trial (seed 1000) but collapses on every other seed; the top 2 trials re-run at two
    confirmation seeds, and the arm takes LR 0.01, the best mean. Confirmation runs never see the test split."""
    path = _sweep(tmp_path, arms=("lora",), collapse=0.05, sampler="grid", confirm_top=2, confirm_seeds=[1001, 1002],
                  space={"LR": {"choices": [0.01, 0.1]}})
    assert main(["sweep", str(path)]) == 0
    sweep_dir = tmp_path / "runs" / "t"
    trials = read_trials(sweep_dir).set_index("param_LR")
    assert trials.loc[0.1, "val_auc"] == pytest.approx(0.95) and trials.loc[0.01, "val_auc"] == pytest.approx(0.9)
    assert trials.loc[0.1, "confirm_val_aucs"] == "1001:0.5000 1002:0.5000"
    assert trials.loc[0.1, "mean_val_auc"] == pytest.approx(0.65) and trials.loc[0.01, "mean_val_auc"] == pytest.approx(0.9)
    chosen = read_selected(sweep_dir).iloc[0]
    assert chosen["param_LR"] == pytest.approx(0.01) and chosen["selection_seeds"] == 3
    assert chosen["mean_val_auc"] == pytest.approx(0.9) and chosen["min_val_auc"] == pytest.approx(0.9)
    assert chosen["selected_by"] == "best mean val AUC over seeds 1000, 1001, 1002 of the top 2 trials"
    assert chosen["total_steps"] == 6 * 7  # 2 trials + 4 confirmation runs, 7 steps each: the same for every arm
    runs = {e[0]: e for e in _executions(tmp_path)}
    confirms = {name: e for name, e in runs.items() if "_seed10" in name}
    assert sorted(confirms) == [f"lora/trial00{t}_seed{s}" for t in (0, 1) for s in (1001, 1002)]
    assert all(e[3] == "''" and e[4].startswith("manifest_no_test_") for e in confirms.values())
    assert [float(runs[f"t/lora_seed{s}"][2]) for s in (0, 1)] == [pytest.approx(0.01)] * 2
    n = len(_executions(tmp_path))
    assert main(["sweep", str(path)]) == 0  # a rerun: nothing runs again
    assert len(_executions(tmp_path)) == n


@pytest.mark.slow
def test_adding_confirmation_to_a_tuned_sweep_refuses_runs_trained_with_the_old_choice(tmp_path, capsys):
    """Without confirmation the lucky LR 0.1 is chosen and the final runs train with it. Adding confirm_top to the
    sweep changes the choice to 0.01: the rerun runs only the confirmation runs, then stops (exit 2) naming each
    finished run trained with 0.1 instead of mixing two configurations in one arm; moved aside, they retrain."""
    grid = {"sampler": "grid", "space": {"LR": {"choices": [0.01, 0.1]}}}
    path = _sweep(tmp_path, arms=("lora",), collapse=0.05, **grid)
    assert main(["sweep", str(path)]) == 0
    sweep_dir = tmp_path / "runs" / "t"
    assert read_selected(sweep_dir).iloc[0]["param_LR"] == pytest.approx(0.1)
    n = len(_executions(tmp_path))
    path = _sweep(tmp_path, arms=("lora",), collapse=0.05, confirm_top=2, confirm_seeds=[1001], **grid)
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 2
    out = capsys.readouterr().out
    assert len(_executions(tmp_path)) == n + 2  # the two confirmation runs only; trials were reused
    assert "2 finished run(s) were trained with other values than their arm's selection" in out
    for seed in (0, 1):
        assert f"{sweep_dir / f'lora_seed{seed}'}: LR=0.1 (selected now: 0.01)" in out
    listing = sweep_dir / "tune" / "stale_runs.txt"
    assert f"(listed in {listing})" in out
    for line in listing.read_text().splitlines():  # what a user moves aside
        Path(line).rename(tmp_path / f"old_{Path(line).name}")
    assert main(["sweep", str(path)]) == 0
    assert [float(e[2]) for e in _executions(tmp_path)[n + 2:]] == [pytest.approx(0.01)] * 2
