"""Offline weight loading: each official format, written here at reduced size, loads through the registry."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from molre_lib.backbones import MissingWeightsError, create_model, find_local_weights, get_spec


@pytest.fixture(autouse=True)
def _offline_dirs(tmp_path, monkeypatch):
    """Empty HF cache and MoLRE folders for every test (never the user's real ones)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("MOLRE_CACHE_DIR", str(tmp_path / "molre_cache"))
    monkeypatch.delenv("MOLRE_WEIGHTS_DIR", raising=False)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _into_hf_cache(repo_id: str, files: dict[str, Path]) -> None:
    """Lay files out as huggingface_hub's cache does (models--org--name/snapshots/<rev>, refs/main)."""
    import huggingface_hub.constants as hf_constants

    repo = Path(hf_constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    rev = "0" * 40
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for name, src in files.items():
        (snap / name).write_bytes(src.read_bytes())


# ------------------------------------------------------------------------------------------ timm / DINOv3
def test_timm_safetensors_roundtrip_via_file_hf_cache_and_weights_dir(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = create_model("dinov3_vits16", reduced=True).encoder
    file = tmp_path / "model.safetensors"
    save_file(src.state_dict(), str(file))  # the layout of timm/vit_small_patch16_dinov3.lvd1689m

    assert _same(create_model("dinov3_vits16", reduced=True, weights=file).encoder, src)

    _into_hf_cache("timm/vit_small_patch16_dinov3.lvd1689m", {"model.safetensors": file})
    found = find_local_weights(get_spec("dinov3_vits16"))
    assert found is not None and "snapshots" in str(found)
    model = create_model("dinov3_vits16", reduced=True, pretrained=True)
    assert _same(model.encoder, src) and model.weights_path == found

    wdir = tmp_path / "weights"
    (wdir / "dinov3_vits16").mkdir(parents=True)
    (wdir / "dinov3_vits16" / "model.safetensors").write_bytes(file.read_bytes())
    monkeypatch.setenv("MOLRE_WEIGHTS_DIR", str(wdir))
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    model = create_model("dinov3_vits16", reduced=True, pretrained=True)
    assert _same(model.encoder, src) and model.weights_path == wdir / "dinov3_vits16"


def test_wrong_size_checkpoint_is_refused(tmp_path):
    from safetensors.torch import save_file

    src = create_model("dinov3_vits16", reduced=True).encoder
    save_file(src.state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError):  # full-size architecture, toy checkpoint: timm's strict load refuses
        create_model("dinov3_vits16", weights=tmp_path)


# ------------------------------------------------------------------------------------------ transformers
def test_medsiglip_loads_vision_tower_of_full_siglip_checkpoint(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                  patch_size=14)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    full.save_pretrained(tmp_path / "medsiglip")  # google/medsiglip-448 ships a full SiglipModel
    model = create_model("medsiglip_448", weights=tmp_path / "medsiglip").eval()
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        ref = full.vision_model(pixel_values=x).pooler_output
        got = model.spec.features(model.encoder, x)
    assert torch.allclose(got, ref, atol=1e-5)
    assert not any(n == "head" or n.endswith(".head") for n, _ in model.encoder.named_modules())


def test_rad_dino_save_pretrained_roundtrip(tmp_path):
    from safetensors.torch import load_file
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(3)
    src = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                                   patch_size=14, layerscale_value=1.0))
    src.save_pretrained(tmp_path / "rad-dino")
    keys = load_file(str(tmp_path / "rad-dino" / "model.safetensors"))
    assert any(".attention.attention.query." in k for k in keys)  # the key layout of microsoft/rad-dino
    model = create_model("rad_dino", weights=tmp_path / "rad-dino")
    assert _same(model.encoder, src)


# -------------------------------------------------------------------------------------- open_clip / BiomedCLIP
def test_biomedclip_trunk_from_open_clip_state_dict(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(4)
    # BiomedCLIP's open_clip_config: timm tower, timm_pool "", timm_proj "linear" (ViT-Ti width here)
    clip = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(timm_model_name="vit_tiny_patch16_224", timm_pool="",
                                                        timm_proj="linear", image_size=224),
                text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)).eval()
    torch.save(clip.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    model = create_model("biomedclip_vitb16", reduced=True, weights=tmp_path).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.encoder(x), clip.visual.trunk(x), atol=1e-5)
    torch.save({"not_clip.weight": torch.zeros(1)}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="visual.trunk"):
        create_model("biomedclip_vitb16", reduced=True, weights=tmp_path / "bad.bin")


