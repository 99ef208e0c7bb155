"""SliceEncoder3D: run a 2D foundation model over the axial slices of a CT volume, then pool over slices.

(B, C, D, H, W) -> slices (B*D, C, H, W), b-major (index = b*D + d) -> encoder in chunks of ``chunk_size``
slices -> features (B, D, F) -> aggregator over D -> head -> logits (B, num_classes).
Chunking bounds activation memory at inference; ``checkpoint=True`` also bounds it in training (each chunk
is recomputed in backward). Routing logs concatenated over chunks are therefore (B*D, ...), one row per
slice, and a "sample" router gives one gate vector per slice.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
import torch.utils.checkpoint as ckpt
from torch import nn

from .model import HeadCTModel, head_norm, resize_to

if TYPE_CHECKING:
    from .registry import BackboneSpec, BuiltEncoder

AGGREGATORS = ("mean", "max", "attention", "transformer")


class MeanPool(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, D, F) -> (B, F)
        return feats.mean(dim=1)


class MaxPool(MeanPool):
    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, D, F) -> (B, F)
        return feats.amax(dim=1)


class AttentionPool(nn.Module):
    """Gated attention pooling over slices (Ilse et al., 2018): weights tell which slices drive the label."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.out_dim = dim
        self.value = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1)
        self.last_weights: Optional[torch.Tensor] = None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, D, F) -> (B, F)
        a = self.score(torch.tanh(self.value(feats)) * torch.sigmoid(self.gate(feats)))  # (B, D, 1)
        w = torch.softmax(a.float(), dim=1).to(feats.dtype)  # (B, D, 1)
        self.last_weights = w.squeeze(-1).detach()  # (B, D)
        return (w * feats).sum(dim=1)


class SliceTransformer(nn.Module):
    """A small transformer over slice features (reduced width, sinusoidal slice position), then mean pool."""

    def __init__(self, dim: int, width: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.out_dim = width
        self.reduce = nn.Linear(dim, width)  # not named "proj": adapter target names must not hit the aggregator
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)

    @staticmethod
    def position(d: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:  # (D, width)
        pos = torch.arange(d, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / width))
        pe = torch.zeros(d, width, device=device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        return pe.to(dtype)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, D, F) -> (B, width)
        x = self.reduce(feats)  # (B, D, width)
        x = x + self.position(x.shape[1], x.shape[2], x.device, x.dtype)
        return self.final_norm(self.blocks(x)).mean(dim=1)


def make_aggregator(kind: str, dim: int, heads: int = 4, layers: int = 1) -> nn.Module:
    if kind == "mean":
        return MeanPool(dim)
    if kind == "max":
        return MaxPool(dim)
    if kind == "attention":
        return AttentionPool(dim)
    if kind == "transformer":
        return SliceTransformer(dim, heads=heads, layers=layers)
    raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {kind!r}")


class SliceEncoder3D(HeadCTModel):
    """2D backbone over slices + slice aggregator + linear head."""

    trainable_modules = ("aggregator", "head_norm", "head")  # a frozen random aggregator would scramble slice features

    def __init__(
        self,
        built: "BuiltEncoder",
        spec: "BackboneSpec",
        num_classes: int = 75,
        aggregator: str = "attention",
        chunk_size: int = 16,
        image_size: Optional[tuple[int, int]] = None,
        head_dropout: float = 0.0,
        agg_heads: int = 4,
        agg_layers: int = 1,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(built, spec, num_classes)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.checkpoint = checkpoint
        if image_size is not None:
            self.input_size = tuple(int(s) for s in image_size)
        self.aggregator_kind = aggregator
        self.aggregator = make_aggregator(aggregator, self.feature_dim, agg_heads, agg_layers)
        self.head_norm = head_norm(self.aggregator.out_dim)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.aggregator.out_dim, num_classes)

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:  # (n, C, h, w) -> (n, F)
        return self.spec.features(self.encoder, resize_to(x, self.input_size))

    def slice_features(self, image: torch.Tensor) -> torch.Tensor:
        """Per-slice encoder features (B, D, F), computed ``chunk_size`` slices at a time."""
        self.check_input(image)
        b, c, d, h, w = image.shape
        x = self.norm(image)  # (B, C, D, H, W)
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)  # (B*D, C, H, W), index = b*D + d
        out = []
        for start in range(0, b * d, self.chunk_size):
            chunk = slices[start:start + self.chunk_size]  # (n, C, H, W)
            if self.checkpoint and torch.is_grad_enabled():
                out.append(ckpt.checkpoint(self._encode_chunk, chunk, use_reentrant=False))
            else:
                out.append(self._encode_chunk(chunk))
        return torch.cat(out, dim=0).reshape(b, d, -1)  # (B, D, F)

    def features(self, image: torch.Tensor) -> torch.Tensor:  # (B, C, D, H, W) -> (B, F_agg)
        return self.aggregator(self.slice_features(image))
