"""The notebook series under papermill with tiny parameters (kernel ``molre``), in the order a user runs it.

One phantom set and one LoRA + one MoLRE run of a reduced ``phantom_vit`` feed 02–05; each test checks the
files the notebook promises. Parameter handling is checked without a kernel where possible.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

from molre_lib.workbook.params import SCHEMAS, ParameterError, check_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "molre"


def _parameters_cell(path: Path) -> dict:
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_matches_parameters_cell_and_accepts_defaults(name: str) -> None:
    params = _parameters_cell(NOTEBOOKS / f"{name}.ipynb")
    assert list(params) == list(SCHEMAS[name]), "parameters cell and molre_lib.workbook.params.SCHEMAS differ"
    assert check_parameters(name, params, resolve=False) == params


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_validation_cell_makes_paths_absolute(name: str) -> None:
    """The cell after the parameters puts the resolved (absolute) paths back, and the parameters cell states
    the rule, so the notebook reads the same files from JupyterLab (cwd notebooks/) as from the root."""
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    i = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "workbook root" in "".join(nb["cells"][i]["source"])
    validation = "".join(nb["cells"][i + 1]["source"])
    assert validation.startswith(f'P = check_parameters("{name}", globals())') and "globals().update(P)" in validation


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_opening_does_not_modify_the_notebook(name: str) -> None:
    """JupyterLab writes the kernel's language_info into the notebook on connect and marks it modified if it
    differs; the committed metadata is exactly what the molre kernel reports (major.minor Python version)."""
    from molre_lib.workbook.kernel import LANGUAGE_INFO

    meta = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["metadata"]
    assert meta["kernelspec"] == {"display_name": "Python (molre)", "language": "python", "name": "molre"}
    assert meta["language_info"] == LANGUAGE_INFO
    assert set(meta) == {"kernelspec", "language_info"}, "no widget state or other metadata in committed notebooks"


def test_molre_kernel_reports_that_language_info() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    from molre_lib.workbook.kernel import LANGUAGE_INFO

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert "--IPKernelApp.kernel_class=molre_lib.workbook.kernel.MolreKernel" in spec.argv, \
        "kernel 'molre' was registered without the molre kernel class: run `make kernel`"
    assert LANGUAGE_INFO["version"].count(".") == 1


def test_check_parameters_lists_every_problem() -> None:
    params = _parameters_cell(NOTEBOOKS / "01_train.ipynb")
    params.update(EPOCH=3, ADAPTER="dora", RANK="4")
    del params["SEED"]
    with pytest.raises(ParameterError) as err:
        check_parameters("01_train", params)
    text = str(err.value)
    for needle in ("unknown parameter EPOCH", "missing parameter SEED", "ADAPTER='dora': must be one of",
                   "RANK='4': expected int"):
        assert needle in text


def test_lora_alpha_parameter_sets_the_adapter_scaling() -> None:
    """LORA_ALPHA of 01_train reaches every adapted layer as alpha / RANK; None keeps LoRA's 2 x RANK."""
    from molre_lib.adapters.layer import MoLRELayer
    from molre_lib.engine.build import build_model
    from molre_lib.workbook.params import train_config

    params = {**_parameters_cell(NOTEBOOKS / "01_train.ipynb"), "REDUCED": True, "PRETRAINED": False, "RANK": 2}
    for alpha, scaling in ((None, 2.0), (16.0, 8.0)):
        model = build_model(train_config(check_parameters("01_train", {**params, "LORA_ALPHA": alpha})))
        layers = [m for m in model.modules() if isinstance(m, MoLRELayer)]
        assert layers and {m.scaling for m in layers} == {scaling}
    with pytest.raises(ParameterError, match="LORA_ALPHA=0"):
        check_parameters("01_train", {**params, "LORA_ALPHA": 0})


def _run(name: str, out_dir: Path, cwd: Path = ROOT, **params) -> Path:
    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=params, kernel_name=KERNEL,
                               cwd=str(cwd), progress_bar=False)
    return out


def _from_notebooks_dir(series) -> Path:
    """The kernel's working directory as JupyterLab sets it: <workbook>/notebooks (the workbook is the test's
    folder with a .molre-root marker), so relative parameters must resolve against the workbook root."""
    nb_dir = series["work"] / "notebooks"
    nb_dir.mkdir(exist_ok=True)
    return nb_dir


@pytest.fixture(scope="module")
def kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.fail("Jupyter kernel 'molre' is not installed: run `make install` (it registers it)")


@pytest.fixture(scope="module")
def series(tmp_path_factory, kernel) -> dict:
    """00 -> 01 (LoRA, MoLRE) with tiny settings; returns the paths later notebooks read."""
    work = tmp_path_factory.mktemp("series")
    (work / ".molre-root").write_text("")  # a workbook of its own: relative paths resolve here
    figures = work / "figures"
    _run("00_data", work, OUT_DIR=str(work / "data"), N_SCANS=36, SHAPE=[8, 48, 48], FIGURES_DIR=str(figures / "00"))
    runs = {}
    for adapter in ("lora", "molre"):
        runs[adapter] = work / "runs" / f"tiny-{adapter}"
        _run("01_train", work, BACKBONE="phantom_vit", ADAPTER=adapter, N_EXPERTS=1 if adapter == "lora" else 3,
             RANK=2, EPOCHS=1, BATCH_SIZE=8, MANIFEST=str(work / "data" / "manifest.csv"), RUN_DIR=str(runs[adapter]),
             CACHE_DIR=str(work / "cache"), PRETRAINED=False, REDUCED=True, EVAL_BOOTSTRAP=10, DEVICE="cpu",
             FIGURES_DIR=str(figures / f"01_{adapter}"))
    return {"work": work, "figures": figures, "runs": runs}


