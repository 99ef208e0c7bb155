"""Routing analysis: what the MoLRE routers of a trained model do on CT scans.

Mechanism: :func:`collect_routing` runs a model over a DataLoader inside
:func:`molre_lib.adapters.routing_log` and reduces each routed layer's gates to *units* — the axial slices of
a 2D backbone, the depth positions of a 3D one — keeping per-unit mean gates, top-1 shares and gate entropy
for every scan, and the per-token gates of a few scans for spatial maps. :class:`RoutingData` is saved as one
``routing.npz`` in the run directory. Post-processing reads only that: :func:`expert_usage`,
:func:`gate_entropy`, :func:`gates_by_finding`, :func:`expert_specialisation`, :func:`dominant_expert_map`.

Statistics are over patch tokens: prefix tokens (class / register, ``num_prefix_tokens``) have no location and
are dropped at collection.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


@dataclass
class RoutingData:
    """Reduced gates of every routed layer over a set of scans (S scans, U units per scan, E experts)."""

    layers: list[str]  # routed layers in model order
    layout: dict[str, str]  # "token" | "spatial" | "sample" (from the routing log)
    unit_kind: dict[str, str]  # "slice" (2D backbone) | "depth" (3D, a position along D) | "volume"
    scan_ids: list[str]  # (S,)
    labels: np.ndarray  # (S, F) 1/0, 0 where unknown
    label_mask: np.ndarray  # (S, F) 1 known
    unit_gates: dict[str, np.ndarray]  # (S, U, E) mean gate over a unit's patch tokens
    unit_top1: dict[str, np.ndarray]  # (S, U, E) share of a unit's tokens whose largest gate is expert e
    unit_entropy: dict[str, np.ndarray]  # (S, U) mean per-token gate entropy (nats)
    token_gates: dict[str, np.ndarray]  # (K, U, P, E) float16 per-token gates of the first K kept scans
    token_scan_ids: list[str]  # (K,) scans whose token gates were kept
    grids: dict[str, tuple[int, int] | None]  # token grid (h, w) of one unit; None where tokens have no grid
    input_shape: tuple[int, int, int]  # model input (D, H, W)
    finding_keys: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def n_experts(self, layer: str) -> int:
        return int(self.unit_gates[layer].shape[-1])

    def scan_gates(self, layer: str | None = None) -> np.ndarray:
        """Mean gate per scan (S, E) of one layer, or averaged over all layers (they must share E)."""
        layers = [layer] if layer is not None else self.layers
        self._check_layers(layers)
        sizes = {self.n_experts(name) for name in layers}
        if len(sizes) > 1:
            raise ValueError(f"layers have different expert counts {sorted(sizes)}; pick one layer")
        return np.mean([self.unit_gates[name].mean(axis=1) for name in layers], axis=0)

    def scan_index(self, scan: int | str) -> int:
        if isinstance(scan, str):
            if scan not in self.scan_ids:
                raise KeyError(f"scan {scan!r} not in the routing data ({len(self.scan_ids)} scans)")
            return self.scan_ids.index(scan)
        return int(scan)

    def _check_layers(self, layers: Iterable[str]) -> None:
        for name in layers:
            if name not in self.unit_gates:
                raise KeyError(f"layer {name!r} not in routing data; layers: {self.layers}")

    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` (arrays by layer index, names and metadata as JSON)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"labels": self.labels, "label_mask": self.label_mask}
        for i, name in enumerate(self.layers):
            arrays[f"unit_gates_{i}"] = self.unit_gates[name]
            arrays[f"unit_top1_{i}"] = self.unit_top1[name]
            arrays[f"unit_entropy_{i}"] = self.unit_entropy[name]
            if name in self.token_gates:
                arrays[f"token_gates_{i}"] = self.token_gates[name]
        header = {"layers": self.layers, "layout": self.layout, "unit_kind": self.unit_kind, "scan_ids": self.scan_ids,
                  "token_scan_ids": self.token_scan_ids, "grids": self.grids, "input_shape": list(self.input_shape),
                  "finding_keys": self.finding_keys, "meta": self.meta}
        arrays["header"] = np.array(json.dumps(header, default=str))
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RoutingData":
        with np.load(Path(path), allow_pickle=False) as z:
            h = json.loads(str(z["header"]))
            layers = h["layers"]
            per = {k: {n: z[f"{k}_{i}"] for i, n in enumerate(layers) if f"{k}_{i}" in z.files}
                   for k in ("unit_gates", "unit_top1", "unit_entropy", "token_gates")}
            return cls(layers=layers, layout=h["layout"], unit_kind=h["unit_kind"], scan_ids=h["scan_ids"],
                       labels=z["labels"], label_mask=z["label_mask"], token_scan_ids=h["token_scan_ids"],
                       grids={k: tuple(v) if v else None for k, v in h["grids"].items()},
                       input_shape=tuple(h["input_shape"]), finding_keys=h["finding_keys"], meta=h["meta"], **per)


# ----------------------------------------------------------------------------------------------- mechanism
def infer_grid(n_tokens: int, hint: Sequence[int] | None = None, aspect: float = 1.0) -> tuple[int, int]:
    """(h, w) with h * w == n_tokens: ``hint`` when it fits, else the factorisation closest to ``aspect`` (h / w)."""
    if hint is not None and int(np.prod(hint)) == n_tokens and len(hint) == 2:
        return int(hint[0]), int(hint[1])
    pairs = [(h, n_tokens // h) for h in range(1, n_tokens + 1) if n_tokens % h == 0]
    return min(pairs, key=lambda p: abs(np.log(p[0] / p[1]) - np.log(aspect)))


def tokens_to_grid(tokens: torch.Tensor, grid: Sequence[int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """ViT tokens (N, T, C) -> (N, C, *grid) with the prefix (class / register) tokens dropped."""
    n, t, c = tokens.shape
    if t - num_prefix_tokens != int(np.prod(grid)):
        raise ValueError(f"{t} tokens minus {num_prefix_tokens} prefix tokens do not fill a {tuple(grid)} grid")
    return tokens[:, num_prefix_tokens:].transpose(1, 2).reshape(n, c, *grid)  # (N, C, *grid)


def patch_grid(model: torch.nn.Module, size: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """Token grid of the encoder input (``size``, default ``model.input_size``) from ``model.patch_size``
    (the built encoder's, which differs from the spec's in reduced builds) or ``spec.patch_size``; None if unknown."""
    spec = getattr(model, "spec", None)
    patch = getattr(model, "patch_size", None) or getattr(spec, "patch_size", None)
    size = size or getattr(model, "input_size", None)
    if not patch or not size or len(size) != len(patch):
        return None
    return tuple(int(s) // int(p) for s, p in zip(size, patch))


def _model_geometry(model: torch.nn.Module, image_shape: Sequence[int]) -> tuple[int, int, tuple[int, ...] | None]:
    """(dims, num_prefix_tokens, patch grid of the encoder input) from the model's spec where it has one."""
    spec = getattr(model, "spec", None)
    dims = int(getattr(spec, "dims", 2))
    encoder = getattr(model, "encoder", model)
    prefix = int(getattr(encoder, "num_prefix_tokens", getattr(spec, "num_prefix_tokens", 0)))
    size = getattr(model, "input_size", None) or (image_shape[-2:] if dims == 2 else image_shape[-3:])
    return dims, prefix, patch_grid(model, size)