# ------------------------------------------------------------------------------------------------ 3D CT
def test_ctfm_hub_mixin_layout_loads_strictly(tmp_path):
    from huggingface_hub import PyTorchModelHubMixin
    from monai.networks.nets.segresnet_ds import SegResEncoder
    from safetensors.torch import load_file, save_file

    class LighterSegResEncoder(SegResEncoder, PyTorchModelHubMixin):  # what lighter_zoo.SegResEncoder is
        pass

    torch.manual_seed(5)
    src = LighterSegResEncoder(spatial_dims=3, in_channels=1, init_filters=4, blocks_down=(1, 1, 1))
    src.save_pretrained(tmp_path / "ct_fm")  # config.json + model.safetensors, as on the hub
    model = create_model("ctfm_segresenc", weights=tmp_path / "ct_fm")
    assert _same(model.encoder, src)
    assert model.feature_dim == 16 and model(torch.rand(1, 1, 16, 16, 16)).shape == (1, 75)

    # the trap: a checkpoint whose keys carry a wrapper prefix must fail loudly, not load nothing
    state = load_file(str(tmp_path / "ct_fm" / "model.safetensors"))
    save_file({"encoder." + k: v for k, v in state.items()}, str(tmp_path / "ct_fm" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys.*unexpected keys"):
        create_model("ctfm_segresenc", weights=tmp_path / "ct_fm")


def test_headct_vit3d_state_dict_with_wrapper_prefixes(tmp_path):
    torch.manual_seed(6)
    src = create_model("headct_vit3d", reduced=True).encoder
    torch.save({"state_dict": {"module.backbone." + k: v for k, v in src.state_dict().items()}}, tmp_path / "model.pth")
    assert _same(create_model("headct_vit3d", reduced=True, weights=tmp_path / "model.pth").encoder, src)


def test_merlin_image_tower_from_full_merlin_state_dict(tmp_path):
    pytest.importorskip("merlin.models.i3res", reason="merlin-vlm is not installed")
    torch.manual_seed(7)
    src = create_model("merlin_i3resnet", reduced=True).encoder
    state = {"encode_image.i3_resnet." + k: v for k, v in src.state_dict().items()}
    state["encode_text.linear_layer.weight"] = torch.zeros(512, 768)  # the text tower is skipped
    state["logit_scale"] = torch.ones(())
    name = get_spec("merlin_i3resnet").weight_files[0]
    torch.save(state, tmp_path / name)
    assert _same(create_model("merlin_i3resnet", reduced=True, weights=tmp_path).encoder, src)


def test_medicalnet_checkpoint_layout(tmp_path):
    torch.manual_seed(8)
    src = create_model("medicalnet_resnet10", reduced=True).encoder
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}},
               tmp_path / "resnet_10_23dataset.pth")
    assert _same(create_model("medicalnet_resnet10", reduced=True, weights=tmp_path).encoder, src)


# ------------------------------------------------------------------------------------------ missing weights
@pytest.mark.parametrize("name", ["rad_dino", "ctfm_segresenc", "headct_vit3d", "phantom_vit"])
def test_missing_weights_message(name, tmp_path):
    spec = get_spec(name)
    assert find_local_weights(spec) is None
    with pytest.raises(MissingWeightsError) as err:
        create_model(name, pretrained=True, reduced=True)
    msg = str(err.value)
    assert repr(name) in msg
    for item in spec.weight_files:
        assert item.split("|")[0] in msg
    if spec.hub_id:
        assert spec.hub_id in msg
    folder = tmp_path / "molre_cache" / ("phantom_vit" if name == "phantom_vit" else f"weights/{name}")
    assert str(folder) in msg
    if name == "phantom_vit":
        assert "molre pretrain-demo" in msg
    with pytest.raises(MissingWeightsError, match="no such file or folder"):
        create_model(name, weights=tmp_path / "nowhere", reduced=True)
