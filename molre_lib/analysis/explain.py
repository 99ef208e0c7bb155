"""Grad-CAM over CT volumes with captum's ``LayerGradCam``, for 2D ViT, 2D CNN and 3D backbones.

Mechanism (this file's hooks, so notebooks define none): a temporary forward hook on the CAM layer passes
its output through :class:`GridView`, an identity module that captum hooks. For ViT blocks the tokens
(N, T, C) are first reshaped to a channels-first patch grid (N, C, h, w) with the prefix (class / register)
tokens dropped — pytorch-grad-cam's ``reshape_transform`` — and put back afterwards, so the model computes
exactly what it did before. Conv layers (N, C, h, w) / (N, C, d, h, w) pass through unchanged.

A 2D backbone encodes slices in chunks, so the CAM layer runs once per chunk; captum keeps one activation per
layer, so the CAM is computed once per chunk call and the pieces are joined in slice order (index = b*D + d).

Post-processing is injectable, as in MONAI's ``CAM``: ``upsample`` (layer grid -> input shape) and
``postprocess`` (default: ReLU, then min-max over the whole volume so slices are comparable).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .routing import infer_grid, patch_grid, tokens_to_grid


class GridView(nn.Module):
    """Identity; exists so captum can hook the CAM layer's output in channels-first grid layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def upsample_cam(cam: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(N, 1, *grid) -> (N, 1, *shape), bilinear for 2D grids, trilinear for 3D."""
    mode = "bilinear" if cam.ndim == 4 else "trilinear"
    return F.interpolate(cam.float(), size=tuple(shape), mode=mode, align_corners=False)


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU, then scale the whole volume to [0, 1] (all zeros stay zeros)."""
    cam = np.maximum(cam, 0.0)
    top = cam.max()
    return cam / top if top > 0 else cam


# First LayerNorm of a pre-norm transformer block in timm / MONAI / transformers (Dinov2, SigLIP, ViT).
BLOCK_INPUT_NORMS = ("norm1", "layer_norm1", "layernorm_before")


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """The CAM module: ``layer`` (a name inside ``model`` or a module) exactly as given; by default
    ``model.cam_layer`` (or ``spec.cam_layer``), and when that is a transformer block, the block's first norm.

    Why the norm: a ViT block's *output* patch tokens reach a class-token head only through the class token
    (their gradient is zero, so is the CAM); at the block's first norm they still feed the block's attention.
    This is pytorch-grad-cam's recommended ViT target (``blocks[-1].norm1``).
    """
    if isinstance(layer, nn.Module):
        return type(layer).__name__, layer
    name = layer or getattr(model, "cam_layer", None) or getattr(getattr(model, "spec", None), "cam_layer", None)
    if not name:
        raise ValueError("no CAM layer given and the model has neither .cam_layer nor .spec.cam_layer")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"CAM layer {name!r} is not a module of {type(model).__name__}") from None
    if layer is None:
        children = dict(module.named_children())
        norm = next((n for n in BLOCK_INPUT_NORMS if n in children), None)
        if norm is not None:
            return f"{name}.{norm}", children[norm]
    return name, module


def finding_index(finding: int | str, keys: Sequence[str] | None = None) -> int:
    """Column of a finding given by index or taxonomy key."""
    if isinstance(finding, (int, np.integer)):
        return int(finding)
    if keys is None:
        from molre_lib.data.taxonomy import FINDING_KEYS as keys
    if finding not in keys:
        raise KeyError(f"unknown finding {finding!r}")
    return list(keys).index(finding)


@contextmanager
def _grid_hook(module: nn.Module, view: GridView, call: int, prefix: int, grid: Sequence[int] | None):
    """Route the ``call``-th output of ``module`` through ``view`` (as a patch grid for tokens); count calls."""
    state = {"calls": 0, "grid": None}

    def hook(_mod, _inp, out):
        k = state["calls"]
        state["calls"] += 1
        if k != call:
            return None
        rest = ()
        if isinstance(out, (tuple, list)):  # transformers layers return (hidden_states, ...)
            out, rest = out[0], tuple(out[1:])
        if out.ndim == 3:  # tokens (N, T, C)
            g = grid if grid is not None and int(np.prod(grid)) == out.shape[1] - prefix else infer_grid(out.shape[1] - prefix)
            state["grid"] = tuple(g)
            viewed = view(tokens_to_grid(out, g, prefix))  # (N, C, *grid)
            new = torch.cat([out[:, :prefix], viewed.flatten(2).transpose(1, 2)], dim=1)  # back to (N, T, C)
        else:  # conv output (N, C, *spatial)
            new = view(out)
        return (new, *rest) if rest else new

    handle = module.register_forward_hook(hook)
    try:
        yield state
    finally:
        handle.remove()


@contextmanager
def _eval_no_param_grads(model: nn.Module):
    """Eval mode and no parameter gradients: only the graph after the CAM layer is kept for backward."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def layer_gradcam(model: nn.Module, image: torch.Tensor, target: int, layer: str | nn.Module | None = None,
                  num_prefix_tokens: int | None = None, grid: Sequence[int] | None = None) -> torch.Tensor:
    """Raw Grad-CAM at the layer's resolution: (B*D, 1, h, w) for a 2D backbone, (B, 1, d, h, w) for a 3D one."""
    from captum.attr import LayerGradCam

    _, module = resolve_layer(model, layer)
    spec = getattr(model, "spec", None)
    if num_prefix_tokens is None:
        num_prefix_tokens = int(getattr(getattr(model, "encoder", model), "num_prefix_tokens",
                                        getattr(spec, "num_prefix_tokens", 0)))
    if grid is None:
        grid = patch_grid(model)
    view = GridView()
    pieces, call = [], 0
    with _eval_no_param_grads(model):
        while True:
            with _grid_hook(module, view, call, num_prefix_tokens, grid) as state:
                attr = LayerGradCam(model, view).attribute(image, target=target, relu_attributions=False)
            if state["calls"] == 0:
                raise RuntimeError(f"the CAM layer {type(module).__name__} never ran in the forward pass")
            pieces.append(attr.detach())
            call += 1
            if call >= state["calls"]:
                break
    return torch.cat(pieces, dim=0)