def to_units(gates: torch.Tensor, layout: str, b: int, d: int, dims: int, prefix: int,
             grid: tuple[int, ...] | None, aspect: float = 1.0) -> tuple[torch.Tensor, tuple[int, int] | None, str]:
    """One layer's gates -> (B, U, P, E) units of P patch tokens, the unit's token grid, and the unit kind."""
    n, e = gates.shape[0], gates.shape[-1]
    per_slice = n == b * d and (dims == 2 or n != b)
    if not per_slice and n != b:
        raise ValueError(f"gates with {n} rows fit neither {b} scans nor {b}x{d} slices")
    if layout == "sample" or gates.ndim == 2:
        g = gates.reshape(n, 1, e)
        return g.reshape(b, -1, 1, e), (1, 1), "slice" if per_slice else "volume"
    if layout == "spatial":
        spatial = gates.shape[1:-1]
        if per_slice or len(spatial) == 2:
            return gates.reshape(b, -1, spatial[-2] * spatial[-1], e), tuple(spatial[-2:]), "slice" if per_slice else "volume"
        return gates.reshape(b, spatial[0], spatial[1] * spatial[2], e), tuple(spatial[1:]), "depth"
    tokens = gates.reshape(n, -1, e)[:, prefix:]  # (N, P, E) patch tokens only
    p = tokens.shape[1]
    if per_slice:
        return tokens.reshape(b, d, p, e), infer_grid(p, grid, aspect), "slice"
    if grid is not None and len(grid) == 3 and int(np.prod(grid)) == p:  # 3D ViT: units along depth
        return tokens.reshape(b, grid[0], grid[1] * grid[2], e), (int(grid[1]), int(grid[2])), "depth"
    return tokens.reshape(b, 1, p, e), None, "volume"


