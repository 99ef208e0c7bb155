"""Grad-CAM and routing collection on every registered backbone (reduced builds with MoLRE injected):
CAMs come back on the input grid and routing maps cover every slice, for 2D ViTs (prefix tokens, chunks),
3D CNNs (spatial routers) and the 3D ViT (tokens on a 3D grid)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molre_lib.analysis import explain, routing
from molre_lib.adapters import MoLREConfig, inject
from molre_lib.backbones import create_model, list_backbones


@pytest.mark.parametrize("name", [s.name for s in list_backbones()])
def test_cam_and_routing_on_registered_backbone(name):
    torch.manual_seed(0)
    model = create_model(name, reduced=True)
    inject(model, MoLREConfig(r=2, n_experts=3, target_modules=model.spec.target_modules))
    spec = model.spec
    # 3D: twice the reduced size, so the reduced CNNs' deepest layer still has more than one voxel
    size = (4, 32, 32) if spec.dims == 2 else tuple(2 * s for s in spec.reduced_input_size)
    x = torch.rand(1, model.in_chans, *size)
    cam = explain.gradcam(model, x, "acute_subdural_hematoma", postprocess=None)
    assert cam.shape == size and np.isfinite(cam).all() and cam.std() > 0
    data = routing.collect_routing(model, [{"image": x, "labels": torch.zeros(1, 75), "scan_id": ["s0"]}], token_scans=1)
    layer = data.layers[-1]
    assert data.unit_kind[layer] == ("slice" if spec.dims == 2 else "depth")
    np.testing.assert_allclose(data.unit_gates[layer].sum(-1), 1.0, atol=1e-4)
    volume = routing.routing_volume(data, layer, "s0")
    assert volume.shape == size and volume.min() >= 0 and volume.max() < 3
