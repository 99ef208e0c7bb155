"""Interactive CT viewer for notebooks: slice, window preset, finding (Grad-CAM), CAM opacity, routing map and
lesion outline.

Built as a radiologist reads a scan:

- it opens on the slice where the selected finding is (:func:`molre_lib.analysis.slices.pick_slice`: the
  lesion mask's largest slice when the mask is known, e.g. on the phantom; else the slice with the most CAM
  mass inside the head), and jumps there when another finding is picked;
- the image has a fixed size (the PNG is never cropped to its content), so the controls never move;
- the routing toggle says "on" / "off" and the figure carries the expert colour legend while it is on, a
  Grad-CAM colour bar otherwise;
- a finding without CAM on the current slice says so (and where its CAM is), instead of drawing nothing;
- the mouse wheel or the arrow keys over the image scroll slices (ipyevents), as in a PACS viewer;
- the lesion outline is drawn when the finding's mask is known.

The figure is a plain Agg :class:`~matplotlib.figure.Figure` rendered into an ``ipywidgets.Image``, so it works
under any matplotlib backend, shows once, and can be driven from code: set a widget's ``.value`` and the
callbacks update the artists (``viewer.base_image`` / ``cam_image`` / ``routing_image``) and the PNG.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from molre_lib.analysis.slices import head_mask, pick_slice
from molre_lib.data.windowing import window
from molre_lib.plots.images import CAM_THRESHOLD, expert_colormap
from molre_lib.plots.style import CAM_CMAP, PAPER_RC

NO_FINDING = "(none)"
OUTLINE_COLOUR = "#00ff66"  # lesion outline: green, apart from the jet CAM's blue-to-red and the grey CT
FIG_SIZE_IN = (6.0, 4.6)    # fixed; at 100 dpi a 600 x 460 px image
LABEL_WIDTH = "100px"       # widget descriptions are never cut ("CAM opacity")


class CTViewer:
    """Windowed slices with optional Grad-CAMs, lesion outlines and a dominant-expert routing map on top.

    views: window name -> (D, H, W) image in [0, 1] (e.g. the model input's channels, or HU windowed here).
    cams: finding -> (D, H, W) CAM in [0, 1]. masks: finding -> (D, H, W) lesion mask (known on the phantom).
    routing_map: (D, H, W) int expert index per pixel, or None. head: (D, H, W) head mask (default: found from
    the bone window, else the first view); CAM mass outside it does not choose the slice. finding: the one
    selected first (default: the first CAM's). slice_index: open there instead of on the finding's slice.
    """

    def __init__(
        self, views: Mapping[str, np.ndarray], cams: Mapping[str, np.ndarray] | None = None,
        routing_map: np.ndarray | None = None, n_experts: int | None = None, title: str = "",
        slice_index: int | None = None, opacity: float = 0.45, masks: Mapping[str, np.ndarray] | None = None,
        head: np.ndarray | None = None, finding: str | None = None, dpi: int = 100,
    ) -> None:
        import ipywidgets as W

        if not views:
            raise ValueError("CTViewer needs at least one windowed view")
        self.views = {k: np.asarray(v, dtype=np.float32) for k, v in views.items()}
        shape = next(iter(self.views.values())).shape
        if len(shape) != 3:
            raise ValueError(f"views must be (D, H, W) volumes, got shape {shape}")
        self.cams = {k: np.asarray(v, dtype=np.float32) for k, v in (cams or {}).items()}
        self.masks = {k: np.asarray(v, dtype=bool) for k, v in (masks or {}).items()}
        for name, arr in [*self.views.items(), *self.cams.items(), *self.masks.items()]:
            if arr.shape != shape:
                raise ValueError(f"{name!r} has shape {arr.shape}, the first view {shape}")
        if routing_map is not None and np.shape(routing_map) != shape:
            raise ValueError(f"routing map has shape {np.shape(routing_map)}, the views {shape}")
        self.routing_map = None if routing_map is None else np.asarray(routing_map, dtype=np.int64)
        self.n_experts = n_experts or (int(self.routing_map.max()) + 1 if self.routing_map is not None else 1)
        self.head = np.asarray(head, bool) if head is not None else _default_head(self.views)
        self.title = title
        self.depth = shape[0]
        findings = [*self.cams, *[m for m in self.masks if m not in self.cams]]

        style = {"description_width": LABEL_WIDTH}
        wide = W.Layout(width="330px")
        first = finding if finding is not None else (findings[0] if findings else NO_FINDING)
        if first not in (NO_FINDING, *findings):
            raise ValueError(f"finding {first!r} has neither a CAM nor a mask here; have: {findings}")
        start = self.finding_slice(first) if slice_index is None else int(slice_index)
        self.slice = W.IntSlider(value=start, min=0, max=self.depth - 1, description="slice",
                                 continuous_update=False, style=style, layout=wide)
        self.window = W.Dropdown(options=list(self.views), description="window", style=style, layout=wide)
        self.finding = W.Dropdown(options=[NO_FINDING, *findings], value=first, description="finding",
                                  style=style, layout=wide)
        self.opacity = W.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="CAM opacity",
                                     continuous_update=False, style=style, layout=wide, readout_format=".2f")
        self.show_routing = W.ToggleButton(value=False, disabled=self.routing_map is None,
                                           tooltip="dominant expert per pixel (MoLRE runs)", layout=wide)
        self.show_outline = W.Checkbox(value=True, description="lesion outline (known mask)", indent=False,
                                       disabled=not self.masks, layout=wide)
        self.note = W.HTML(layout=wide)
        width_px, height_px = int(FIG_SIZE_IN[0] * dpi), int(FIG_SIZE_IN[1] * dpi)
        self.image = W.Image(format="png", layout=W.Layout(width=f"{width_px}px", height=f"{height_px}px",
                                                            min_width=f"{width_px}px", object_fit="contain"))
        self._outline = None
        self._build_figure(shape, dpi)
        for w in (self.slice, self.window, self.opacity, self.show_routing, self.show_outline):
            w.observe(self._on_change, names="value")
        self.finding.observe(self._on_finding, names="value")
        self._events = _scroll_events(self.image, self.step)
        self.update()

    def _build_figure(self, shape, dpi: int) -> None:
        with _rc():
            self.fig = Figure(figsize=FIG_SIZE_IN, dpi=dpi)
            # fixed boxes: image left, legend right, title on top, note at the bottom -> nothing moves
            ax = self.fig.add_axes((0.01, 0.08, 0.70, 0.84))
            self.base_image = ax.imshow(np.zeros(shape[1:]), cmap="gray", vmin=0, vmax=1)
            self.cam_image = ax.imshow(np.zeros(shape[1:]), cmap=CAM_CMAP, vmin=0, vmax=1, alpha=0.0)
            cmap, norm = expert_colormap(self.n_experts)
            self.routing_image = ax.imshow(np.zeros(shape[1:], dtype=np.int64), cmap=cmap, norm=norm, alpha=0.0,
                                           interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            self.axes = ax
            self.cbar_axes = self.fig.add_axes((0.75, 0.40, 0.035, 0.50))
            self.colorbar = self.fig.colorbar(self.cam_image, cax=self.cbar_axes)
            self.colorbar.solids.set_alpha(1.0)
            self.colorbar.set_label(f"Grad-CAM (shown above {CAM_THRESHOLD:g})", fontsize=7)
            self.colorbar.ax.tick_params(labelsize=6)
            handles = [Patch(color=cmap(e), label=f"expert {e}") for e in range(self.n_experts)]
            self.expert_legend = self.fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.73, 0.92),
                                                 title="dominant expert", fontsize=7, title_fontsize=7)
            self.outline_legend = self.fig.legend(
                handles=[Patch(facecolor="none", edgecolor=OUTLINE_COLOUR, linewidth=1.5, label="lesion (mask)")],
                loc="lower left", bbox_to_anchor=(0.73, 0.10), fontsize=7)
            self.title_text = self.fig.text(0.01, 0.965, "", fontsize=8, va="top")
            self.note_text = self.fig.text(0.01, 0.025, "", fontsize=7, color="#b00000", va="bottom")

    @classmethod
    def from_hu(cls, hu: np.ndarray, windows: Sequence[str] = ("brain", "subdural", "bone", "stroke"), **kwargs) -> "CTViewer":
        """Viewer over a HU volume (D, H, W), windowed with the presets of ``data.windowing.WINDOW_PRESETS``."""
        kwargs.setdefault("head", head_mask(hu))
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

        help_text = W.HTML("<small>mouse wheel or &uarr;/&darr; over the image: previous / next slice</small>",
                           layout=W.Layout(width="330px"))
        controls = W.VBox([self.slice, self.window, self.finding, self.opacity, self.show_routing,
                           self.show_outline, self.note, help_text], layout=W.Layout(width="340px", min_width="340px"))
        return W.HBox([self.image, controls], layout=W.Layout(flex_flow="row nowrap", align_items="flex-start"))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def finding_slice(self, finding: str) -> int:
        """The slice that shows ``finding`` best (see :func:`~molre_lib.analysis.slices.pick_slice`)."""
        if finding == NO_FINDING:
            return self.depth // 2
        return pick_slice(mask=self.masks.get(finding), cam=self.cams.get(finding), head=self.head)

    def step(self, delta: int) -> None:
        """Move ``delta`` slices (mouse wheel / arrow keys), clamped to the volume."""
        self.slice.value = int(np.clip(self.slice.value + delta, 0, self.depth - 1))

    def _on_finding(self, _change) -> None:
        target = self.finding_slice(self.finding.value)
        if target != self.slice.value:
            self.slice.value = target  # its observer redraws
        else:
            self.update()

    def _on_change(self, _change) -> None:
        self.update()

    def _cam_note(self, finding: str, z: int) -> str:
        if finding == NO_FINDING or finding not in self.cams:
            return "" if finding == NO_FINDING else "no Grad-CAM computed for this finding"
        cam = self.cams[finding]
        if cam[z].max() > CAM_THRESHOLD:
            return ""
        if cam.max() <= CAM_THRESHOLD:
            return f"no CAM above {CAM_THRESHOLD:g} anywhere in this scan for {finding}"
        best = pick_slice(cam=cam, head=self.head)
        return f"no CAM above {CAM_THRESHOLD:g} on this slice; {finding}'s CAM is strongest on slice {best}"

    def update(self) -> None:
        """Redraw for the current widget values (called by every widget callback)."""
        z, finding, routing_on = self.slice.value, self.finding.value, self.show_routing.value
        self.base_image.set_data(self.views[self.window.value][z])
        has_cam = finding in self.cams
        show_cam = has_cam and not routing_on
        if has_cam:
            self.cam_image.set_data(np.ma.masked_less_equal(self.cams[finding][z], CAM_THRESHOLD))
        self.cam_image.set_alpha(self.opacity.value if show_cam else 0.0)
        if self.routing_map is not None:  # air (window value 0) stays uncoloured, as in plots.plot_routing_maps
            self.routing_image.set_data(np.ma.masked_where(self.views[self.window.value][z] <= 0, self.routing_map[z]))
        self.routing_image.set_alpha(self.opacity.value if routing_on else 0.0)
        self.show_routing.description = "routing map: ON" if routing_on else "routing map: off"
        self.show_routing.icon = "check-square" if routing_on else "square"
        self.show_routing.button_style = "info" if routing_on else ""
        self.expert_legend.set_visible(routing_on)
        self.cbar_axes.set_visible(show_cam)
        self._draw_outline(finding, z)

        layer = "routing map" if routing_on else (finding if has_cam else "")
        self.title_text.set_text(f"{self.title}   slice {z} of 0–{self.depth - 1}   {self.window.value} window"
                                 + (f"   {layer}" if layer else ""))
        note = "" if routing_on else self._cam_note(finding, z)
        self.note_text.set_text(note)
        self.note.value = f"<span style='color:#b00000'>{note}</span>" if note else ""
        buf = io.BytesIO()
        with _rc(), _no_crop():
            self.fig.savefig(buf, format="png")
        self.image.value = buf.getvalue()

    def _draw_outline(self, finding: str, z: int) -> None:
        if self._outline is not None:
            self._outline.remove()
            self._outline = None
        mask = self.masks.get(finding)
        show = mask is not None and self.show_outline.value and mask[z].any()
        if show:
            self._outline = self.axes.contour(mask[z].astype(float), levels=[0.5], colors=[OUTLINE_COLOUR],
                                              linewidths=1.2)
        self.outline_legend.set_visible(bool(show))


def _default_head(views: Mapping[str, np.ndarray]) -> np.ndarray:
    """Head mask from the bone window (floor -800 HU: everything but air) or else the first view."""
    view = views["bone"] if "bone" in views else next(iter(views.values()))
    return head_mask(view, threshold=0.0)


def _scroll_events(image, step):
    """Mouse wheel and arrow / page keys over the image move slices (needs the ipyevents extension)."""
    try:
        from ipyevents import Event
    except ImportError:  # the slider still works; ipyevents is a dependency, so this is a broken install
        return None
    events = Event(source=image, watched_events=["wheel", "keydown"], prevent_default_action=True, wait=40)

    def handle(event):
        if event.get("type") == "wheel":
            step(1 if event.get("deltaY", 0) > 0 else -1)
        elif event.get("key") in ("ArrowDown", "ArrowRight", "PageDown"):
            step(1)
        elif event.get("key") in ("ArrowUp", "ArrowLeft", "PageUp"):
            step(-1)

    events.on_dom_event(handle)
    return events


def _rc():
    import matplotlib.pyplot as plt

    return plt.rc_context(PAPER_RC)


def _no_crop():
    import matplotlib.pyplot as plt

    return plt.rc_context({"savefig.bbox": "standard"})
