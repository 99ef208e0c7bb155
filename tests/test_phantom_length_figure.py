"""benchmarks/phantom_length_figure.py: the validation curves of the same runs at several training lengths, from
the files benchmarks/phantom_tuned_length.py writes (two written here, sharing the study's own runs)."""
from __future__ import annotations

import json

import pytest

from benchmark_scripts import load_benchmark



def _module():
    return load_benchmark("phantom_length_figure")


def _curve(values):
    return [{"epoch": e, "val_macro_auc": v} for e, v in enumerate(values)]


def _result(longer: int, arms: dict) -> dict:
    """A phantom_tuned_length result: every arm's seeds with the study's 2-epoch curve and a longer one."""
    return {"sweep_dir": "runs/x", "backbone": "phantom_vit", "study_epochs": [2], "longer_epochs": longer,
            "arms": {arm: {"seeds": [{"seed": s, "study_curve": _curve([0.6 + s / 100, 0.62 + s / 100]),
                                      "longer_curve": _curve([0.6 + s / 100 + e / 100 for e in range(longer)])}
                                     for s in seeds]} for arm, seeds in arms.items()}}


def test_each_arm_at_every_length_over_the_seeds_all_lengths_have(tmp_path):
    mod = _module()
    # 4 epochs at seeds 0-2 for both arms; 6 epochs at seeds 0-1 for LoRA only
    curves = mod.length_curves([_result(4, {"LoRA": [0, 1, 2], "MoLRE shared A": [0, 1, 2]}),
                                _result(6, {"LoRA": [0, 1]})])
    assert list(curves["phantom_vit"]) == ["LoRA"]  # MoLRE lacks the 6-epoch length: left out, not half drawn
    lora = curves["phantom_vit"]["LoRA"]
    assert sorted(lora) == [2, 4, 6] and all(c["n_seeds"] == 2 for c in lora.values())  # seeds 0-1 only
    assert lora[2]["mean"] == pytest.approx([0.605, 0.625]) and lora[6]["epochs"] == [1, 2, 3, 4, 5, 6]
    assert lora[4]["min"] == pytest.approx([0.6, 0.61, 0.62, 0.63]) and lora[4]["max"][-1] == pytest.approx(0.64)
    # both files hold the study's own 2-epoch runs: drawn once, as the paper names every figure uses
    both = mod.length_curves([_result(4, {"LoRA": [0, 1], "MoLRE shared A": [0, 1]})])
    assert set(both["phantom_vit"]) == {"LoRA", "MoLRE (shared A)"}


def test_the_figure_and_what_a_wrong_file_gets(tmp_path, capsys):
    mod = _module()
    files = []
    for longer, arms in ((4, {"LoRA": [0, 1], "MoLRE shared A": [0, 1]}), (6, {"LoRA": [0, 1], "MoLRE shared A": [0, 1]})):
        files.append(tmp_path / f"len{longer}.json")
        files[-1].write_text(json.dumps(_result(longer, arms)))
    out = tmp_path / "fig" / "length_curves"
    assert mod.main([*map(str, files), "--out", str(out)]) == 0
    assert all((out.parent / f"length_curves.{ext}").is_file() for ext in ("png", "pdf", "svg"))
    assert "phantom_vit  LoRA" in capsys.readouterr().out

    from molre_lib.plots.tuning import plot_training_lengths
    fig = plot_training_lengths(mod.length_curves([json.loads(f.read_text()) for f in files]))
    ax = fig.axes[0]
    assert len(ax.lines) == 2 * 3 * 2  # 2 arms x 3 lengths: a curve and its end point each
    # LoRA's curves, shortest first (each followed by its end point): the longest training solid
    assert [line.get_linestyle() for line in ax.lines[0:6:2]] == [":", "--", "-"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["LoRA", "MoLRE (shared A)", "6 epochs", "4 epochs", "2 epochs"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backbone": "phantom_vit"}))
    assert mod.main([str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: not a phantom_tuned_length.py result") and "\n" not in err
