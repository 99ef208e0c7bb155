"""Label-free pretraining of ``phantom_vit`` on phantom slices (what ``molre pretrain-demo`` runs).

No finding label is read. Objectives, all computed from the image itself: masked-patch modelling (the encoder
sees 25% of the patches; a one-block decoder predicts, for every hidden patch, its per-patch normalised pixels
(MAE) and the fraction of its voxels in six HU bands: air, fat, CSF, parenchyma, blood-dense, calcium/bone, as
MaskFeat predicts hand-made features), and on the CLS token the slice's band composition and its height in the
head (0 = most inferior). The result is cached as ``config.json`` + ``model.safetensors`` under
``$MOLRE_CACHE_DIR/phantom_vit/``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from molre_lib.common.config_keys import check_known_keys
from molre_lib.common.device import resolve_device
from molre_lib.data.windowing import window_channels
from .phantom_vit import PHANTOM_VIT_ARCH, build_phantom_vit
from .weights import cache_dir


@dataclass
class PretrainConfig:
    """Knobs of the demo pretraining; the defaults take ~2 min on 2 idle CPU cores (capped at 170 s)."""

    n_subjects: int = field(default=192, metadata={"help": "phantom scans to draw slices from (label-free)"})
    first_seed: int = field(default=900_000, metadata={"help": "phantom seeds used: first_seed .. + n_subjects"})
    # 150 steps on 96 subjects gave features no better than random init in a linear probe (scan-level macro AUC
    # 0.565 vs 0.588); 600 steps on 192 subjects give 0.674 vs 0.588 (benchmarks/phantom_vit_probe.py).
    steps: int = field(default=600, metadata={"help": "optimiser steps"})
    max_seconds: float = field(default=170.0, metadata={"help": "stop training early after this many seconds"})
    batch_size: int = field(default=64, metadata={"help": "slices per step"})
    lr: float = field(default=1.5e-3, metadata={"help": "peak AdamW learning rate (cosine decay, 5% warm-up)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    mask_ratio: float = field(default=0.75, metadata={"help": "fraction of patches hidden from the encoder"})
    position_weight: float = field(default=0.5, metadata={"help": "weight of the slice-height loss"})
    band_weight: float = field(default=1.0, metadata={"help": "weight of the HU-band composition losses"})
    decoder_dim: int = field(default=96, metadata={"help": "width of the one-block MAE decoder"})
    norm_pix: bool = field(default=True, metadata={
        "help": "normalise each target patch (MAE's norm_pix_loss; absolute density is covered by the band targets). "
                "Off probed worse (benchmarks/phantom_vit_probe.py)"})
    seed: int = field(default=0, metadata={"help": "torch / numpy seed"})
    workers: int = field(default=2, metadata={"help": "processes rendering phantom scans"})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda', ..."})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        check_known_keys(cls, d)
        return cls(**d)


# HU bands of the tissue-composition targets: air, fat, CSF / oedema, parenchyma, blood / hyperdense, calcium / bone
HU_BANDS = (-200.0, 0.0, 22.0, 45.0, 100.0)


def band_fractions(hu: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """HU (D, H, W) -> per-patch (D, L, K) and per-slice (D, K) fractions of voxels in each HU band."""
    d, h, w = hu.shape
    band = np.digitize(hu, HU_BANDS)  # (D, H, W) in 0..K-1
    onehot = np.eye(len(HU_BANDS) + 1, dtype=np.float32)[band]  # (D, H, W, K)
    k = onehot.shape[-1]
    per_patch = onehot.reshape(d, h // patch, patch, w // patch, patch, k).mean(axis=(2, 4)).reshape(d, -1, k)
    return per_patch, onehot.mean(axis=(1, 2))


def _render(seed: int, patch: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from molre_lib.data.phantom import make_subject

    hu = make_subject(seed).hu  # (D, H, W); finding labels are never looked at
    # the same windows and arithmetic as the dataset's model inputs
    return (window_channels(hu),) + band_fractions(hu, patch)  # (C, D, H, W), (D, L, K), (D, K)


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


class MAEPretrainer(nn.Module):
    """Masked-patch modelling around a timm VisionTransformer, plus label-free targets on the CLS token.

    For every hidden patch the one-block decoder predicts its (per-patch normalised) pixels and its HU-band
    composition (MaskFeat-style); the CLS token regresses the slice height and the slice's band composition.
    """

    def __init__(self, vit: nn.Module, decoder_dim: int = 96, n_bands: int = len(HU_BANDS) + 1,
                 norm_pix: bool = True) -> None:
        super().__init__()
        self.norm_pix = norm_pix
        from timm.models.vision_transformer import Block

        self.vit = vit
        d = vit.embed_dim
        self.patch = vit.patch_embed.patch_size[0]
        self.n_bands = n_bands
        n = vit.patch_embed.num_patches
        self.pix_dim = self.patch * self.patch * vit.patch_embed.proj.in_channels
        self.dec_embed = nn.Linear(d, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.dec_pos = nn.Parameter(torch.randn(1, n, decoder_dim) * 0.02)
        self.dec_block = Block(decoder_dim, num_heads=3, mlp_ratio=2.0)
        self.dec_norm = nn.LayerNorm(decoder_dim)
        self.dec_pred = nn.Linear(decoder_dim, self.pix_dim + n_bands)
        self.global_head = nn.Linear(d, 1 + n_bands)  # slice height, slice band composition (standardised)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, img: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, L, p*p*C)
        p = self.patch
        n, c, h, w = img.shape
        x = img.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def forward(self, img: torch.Tensor, patch_bands: torch.Tensor, mask_ratio: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (pixel loss, band loss on hidden patches, CLS outputs (N, 1 + K))."""
        vit = self.vit
        x = vit.patch_embed(img) + vit.pos_embed[:, vit.num_prefix_tokens:]  # (N, L, D)
        n, length, d = x.shape
        keep = max(1, int(round(length * (1 - mask_ratio))))
        kept = torch.rand(n, length, device=img.device).argsort(dim=1)[:, :keep]  # (N, keep)
        x = torch.gather(x, 1, kept[..., None].expand(-1, -1, d))  # (N, keep, D)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(n, -1, -1)
        x = vit.norm(vit.blocks(vit.norm_pre(torch.cat([cls, x], dim=1))))  # (N, 1+keep, D)
        glob = self.global_head(x[:, 0])  # (N, 1 + K)
        y = self.dec_embed(x[:, 1:])  # (N, keep, dd)
        full = self.mask_token.expand(n, length, -1).clone()
        full.scatter_(1, kept[..., None].expand(-1, -1, y.shape[-1]), y)
        pred = self.dec_pred(self.dec_norm(self.dec_block(full + self.dec_pos)))  # (N, L, pix + K)
        target = self.patchify(img)
        if self.norm_pix:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        hidden = torch.ones(n, length, device=img.device)
        hidden.scatter_(1, kept, 0.0)
        pix = ((pred[..., :self.pix_dim] - target) ** 2).mean(-1)  # (N, L)
        bands = -(patch_bands * F.log_softmax(pred[..., self.pix_dim:], dim=-1)).sum(-1)  # (N, L) soft CE
        denom = hidden.sum()
        return (pix * hidden).sum() / denom, (bands * hidden).sum() / denom, glob


