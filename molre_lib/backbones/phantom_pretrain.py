"""Label-free pretraining of ``phantom_vit`` on phantom slices (what ``molre pretrain-demo`` runs).

No finding label is read. Objectives, all computed from the image itself: masked-patch modelling (the encoder
sees 25% of the patches; a one-block decoder predicts, for every hidden patch, its per-patch normalised pixels
(MAE) and the fraction of its voxels in six HU bands: air, fat, CSF, parenchyma, blood-dense, calcium/bone, as
MaskFeat predicts hand-made features), and on the CLS token the slice's band composition and its height in the
head (0 = most inferior). The result is cached as ``config.json`` + ``model.safetensors`` under
``$MOLRE_CACHE_DIR/phantom_vit/``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from molre_lib.common.config_keys import check_known_keys
from molre_lib.data.windowing import window_channels
from .mae import MAEConfig, band_fractions, pretrain_mae, save_pretrained
from .phantom_vit import PHANTOM_VIT_ARCH, build_phantom_vit
from .weights import cache_dir


@dataclass
class PretrainConfig(MAEConfig):
    """Knobs of the demo pretraining: 600 steps, all run, on 2 pinned threads (no time cap), so a machine's speed
    and core count do not change the weights; its instruction set and torch version do
    (docs/explanation/reproducibility.md).

    150 steps on 96 subjects gave features no better than random init in a linear probe (scan-level macro AUC
    0.565 vs 0.588); 600 steps on 192 subjects give 0.674 vs 0.588 (benchmarks/phantom_vit_probe.py).
    """

    n_subjects: int = field(default=192, metadata={"help": "phantom scans to draw slices from (label-free)"})
    first_seed: int = field(default=900_000, metadata={"help": "phantom seeds used: first_seed .. + n_subjects"})
    workers: int = field(default=2, metadata={"help": "processes rendering phantom scans"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        check_known_keys(cls, d)
        return cls(**d)


# HU bands of the tissue-composition targets: air, fat, CSF / oedema, parenchyma, blood / hyperdense, calcium / bone
HU_BANDS = (-200.0, 0.0, 22.0, 45.0, 100.0)


def _render(seed: int, patch: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from molre_lib.data.phantom import make_subject

    hu = make_subject(seed).hu  # (D, H, W); finding labels are never looked at
    # the same windows and arithmetic as the dataset's model inputs
    return (window_channels(hu),) + band_fractions(hu, HU_BANDS, patch)  # (C, D, H, W), (D, L, K), (D, K)


def phantom_slices(seeds: list[int], workers: int = 2) -> dict[str, torch.Tensor]:
    """All axial slices of the phantom scans ``seeds`` with their label-free targets.

    images (N, C, H, W); height (N,) in [0, 1] (0 = most inferior); patch_bands (N, L, K) and slice_bands (N, K):
    fractions of voxels per HU band (``HU_BANDS``) in each patch / the whole slice.
    """
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            vols = pool.map(_render, seeds)
    else:
        vols = [_render(s) for s in seeds]
    images, heights, patch_bands, slice_bands = [], [], [], []
    for vol, pb, sb in vols:
        c, d, h, w = vol.shape
        images.append(torch.from_numpy(vol).permute(1, 0, 2, 3))  # (D, C, H, W)
        heights.append(torch.linspace(0.0, 1.0, d))
        patch_bands.append(torch.from_numpy(pb))
        slice_bands.append(torch.from_numpy(sb))
    return {"images": torch.cat(images), "height": torch.cat(heights), "patch_bands": torch.cat(patch_bands),
            "slice_bands": torch.cat(slice_bands)}


def pretrain_phantom_vit(cfg: Optional[PretrainConfig] = None, out_dir: Optional[Path] = None,
                         log: Callable[[str], None] = print) -> Path:
    """Train phantom_vit label-free and cache it; returns the folder (``config.json``, ``model.safetensors``)."""
    cfg = cfg or PretrainConfig()
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "phantom_vit"
    t0 = time.time()
    torch.manual_seed(cfg.seed)  # then the ViT's and the decoder's initialisation, in that order
    data = phantom_slices(list(range(cfg.first_seed, cfg.first_seed + cfg.n_subjects)), cfg.workers)
    t_data = time.time() - t0
    log(f"phantom_vit: {data['images'].shape[0]} slices from {cfg.n_subjects} phantom scans in {t_data:.1f}s")
    vit = build_phantom_vit(PHANTOM_VIT_ARCH)
    steps, history = pretrain_mae(vit, _slice_sampler(data, cfg, vit.patch_embed.grid_size[0]), len(HU_BANDS) + 1,
                                  cfg, "phantom_vit", log)
    meta = {"arch": PHANTOM_VIT_ARCH, "pretrain": asdict(cfg), "steps_done": steps, "history": history,
            "seconds_data": round(t_data, 1), "seconds_total": round(time.time() - t0, 1),
            "objectives": ["masked-patch pixels (MAE)", "masked-patch HU-band composition", "slice HU-band composition",
                           "slice height"],
            "finding_labels_used": False}
    save_pretrained(vit, meta, out_dir)
    log(f"phantom_vit: cached at {out_dir} ({meta['seconds_total']}s)")
    return out_dir


def _slice_sampler(data: dict[str, torch.Tensor], cfg: PretrainConfig, grid: int):
    """Random slices with left-right flips (findings are not tied to a side); band targets flipped alike."""
    images, heights, patch_bands = data["images"], data["height"], data["patch_bands"]
    comp = data["slice_bands"]
    comp = (comp - comp.mean(0)) / comp.std(0).clamp_min(1e-4)  # standardised slice composition (N, K)
    rng = np.random.default_rng(cfg.seed)

    def sample(step: int):
        idx = torch.from_numpy(rng.choice(images.shape[0], min(cfg.batch_size, images.shape[0]), replace=False))
        x = images[idx]  # (B, C, H, W)
        flip = torch.rand(x.shape[0]) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        pb = patch_bands[idx].reshape(-1, grid, grid, patch_bands.shape[-1])
        pb = torch.where(flip[:, None, None, None], pb.flip(2), pb).reshape(len(idx), -1, pb.shape[-1])  # (B, L, K)
        return x, pb, heights[idx], comp[idx]

    return sample
