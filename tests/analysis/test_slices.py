"""Slice choice and head mask on the phantom: the lesion slice wins, CAM mass in the air around the head
does not pick a slice."""
from __future__ import annotations

import numpy as np
import pytest

from molre_lib.analysis.slices import head_mask, pick_slice, slice_scores
from molre_lib.data.phantom import PhantomConfig, make_subject
from molre_lib.data.windowing import window


@pytest.fixture(scope="module")
def subject():
    return make_subject(3, PhantomConfig(shape=(16, 64, 64)), present={"epidural_hematoma": True})


def test_head_mask_covers_the_head_and_not_the_air(subject):
    head = head_mask(subject.hu)
    assert head.shape == subject.hu.shape
    assert head[subject.hu > 0].mean() > 0.99          # all tissue and bone is inside
    assert not head[:, 0, 0].any() and not head[:, -1, -1].any()   # corners are air
    # ventricles / CSF (holes inside the skull) are filled in
    mid = subject.hu.shape[0] // 2
    inside = head[mid]
    assert inside.sum() > (subject.hu[mid] > 0).sum()
    # the same head from the model's bone-window channel (floor -800 HU)
    from_window = head_mask(window(subject.hu, "bone"), threshold=0.0)
    assert (from_window == head).mean() > 0.98


def test_lesion_mask_picks_its_largest_slice(subject):
    mask = subject.masks["epidural_hematoma"]
    z = pick_slice(mask=mask)
    assert mask[z].sum() == mask.sum(axis=(1, 2)).max() > 0


def test_cam_mass_outside_the_head_is_ignored(subject):
    head = head_mask(subject.hu)
    d = head.shape[0]
    cam = np.zeros(head.shape, np.float32)
    cam[0][~head[0]] = 1.0                      # lots of CAM in the air of slice 0
    inside = np.argwhere(head[d // 2 + 2])[0]
    cam[d // 2 + 2, inside[0], inside[1]] = 0.5  # a little inside the head on another slice
    assert int(cam.sum(axis=(1, 2)).argmax()) == 0
    assert pick_slice(cam=cam, head=head) == d // 2 + 2


def test_fallbacks():
    empty = np.zeros((6, 4, 4), bool)
    cam = np.zeros((6, 4, 4))
    cam[4, 1, 1] = 1
    assert pick_slice(mask=empty, cam=cam) == 4             # empty lesion mask -> the CAM decides
    assert pick_slice(mask=empty, cam=np.zeros((6, 4, 4))) == 3   # nothing anywhere -> the middle
    assert pick_slice(depth=9) == 4
    assert slice_scores(mask=empty) is None
    with pytest.raises(ValueError):
        pick_slice()
