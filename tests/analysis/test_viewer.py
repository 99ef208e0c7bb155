"""The ipywidgets CT viewer: driving each widget updates the figure, the image keeps one size, and on the
phantom it opens on the lesion, outlines it, and says when a finding has no CAM on the slice."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from molre_lib.analysis.viewer import NO_FINDING, CTViewer
from molre_lib.data.phantom import PhantomConfig, make_subject


@pytest.fixture
def viewer():
    rng = np.random.default_rng(0)
    hu = rng.normal(30, 400, (6, 24, 20)).astype(np.float32)
    cams = {"acute_subdural_hematoma": rng.random((6, 24, 20)).astype(np.float32),
            "mass_effect": rng.random((6, 24, 20)).astype(np.float32)}
    routing = np.repeat(np.arange(6)[:, None, None] % 3, 24, 1).repeat(20, 2)  # expert = slice % 3
    return CTViewer.from_hu(hu, cams=cams, routing_map=routing, n_experts=3, title="scan_0001", slice_index=0)


def _snapshot(v: CTViewer):
    return (np.array(v.base_image.get_array()), np.array(v.cam_image.get_array()), v.cam_image.get_alpha(),
            v.routing_image.get_alpha(), v.image.value)


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_each_widget_updates_the_figure(viewer):
    before = _snapshot(viewer)
    assert before[4][:4] == b"\x89PNG" and before[2] == pytest.approx(0.45)
    size = _size(before[4])
    viewer.slice.value = 1
    after = _snapshot(viewer)
    assert not np.array_equal(before[0], after[0]) and not np.array_equal(before[1], after[1]) and before[4] != after[4]
    shown = viewer.cam_image.get_array()
    visible = ~np.ma.getmaskarray(shown)
    np.testing.assert_allclose(shown[visible], viewer.cams["acute_subdural_hematoma"][1][visible])
    assert (viewer.cams["acute_subdural_hematoma"][1][~visible] <= 0.1).all()

    viewer.window.value = "bone"
    bone = _snapshot(viewer)
    assert not np.array_equal(after[0], bone[0])
    assert bone[0].max() <= 1 and bone[0].min() >= 0

    viewer.finding.value = "mass_effect"
    z = viewer.slice.value  # jumped to the finding's slice
    assert z == viewer.finding_slice("mass_effect")
    np.testing.assert_allclose(viewer.cam_image.get_array().filled(0),
                               np.where(viewer.cams["mass_effect"][z] > 0.1, viewer.cams["mass_effect"][z], 0))

    viewer.opacity.value = 0.8
    assert viewer.cam_image.get_alpha() == pytest.approx(0.8)

    assert viewer.show_routing.description == "routing map: off" and not viewer.expert_legend.get_visible()
    viewer.slice.value = 1
    viewer.show_routing.value = True
    assert viewer.show_routing.description == "routing map: ON" and viewer.expert_legend.get_visible()
    assert [t.get_text() for t in viewer.expert_legend.get_texts()] == ["expert 0", "expert 1", "expert 2"]
    assert viewer.routing_image.get_alpha() == pytest.approx(0.8) and viewer.cam_image.get_alpha() == 0.0
    assert (np.array(viewer.routing_image.get_array()) == 1).all()  # slice 1 -> expert 1
    viewer.step(1)  # what the mouse wheel does
    assert viewer.slice.value == 2 and (np.array(viewer.routing_image.get_array()) == 2).all()
    viewer.step(-10)
    assert viewer.slice.value == 0

    viewer.show_routing.value = False
    viewer.finding.value = NO_FINDING
    assert viewer.cam_image.get_alpha() == 0.0 and viewer.routing_image.get_alpha() == 0.0
    assert "slice 3 of 0–5" in viewer.title_text.get_text()  # no finding: the middle slice
    assert _size(viewer.image.value) == size, "the image keeps its size, so the controls never move"


def test_no_cam_on_this_slice_is_said():
    hu = np.full((5, 16, 16), -1000.0, np.float32)
    hu[:, 3:13, 3:13] = 30.0
    cam = np.zeros((5, 16, 16), np.float32)
    cam[3, 6:9, 6:9] = 0.9
    v = CTViewer.from_hu(hu, cams={"x_finding": cam, "silent": np.zeros_like(cam)}, slice_index=1)
    assert "no CAM above 0.1 on this slice" in v.note.value and "slice 3" in v.note.value
    assert v.note_text.get_text()
    v.slice.value = 3
    assert v.note.value == "" and v.note_text.get_text() == ""
    v.finding.value = "silent"
    assert "anywhere in this scan" in v.note.value


def test_phantom_opens_on_the_lesion_and_outlines_it():
    s = make_subject(3, PhantomConfig(shape=(16, 64, 64)), present={"epidural_hematoma": True})
    mask = s.masks["epidural_hematoma"]
    air_cam = np.zeros(s.hu.shape, np.float32)
    air_cam[0, :4, :4] = 1.0                       # a CAM lighting the air on slice 0
    air_cam[np.nonzero(mask)] = 0.3
    v = CTViewer.from_hu(s.hu, cams={"epidural_hematoma": air_cam}, masks={"epidural_hematoma": mask})
    z = int(mask.sum(axis=(1, 2)).argmax())
    assert v.slice.value == z
    assert v._outline is not None and v.outline_legend.get_visible()
    v.show_outline.value = False
    assert v._outline is None
    # without the mask, the CAM inside the head decides, not the air
    w = CTViewer.from_hu(s.hu, cams={"epidural_hematoma": air_cam})
    assert w.slice.value != 0 and mask[w.slice.value].any()


def test_viewer_from_model_input_and_shape_checks():
    image = np.random.default_rng(1).random((1, 3, 4, 16, 16)).astype(np.float32)
    v = CTViewer.from_image(image)
    assert list(v.window.options) == ["brain", "subdural", "bone"] and v.show_routing.disabled
    np.testing.assert_allclose(np.array(v.base_image.get_array()), image[0, 0, 2])
    with pytest.raises(ValueError, match="shape"):
        CTViewer.from_image(image, cams={"x": np.zeros((4, 8, 8))})
    box = v.widget
    assert v.image in box.children