@torch.no_grad()
def collect_routing(
    model: torch.nn.Module, loader: Iterable[dict[str, Any]], device: str | torch.device | None = None,
    max_batches: int | None = None, token_scans: int | Sequence[str] = 4, layers: str | Sequence[str] | None = None,
    finding_keys: Sequence[str] | None = None,
) -> RoutingData:
    """Run ``model`` over ``loader`` batches and reduce every routed layer's gates (see module docstring).

    token_scans: keep per-token gates of the first N scans, or of the scans with these ids.
    """
    from molre_lib.adapters import routing_log

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    acc: dict[str, dict[str, list[np.ndarray]]] = {}
    layouts, kinds, grids = {}, {}, {}
    scan_ids, labels, masks, kept_ids = [], [], [], []
    input_shape = None
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        image = batch["image"].to(device)  # (B, C, D, H, W)
        b, _, d, h, w = image.shape
        input_shape = input_shape or (d, h, w)
        dims, prefix, grid = _model_geometry(model, image.shape)
        with routing_log(model, to_cpu=True, layers=layers) as log:
            model(image)
        ids = [str(s) for s in batch.get("scan_id", [f"scan{len(scan_ids) + j}" for j in range(b)])]
        keep = [j for j, s in enumerate(ids) if (s in token_scans if not isinstance(token_scans, int)
                                                 else len(kept_ids) + j < token_scans)]
        for name in log.layers:
            units, grids[name], kinds[name] = to_units(log.concat(name), log.layout[name], b, d, dims, prefix, grid, h / w)
            layouts[name] = log.layout[name]
            g = units.float()  # (B, U, P, E)
            top1 = F.one_hot(g.argmax(-1), g.shape[-1]).float().mean(2)  # (B, U, E)
            ent = -(g * g.clamp_min(1e-12).log()).sum(-1).mean(2)  # (B, U)
            slot = acc.setdefault(name, {"gates": [], "top1": [], "entropy": [], "tokens": []})
            slot["gates"].append(g.mean(2).numpy())
            slot["top1"].append(top1.numpy())
            slot["entropy"].append(ent.numpy())
            if keep:
                slot["tokens"].append(g[keep].to(torch.float16).numpy())
        scan_ids += ids
        kept_ids += [ids[j] for j in keep]
        labels.append(np.asarray(batch["labels"], dtype=np.float32))
        masks.append(np.asarray(batch.get("label_mask", np.ones_like(batch["labels"])), dtype=np.float32))
    if not acc:
        raise ValueError("collect_routing: the loader yielded no batch (or max_batches=0)")
    if finding_keys is None:
        from molre_lib.data.taxonomy import FINDING_KEYS

        finding_keys = FINDING_KEYS if labels[0].shape[1] == len(FINDING_KEYS) else [f"finding_{j}" for j in range(labels[0].shape[1])]
    order = list(acc)
    spec = getattr(model, "spec", None)
    return RoutingData(
        layers=order, layout=layouts, unit_kind=kinds, scan_ids=scan_ids,
        labels=np.concatenate(labels), label_mask=np.concatenate(masks),
        unit_gates={n: np.concatenate(acc[n]["gates"]) for n in order},
        unit_top1={n: np.concatenate(acc[n]["top1"]) for n in order},
        unit_entropy={n: np.concatenate(acc[n]["entropy"]) for n in order},
        token_gates={n: np.concatenate(acc[n]["tokens"]) for n in order if acc[n]["tokens"]},
        token_scan_ids=kept_ids, grids=grids, input_shape=tuple(input_shape), finding_keys=list(finding_keys),
        meta={"backbone": getattr(spec, "name", type(model).__name__)},
    )


# ----------------------------------------------------------------------------------------------- post-processing
def expert_usage(data: RoutingData) -> pd.DataFrame:
    """Per layer and expert: ``usage`` = mean gate, ``top1`` = share of tokens routed mainly to the expert."""
    rows = []
    for i, name in enumerate(data.layers):
        usage = data.unit_gates[name].mean(axis=(0, 1))  # (E,)
        top1 = data.unit_top1[name].mean(axis=(0, 1))
        rows += [{"layer": name, "layer_index": i, "expert": e, "usage": float(usage[e]), "top1": float(top1[e])}
                 for e in range(len(usage))]
    return pd.DataFrame(rows)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def gate_entropy(data: RoutingData) -> pd.DataFrame:
    """Per layer: mean per-token gate entropy and entropy of the mean usage, raw (nats) and divided by log E."""
    rows = []
    for i, name in enumerate(data.layers):
        e = data.n_experts(name)
        tok = float(data.unit_entropy[name].mean())
        use = _entropy(data.unit_gates[name].mean(axis=(0, 1)))
        norm = np.log(e) if e > 1 else np.nan
        rows.append({"layer": name, "layer_index": i, "n_experts": e, "token_entropy": tok, "usage_entropy": use,
                     "token_entropy_norm": tok / norm, "usage_entropy_norm": use / norm})
    return pd.DataFrame(rows)