@pytest.mark.slow
def test_00_and_01_write_data_and_runs(series) -> None:
    data = series["work"] / "data"
    assert (data / "manifest.csv").is_file() and (data / "prevalence.csv").is_file()
    for ext in ("pdf", "svg", "png"):
        assert (series["figures"] / "00" / f"slice_gallery.{ext}").is_file()
    for run in series["runs"].values():
        for name in ("config.json", "adapter.safetensors", "train_log.csv", "predictions_val.parquet",
                     "predictions_test.parquet", "metrics.json"):
            assert (run / name).is_file(), f"{run.name}: {name} missing"
        assert (series["figures"] / f"01_{run.name.split('-')[1]}" / "training_curves.png").is_file()
    printed = (series["work"] / "01_train.ipynb").read_text()  # the last one executed: the MoLRE run
    assert f"watch it live: tensorboard --logdir {series['runs']['molre']}" in printed


@pytest.mark.slow
def test_02_routing(series, tmp_path) -> None:
    run = series["runs"]["molre"]
    nb_dir = _from_notebooks_dir(series)  # relative paths, kernel in notebooks/: as opened in JupyterLab
    _run("02_routing", tmp_path, cwd=nb_dir, RUN_DIR="runs/tiny-molre", MAX_SCANS=6, DEVICE="cpu",
         FIGURES_DIR="figures/02")
    assert (run / "routing.npz").is_file() and (run / "routing_usage.csv").is_file()
    assert (run / "routing_specialisation_tests.csv").is_file() and (run / "routing_gates_by_category.csv").is_file()
    for name in ("expert_usage", "gate_entropy", "gates_by_finding", "expert_specialisation", "routing_maps",
                 "specialisation_tests", "gates_by_category"):
        assert (series["work"] / "figures" / "02" / f"{name}.png").is_file(), name
    assert list(nb_dir.iterdir()) == [], "nothing is written under notebooks/"


@pytest.mark.slow
def test_03_per_finding_auc(series, tmp_path) -> None:
    nb_dir = _from_notebooks_dir(series)  # relative paths, kernel in notebooks/: as opened in JupyterLab
    _run("03_per_finding_auc", tmp_path, cwd=nb_dir, RUN_DIRS=["runs/tiny-lora", "runs/tiny-molre"], BOOTSTRAP=20,
         OUT_DIR="analysis/auc", FIGURES_DIR="figures/03")
    out, fig = series["work"] / "analysis" / "auc", series["work"] / "figures" / "03"
    for name in ("per_finding_auc.csv", "per_finding_auc.tex", "summary.csv", "compare_tiny-molre_vs_tiny-lora.csv",
                 "paper_categories_tiny-molre_vs_tiny-lora.tex", "paper_findings_tiny-molre_vs_tiny-lora.csv"):
        assert (out / name).is_file(), name
    for name in ("forest_tiny-lora", "delta_auc_tiny-molre_vs_tiny-lora", "confidence_shift_tiny-molre_vs_tiny-lora",
                 "reliability"):
        for ext in ("pdf", "svg", "png"):
            assert (fig / f"{name}.{ext}").is_file(), f"{name}.{ext}"
    assert list(nb_dir.iterdir()) == [], "nothing is written under notebooks/"


@pytest.mark.slow
def test_missing_run_names_the_absolute_path(series, tmp_path) -> None:
    nb_dir = _from_notebooks_dir(series)
    tried = series["work"].resolve() / "runs" / "no-such-run" / "config.json"
    with pytest.raises(papermill.PapermillExecutionError, match=f"{tried} not found"):
        _run("02_routing", tmp_path, cwd=nb_dir, RUN_DIR="runs/no-such-run", DEVICE="cpu")


@pytest.mark.slow
def test_04_gradcam(series, tmp_path) -> None:
    run = series["runs"]["molre"]
    _run("04_gradcam", tmp_path, RUN_DIR=str(run), REFERENCE_RUN_DIR=str(series["runs"]["lora"]),
         FINDINGS=["cerebral_atrophy", "intracranial_hemorrhage"], N_EXAMPLES=1, MAX_SCANS=2, BOOTSTRAP=20,
         DEVICE="cpu", FIGURES_DIR=str(tmp_path / "fig"))
    for name in ("cam_panel", "localisation_forest_gradcam", "localisation_forest_occlusion"):
        assert (tmp_path / "fig" / f"{name}.png").is_file(), name
    assert (run / "gradcam_examples.csv").is_file()
    doc = json.loads((run / "localisation.json").read_text())
    assert doc["models"] == ["lora", "molre"] and doc["n_scans"] == 2
    assert {r["method"] for r in doc["paired"]} == {"gradcam", "occlusion"}


@pytest.mark.slow
def test_05_summary(series, tmp_path) -> None:
    _run("05_summary", tmp_path, SWEEP_DIR=str(series["work"] / "runs"), BOOTSTRAP=20, FIGURES_DIR=str(tmp_path / "fig"))
    table = (series["work"] / "runs" / "summary_table.csv").read_text()
    assert "phantom_vit" in table and "delta_auc" in table
    paper = (series["work"] / "runs" / "paper_table.tex").read_text()  # the paper's main table, method names
    assert "\\toprule" in paper and "MoLRE" in paper and "LoRA" in paper and "Params (M)" in paper
    assert (tmp_path / "fig" / "summary_auc.svg").is_file()


@pytest.mark.slow
def test_unknown_parameter_fails(kernel, tmp_path) -> None:
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter EPOCH"):
        _run("05_summary", tmp_path, SWEEP_DIR=str(tmp_path), EPOCH=3)
