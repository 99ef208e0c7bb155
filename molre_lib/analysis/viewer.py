"""Interactive CT viewer for notebooks: slice slider, window preset, finding (Grad-CAM) selector, CAM opacity,
routing-map toggle.

The figure is a plain Agg :class:`~matplotlib.figure.Figure` rendered into an ``ipywidgets.Image``, so it
works under any matplotlib backend, shows once, and can be driven from code: set a widget's ``.value`` and
the callbacks update the artists (``viewer.base_image`` / ``cam_image`` / ``routing_image``) and the PNG.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from molre_lib.data.windowing import window
from molre_lib.plots.images import CAM_THRESHOLD, expert_colormap
from molre_lib.plots.style import CAM_CMAP, PAPER_RC

NO_FINDING = "(none)"


class CTViewer:
    """Windowed slices with optional Grad-CAMs and a dominant-expert routing map on top.

    views: window name -> (D, H, W) image in [0, 1] (e.g. the model input's channels, or HU windowed here).
    cams: finding -> (D, H, W) CAM in [0, 1]. routing_map: (D, H, W) int expert index per pixel, or None.
    """

    def __init__(
        self, views: Mapping[str, np.ndarray], cams: Mapping[str, np.ndarray] | None = None,
        routing_map: np.ndarray | None = None, n_experts: int | None = None, title: str = "",
        slice_index: int | None = None, opacity: float = 0.45, dpi: int = 100,
    ) -> None:
        import ipywidgets as W

        if not views:
            raise ValueError("CTViewer needs at least one windowed view")
        self.views = {k: np.asarray(v, dtype=np.float32) for k, v in views.items()}
        shape = next(iter(self.views.values())).shape
        if len(shape) != 3:
            raise ValueError(f"views must be (D, H, W) volumes, got shape {shape}")
        self.cams = {k: np.asarray(v, dtype=np.float32) for k, v in (cams or {}).items()}
        for name, arr in [*self.views.items(), *self.cams.items()]:
            if arr.shape != shape:
                raise ValueError(f"{name!r} has shape {arr.shape}, the first view {shape}")
        if routing_map is not None and np.shape(routing_map) != shape:
            raise ValueError(f"routing map has shape {np.shape(routing_map)}, the views {shape}")
        self.routing_map = None if routing_map is None else np.asarray(routing_map, dtype=np.int64)
        self.n_experts = n_experts or (int(self.routing_map.max()) + 1 if self.routing_map is not None else 1)
        self.title = title
        d = shape[0]

        self.slice = W.IntSlider(value=d // 2 if slice_index is None else slice_index, min=0, max=d - 1,
                                 description="slice", continuous_update=False)
        self.window = W.Dropdown(options=list(self.views), description="window")
        self.finding = W.Dropdown(options=[NO_FINDING, *self.cams], value=next(iter(self.cams), NO_FINDING),
                                  description="finding")
        self.opacity = W.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="CAM opacity",
                                     continuous_update=False)
        self.show_routing = W.ToggleButton(value=False, description="routing map", disabled=self.routing_map is None)
        self.image = W.Image(format="png")

        with _rc():
            self.fig = Figure(figsize=(4.2, 4.2 * shape[1] / shape[2] + 0.3), dpi=dpi)
            ax = self.fig.add_subplot(1, 1, 1)
            self.base_image = ax.imshow(np.zeros(shape[1:]), cmap="gray", vmin=0, vmax=1)
            self.cam_image = ax.imshow(np.zeros(shape[1:]), cmap=CAM_CMAP, vmin=0, vmax=1, alpha=0.0)
            cmap, norm = expert_colormap(self.n_experts)
            self.routing_image = ax.imshow(np.zeros(shape[1:], dtype=np.int64), cmap=cmap, norm=norm, alpha=0.0,
                                           interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            self.axes = ax
        for w in (self.slice, self.window, self.finding, self.opacity, self.show_routing):
            w.observe(self._on_change, names="value")
        self.update()

    @classmethod
    def from_hu(cls, hu: np.ndarray, windows: Sequence[str] = ("brain", "subdural", "bone", "stroke"), **kwargs) -> "CTViewer":
        """Viewer over a HU volume (D, H, W), windowed with the presets of ``data.windowing.WINDOW_PRESETS``."""
        return cls({w: window(hu, w) for w in windows}, **kwargs)

    @classmethod
    def from_image(cls, image: np.ndarray, channel_names: Sequence[str] = ("brain", "subdural", "bone"), **kwargs) -> "CTViewer":
        """Viewer over a model input (C, D, H, W) or (1, C, D, H, W) whose channels are CT windows in [0, 1]."""
        image = np.asarray(image)
        image = image[0] if image.ndim == 5 else image
        if image.ndim != 4 or image.shape[0] != len(channel_names):
            raise ValueError(f"image {image.shape} does not have one channel per name {list(channel_names)}")
        return cls({n: image[i] for i, n in enumerate(channel_names)}, **kwargs)

    @property
    def widget(self):
        """The whole viewer as one ipywidgets box (what a notebook displays)."""
        import ipywidgets as W

        controls = W.VBox([self.slice, self.window, self.finding, self.opacity, self.show_routing])
        return W.HBox([self.image, controls])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _on_change(self, _change) -> None:
        self.update()

    def update(self) -> None:
        """Redraw for the current widget values (called by every widget callback)."""
        z = self.slice.value
        self.base_image.set_data(self.views[self.window.value][z])
        finding = self.finding.value
        show_cam = finding != NO_FINDING and not self.show_routing.value
        if finding != NO_FINDING:
            self.cam_image.set_data(np.ma.masked_less_equal(self.cams[finding][z], CAM_THRESHOLD))
        self.cam_image.set_alpha(self.opacity.value if show_cam else 0.0)
        if self.routing_map is not None:  # air (window value 0) stays uncoloured, as in plots.plot_routing_maps
            self.routing_image.set_data(np.ma.masked_where(self.views[self.window.value][z] <= 0, self.routing_map[z]))
        self.routing_image.set_alpha(self.opacity.value if self.show_routing.value else 0.0)
        label = "routing" if self.show_routing.value else (finding if show_cam else "")
        self.axes.set_title(f"{self.title}  slice {z}  {self.window.value}  {label}".strip(), fontsize=8)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png")
        self.image.value = buf.getvalue()


def _rc():
    import matplotlib.pyplot as plt

    return plt.rc_context(PAPER_RC)
