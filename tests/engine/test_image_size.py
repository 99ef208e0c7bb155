"""TrainConfig.image_size: a 2D backbone fine-tuned on smaller slices than it was pretrained on (fewer patches,
cheaper steps). The demo ViT resamples its position embedding to the patch grid it is given; at its own size it is
the pretrained model exactly; a finished run predicts at the size it was trained at; wrong sizes are one line."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from molre_lib.cli import main
from molre_lib.engine.build import build_model
from molre_lib.engine.config import TrainConfig
from molre_lib.workbook.params import value_problem, SCHEMAS


def _demo_weights(folder, arch_overrides=None):
    """Weights of the demo ViT in its own format (config.json + model.safetensors), as `molre pretrain-demo` writes."""
    from molre_lib.backbones.phantom_vit import PHANTOM_VIT_ARCH, build_phantom_vit

    torch.manual_seed(3)
    arch = dict(PHANTOM_VIT_ARCH, **(arch_overrides or {}))
    model = build_phantom_vit(arch)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"arch": arch}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return model


def test_demo_vit_at_48_px_sees_36_patches_and_is_the_pretrained_model_at_64(tmp_path):
    pretrained = _demo_weights(tmp_path / "phantom_vit").eval()
    base = dict(backbone="phantom_vit", weights=str(tmp_path / "phantom_vit"), adapter="lora", rank=2)
    small = build_model(TrainConfig(**base, image_size=[48, 48])).eval()
    assert small.input_size == (48, 48)
    tokens = []
    small.encoder.blocks[0].register_forward_hook(lambda m, i, o: tokens.append(o.shape[1]))
    with torch.no_grad():
        logits = small(torch.rand(2, 3, 4, 64, 64))  # slices are resized to the encoder's 48 x 48
    assert logits.shape == (2, 75) and tokens == [6 * 6 + 1]  # 36 patches + the class token (64 px: 64 + 1)
    # the stored position embedding stays the pretrained 8 x 8 grid: checkpoints and adapters are unchanged
    assert torch.equal(small.encoder.pos_embed, pretrained.pos_embed)
    # at the pretrained size nothing is resampled: the fine-tuning encoder is the pretrained ViT, bit for bit
    full = build_model(TrainConfig(**base)).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(full.encoder(x), pretrained(x))


def test_wrong_image_sizes_name_the_field_and_a_size_that_works(tmp_path):
    with pytest.raises(ValueError, match=r"image_size=\[48\]: must be \[H, W\]"):
        TrainConfig(image_size=[48])
    with pytest.raises(ValueError, match=r"phantom_vit has 8 x 8 patches; use a multiple of 8 \(e.g. \[48, 48\]\)"):
        build_model(TrainConfig(backbone="phantom_vit", pretrained=False, adapter="lora", image_size=[50, 50]))
    with pytest.raises(ValueError, match="ctfm_segresenc is a 3D backbone; set volume_shape instead"):
        build_model(TrainConfig(backbone="ctfm_segresenc", pretrained=False, reduced=True, adapter="linear_probe",
                                image_size=[32, 32]))
    schema = SCHEMAS["01_train"]["IMAGE_SIZE"]
    assert value_problem("IMAGE_SIZE", schema, []) is None and value_problem("IMAGE_SIZE", schema, [48, 48]) is None
    assert "2 positive integers" in value_problem("IMAGE_SIZE", schema, [48])


def test_a_run_trained_at_a_smaller_image_size_predicts_at_it(tmp_path, capsys):
    from molre_lib.data.synth import synthesize

    manifest = synthesize(tmp_path / "data", 24, shape=(4, 32, 32), seed=0, workers=1)
    common = ["--manifest", str(manifest), "--backbone", "phantom_vit", "--reduced", "--no-pretrained",
              "--volume-shape", "4", "16", "16", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
              "--adapter", "lora", "--rank", "2", "--eval-bootstrap", "0", "--no-tensorboard"]
    run = tmp_path / "run16"
    assert main(["train", "--run-dir", str(run), "--image-size", "16", "16", *common]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["image_size"] == [16, 16]
    test = pd.read_csv(manifest).query("split == 'test'")
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(run), *[str(tmp_path / "data" / p) for p in test["path"]], "--out", str(out_csv),
                 "--device", "cpu", "--min-slices", "4"]) == 0
    pred = pd.read_csv(out_csv)
    ref = pd.read_parquet(run / "predictions_test.parquet").set_index("scan_id").loc[test["scan_id"]]
    keys = [c[len("prob_"):] for c in ref.columns if c.startswith("prob_")]
    np.testing.assert_allclose(pred[keys].to_numpy(), ref[[f"prob_{k}" for k in keys]].to_numpy(), atol=1e-5)
    capsys.readouterr()
    assert main(["train", "--run-dir", str(tmp_path / "bad"), "--image-size", "20", "20", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image_size=[20, 20]" in err[0] and "multiple of 8" in err[0]
