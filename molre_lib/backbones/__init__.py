"""Backbones: a timm-style registry of 2D and 3D foundation models for head CT.

``registry.py`` holds the specs and the registry (a leaf module); ``factory.py``'s ``create_model(name, ...)``
-> :class:`HeadCTModel` with ``.encoder`` (the foundation model), ``.head`` (classifier) and ``.spec``
(:class:`BackboneSpec`). Entries live in ``vit2d.py`` (2D), ``ct3d.py`` (3D CT) and ``phantom_vit.py`` (the demo
backbone); weights are found offline by ``weights.py``.
"""
from .factory import build_encoder, count_params_meta, create_model
from .model import HeadCTModel, InputNorm, VolumeModel
from .registry import BackboneSpec, BuiltEncoder, get_spec, list_backbones, register_backbone
from .slice_encoder import AGGREGATORS, SliceEncoder3D
from .weights import MissingWeightsError, cache_dir, find_local_weights, resolve_weights, weights_dir

from . import vit2d, ct3d, phantom_vit, natural_vit  # noqa: E402,F401  (importing registers the entries)

__all__ = [
    "BackboneSpec", "BuiltEncoder", "HeadCTModel", "InputNorm", "VolumeModel", "SliceEncoder3D", "AGGREGATORS",
    "MissingWeightsError", "build_encoder", "cache_dir", "count_params_meta", "create_model", "find_local_weights",
    "get_spec", "list_backbones", "register_backbone", "resolve_weights", "weights_dir",
]