def gates_by_finding(data: RoutingData, layer: str | None = None, min_count: int = 1) -> pd.DataFrame:
    """Mean scan gate per expert for scans with (pos) and without (neg) each finding, known labels only.

    layer: one routed layer, or None for the mean over layers. Findings with fewer than ``min_count``
    positives or negatives get NaN means. Columns: layer, finding, expert, pos_mean, neg_mean, diff, n_pos, n_neg.
    """
    gates = data.scan_gates(layer)  # (S, E)
    y, m = data.labels, data.label_mask > 0  # (S, F)
    pos, neg = m & (y == 1), m & (y == 0)
    n_pos, n_neg = pos.sum(0), neg.sum(0)  # (F,)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos_mean = (pos.T.astype(float) @ gates) / n_pos[:, None]  # (F, E)
        neg_mean = (neg.T.astype(float) @ gates) / n_neg[:, None]
    bad = (n_pos < min_count) | (n_neg < min_count)
    pos_mean[bad], neg_mean[bad] = np.nan, np.nan
    f, e = pos_mean.shape
    return pd.DataFrame({
        "layer": layer or "mean over layers", "finding": np.repeat(data.finding_keys, e), "expert": np.tile(np.arange(e), f),
        "pos_mean": pos_mean.ravel(), "neg_mean": neg_mean.ravel(), "diff": (pos_mean - neg_mean).ravel(),
        "n_pos": np.repeat(n_pos, e), "n_neg": np.repeat(n_neg, e)})


def expert_specialisation(data: RoutingData, layer: str | None = None, min_count: int = 1) -> pd.DataFrame:
    """Finding × expert matrix of mean gate (positives) − mean gate (negatives): which findings each expert serves."""
    table = gates_by_finding(data, layer, min_count)
    return table.pivot(index="finding", columns="expert", values="diff").reindex(data.finding_keys)


def top_findings_per_expert(specialisation: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` findings with the largest positive gate difference per expert (columns expert, rank, finding, diff)."""
    rows = []
    for e in specialisation.columns:
        top = specialisation[e].dropna().sort_values(ascending=False).head(k)
        rows += [{"expert": e, "rank": r + 1, "finding": f, "diff": float(v)} for r, (f, v) in enumerate(top.items())]
    return pd.DataFrame(rows)


def dominant_expert_map(data: RoutingData, layer: str, scan: int | str, slice_index: int,
                        out_shape: Sequence[int] | None = None) -> np.ndarray:
    """Each token's dominant expert on one axial slice, on the token grid upsampled (nearest) to the slice.

    Needs the scan's token gates (``token_scans`` at collection). Returns an int array (H, W) (default the
    model input's slice shape).
    """
    data._check_layers([layer])
    sid = data.scan_ids[data.scan_index(scan)]
    if layer not in data.token_gates or sid not in data.token_scan_ids:
        raise KeyError(f"no token gates kept for scan {sid!r}; kept: {data.token_scan_ids}")
    if data.grids.get(layer) is None:
        raise ValueError(f"layer {layer!r} tokens have no spatial grid ({data.unit_kind[layer]} routing)")
    d = data.input_shape[0]
    if not 0 <= slice_index < d:
        raise IndexError(f"slice {slice_index} outside the {d} input slices")
    tokens = data.token_gates[layer][data.token_scan_ids.index(sid)]  # (U, P, E)
    unit = min(slice_index * tokens.shape[0] // d, tokens.shape[0] - 1)  # slice -> unit (identity for 2D backbones)
    grid = data.grids[layer]
    winners = tokens[unit].astype(np.float32).argmax(-1).reshape(grid)  # (h, w)
    shape = tuple(out_shape) if out_shape is not None else tuple(data.input_shape[1:])
    up = F.interpolate(torch.from_numpy(winners)[None, None].float(), size=shape, mode="nearest-exact")
    return up[0, 0].round().to(torch.int64).numpy()  # (H, W)


def routing_volume(data: RoutingData, layer: str, scan: int | str, out_shape: Sequence[int] | None = None) -> np.ndarray:
    """:func:`dominant_expert_map` for every input slice of a scan -> int (D, H, W), e.g. for the viewer."""
    return np.stack([dominant_expert_map(data, layer, scan, z, out_shape) for z in range(data.input_shape[0])])
