"""Synthetic head-CT phantom: a subject with true labels, finding masks and a CT-like image in HU.

``make_subject(seed, cfg)`` builds a head in millimetres (``phantom_anatomy``), samples which of
the 75 findings it has (``phantom_labels``), draws each one (``phantom_findings_*``) and
rasterises to ``cfg.shape`` with slice-thickness partial-volume averaging, a scanner "site"
(noise, kernel sharpness) and, optionally, noisy and partly unknown report labels.
``present=`` / ``side=`` re-render the same subject with a finding removed, forced or moved.

Axes follow the workbook contract: (D, H, W) = inferior->superior, anterior->posterior,
patient right->left; ``origin`` is the LPS position (x, y, z) mm of voxel (0, 0, 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from molre_lib.common.config_keys import check_known_keys
from . import phantom_findings_acute, phantom_findings_other  # noqa: F401  (register signatures)
from .phantom_anatomy import Anatomy, Mods, render_anatomy
from .phantom_geometry import Canvas, rotation
from .phantom_labels import apply_presence, sample_labels
from .phantom_signatures import LATERALISED, MODIFIERS, PAINT_ORDER, SIGNATURES, Ctx
from .taxonomy import CATEGORY_OF, FINDING_KEYS, INDEX_OF, PARENTS

SIDES = {"left": 1, "right": -1, 1: 1, -1: -1}


@dataclass
class PhantomConfig:
    """How phantom scans are rasterised and labelled."""

    shape: tuple[int, int, int] = field(default=(24, 64, 64), metadata={"help": "output (D, H, W) voxels"})
    fov_mm: tuple[float, float, float] = field(
        default=(160.0, 230.0, 230.0), metadata={"help": "field of view (z, y, x) mm; covers the whole head"})
    spacing: tuple[float, float, float] | None = field(
        default=None, metadata={"help": "(dz, dy, dx) mm; overrides fov_mm (fov = shape * spacing)"})
    slice_thickness_mm: float | None = field(
        default=None, metadata={"help": "reconstructed slice thickness (partial-volume slab); None = dz"})
    pv_subsamples: int = field(default=2, metadata={"help": "minimum sub-slices averaged per slice thickness"})
    max_subslice_mm: float = field(default=4.0, metadata={
        "help": "sub-slices are at most this far apart, so small findings are never missed between them"})
    n_sites: int = field(default=3, metadata={"help": "number of scanner sites (noise / kernel settings)"})
    site_noise_hu: tuple[float, ...] = field(default=(3.0, 5.0, 7.0), metadata={"help": "noise SD per site"})
    site_sharpness: tuple[float, ...] = field(
        default=(-0.7, 0.0, 0.5), metadata={"help": "<0 soft kernel (blur sigma, voxels), >0 sharp (unsharp)"})
    label_noise: float = field(default=0.0, metadata={
        "help": "report-label noise: a positive is missed with this probability, a negative called positive "
                "with 2% of it"})
    unknown_fraction: float = field(default=0.0, metadata={"help": "fraction of labels reported as unknown"})
    prevalence_scale: float = field(default=1.0, metadata={"help": "multiplies every finding probability"})

    @classmethod
    def from_dict(cls, d: dict) -> "PhantomConfig":
        check_known_keys(cls, d)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def voxel_spacing(self) -> tuple[float, float, float]:
        if self.spacing is not None:
            return tuple(float(s) for s in self.spacing)  # type: ignore[return-value]
        return tuple(f / n for f, n in zip(self.fov_mm, self.shape))  # type: ignore[return-value]


@dataclass
class PhantomSubject:
    """One synthetic scan. ``labels`` are true; ``reported`` are what a (noisy) report says (None = unknown)."""

    hu: np.ndarray                      # (D, H, W) float32 HU
    spacing: tuple[float, float, float]  # (dz, dy, dx) mm
    origin: tuple[float, float, float]   # LPS (x, y, z) mm of voxel (0, 0, 0)
    labels: dict[str, int]
    reported: dict[str, int | None]
    masks: dict[str, np.ndarray]        # key -> (D, H, W) bool, for every present finding
    sides: dict[str, str]               # lateralised present findings -> "left" / "right"
    site: int
    age: float
    seed: int
    patient_seed: int

    def label_vector(self, reported: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(labels (75,), mask (75,)) float32 in taxonomy order."""
        src = self.reported if reported else self.labels
        lab = np.array([src[k] or 0 for k in FINDING_KEYS], np.float32)
        mask = np.array([src[k] is not None for k in FINDING_KEYS], np.float32)
        return lab, mask


