"""natural_vit: the general-domain demo backbone, phantom_vit's twin pretrained on natural photographs.

The paper's largest MoLRE gains are for general-domain backbones (DINOv3) and the smallest for CT-specialised
ones. To ask that question on the phantom, this backbone has exactly phantom_vit's architecture and
label-free objective (``mae.py``) but never sees CT: it learns from the photographs that ship inside installed
packages (scikit-image's bundled ``skimage.data`` photos and scikit-learn's two sample images; no download),
as random crops at random scales with flips. The CLS token's image-level target is the crop's scale (the
phantom's is the slice height), and the bands are six luminance bands. ``molre pretrain-demo --backbone
natural_vit`` builds it and caches it at ``$MOLRE_CACHE_DIR/natural_vit/`` like phantom_vit.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from molre_lib.common.config_keys import check_known_keys
from molre_lib.data.windowing import HEAD_CT_WINDOWS
from .mae import MAEConfig, band_fractions, pretrain_mae, save_pretrained
from .phantom_vit import PHANTOM_VIT_ARCH, build_demo_vit, build_phantom_vit
from .registry import BackboneSpec, BuiltEncoder, register_backbone
from .vit2d import timm_pooled
from .weights import cache_dir

# Photographs bundled with scikit-image (no download); medical, microscopy and synthetic images are left out
# so that the backbone is general-domain: no CT phantom (shepp_logan), retina, histology or test patterns.
SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "moon", "coins",
                  "clock", "grass", "gravel", "brick", "page", "text", "horse", "stereo_motorcycle")
LUMA_BANDS = (0.15, 0.3, 0.45, 0.6, 0.8)  # six luminance bands of the composition targets


def load_photos() -> list[torch.Tensor]:
    """The bundled photographs as float RGB tensors (3, H, W) in [0, 1]; grey images are repeated to 3 channels."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays: list[np.ndarray] = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        arrays.extend(img if isinstance(img, tuple) else [img])  # stereo_motorcycle: (left, right, disparity)
    arrays = [a for a in arrays if a.ndim in (2, 3) and a.shape[0] >= 96 and a.dtype != np.float32]
    arrays += list(load_sample_images().images)  # china.jpg, flower.jpg
    photos = []
    for a in arrays:
        x = torch.from_numpy(np.asarray(a, dtype=np.float32))
        x = x / 255.0 if a.dtype == np.uint8 else x.float()
        x = x[..., None].expand(*x.shape, 3) if x.ndim == 2 else x[..., :3]  # (H, W, 3)
        photos.append(x.permute(2, 0, 1).contiguous().clamp(0, 1))
    return photos