def _one_volume(model: nn.Module, image: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.device]:
    """(C, D, H, W) or (1, C, D, H, W) -> float32 (1, C, D, H, W) on the model's device, and that device."""
    x = torch.as_tensor(image)
    x = x[None] if x.ndim == 4 else x
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(f"expected one volume (1, C, D, H, W), got shape {tuple(x.shape)}")
    device = next(model.parameters()).device
    return x.to(device=device, dtype=torch.float32), device


def gradcam(
    model: nn.Module, image: torch.Tensor | np.ndarray, finding: int | str, layer: str | nn.Module | None = None,
    upsample: Callable[[torch.Tensor, Sequence[int]], torch.Tensor] = upsample_cam,
    postprocess: Callable[[np.ndarray], np.ndarray] | None = normalize_cam,
    num_prefix_tokens: int | None = None, grid: Sequence[int] | None = None,
) -> np.ndarray:
    """Grad-CAM of one finding's logit for one CT volume, on the input grid.

    image: (1, C, D, H, W) (or (C, D, H, W)) model input. finding: index or taxonomy key.
    layer: module name inside the model (default: see :func:`resolve_layer`). Returns float32 (D, H, W).
    """
    x, device = _one_volume(model, image)  # (1, C, D, H, W) on the model's device
    _, _, d, h, w = x.shape
    raw = layer_gradcam(model, x, finding_index(finding), layer, num_prefix_tokens, grid)
    if not torch.any(raw != 0):
        warnings.warn(f"Grad-CAM is zero everywhere at layer {resolve_layer(model, layer)[0]!r}: its patch tokens do not "
                      "reach the logit (e.g. the last ViT block under class-token pooling); use that block's norm1")
    if raw.ndim == 4:  # 2D backbone: (D, 1, h, w), one map per slice
        if raw.shape[0] != d:
            raise ValueError(f"CAM layer gave {raw.shape[0]} slice maps for {d} slices")
        cam = upsample(raw, (h, w))[:, 0]  # (D, H, W)
    elif raw.ndim == 5:  # 3D backbone: (1, 1, d', h', w')
        cam = upsample(raw, (d, h, w))[0, 0]  # (D, H, W)
    else:
        raise ValueError(f"unsupported CAM layer output with {raw.ndim} dims (shape {tuple(raw.shape)})")
    out = cam.float().cpu().numpy()
    return (postprocess(out) if postprocess is not None else out).astype(np.float32)


