"""molre export round trips on tiny phantom runs: the MONAI bundle run by ``python -m monai.bundle run`` gives
``molre predict``'s probabilities, its metadata passes MONAI's schema and ``verify_net_in_out``; a LoRA run loads
with ``PeftModel.from_pretrained`` and gives the workbook's logits; every export's model card parses as a
Hugging Face card."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from molre_lib.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A LoRA (rslora scaling) and a MoLRE run of random-init reduced phantom_vit on 16 phantom scans (4x32x32; 8 / 4 / 4),
    evaluated with bootstrap CIs; one DICOM series of the same phantom for the bundle's DICOM path."""
    from molre_lib.data.synth import synthesize

    root = tmp_path_factory.mktemp("export")
    manifest = synthesize(root / "data", 16, shape=(4, 32, 32), seed=0, workers=1, splits=(0.5, 0.25, 0.25))
    dicom = synthesize(root / "dcm", 1, shape=(4, 32, 32), fmt="dicom", seed=1, workers=1)
    common = ["--manifest", str(manifest), "--backbone", "phantom_vit", "--reduced", "--no-pretrained",
              "--volume-shape", "4", "32", "32", "--epochs", "2", "--batch-size", "4", "--lr", "1e-2",
              "--device", "cpu"]
    arms = {"lora": ["--adapter", "lora", "--rank", "2", "--scaling", "rslora"],
            "molre": ["--adapter", "molre", "--rank", "2", "--n-experts", "3"]}
    for name, extra in arms.items():
        assert main(["train", "--run-dir", str(root / name), *common, *extra]) == 0
        assert main(["evaluate", str(root / name), "--bootstrap", "20"]) == 0
    scans = [str(root / "data" / p) for p in pd.read_csv(manifest)["path"][:3]]
    scans.append(str(root / "dcm" / pd.read_csv(dicom)["path"].iloc[0]))
    return {"root": root, "lora": root / "lora", "molre": root / "molre", "scans": scans, "manifest": manifest}


@pytest.fixture(scope="module")
def bundle(runs):
    out = runs["root"] / "bundle"
    assert main(["export", str(runs["molre"]), "--format", "monai-bundle", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_monai_bundle_run_gives_molre_predict_probabilities(runs, bundle, tmp_path):
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == {
        "configs/metadata.json", "configs/inference.json", "configs/molre_run.json", "models/model.pt",
        "docs/README.md", "LICENSE"}
    inputs = runs["scans"] + [str(tmp_path / "missing.nii.gz")]
    out = tmp_path / "bundle.csv"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(bundle / "configs" / "inference.json"), "--meta_file", str(bundle / "configs" / "metadata.json"),
                           "--bundle_root", str(bundle), "--inputs", repr(inputs), "--output_file", str(out),
                           "--min_slices", "4", "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pd.read_csv(out, keep_default_na=False)
    assert list(got["status"]) == ["ok"] * 4 + ["error"] and "no such file" in got["error"].iloc[-1]
    ref_csv = tmp_path / "predict.csv"
    assert main(["predict", str(runs["molre"]), *runs["scans"], "--out", str(ref_csv), "--min-slices", "4",
                 "--device", "cpu"]) == 0
    ref = pd.read_csv(ref_csv)
    from molre_lib.data.taxonomy import FINDING_KEYS as keys

    assert list(got.columns) == list(ref.columns) and list(got.columns[8:]) == keys  # molre predict's columns
    np.testing.assert_allclose(got[keys].iloc[:4].to_numpy(float), ref[keys].to_numpy(float), atol=1e-5, rtol=0)
    assert got["series_uid"].iloc[3] == ref["series_uid"].iloc[3] != ""  # the DICOM series was read as one


def test_bundle_metadata_passes_monai_schema_and_net_in_out(runs, bundle, tmp_path):
    from monai.bundle import verify_metadata, verify_net_in_out

    from molre_lib.data.taxonomy import FINDING_KEYS
    from molre_lib.export.meta_schema import write_schema

    meta_file = bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(write_schema(tmp_path / "schema.json")))
    verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(bundle / "configs" / "inference.json"),
                      device="cpu", bundle_root=str(bundle))
    meta = json.loads(meta_file.read_text())
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert (image["format"], image["modality"], image["num_channels"], image["spatial_shape"]) == ("hounsfield", "CT", 1, [4, 32, 32])
    assert pred["num_channels"] == 75 and [pred["channel_def"][str(i)].split(":")[0] for i in range(75)] == FINDING_KEYS
    metrics = json.loads((runs["molre"] / "metrics.json").read_text())
    assert meta["eval_metrics"]["test_macro_auc"] == pytest.approx(metrics["test"]["summary"]["macro_auc"]["value"])
    assert meta["monai_version"] and meta["pytorch_version"] and "research use only" in meta["intended_use"].lower()
    # a bad metadata file fails the same check (the schema is really applied)
    del meta["network_data_format"]["inputs"]["image"]["dtype"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="dtype"):
        verify_metadata(meta_file=str(bad), filepath=str(tmp_path / "schema.json"))