def pretrain_phantom_vit(cfg: Optional[PretrainConfig] = None, out_dir: Optional[Path] = None,
                         log: Callable[[str], None] = print) -> Path:
    """Train phantom_vit label-free and cache it; returns the folder (``config.json``, ``model.safetensors``)."""
    from safetensors.torch import save_file

    cfg = cfg or PretrainConfig()
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "phantom_vit"
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = phantom_slices(list(range(cfg.first_seed, cfg.first_seed + cfg.n_subjects)), cfg.workers)
    images, heights, patch_bands = data["images"], data["height"], data["patch_bands"]
    comp = data["slice_bands"]
    comp = (comp - comp.mean(0)) / comp.std(0).clamp_min(1e-4)  # standardised slice composition (N, K)
    t_data = time.time() - t0
    log(f"phantom_vit: {images.shape[0]} slices from {cfg.n_subjects} phantom scans in {t_data:.1f}s")

    device = resolve_device(cfg.device)
    vit = build_phantom_vit(PHANTOM_VIT_ARCH)
    model = MAEPretrainer(vit, cfg.decoder_dim, norm_pix=cfg.norm_pix).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    history: list[dict[str, float]] = []
    grid = vit.patch_embed.grid_size[0]
    t_train = time.time()
    step = 0
    for step in range(cfg.steps):
        idx = torch.from_numpy(rng.choice(images.shape[0], min(cfg.batch_size, images.shape[0]), replace=False))
        x = images[idx]  # (B, C, H, W)
        flip = torch.rand(x.shape[0]) < 0.5  # left-right flips: findings are not tied to a side
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        pb = patch_bands[idx].reshape(-1, grid, grid, patch_bands.shape[-1])  # flip the band targets alike
        pb = torch.where(flip[:, None, None, None], pb.flip(2), pb).reshape(len(idx), -1, pb.shape[-1])  # (B, L, K)
        rec, band, glob = model(x.to(device), pb.to(device), cfg.mask_ratio)
        pos = F.mse_loss(glob[:, 0], heights[idx].to(device))
        gcomp = F.mse_loss(glob[:, 1:], comp[idx].to(device))
        loss = rec + cfg.band_weight * (band + gcomp) + cfg.position_weight * pos
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "pixels": rec.item(), "patch_bands": band.item(),
                            "slice_bands": gcomp.item(), "height": pos.item()})
            log(f"  step {step:4d}  pixels {rec.item():.3f}  patch bands {band.item():.3f}  "
                f"slice bands {gcomp.item():.3f}  height {pos.item():.4f}")
        if time.time() - t_train > cfg.max_seconds:
            log(f"  time budget of {cfg.max_seconds:.0f}s reached at step {step}")
            break

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vit.state_dict().items()}, str(tmp / "model.safetensors"))
    meta = {"arch": PHANTOM_VIT_ARCH, "pretrain": asdict(cfg), "steps_done": step + 1, "history": history,
            "seconds_data": round(t_data, 1), "seconds_total": round(time.time() - t0, 1),
            "objectives": ["masked-patch pixels (MAE)", "masked-patch HU-band composition", "slice HU-band composition",
                           "slice height"],
            "finding_labels_used": False}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log(f"phantom_vit: cached at {out_dir} ({meta['seconds_total']}s)")
    return out_dir
