"""`molre sweep`: tiny throwaway notebooks executed by papermill — a failing run keeps its executed notebook
and is reported while the sweep goes on; a re-run skips finished runs; one GPU per worker."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from molre_lib.cli import main
from molre_lib.analysis.summary import collect_runs
from molre_lib.workbook.sweep import SweepConfig, expand_runs, plan_analysis

TRAIN_SRC = """
import json, os, pathlib
if BACKBONE == "broken":
    raise RuntimeError("backbone exploded on purpose")
run = pathlib.Path(RUN_DIR)
run.mkdir(parents=True, exist_ok=True)
with open(pathlib.Path(LOG), "a") as fh:
    fh.write(run.name + "\\n")
metrics = {"steps": 3, "rank": RANK, "device": DEVICE, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "test": {"ece": 0.1, "summary": {"macro_auc": {"value": 0.5 + 0.1 * SEED + 0.05 * (ADAPTER == "molre"),
                                                          "ci_low": 0.5, "ci_high": 0.9}}}}
(run / "metrics.json").write_text(json.dumps(metrics))
"""
ROUTING_SRC = """
import pathlib
(pathlib.Path(RUN_DIR) / "routing_done.txt").write_text("ok")
"""
SUMMARY_SRC = """
import json, pathlib
found = sorted(p.parent.name for p in pathlib.Path(SWEEP_DIR).glob("*/metrics.json"))
pathlib.Path(SWEEP_DIR, "summary.json").write_text(json.dumps({"runs": found, "n_inputs": len(RUN_DIRS)}))
"""


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def sweep_file(tmp_path) -> Path:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_train.ipynb",
              'BACKBONE = "x"\nADAPTER = "lora"\nSEED = 0\nRANK = 4\nRUN_DIR = "runs/x"\nDEVICE = "cpu"\nLOG = "log"\nNOTE = ""', TRAIN_SRC)
    _notebook(nbs / "02_routing.ipynb", 'RUN_DIR = ""', ROUTING_SRC)
    _notebook(nbs / "00_data.ipynb", 'OUT = ""', 'import pathlib\npathlib.Path(OUT).parent.mkdir(parents=True, exist_ok=True)\n'
              'pathlib.Path(OUT).write_text("manifest")')
    _notebook(nbs / "05_summary.ipynb", 'SWEEP_DIR = ""\nRUN_DIRS = []', SUMMARY_SRC)
    cfg = {
        "name": "toy", "notebooks_dir": str(nbs), "kernel": "python3", "cwd": str(tmp_path),
        "runs_dir": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "figures"),
        "grid": {"BACKBONE": ["phantom_vit", "broken"], "ADAPTER": ["lora", "molre"], "SEED": [1]},
        "parameters": {"LOG": str(tmp_path / "executions.log"), "NOTE": "{BACKBONE}/{run}"},
        "overrides": {"ADAPTER": {"molre": {"RANK": 8}}},
        "exclude": [{"BACKBONE": "broken", "ADAPTER": "lora"}],
        "prepare": [{"notebook": "00_data.ipynb", "parameters": {"OUT": "{sweep_dir}/data/manifest.csv"}}],
        "analysis": [
            {"notebook": "02_routing.ipynb", "per": "run", "when": {"ADAPTER": "molre"}, "parameters": {"RUN_DIR": "{run_dir}"}},
            {"notebook": "05_summary.ipynb", "per": "sweep", "parameters": {"SWEEP_DIR": "{sweep_dir}", "RUN_DIRS": "{run_dirs}"}},
        ],
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _status(tmp_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(tmp_path / "runs" / "toy" / "sweep_status.csv") as fh:
        return {(r["step"], r["key"]): r for r in csv.DictReader(fh)}


def test_plan_expands_grid_overrides_and_templates(sweep_file, tmp_path):
    cfg = SweepConfig.from_yaml(sweep_file)
    runs = expand_runs(cfg)
    assert [r.name for r in runs] == ["phantom_vit_lora_seed1", "phantom_vit_molre_seed1", "broken_molre_seed1"]
    assert runs[1].parameters["RANK"] == 8 and runs[0].parameters.get("RANK") is None
    assert runs[2].parameters["NOTE"] == "broken/broken_molre_seed1"
    assert runs[0].parameters["RUN_DIR"] == str((tmp_path / "runs" / "toy" / "phantom_vit_lora_seed1").resolve())
    jobs = plan_analysis(cfg, runs)
    assert [(j.step, j.key) for j in jobs] == [("02_routing", "phantom_vit_molre_seed1"), ("02_routing", "broken_molre_seed1"),
                                               ("05_summary", "sweep")]
    assert jobs[-1].parameters["RUN_DIRS"] == [str(r.run_dir) for r in runs]


def test_unknown_sweep_key_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'seeds'"):
        SweepConfig.from_dict({"name": "x", "grid": {"SEED": [0]}, "seeds": [1]})


@pytest.mark.slow
def test_failed_run_is_reported_and_rerun_skips_finished(sweep_file, tmp_path, capsys):
    rc = main(["sweep", str(sweep_file), "--gpus", "0,1"])
    out = capsys.readouterr().out
    assert rc == 1  # something failed
    status = _status(tmp_path)
    runs = tmp_path / "runs" / "toy"
    assert (runs / "data" / "manifest.csv").read_text() == "manifest" and (runs / "prepare" / "00_data.ipynb").is_file()
    assert status[("01_train", "phantom_vit_lora_seed1")]["status"] == "ok"
    failed = status[("01_train", "broken_molre_seed1")]
    assert failed["status"] == "failed" and "backbone exploded on purpose" in failed["error"]
    executed = nbformat.read(runs / "broken_molre_seed1" / "01_train.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].evalue == "backbone exploded on purpose"
    assert "broken_molre_seed1" in out and "FAILED" in out
    # one notebook per GPU: each run saw exactly one device and the injected DEVICE parameter
    metrics = json.loads((runs / "phantom_vit_molre_seed1" / "metrics.json").read_text())
    assert metrics["cuda_visible_devices"] in ("0", "1") and metrics["device"] == "cuda" and metrics["rank"] == 8
    # analysis ran on the finished MoLRE run, was blocked for the failed one, and the summary saw both good runs
    assert (runs / "phantom_vit_molre_seed1" / "routing_done.txt").is_file()
    assert status[("02_routing", "broken_molre_seed1")]["status"] == "blocked"
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["runs"] == ["phantom_vit_lora_seed1", "phantom_vit_molre_seed1"] and summary["n_inputs"] == 2

    table = collect_runs(runs)  # what 05_summary tabulates: every run, the failed one with its error
    assert list(table["run"]) == ["phantom_vit_lora_seed1", "phantom_vit_molre_seed1", "broken_molre_seed1"]
    assert list(table["status"]) == ["finished", "finished", "failed"] and "exploded" in table["error"].iloc[2]
    assert table["macro_auc"].iloc[:2].tolist() == pytest.approx([0.6, 0.65]) and np.isnan(table["macro_auc"].iloc[2])
    assert table["steps"].iloc[0] == 3 and table["ece"].iloc[1] == 0.1
    assert list(table["ADAPTER"]) == ["lora", "molre", "molre"]  # the grid values, to select variants by

    rc = main(["sweep", str(sweep_file)])
    assert rc == 1
    status = _status(tmp_path)
    log = (tmp_path / "executions.log").read_text().split()
    assert sorted(log) == ["phantom_vit_lora_seed1", "phantom_vit_molre_seed1"]  # finished runs not trained again
    assert status[("01_train", "phantom_vit_lora_seed1")]["action"] == "skipped"
    assert status[("02_routing", "phantom_vit_molre_seed1")]["action"] == "skipped"
    assert status[("01_train", "broken_molre_seed1")]["action"] == "ran"  # failures are retried
    assert status[("01_train", "broken_molre_seed1")]["status"] == "failed"
    assert status[("05_summary", "sweep")]["action"] == "skipped"
    assert status[("00_data", "sweep")]["action"] == "skipped"


def test_dry_run_executes_nothing(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[todo] phantom_vit_lora_seed1" in out and "05_summary" in out and "[first] 00_data" in out
    assert not (tmp_path / "runs").exists()


ALL_ANALYSES = {"02_routing", "03_per_finding_auc", "04_gradcam", "05_summary"}


@pytest.mark.parametrize("name,analyses,adapters", [
    ("demo", ALL_ANALYSES, {"lora", "molre"}), ("study", ALL_ANALYSES, {"lora", "molre"}),
    ("shared_a", {"02_routing", "03_per_finding_auc", "05_summary"}, {"lora", "molre"}),
    ("phantom_study", {"02_routing", "03_per_finding_auc", "05_summary"}, {"lora", "molre", "linear_probe"}),
    ("phantom_alpha", set(), {"lora", "molre"}),
    ("phantom_tuned", {"02_routing", "03_per_finding_auc", "05_summary"}, {"lora", "molre", "linear_probe"})])
def test_example_sweeps_parse_and_use_registered_backbones(name, analyses, adapters):
    from molre_lib.backbones import list_backbones

    cfg = SweepConfig.from_yaml(Path(__file__).parents[2] / "notebooks" / "sweeps" / f"{name}.yaml")
    runs = expand_runs(cfg)
    assert {r.values["BACKBONE"] for r in runs} <= {s.name for s in list_backbones()}
    assert {r.values["ADAPTER"] for r in runs} == adapters
    assert {j.step for j in plan_analysis(cfg, runs)} == analyses
    # every run's parameters, over the notebook's own defaults, pass 01_train's validation cell
    from molre_lib.workbook.params import check_parameters

    train_nb = nbformat.read(Path(__file__).parents[2] / "notebooks" / cfg.train_notebook, as_version=4)
    defaults: dict = {}
    exec(next(c.source for c in train_nb.cells if "parameters" in c.metadata.get("tags", [])), {}, defaults)
    for run in runs:
        check_parameters("01_train", {**defaults, **run.parameters})


def test_phantom_study_design():
    """Both demo backbones (CT-pretrained and general-domain) x 4 arms x 3 seeds; LoRA leads every 03 group."""
    from molre_lib.backbones import get_spec

    cfg = SweepConfig.from_yaml(Path(__file__).parents[2] / "notebooks" / "sweeps" / "phantom_study.yaml")
    runs = expand_runs(cfg)
    arms = {(r.values["ADAPTER"], r.values["SHARED_A"]) for r in runs}
    assert arms == {("lora", False), ("linear_probe", False), ("molre", True), ("molre", False)}
    assert len(runs) == 2 * 4 * 3
    assert {get_spec(r.values["BACKBONE"]).family for r in runs} == {"demo", "general-2D"}
    groups = [j for j in plan_analysis(cfg, runs) if j.step == "03_per_finding_auc"]
    assert len(groups) == 6 and all("_lora_" in Path(j.parameters["RUN_DIRS"][0]).name for j in groups)
    data = cfg.prepare[0].parameters
    assert data["N_SCANS"] * data["SPLITS"][2] / sum(data["SPLITS"]) >= 1000  # ~1,000 test scans


def test_phantom_tuned_design():
    """The tuned study: phantom_study's phantom generator, backbones and arms, on a cheaper task (fewer training scans,
    4 slices) trained for several epochs; ~1,000 test scans; every arm the same number of trials (the whole grid of
    its space), 6 final seeds apart from the trials' seed; every trial's parameters pass 01_train's check."""
    from molre_lib.workbook.params import check_parameters
    from molre_lib.workbook.tune import arms, tune_config
    from molre_lib.workbook.tune_trials import make_sampler, size_of

    root = Path(__file__).parents[2] / "notebooks" / "sweeps"
    cfg = SweepConfig.from_yaml(root / "phantom_tuned.yaml")
    untuned = SweepConfig.from_yaml(root / "phantom_study.yaml")
    data, untuned_data = cfg.prepare[0].parameters, untuned.prepare[0].parameters
    for key in ("SEED", "SHAPE", "PREVALENCE_SCALE"):  # the same phantom generator and findings
        assert data[key] == untuned_data[key], key
    assert data["N_SCANS"] * data["SPLITS"][2] / sum(data["SPLITS"]) >= 1000  # ~1,000 test scans
    assert cfg.parameters["EPOCHS"] > 1 and cfg.parameters["VOLUME_SHAPE"][0] >= 4  # 2 slices lost the findings
    tcfg = tune_config(cfg)
    tuned_arms = arms(cfg)
    assert len(tuned_arms) == 8 and tcfg.n_trials >= 4
    for arm in tuned_arms:
        assert size_of({n: p.choices for n, p in arm.space.items()}) == tcfg.n_trials  # a full grid, once each
        assert type(make_sampler(cfg, arm)).__name__ == "AskTellGridSampler"
        assert ("LORA_ALPHA_PER_RANK" in arm.space) == (arm.values["ADAPTER"] != "linear_probe")
    runs = expand_runs(cfg)
    assert sorted({r.values["SEED"] for r in runs}) == list(range(6)) and tcfg.trial_seed not in range(6)
    train_nb = nbformat.read(root.parent / cfg.train_notebook, as_version=4)
    defaults: dict = {}
    exec(next(c.source for c in train_nb.cells if "parameters" in c.metadata.get("tags", [])), {}, defaults)
    for run in runs:
        for lr in (0.0005, 0.016):
            check_parameters("01_train", {**defaults, **run.parameters, "LR": lr, "LORA_ALPHA": 0.5 * run.parameters["RANK"]})