def test_bundle_model_pt_is_adapters_and_head_only_and_loads_with_a_key_check(runs, bundle, tmp_path):
    from molre_lib.adapters import adapter_state_dict
    from molre_lib.engine.evaluate import load_run_model
    from molre_lib.export.bundle_runtime import load_network

    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    model, _ = load_run_model(runs["molre"])
    assert set(state) == set(adapter_state_dict(model, ("aggregator", "head_norm", "head")))
    assert not any("base_layer" in k or k.startswith("encoder.patch_embed") for k in state)
    for edit, message in ((lambda s: s.pop("head.weight"), "missing tensor 'head.weight'"),
                          (lambda s: s.update(extra=torch.zeros(1)), "unexpected tensor 'extra'")):
        copy = tmp_path / f"b{len(message)}"
        shutil.copytree(bundle, copy)
        broken = dict(state)
        edit(broken)
        torch.save(broken, copy / "models" / "model.pt")
        with pytest.raises(ValueError, match=message):
            load_network(copy)


def test_bundle_checks_dicom_series_with_the_runs_series_policy(runs, bundle, tmp_path):
    """A bone-kernel series is refused by default and read with a warning under the run's bone_kernel=warn, in the
    bundle as in molre predict."""
    from molre_lib.data.phantom import PhantomConfig, make_subject
    from molre_lib.data.writers import write_dicom_series
    from molre_lib.export.bundle_runtime import load_network, predict_files

    s = make_subject(3, PhantomConfig(shape=(6, 32, 32), pv_subsamples=1))
    series = tmp_path / "bone_series"
    write_dicom_series(series, s.hu, s.spacing, s.origin, "uid-bone", "P9", kernel="BONE")
    run = tmp_path / "warn_run"
    shutil.copytree(runs["molre"], run)
    doc = json.loads((run / "config.json").read_text())
    doc["train"]["series_policy"] = ["bone_kernel=warn"]
    (run / "config.json").write_text(json.dumps(doc))
    warn_bundle = tmp_path / "warn_bundle"
    assert main(["export", str(run), "--format", "monai-bundle", "--out", str(warn_bundle)]) == 0
    assert json.loads((warn_bundle / "configs" / "molre_run.json").read_text())["preprocess"]["series_policy"] == \
        ["bone_kernel=warn"]
    rows = {}
    for name, root in (("default", bundle), ("warn", warn_bundle)):
        out = predict_files(load_network(root), [str(series)], tmp_path / f"{name}.csv", root, min_slices=4)
        rows[name] = pd.read_csv(out, keep_default_na=False).iloc[0]
    assert rows["default"]["status"] == "error" and "bone-kernel reconstruction 'BONE'" in rows["default"]["error"]
    assert rows["warn"]["status"] == "ok" and "bone-kernel reconstruction 'BONE'" in rows["warn"]["warning"]
    assert rows["warn"]["kernel"] == "BONE"
    ref_csv = tmp_path / "predict.csv"
    main(["predict", str(run), str(series), "--out", str(ref_csv), "--min-slices", "4", "--device", "cpu"])
    ref = pd.read_csv(ref_csv, keep_default_na=False).iloc[0]
    assert (ref["status"], ref["warning"]) == (rows["warn"]["status"], rows["warn"]["warning"])
    from molre_lib.data.taxonomy import FINDING_KEYS as keys

    np.testing.assert_allclose(rows["warn"][keys].to_numpy(float), ref[keys].to_numpy(float), atol=1e-5, rtol=0)


def test_include_backbone_ships_workbook_weights_and_refuses_hub_weights(runs, tmp_path):
    from molre_lib.export.bundle_runtime import load_network

    out = tmp_path / "with_backbone"
    assert main(["export", str(runs["molre"]), "--format", "monai-bundle", "--out", str(out), "--include-backbone"]) == 0
    frozen = torch.load(out / "models" / "backbone.pt", weights_only=True)
    assert any(k.endswith("base_layer.weight") for k in frozen) and "head.weight" not in frozen
    net = load_network(out)  # built with pretrained=False, then the shipped tensors (fingerprint checked)
    x = torch.rand(1, 1, 4, 32, 32) * 200 - 100
    assert net(x).shape == (1, 75)
    hub_run = tmp_path / "rad_dino_run"
    shutil.copytree(runs["molre"], hub_run)
    doc = json.loads((hub_run / "config.json").read_text())
    doc["train"]["backbone"] = "rad_dino"
    (hub_run / "config.json").write_text(json.dumps(doc))
    assert main(["export", str(hub_run), "--format", "monai-bundle", "--out", str(tmp_path / "x"), "--include-backbone"]) == 2
    assert not (tmp_path / "x").exists()