def random_crops(photos: list[torch.Tensor], n: int, size: int, gen: torch.Generator,
                 scale: tuple[float, float] = (0.05, 0.7)) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random square crops resized to ``size`` with random horizontal flips.

    Returns images (n, 3, size, size) and each crop's side as a fraction of its photo's shorter side, on a log
    scale mapped to [0, 1] (the CLS token's regression target).
    """
    out, rel = [], []
    lo, hi = np.log(scale[0]), np.log(scale[1])
    for _ in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        _, h, w = img.shape
        u = float(torch.rand(1, generator=gen))
        side = max(8, int(round(min(h, w) * float(np.sqrt(np.exp(lo + u * (hi - lo)))))))
        y = int(torch.randint(h - side + 1, (1,), generator=gen))
        x = int(torch.randint(w - side + 1, (1,), generator=gen))
        crop = F.interpolate(img[None, :, y:y + side, x:x + side], size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)[0]
        if float(torch.rand(1, generator=gen)) < 0.5:
            crop = crop.flip(-1)
        out.append(crop.clamp(0, 1))
        rel.append(u)
    return torch.stack(out), torch.tensor(rel, dtype=torch.float32)


@dataclass
class NaturalPretrainConfig(MAEConfig):
    """The demo pretraining on photographs: phantom_vit's optimisation settings, crops instead of CT slices."""

    min_crop: float = field(default=0.05, metadata={"help": "smallest crop area as a fraction of the photo"})
    max_crop: float = field(default=0.7, metadata={"help": "largest crop area as a fraction of the photo"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NaturalPretrainConfig":
        check_known_keys(cls, d)
        return cls(**d)


def _sampler(photos: list[torch.Tensor], cfg: NaturalPretrainConfig, patch: int, size: int):
    gen = torch.Generator().manual_seed(cfg.seed)
    # Standardise the image-level band composition with statistics of a fixed reference draw.
    ref, _ = random_crops(photos, 512, size, torch.Generator().manual_seed(cfg.seed + 1), (cfg.min_crop, cfg.max_crop))
    _, ref_comp = band_fractions(_luma(ref), LUMA_BANDS, patch)
    mean, std = ref_comp.mean(0), np.maximum(ref_comp.std(0), 1e-4)

    def sample(step: int):
        x, scale = random_crops(photos, cfg.batch_size, size, gen, (cfg.min_crop, cfg.max_crop))
        pb, comp = band_fractions(_luma(x), LUMA_BANDS, patch)
        return x, torch.from_numpy(pb), scale, torch.from_numpy((comp - mean) / std)

    return sample


def _luma(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB -> (N, H, W) luminance (ITU-R BT.601 weights)."""
    w = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    return (x * w).sum(1).numpy()


def pretrain_natural_vit(cfg: Optional[NaturalPretrainConfig] = None, out_dir: Optional[Path] = None,
                         log: Callable[[str], None] = print) -> Path:
    """Train natural_vit label-free on bundled photographs and cache it; returns the folder."""
    cfg = cfg or NaturalPretrainConfig()
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "natural_vit"
    t0 = time.time()
    photos = load_photos()
    log(f"natural_vit: {len(photos)} bundled photographs")
    torch.manual_seed(cfg.seed)
    vit = build_phantom_vit(PHANTOM_VIT_ARCH)
    sample = _sampler(photos, cfg, PHANTOM_VIT_ARCH["patch_size"], PHANTOM_VIT_ARCH["img_size"])
    steps, history = pretrain_mae(vit, sample, len(LUMA_BANDS) + 1, cfg, "natural_vit", log)
    meta = {"arch": PHANTOM_VIT_ARCH, "pretrain": asdict(cfg), "steps_done": steps, "history": history,
            "seconds_total": round(time.time() - t0, 1), "photos": len(photos),
            "objectives": ["masked-patch pixels (MAE)", "masked-patch luminance-band composition",
                           "image luminance-band composition", "crop scale"],
            "data": "photographs bundled with scikit-image and scikit-learn; no CT, no labels"}
    save_pretrained(vit, meta, out_dir)
    log(f"natural_vit: cached at {out_dir} ({meta['seconds_total']}s)")
    return out_dir


@register_backbone(BackboneSpec(
    name="natural_vit", family="general-2D", dims=2, n_params=1_829_568, published_params=None,
    published_source="built here (phantom_vit's architecture); not a published model",
    feature_dim=192, in_chans=3, input_size=(64, 64), windows=HEAD_CT_WINDOWS, normalize="none", mean=(0.0,),
    std=(1.0,), spacing=None, target_modules=r"encoder\.blocks\.\d+\.attn\.(qkv|proj)", cam_layer="encoder.blocks.3",
    num_prefix_tokens=1, patch_size=(8, 8), hub_id=None, weight_files=("config.json", "model.safetensors"),
    weight_format="molre (safetensors + config.json)", reduced_input_size=(32, 32),
    description="General-domain demo ViT: phantom_vit's twin pretrained label-free on bundled natural photographs",
    source="built on this machine by `molre pretrain-demo --backbone natural_vit`", features=timm_pooled,
))
def natural_vit(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    return build_demo_vit("natural_vit", weights, reduced, overrides)
