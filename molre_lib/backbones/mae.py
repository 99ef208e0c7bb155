"""Label-free masked-patch pretraining of the small demo ViTs (``phantom_vit`` on CT, ``natural_vit`` on photos).

One objective for both, computed from the image itself: the encoder sees a quarter of the patches; a one-block
decoder predicts, for every hidden patch, its per-patch normalised pixels (MAE) and its composition over K
intensity bands (MaskFeat-style hand-made targets); the CLS token regresses one image-level scalar (the slice's
height in the head for CT, the crop's scale for photos) and the image's band composition. The two backbones
differ only in what they are shown (``sample`` below), so a comparison between them is a comparison of
pretraining domains.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from molre_lib.common.device import resolve_device


@dataclass
class MAEConfig:
    """Optimisation knobs shared by the demo pretrainings (600 steps: 1 min 48 s for phantom_vit on 2 quiet CPU
    cores, measured; several times that on a busy machine)."""

    steps: int = field(default=600, metadata={"help": "optimiser steps"})
    max_seconds: Optional[float] = field(default=None, metadata={
        "help": "stop early after this many seconds; None (default) runs every step, so the weights, and the "
                "demo's numbers, do not depend on the machine's speed"})
    batch_size: int = field(default=64, metadata={"help": "images per step"})
    lr: float = field(default=1.5e-3, metadata={"help": "peak AdamW learning rate (cosine decay, 5% warm-up)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    mask_ratio: float = field(default=0.75, metadata={"help": "fraction of patches hidden from the encoder"})
    position_weight: float = field(default=0.5, metadata={"help": "weight of the image-level scalar loss"})
    band_weight: float = field(default=1.0, metadata={"help": "weight of the band-composition losses"})
    decoder_dim: int = field(default=96, metadata={"help": "width of the one-block MAE decoder"})
    norm_pix: bool = field(default=True, metadata={
        "help": "normalise each target patch (MAE's norm_pix_loss; absolute intensity is covered by the band "
                "targets). Off probed worse (benchmarks/phantom_vit_probe.py)"})
    seed: int = field(default=0, metadata={"help": "torch / numpy seed"})
    threads: int = field(default=2, metadata={
        "help": "torch threads while pretraining, pinned: the weights depend on the thread count (1 vs 2 threads "
                "differ, benchmarks/determinism.py), so a fixed count gives the same backbone on any core count"})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda', ..."})


def band_fractions(values: np.ndarray, edges: tuple[float, ...], patch: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) -> per-patch (N, L, K) and per-image (N, K) fractions of pixels in each band cut at ``edges``."""
    n, h, w = values.shape
    band = np.digitize(values, edges)  # (N, H, W) in 0..K-1
    onehot = np.eye(len(edges) + 1, dtype=np.float32)[band]  # (N, H, W, K)
    k = onehot.shape[-1]
    per_patch = onehot.reshape(n, h // patch, patch, w // patch, patch, k).mean(axis=(2, 4)).reshape(n, -1, k)
    return per_patch, onehot.mean(axis=(1, 2))


class MAEPretrainer(nn.Module):
    """Masked-patch modelling around a timm VisionTransformer, plus label-free targets on the CLS token.

    For every hidden patch the one-block decoder predicts its (per-patch normalised) pixels and its band
    composition; the CLS token regresses one image-level scalar and the image's band composition.
    """

    def __init__(self, vit: nn.Module, decoder_dim: int = 96, n_bands: int = 6, norm_pix: bool = True) -> None:
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
        self.global_head = nn.Linear(d, 1 + n_bands)  # image-level scalar, image band composition (standardised)
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


# sample(step) -> images (B, C, H, W), patch bands (B, L, K), image scalar (B,), standardised composition (B, K)
Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def pretrain_mae(vit: nn.Module, sample: Sampler, n_bands: int, cfg: MAEConfig, name: str,
                 log: Callable[[str], None] = print) -> tuple[int, list[dict[str, float]]]:
    """Train ``vit`` in place on batches from ``sample``; returns (steps done, loss history).

    The caller seeds torch before building ``vit``; the decoder is initialised here from the same stream.
    """
    from molre_lib.common.determinism import set_determinism

    device = resolve_device(cfg.device)
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    set_determinism(cfg.threads)
    try:
        return _pretrain_steps(vit, sample, n_bands, cfg, name, log, device)
    finally:  # the caller's process keeps its own settings
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def _pretrain_steps(vit: nn.Module, sample: Sampler, n_bands: int, cfg: MAEConfig, name: str,
                    log: Callable[[str], None], device: torch.device) -> tuple[int, list[dict[str, float]]]:
    model = MAEPretrainer(vit, cfg.decoder_dim, n_bands=n_bands, norm_pix=cfg.norm_pix).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    history: list[dict[str, float]] = []
    t_train = time.time()
    step = 0
    for step in range(cfg.steps):
        x, pb, scalar, comp = (t.to(device) for t in sample(step))
        rec, band, glob = model(x, pb, cfg.mask_ratio)
        pos = F.mse_loss(glob[:, 0], scalar)
        gcomp = F.mse_loss(glob[:, 1:], comp)
        loss = rec + cfg.band_weight * (band + gcomp) + cfg.position_weight * pos
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "pixels": rec.item(), "patch_bands": band.item(),
                            "image_bands": gcomp.item(), "image_scalar": pos.item()})
            log(f"  {name} step {step:4d}  pixels {rec.item():.3f}  patch bands {band.item():.3f}  "
                f"image bands {gcomp.item():.3f}  scalar {pos.item():.4f}")
        if cfg.max_seconds is not None and time.time() - t_train > cfg.max_seconds:
            log(f"  time budget of {cfg.max_seconds:.0f}s reached at step {step}")
            break
    return step + 1, history


def save_pretrained(vit: nn.Module, meta: dict[str, Any], out_dir: Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` atomically (a temp folder, then a rename)."""
    from safetensors.torch import save_file

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vit.state_dict().items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