def test_phantom_alpha_ablation_matches_the_study():
    """The alpha ablation trains on the study's data and cache with the study's settings; only alpha differs from
    the study's seed-0 runs: MoLRE at E x 2r (its experts at LoRA's scale), LoRA r8 at 4 (MoLRE's effective scale)."""
    root = Path(__file__).parents[2] / "notebooks" / "sweeps"
    study = expand_runs(SweepConfig.from_yaml(root / "phantom_study.yaml"))
    ablation = expand_runs(SweepConfig.from_yaml(root / "phantom_alpha.yaml"))
    assert sorted((r.values["ADAPTER"], r.values["SHARED_A"]) for r in ablation) == \
        [("lora", False)] * 2 + [("molre", False)] * 2 + [("molre", True)] * 2
    for run in ablation:
        twin = next(r for r in study if r.values["ADAPTER"] == run.values["ADAPTER"] and r.values["SEED"] == 0
                    and r.values["BACKBONE"] == run.values["BACKBONE"] and r.values["SHARED_A"] == run.values["SHARED_A"])
        differs = {k for k in {*run.parameters, *twin.parameters} if run.parameters.get(k) != twin.parameters.get(k)}
        assert differs == {"LORA_ALPHA", "RUN_DIR", "FIGURES_DIR", "MANIFEST", "CACHE_DIR"}, differs
        for key in ("MANIFEST", "CACHE_DIR"):  # relative paths are taken from the workbook root (the repository)
            assert (root.parents[1] / run.parameters[key]).resolve() == Path(twin.parameters[key]).resolve()
        p = run.parameters
        two_r = 2 * p["RANK"]
        assert p["LORA_ALPHA"] == (p["N_EXPERTS"] * two_r if p["ADAPTER"] == "molre" else two_r / 4)
        assert run.name == f"{p['BACKBONE']}_{p['ADAPTER']}_shared{p['SHARED_A']:d}_alpha{p['LORA_ALPHA']:g}_seed0"
