"""molre_lib.data.resize against MONAI, its reference: the same voxels bit for bit."""
from __future__ import annotations

import pytest
import torch

from molre_lib.data.resize import pad_or_crop, resize

monai_transforms = pytest.importorskip("monai.transforms")


@pytest.mark.parametrize("size,mode", [((8, 32, 32), "area"), ((24, 80, 72), "trilinear"), ((5, 17, 9), "area"),
                                       ((16, 40, 40), "trilinear"), ((7, 13, 50), "nearest-exact")])
def test_resize_equals_monai(size, mode) -> None:
    x = torch.randn(1, 16, 40, 36, generator=torch.Generator().manual_seed(0)) * 500  # (C, D, H, W) HU-like
    ours = resize(x, size, mode)
    ref = monai_transforms.Resize(size, mode=mode)(x)
    assert ours.shape == (1, *size)
    assert torch.equal(ours, torch.as_tensor(ref).float())


@pytest.mark.parametrize("shape", [(8, 32, 32), (20, 45, 33), (16, 40, 36), (3, 41, 50), (17, 8, 37)])
def test_pad_or_crop_equals_monai(shape) -> None:
    x = torch.randn(2, 16, 40, 36, generator=torch.Generator().manual_seed(1))  # odd and even crops / pads
    ours = pad_or_crop(x, shape, value=-1024.0)
    ref = monai_transforms.ResizeWithPadOrCrop(shape, mode="constant", value=-1024.0)(x)
    assert torch.equal(ours, torch.as_tensor(ref))
    with pytest.raises(ValueError, match="spatial axes"):
        pad_or_crop(x, shape[:2])
