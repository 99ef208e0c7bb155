"""Paper figures and tables for the notebooks.

Plot functions take DataFrames / arrays and return a matplotlib Figure; nothing here writes files except
:func:`save_figure` (PDF + SVG + PNG at 300 dpi) and :func:`save_table` (CSV + LaTeX booktabs), which both
refuse DICOM patient identifiers. Call :func:`use_paper_style` once per notebook.

Modules: ``style`` (rcParams, category colours, export), ``tables`` (tables, identifier guard),
``data`` (prevalence, co-occurrence), ``images`` (windowed slices, CAM and routing overlays),
``results`` (training curves, forest, ΔAUC, calibration, confidence regimes, summary), ``routing``,
``latex`` (:class:`PaperTable`: journal-ready LaTeX + machine-named CSV) and ``paper_tables`` (the main,
per-category and top-findings tables).
"""
from molre_lib.plots import names  # noqa: F401 - plots.names.finding_name
from molre_lib.plots.latex import Column, PaperTable, save_paper_table
from molre_lib.plots.paper_tables import (
    auc_summary_table,
    category_table,
    findings_table,
    main_table,
    method_name,
    per_finding_table,
)
from molre_lib.plots.data import cooccurrence_matrix, plot_cooccurrence, plot_prevalence, prevalence_table
from molre_lib.plots.images import (
    WINDOW_PRESETS,
    expert_colormap,
    plot_cam_overlay,
    plot_cam_panel,
    plot_routing_maps,
    plot_slice_gallery,
    show_cam,
    show_routing,
    window,
)
from molre_lib.plots.results import (
    plot_confidence_shift,
    plot_delta_auc,
    plot_forest,
    plot_reliability,
    plot_summary,
    plot_training_curves,
    significance_mark,
)
from molre_lib.plots.routing import (
    plot_expert_specialisation,
    plot_expert_usage,
    plot_gate_entropy,
    plot_gates_by_finding,
    short_layer_names,
)
from molre_lib.plots.style import (
    CATEGORY_COLOURS,
    MIN_POSITIVES,
    PAPER_RC,
    category_colour,
    paper_style,
    save_figure,
    use_paper_style,
)
from molre_lib.plots.tables import (
    DICOM_IDENTIFIER_KEYWORDS,
    check_no_identifiers,
    identifier_columns,
    plot_table,
    save_table,
)

__all__ = [name for name in dir() if not name.startswith("_")]