def _slabs(z_out: np.ndarray, thickness: float, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine z grid and, per output slice, the [lo, hi) range of fine slices inside its slab."""
    fine = np.arange(z_out[0] - thickness / 2 + step / 2, z_out[-1] + thickness / 2, step)
    inside = np.abs(fine[None, :] - z_out[:, None]) <= thickness / 2 + 1e-6     # (D, F)
    lo = inside.argmax(1)
    return fine, lo, lo + inside.sum(1)


def _slab_mean(a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of fine slices a[lo:hi] for every output slice: (F, H, W) -> (D, H, W)."""
    return np.stack([a[i:j].mean(0) for i, j in zip(lo, hi)]).astype(np.float32)


def _slab_any(m: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack([m[i:j].any(0) for i, j in zip(lo, hi)])


def make_subject(seed: int, cfg: PhantomConfig | None = None, present: dict[str, bool] | None = None,
                 side: dict[str, str | int] | None = None, patient_seed: int | None = None) -> PhantomSubject:
    """Render one phantom scan, deterministic in (seed, patient_seed, cfg, present, side).

    Args:
        seed: the scan's seed (findings, noise, scanner).
        cfg: shape, spacing, noise, label noise, ... (default ``PhantomConfig()``).
        present: force findings on (True) or off (False) by key; everything else stays identical.
        side: put a lateralised finding on the patient's ``"left"`` or ``"right"``.
        patient_seed: anatomy seed (defaults to ``seed``); scans of one patient share it.

    Returns:
        A :class:`PhantomSubject`: ``hu`` (D, H, W) float32 HU, ``spacing`` (dz, dy, dx) mm, true ``labels``,
        ``reported`` labels (noisy, None = unknown), ``masks`` (key -> (D, H, W) bool for every present finding).

    Example:
        ```python
        s = make_subject(42, PhantomConfig(shape=(24, 64, 64)))
        left = make_subject(42, present={"epidural_hematoma": True}, side={"epidural_hematoma": "left"})
        ```
    """
    # ~70 lines in sections (grid, findings, slabs, scanner) that share the same arrays; kept as one function so
    # the generators' draws stay in one visible order, which defines every seed's phantom.
    cfg = cfg or PhantomConfig()
    patient_seed = seed if patient_seed is None else patient_seed
    a = Anatomy.sample(np.random.default_rng([patient_seed, 11]))
    labels = sample_labels(np.random.default_rng([seed, 12]), a.age, cfg.prevalence_scale)
    if present:
        labels = apply_presence(labels, present)
    rs = np.random.default_rng([seed, 13])
    main_side = int(rs.choice([-1, 1]))
    site_pt = np.array([main_side * rs.uniform(24, 36), rs.uniform(-28, 18), rs.uniform(14, 30)])
    side = {k: SIDES[v] for k, v in (side or {}).items()}
    for k in side:
        if k not in LATERALISED:
            raise ValueError(f"finding {k!r} is not lateralised; side= applies to {sorted(LATERALISED)}")

    # ---- grid: fine z for partial-volume slabs, output in-plane grid
    d, h, w = cfg.shape
    dz, dy, dx = cfg.voxel_spacing
    thick = float(cfg.slice_thickness_mm or dz)
    z_out = 16.0 + (np.arange(d) - (d - 1) / 2) * dz
    y_ax = (np.arange(h) - (h - 1) / 2) * dy
    x_ax = (np.arange(w) - (w - 1) / 2) * dx
    n_sub = max(cfg.pv_subsamples, 1, int(np.ceil(min(dz, thick) / cfg.max_subslice_mm)))
    fine, lo, hi = _slabs(z_out, thick, min(dz, thick) / n_sub)
    c = Canvas(fine, y_ax, x_ax, a.scale, rotation(a.yaw, a.pitch, a.roll), a.shift)

    # ---- findings: contexts, anatomy modifiers, anatomy, painters
    todo = [k for k in FINDING_KEYS if labels[k] and k not in PARENTS]
    ctxs = {}
    for k in todo:
        own = np.random.default_rng([seed, 100 + INDEX_OF[k]])
        own_side = int(own.choice([-1, 1]))
        default = own_side if CATEGORY_OF[k] == "chronic" else main_side
        ctxs[k] = Ctx(c, a, own, side.get(k, default), k, site_pt)
    mods = Mods()
    for k in todo:
        if k in MODIFIERS:
            MODIFIERS[k](mods, ctxs[k])
    render_anatomy(c, a, mods)
    for k in sorted(todo, key=lambda k: (PAINT_ORDER[k], INDEX_OF[k])):
        SIGNATURES[k](ctxs[k])
    for parent in ("subdural_hematoma", "intracranial_hemorrhage"):
        kids = [c.masks[k] for k in PARENTS[parent] if k in c.masks]
        if labels[parent] and kids:
            c.masks[parent] = np.logical_or.reduce(kids)

    # ---- partial volume over each slab, scanner kernel and noise
    hu = _slab_mean(c.hu, lo, hi)                                        # (D, H, W)
    masks = {k: _slab_any(m, lo, hi) for k, m in c.masks.items()}
    rn = np.random.default_rng([seed, 14])
    site = int(rn.integers(cfg.n_sites))
    sharp = cfg.site_sharpness[site % len(cfg.site_sharpness)]
    hu = hu + rn.normal(0.0, cfg.site_noise_hu[site % len(cfg.site_noise_hu)], hu.shape).astype(np.float32)
    if sharp < 0:
        hu = ndimage.gaussian_filter(hu, sigma=(0, -sharp, -sharp))
    elif sharp > 0:
        hu = hu + sharp * (hu - ndimage.gaussian_filter(hu, sigma=(0, 1.0, 1.0)))
    hu = np.clip(hu, -1024.0, 3071.0).astype(np.float32)

    return PhantomSubject(
        hu=hu, spacing=(dz, dy, dx), origin=(float(x_ax[0]), float(y_ax[0]), float(z_out[0])), labels=labels,
        reported=report_labels(labels, cfg, seed), masks=masks,
        sides={k: ("left" if ctxs[k].s > 0 else "right") for k in todo if k in LATERALISED},
        site=site, age=a.age, seed=seed, patient_seed=patient_seed)


def report_labels(labels: dict[str, int], cfg: PhantomConfig, seed: int) -> dict[str, int | None]:
    """Report-derived labels: misses, rare false calls and unknowns, deterministic per seed."""
    rng = np.random.default_rng([seed, 15])
    u_flip, u_unknown = rng.random(len(FINDING_KEYS)), rng.random(len(FINDING_KEYS))
    out: dict[str, int | None] = {}
    for i, k in enumerate(FINDING_KEYS):
        p = cfg.label_noise if labels[k] else cfg.label_noise * 0.02
        value = 1 - labels[k] if u_flip[i] < p else labels[k]
        out[k] = None if u_unknown[i] < cfg.unknown_fraction else value
    return out


def counterfactual(seed: int, key: str, cfg: PhantomConfig | None = None,
                   side: str | None = None) -> tuple[PhantomSubject, PhantomSubject]:
    """The same subject with finding ``key`` forced present (optionally on ``side``) and with it removed.

    Returns:
        ``(with_finding, without)``: two :class:`PhantomSubject` that differ only by the finding.
    """
    sides = {key: side} if side else None
    return (make_subject(seed, cfg, present={key: True}, side=sides),
            make_subject(seed, cfg, present={key: False}))
