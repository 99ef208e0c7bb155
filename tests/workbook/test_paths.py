"""The path rule of notebook parameters: relative paths are taken from the workbook root (marker
``.molre-root`` at or above the working directory, or ``$MOLRE_ROOT``), whatever the working directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from molre_lib.workbook.params import SCHEMAS, ParameterError, check_parameters, path_parameters
from molre_lib.workbook.paths import MARKER, resolve_path, resolve_paths, workbook_root

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def book(tmp_path, monkeypatch):
    monkeypatch.delenv("MOLRE_ROOT", raising=False)
    (tmp_path / MARKER).write_text("")
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    return tmp_path


def test_repository_has_the_marker():
    assert (ROOT / MARKER).is_file()
    assert workbook_root(ROOT / "notebooks") == ROOT


def test_same_answer_from_the_root_and_from_notebooks(book, monkeypatch):
    for cwd in (book, book / "notebooks", book / "notebooks" / "deep"):
        monkeypatch.chdir(cwd)
        assert workbook_root() == book.resolve()
        assert resolve_path("runs/demo/x") == str(book.resolve() / "runs" / "demo" / "x")


def test_absolute_home_and_empty_paths(book, monkeypatch):
    monkeypatch.chdir(book / "notebooks")
    assert resolve_path("/data/ct/manifest.csv") == "/data/ct/manifest.csv"
    assert resolve_path("~/x") == str(Path.home() / "x")
    assert resolve_path("") == ""
    assert resolve_path("../outside") == str(book.resolve().parent / "outside")
    a, b = resolve_paths(["r1", "/abs/r2"], "fig")
    assert a == [str(book.resolve() / "r1"), "/abs/r2"] and b == str(book.resolve() / "fig")


def test_env_overrides_and_no_marker_means_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("MOLRE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    if workbook_root() != tmp_path.resolve():  # a marker above /tmp would be odd, but then the rule holds
        pytest.skip("a .molre-root above the temporary folder")
    assert resolve_path("a") == str(tmp_path.resolve() / "a")
    monkeypatch.setenv("MOLRE_ROOT", str(tmp_path / "elsewhere"))
    assert resolve_path("a") == str(tmp_path.resolve() / "elsewhere" / "a")


def test_check_parameters_returns_absolute_paths(book, monkeypatch):
    monkeypatch.chdir(book / "notebooks")
    params = dict(RUN_DIRS=["runs/a", "runs/b"], SPLIT="test", BOOTSTRAP=0, SEED=0, MIN_POSITIVES=5, OUT_DIR="out",
                  FIGURES_DIR="")
    got = check_parameters("03_per_finding_auc", params)
    assert got["RUN_DIRS"] == [str(book.resolve() / "runs" / "a"), str(book.resolve() / "runs" / "b")]
    assert got["OUT_DIR"] == str(book.resolve() / "out") and got["FIGURES_DIR"] == ""
    assert check_parameters("03_per_finding_auc", params, resolve=False) == params


def test_every_path_parameter_is_marked():
    # names that hold a folder end in _DIR, _DIRS or _ROOT; those that hold a file name the file (a CSV)
    files = ("MANIFEST", "REPORTS", "GOLD")
    for nb, schema in SCHEMAS.items():
        expected = [n for n in schema if n.endswith(("_DIR", "_DIRS", "_ROOT")) or n in files]
        assert path_parameters(nb) == expected, nb


def test_misspellings_name_the_closest_match():
    base = dict(RUN_DIR="r", FINDINGS=["subdural_hematom"], SPLIT="tset", N_EXAMPLES=1, DEVICE="cpu",
                FIGURES_DIR="", N_EXAMPLE=2)
    with pytest.raises(ParameterError) as err:
        check_parameters("04_gradcam", base)
    text = str(err.value)
    assert "'subdural_hematom' (did you mean 'subdural_hematoma'?)" in text
    assert "SPLIT='tset': must be one of ['train', 'val', 'test'] (did you mean 'test'?)" in text
    assert "unknown parameter N_EXAMPLE=2 (did you mean 'N_EXAMPLES'?)" in text
    with pytest.raises(ParameterError, match="did you mean 'phantom_vit'"):
        check_parameters("01_train", {**_defaults("01_train"), "BACKBONE": "phantom_vt"})


def _defaults(name):
    import ast
    import json

    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(cell["source"])).body}


def test_a_parameter_equal_to_a_library_constant_is_still_a_parameter(book, monkeypatch):
    # plots.style.MIN_POSITIVES is 5 too: CPython shares small ints, so identity must not make it "imported"
    from molre_lib.plots.style import MIN_POSITIVES

    monkeypatch.chdir(book / "notebooks")
    params = dict(RUN_DIRS=["runs/a"], SPLIT="test", BOOTSTRAP=0, SEED=0, MIN_POSITIVES=MIN_POSITIVES, OUT_DIR="out",
                  FIGURES_DIR="")
    assert check_parameters("03_per_finding_auc", params)["MIN_POSITIVES"] == MIN_POSITIVES
