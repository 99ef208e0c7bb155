"""CLI and config behaviour: flags generated from TrainConfig, config files, unknown keys, and the
train -> evaluate -> compare -> predict path end to end on the phantom with a tiny backbone."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from molre_lib.cli import build_parser, main
from molre_lib.engine.config import TrainConfig

sys.path.insert(0, str(Path(__file__).parents[1]))
from engine_toys import ToyModel, toy_config, toy_datasets  # noqa: E402


def test_every_trainconfig_field_is_a_flag_with_help():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    dests = {a.dest: a for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in dests, f.name
        assert f.metadata["help"] in dests[f.name].help


def test_flags_override_config_file_and_unknown_keys_raise(tmp_path):
    from molre_lib.cli.engine import _train_config

    (tmp_path / "c.yaml").write_text("adapter: lora\nrank: 4\nvolume_shape: [8, 32, 32]\n")
    args = build_parser().parse_args(["train", "--run-dir", str(tmp_path / "r"), "--config", str(tmp_path / "c.yaml"),
                                      "--rank", "2", "--no-pretrained", "--windows", "[[40, 80]]",
                                      "--target-modules", "qkv", "proj"])
    cfg = _train_config(args)
    assert (cfg.adapter, cfg.rank, cfg.pretrained, cfg.volume_shape) == ("lora", 2, False, [8, 32, 32])
    assert cfg.windows == [[40, 80]] and cfg.target_modules == ["qkv", "proj"]
    (tmp_path / "bad.json").write_text(json.dumps({"adapter": "lora", "rnak": 4}))
    with pytest.raises(ValueError, match="rnak"):
        TrainConfig.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="adapter"):
        TrainConfig(adapter="lora-ish")
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--config", str(tmp_path / "bad.json")]) == 2


def test_run_dir_files_and_evaluate_compare_on_toy_runs(tmp_path, capsys):
    for kind in ("lora", "molre"):
        from molre_lib.engine.train import seed_everything, train

        seed_everything(0)
        train(toy_config(adapter=kind, epochs=2, eval_every=0, checkpoint_every=0), tmp_path / kind,
              model=ToyModel(), datasets=toy_datasets())
    run = tmp_path / "molre"
    for name in ("config.json", "adapter.safetensors", "train_log.csv", "predictions_val.parquet",
                 "predictions_test.parquet", "metrics.json"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["adapter"] == "molre" and cfg["versions"]["torch"] and "git_revision" in cfg
    log = pd.read_csv(run / "train_log.csv")
    assert list(log.columns) == ["step", "epoch", "loss", "lr", "val_macro_auc", "elapsed_s"]
    assert log["val_macro_auc"].notna().sum() == 2  # evaluated at the end of each epoch
    preds = pd.read_parquet(run / "predictions_test.parquet")
    assert preds.shape == (13, 2 + 2 * 5) and (preds["split"] == "test").all()
    assert preds.filter(like="label_").isna().any().any()  # unknown labels stay unknown

    assert main(["evaluate", str(run), "--bootstrap", "100"]) == 0
    per = pd.read_csv(run / "per_finding_auc.csv")
    assert {"finding", "auc", "ci_low", "ci_high", "n_pos", "reason", "ece"} <= set(per.columns)
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["test"]["bootstrap"] == 100 and doc["best_step"] >= 1
    assert main(["compare", str(tmp_path / "lora"), str(run)]) == 0
    printed = capsys.readouterr().out
    assert "molre vs lora" in printed and "largest |delta AUC|" in printed
    cmp = pd.read_csv(run / "compare_lora" / "compare_per_finding.csv")
    np.testing.assert_allclose(cmp["delta_auc"], cmp["auc_b"] - cmp["auc_a"])
    assert (cmp["p_holm"] >= cmp["p"] - 1e-12).all()
    assert (run / "compare_lora" / "compare_categories.csv").is_file()


@pytest.mark.slow
def test_cli_end_to_end_on_phantom_with_tiny_backbone(tmp_path, capsys):
    from molre_lib.data.synth import synthesize

    manifest = synthesize(tmp_path / "data", 32, shape=(8, 32, 32), seed=0, workers=1)
    common = ["--manifest", str(manifest), "--backbone", "phantom_vit", "--reduced", "--no-pretrained",
              "--volume-shape", "8", "32", "32", "--epochs", "1", "--batch-size", "4", "--lr", "3e-3", "--device", "cpu"]
    assert main(["train", "--run-dir", str(tmp_path / "lora"), "--adapter", "lora", "--rank", "4", *common]) == 0
    assert main(["train", "--run-dir", str(tmp_path / "molre"), "--adapter", "molre", "--rank", "4",
                 "--n-experts", "3", "--shared-a", *common]) == 0
    assert json.loads((tmp_path / "molre" / "config.json").read_text())["train"]["shared_a"] is True
    for run in ("lora", "molre"):
        assert main(["evaluate", str(tmp_path / run), "--bootstrap", "50"]) == 0
        per = pd.read_csv(tmp_path / run / "per_finding_auc.csv")
        assert len(per) == 75 and set(per["category"]) == {"hemorrhage", "infarction", "trauma", "mass",
                                                            "structural", "chronic"}
        assert (per["auc"].isna() == (per["reason"].fillna("") != "")).all()  # NaN exactly when a reason is given
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "lora"), str(tmp_path / "molre")]) == 0
    assert "hemorrhage" in capsys.readouterr().out
    cats = pd.read_csv(tmp_path / "molre" / "compare_lora" / "compare_categories.csv")
    assert cats["category"].iloc[-1] == "all"

    # predict on NIfTI files: same probabilities as the run's own test predictions
    test = pd.read_csv(manifest).query("split == 'test'")
    paths = [str(tmp_path / "data" / p) for p in test["path"]]
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(tmp_path / "molre"), *paths, "--out", str(out_csv), "--device", "cpu",
                 "--min-slices", "8"]) == 0
    pred = pd.read_csv(out_csv)
    ref = pd.read_parquet(tmp_path / "molre" / "predictions_test.parquet").set_index("scan_id").loc[test["scan_id"]]
    keys = [c[len("prob_"):] for c in ref.columns if c.startswith("prob_")]
    assert pred.shape == (len(paths), 8 + 75) and (pred["status"] == "ok").all()  # 8 info columns (INFO_COLUMNS)
    np.testing.assert_allclose(pred[keys].to_numpy(), ref[[f"prob_{k}" for k in keys]].to_numpy(), atol=1e-5)
    # a DICOM series folder and a single DICOM file
    dcm_manifest = synthesize(tmp_path / "dcm", 1, shape=(8, 32, 32), fmt="dicom", seed=1, workers=1)
    folder = tmp_path / "dcm" / pd.read_csv(dcm_manifest)["path"].iloc[0]
    one_file = sorted(p for p in folder.rglob("*") if p.is_file())[0]
    assert main(["predict", str(tmp_path / "lora"), str(folder), str(one_file), "--out", str(out_csv),
                 "--min-slices", "8"]) == 2                     # a single slice is not a head CT: its row says so
    pred = pd.read_csv(out_csv)
    assert list(pred["status"]) == ["ok", "error"] and "1 slice(s)" in pred["error"].iloc[1]
    assert pred[keys].iloc[0].min() >= 0 and pred[keys].iloc[0].max() <= 1


@pytest.mark.parametrize("kind", ["linear_probe", "full"])
def test_linear_probe_and_full_save_what_they_train_and_early_stopping_stops(tmp_path, kind):
    from safetensors import safe_open

    from molre_lib.engine.train import seed_everything, train

    seed_everything(0)
    model = ToyModel()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(toy_config(adapter=kind, epochs=20, eval_every=1, early_stopping=2, lr=1e-4), tmp_path / kind,
          model=model, datasets=toy_datasets())
    with safe_open(str(tmp_path / kind / "adapter.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert saved == ({n for n in before} if kind == "full" else {"head.weight", "head.bias"})
    assert changed <= saved and changed
    doc = json.loads((tmp_path / kind / "metrics.json").read_text())
    log = pd.read_csv(tmp_path / kind / "train_log.csv")
    assert doc["stopped_early"] and doc["steps"] == len(log) < 20 * 4
    assert len(log) - doc["best_step"] == 2  # evaluated every step: stopped after two without a gain
