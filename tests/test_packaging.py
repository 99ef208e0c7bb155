"""The two install routes (pyproject via make, environment.yml via conda) name the same packages."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0]
    return CONDA_TO_PIP.get(name.lower(), name.lower()).replace("_", "-")


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_side = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda_side |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        elif not dep.startswith(("python", "pip")) or dep.startswith("pip:"):
            conda_side.add(_name(dep))
    assert pip_side - conda_side == set(), "in pyproject.toml but not environment.yml"
    assert conda_side - pip_side == set(), "in environment.yml but not pyproject.toml"


def test_no_urls_in_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        assert "://" not in req and " @ " not in req, req


def test_package_data_ships_the_findings_table() -> None:
    """pyproject's package-data ``resources/*`` matches molre_lib/resources/findings.csv, a symlink to
    data_manifests/findings.csv that a built wheel carries as a plain file (checked by building one by hand:
    ``pip wheel --no-deps .`` holds molre_lib/resources/findings.csv); the taxonomy reads it from there."""
    from importlib import resources

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["molre_lib"]
    shipped = [p for g in globs for p in (ROOT / "molre_lib").glob(g) if p.is_file()]
    names = [p.name for p in shipped]
    assert "findings.csv" in names and "report_phrases.yaml" in names   # the taxonomy, the report labeller's phrases
    for p in shipped:                          # each resource is data_manifests/<name>, read through the package
        table = (ROOT / "data_manifests" / p.name).read_text(encoding="utf-8")
        assert p.read_text(encoding="utf-8") == table
        assert resources.files("molre_lib").joinpath(f"resources/{p.name}").read_text(encoding="utf-8") == table