def gradcams(model: nn.Module, image: torch.Tensor | np.ndarray, findings: Sequence[int | str],
             **kwargs) -> dict[str, np.ndarray]:
    """:func:`gradcam` for several findings; keys are the findings as given (as strings)."""
    return {str(f): gradcam(model, image, f, **kwargs) for f in findings}


# ----------------------------------------------------------------------------------------------- occlusion
@torch.no_grad()
def occlusion_maps(model: nn.Module, image: torch.Tensor | np.ndarray, findings: Sequence[int | str],
                   patch: Sequence[int] = (1, 8, 8), baseline: float | Sequence[float] | torch.Tensor = 0.0,
                   batch: int = 32, postprocess: Callable[[np.ndarray], np.ndarray] | None = normalize_cam,
                   ) -> dict[str, np.ndarray]:
    """Occlusion attribution of several findings' logits for one volume, without gradients.

    Each (d, h, w) ``patch`` of the input (all channels, non-overlapping) is replaced by ``baseline`` (a scalar
    or one value per channel) and the map is the logit drop: ``logit(x) - logit(x occluded)`` spread over the
    patch — what captum's ``Occlusion`` computes with sliding window = stride = patch, but every finding comes
    from the same occluded forward passes (captum runs them once per target). Returns finding -> (D, H, W).
    """
    x, device = _one_volume(model, image)  # (1, C, D, H, W) on the model's device
    _, c, d, h, w = x.shape
    base = torch.as_tensor(baseline, dtype=torch.float32, device=device).reshape(-1, 1, 1, 1)  # (C or 1, 1, 1, 1)
    cols = [finding_index(f) for f in findings]
    pd_, ph, pw = (int(p) for p in patch)
    starts = [(z, y, q) for z in range(0, d, pd_) for y in range(0, h, ph) for q in range(0, w, pw)]
    was_training = model.training
    model.eval()
    try:
        ref = model(x)[0, cols]  # (F,)
        out = torch.zeros((len(cols), d, h, w), device=device)
        for k in range(0, len(starts), batch):
            chunk = starts[k:k + batch]
            xs = x.repeat(len(chunk), 1, 1, 1, 1)  # (n, C, D, H, W)
            for j, (z, y, q) in enumerate(chunk):
                xs[j, :, z:z + pd_, y:y + ph, q:q + pw] = base.expand(c, -1, -1, -1)
            drop = ref[None] - model(xs)[:, cols]  # (n, F)
            for j, (z, y, q) in enumerate(chunk):
                out[:, z:z + pd_, y:y + ph, q:q + pw] = drop[j][:, None, None, None]
    finally:
        model.train(was_training)
    maps = out.float().cpu().numpy()
    return {str(f): (postprocess(m) if postprocess is not None else m).astype(np.float32) for f, m in zip(findings, maps)}


def occlusion(model: nn.Module, image: torch.Tensor | np.ndarray, finding: int | str, **kwargs) -> np.ndarray:
    """:func:`occlusion_maps` of one finding -> (D, H, W)."""
    return occlusion_maps(model, image, [finding], **kwargs)[str(finding)]


# Attribution methods scored by ``molre_lib.analysis.localisation``: name -> f(model, image, findings, **kw)
# returning finding -> (D, H, W) map in [0, 1].
ATTRIBUTIONS: dict[str, Callable[..., dict[str, np.ndarray]]] = {"gradcam": gradcams, "occlusion": occlusion_maps}
