"""The ipywidgets CT viewer: driving each widget programmatically updates the figure's image data."""
from __future__ import annotations

import numpy as np
import pytest

from molre_lib.analysis.viewer import NO_FINDING, CTViewer


@pytest.fixture
def viewer():
    rng = np.random.default_rng(0)
    hu = rng.normal(30, 400, (6, 24, 20)).astype(np.float32)
    cams = {"acute_subdural_hematoma": rng.random((6, 24, 20)).astype(np.float32),
            "mass_effect": rng.random((6, 24, 20)).astype(np.float32)}
    routing = np.repeat(np.arange(6)[:, None, None] % 3, 24, 1).repeat(20, 2)  # expert = slice % 3
    return CTViewer.from_hu(hu, cams=cams, routing_map=routing, n_experts=3, title="scan_0001")


def _snapshot(v: CTViewer):
    return (np.array(v.base_image.get_array()), np.array(v.cam_image.get_array()), v.cam_image.get_alpha(),
            v.routing_image.get_alpha(), v.image.value)


def test_each_widget_updates_the_figure(viewer):
    before = _snapshot(viewer)
    assert before[4][:4] == b"\x89PNG" and before[2] == pytest.approx(0.45)
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
    np.testing.assert_allclose(viewer.cam_image.get_array().filled(0), np.where(viewer.cams["mass_effect"][1] > 0.1, viewer.cams["mass_effect"][1], 0))

    viewer.opacity.value = 0.8
    assert viewer.cam_image.get_alpha() == pytest.approx(0.8)

    viewer.show_routing.value = True
    assert viewer.routing_image.get_alpha() == pytest.approx(0.8) and viewer.cam_image.get_alpha() == 0.0
    assert (np.array(viewer.routing_image.get_array()) == 1).all()  # slice 1 -> expert 1
    viewer.slice.value = 2
    assert (np.array(viewer.routing_image.get_array()) == 2).all()

    viewer.show_routing.value = False
    viewer.finding.value = NO_FINDING
    assert viewer.cam_image.get_alpha() == 0.0 and viewer.routing_image.get_alpha() == 0.0
    assert "slice 2" in viewer.axes.get_title()


def test_viewer_from_model_input_and_shape_checks():
    image = np.random.default_rng(1).random((1, 3, 4, 16, 16)).astype(np.float32)
    v = CTViewer.from_image(image)
    assert list(v.window.options) == ["brain", "subdural", "bone"] and v.show_routing.disabled
    np.testing.assert_allclose(np.array(v.base_image.get_array()), image[0, 0, 2])
    with pytest.raises(ValueError, match="shape"):
        CTViewer.from_image(image, cams={"x": np.zeros((4, 8, 8))})
    box = v.widget
    assert v.image in box.children