def test_peft_export_loads_with_peftmodel_and_gives_the_workbook_logits(runs, tmp_path):
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    from molre_lib.engine.evaluate import load_run_model
    from molre_lib.export import peft_base_model

    out = tmp_path / "peft"
    assert main(["export", str(runs["lora"]), "--format", "peft", "--out", str(out)]) == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is True and cfg["r"] == 2 and cfg["lora_alpha"] == 4.0
    ref, _ = load_run_model(runs["lora"])
    pm = peft.PeftModel.from_pretrained(peft_base_model(out), str(out)).eval()
    x = torch.rand(3, 3, 4, 32, 32)
    with torch.no_grad():
        got, want = pm(x), ref(x)
        with pm.disable_adapter():
            no_lora = pm(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
    assert float((no_lora - want).abs().max()) > 1e-4  # the LoRA update matters: the match is not vacuous
    # target_modules matches exactly the adapted layers (patch_embed.proj is a 'proj' too)
    adapted = json.loads((runs["lora"] / "config.json").read_text())
    import re

    names = [n for n, _ in peft_base_model(out).named_modules()]
    hit = [n for n in names if re.fullmatch(cfg["target_modules"], n)]
    assert hit == [n for n in names if n.startswith("encoder.blocks.") and n.endswith(("attn.qkv", "attn.proj"))]
    assert "encoder.patch_embed.proj" in names and "encoder.patch_embed.proj" not in hit
    assert adapted["train"]["adapter"] == "lora"
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert set(saved) == set(peft.get_peft_model_state_dict(pm))  # PEFT's own key names
    assert any(k.startswith("base_model.model.head.") for k in saved) and cfg["modules_to_save"][-1] == "head"


def test_peft_refuses_a_molre_run_in_one_line(runs, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", str(runs["molre"]), "--format", "peft", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PEFT has no mixture-of-low-rank-experts" in err and "monai-bundle" in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("case, message", [
    ("missing_run", "is not a folder; give a run folder"),
    ("unfinished_run", "metrics.json is missing"),
    ("out_is_a_file", "is a file; give a new or empty folder"),
    ("out_holds_files", "already holds files"),
    ("peft_with_backbone", "--include-backbone applies to --format monai-bundle only"),
])
def test_user_errors_are_one_line_naming_the_file_exit_2(runs, tmp_path, capsys, case, message):
    run, out, fmt, extra = runs["lora"], tmp_path / "out", "peft", []
    if case == "missing_run":
        run = tmp_path / "no_such_run"
    elif case == "unfinished_run":
        run = tmp_path / "unfinished"
        run.mkdir()
        for name in ("config.json", "adapter.safetensors"):
            shutil.copy(runs["lora"] / name, run / name)
    elif case == "out_is_a_file":
        out.write_text("x")
    elif case == "out_holds_files":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    else:
        extra = ["--include-backbone"]
    capsys.readouterr()
    assert main(["export", str(run), "--format", fmt, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    if case in ("out_is_a_file", "out_holds_files"):
        assert str(out) in err and (out.is_file() or [p.name for p in out.iterdir()] == ["keep.txt"])
    else:
        assert not out.exists()


def test_model_card_front_matter_parses_and_states_the_run(runs, bundle):
    from huggingface_hub import ModelCard

    text = (bundle / "docs" / "README.md").read_text()
    card = ModelCard(text, ignore_metadata_errors=False)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["library_name"] == "monai" and "base_model" not in data
    metrics = json.loads((runs["molre"] / "metrics.json").read_text())["test"]
    defined = [r for r in metrics["per_finding"] if r["auc"] is not None]
    results = card.data.eval_results
    assert len(results) == len(defined) + 1 and results[0].metric_name == "macro ROC AUC"
    assert results[0].metric_value == pytest.approx(metrics["summary"]["macro_auc"]["value"], abs=1e-4)
    by_name = {r.metric_name: r.metric_value for r in results}
    assert by_name[f"ROC AUC {defined[0]['finding']}"] == pytest.approx(defined[0]["auc"], abs=1e-4)
    body = card.text
    assert "Research use only — not for clinical use." in body
    assert sum(1 for line in body.splitlines() if line.startswith("| ") and line.count("|") == 8) == 75 + 1
    assert "20 bootstrap replicates" in body and "MoLRE 3x2" in body
    split_counts = pd.read_csv(runs["manifest"])["split"].value_counts()
    for split, n in split_counts.items():
        assert any(line.startswith(f"| {split} | {n} |") for line in body.splitlines())
    assert "synthetic head-CT phantom" in body and "Known positives of the `test` split" in body
    assert "Weights not needed: the run trained on a random-initialised backbone" in body  # --no-pretrained run
    assert [line.split(" |")[0] for line in body.splitlines() if line.startswith(("| train |", "| val |", "| test |"))] \
        == ["| train", "| val", "| test"]


def test_cli_formats_are_the_library_formats():
    from molre_lib.cli.export import FORMATS as cli_formats
    from molre_lib.export import FORMATS

    assert cli_formats == tuple(FORMATS)
