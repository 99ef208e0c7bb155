"""Backbone registry in the timm style: one decorated function per foundation model.

An entry is a function ``fn(weights: Path | None, reduced: bool, **overrides) -> BuiltEncoder`` that builds
the exact architecture (``reduced=True``: the same classes at toy size, for tests) and, when ``weights`` is a
local file or folder, loads it in the model's official format. Its :class:`BackboneSpec` says everything a
notebook needs without building the model: input, adapter targets, Grad-CAM layer, weight source.

This module is a leaf (like timm's ``_registry.py``): the spec, the registry and nothing it must import from the
rest of the package. Building a model from an entry is ``factory.py``'s job.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

FAMILIES = ("general-2D", "medical-2D", "ct-3D", "demo")


@dataclass
class BuiltEncoder:
    """What an entry function returns: the foundation model and how to read it."""

    module: nn.Module = field(metadata={"help": "the foundation model (adapters go in here)"})
    feature_dim: int = field(metadata={"help": "size of the pooled feature vector"})
    cam_layer: str = field(metadata={"help": "module name inside `module` whose output Grad-CAM uses"})
    input_size: Optional[tuple[int, ...]] = field(
        default=None, metadata={"help": "spatial size the module requires (inputs are resized); None = any size"})
    patch_size: Optional[tuple[int, ...]] = field(
        default=None, metadata={"help": "token patch size of this build when it differs from the spec's"})


@dataclass
class BackboneSpec:
    """Static description of a registry entry (full-size values)."""

    name: str = field(metadata={"help": "registry name, e.g. 'dinov3_vitb16'"})
    family: str = field(metadata={"help": "one of general-2D, medical-2D, ct-3D, demo"})
    dims: int = field(metadata={"help": "2: per-slice encoder run by SliceEncoder3D; 3: volume encoder"})
    n_params: int = field(metadata={"help": "encoder parameters of the full-size build, counted on the meta device"})
    published_params: Optional[float] = field(
        metadata={"help": "published parameter count (None where no figure is published)"})
    published_source: str = field(metadata={"help": "where the published count comes from"})
    feature_dim: int = field(metadata={"help": "pooled feature size of the full-size encoder"})
    in_chans: int = field(metadata={"help": "input channels the weights expect (3 CT windows, or 1 for HU)"})
    input_size: tuple[int, ...] = field(metadata={"help": "slice (H, W) for 2D, volume (D, H, W) for 3D"})
    windows: tuple[tuple[float, float], ...] = field(
        metadata={"help": "(level, width) HU windows to stack as channels, each mapped to [0, 1]"})
    normalize: str = field(metadata={"help": "'meanstd' (fixed mean/std on [0,1] channels) or 'zscore' (per scan)"})
    mean: tuple[float, ...] = field(metadata={"help": "per-channel mean for 'meanstd'"})
    std: tuple[float, ...] = field(metadata={"help": "per-channel std for 'meanstd'"})
    spacing: Optional[tuple[float, float, float]] = field(
        metadata={"help": "voxel spacing (dz, dy, dx) mm the weights were trained at, if any"})
    target_modules: Union[str, list[str]] = field(
        metadata={"help": "default adapter targets (PEFT semantics: str = full-match regex, list = names/suffixes)"})
    cam_layer: str = field(metadata={"help": "Grad-CAM module name inside HeadCTModel (full-size build)"})
    num_prefix_tokens: int = field(metadata={"help": "class/register tokens before the patch tokens (0 for CNNs)"})
    patch_size: tuple[int, ...] = field(metadata={"help": "patch size per spatial axis (token -> grid reshape)"})
    hub_id: Optional[str] = field(metadata={"help": "Hugging Face hub repository of the official weights"})
    weight_files: tuple[str, ...] = field(metadata={"help": "files the official weights consist of"})
    weight_format: str = field(metadata={"help": "timm | transformers | open_clip | ct-fm | merlin | medicalnet | ..."})
    reduced_input_size: tuple[int, ...] = field(metadata={"help": "input size of the reduced (test) build"})
    description: str = field(default="", metadata={"help": "one line for the table"})
    source: str = field(default="", metadata={"help": "paper / repository of the weights"})
    builder: Optional[Callable[..., BuiltEncoder]] = field(default=None, repr=False,
                                                          metadata={"help": "the registered entry function"})
    features: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = field(
        default=None, repr=False, metadata={"help": "encoder, input -> pooled features (N, F)"})

    def to_row(self) -> dict[str, Any]:
        """Plain fields for tables / JSON (callables left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("builder", "features")}


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[Callable[..., BuiltEncoder]], Callable[..., BuiltEncoder]]:
    """Decorator: ``@register_backbone(BackboneSpec(...))`` above an entry function."""
    if spec.family not in FAMILIES:
        raise ValueError(f"backbone {spec.name!r}: family {spec.family!r} is not one of {FAMILIES}")
    if spec.dims not in (2, 3):
        raise ValueError(f"backbone {spec.name!r}: dims must be 2 or 3, got {spec.dims}")

    def wrap(fn: Callable[..., BuiltEncoder]) -> Callable[..., BuiltEncoder]:
        if spec.name in _REGISTRY:
            raise ValueError(f"backbone {spec.name!r} is registered twice")
        spec.builder = fn
        if spec.features is None:
            raise ValueError(f"backbone {spec.name!r}: spec.features (encoder -> pooled features) is required")
        _REGISTRY[spec.name] = spec
        return fn

    return wrap


def list_backbones(family: Optional[str] = None) -> list[BackboneSpec]:
    """Registered specs, in registration order, optionally of one family."""
    return [s for s in _REGISTRY.values() if family is None or s.family == family]


def get_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(_REGISTRY)}") from None
