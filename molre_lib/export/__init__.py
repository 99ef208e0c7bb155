"""A finished run in the ecosystem's formats: a MONAI bundle, a PEFT adapter folder, and a model card in each.

Where things happen: ``run_info.py`` (what a run folder says about itself), ``model_card.py`` (README.md with
Hugging Face front matter), ``bundle.py`` + ``bundle_runtime.py`` (the bundle and what it runs), ``peft_format.py``
(LoRA runs as PEFT adapters), ``licences.py`` (which backbone weights may be shipped), ``meta_schema.py``
(MONAI's metadata schema, for offline checks). ``export_run`` picks the writer from ``FORMATS``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .bundle import write_bundle
from .model_card import check_card, model_card
from .peft_format import peft_base_model, target_regex, write_peft
from .run_info import ExportError, RunInfo, read_run

# format name -> writer(info, out_dir, include_backbone) -> {file: what it is}
FORMATS: dict[str, Callable[[RunInfo, Path, bool], dict[str, str]]] = {
    "monai-bundle": write_bundle,
    "peft": write_peft,
}


def export_run(run_dir: str | Path, fmt: str, out: str | Path, include_backbone: bool = False) -> dict[str, str]:
    """Export a finished run folder to ``out`` in format ``fmt`` (a key of ``FORMATS``); returns {file: what}.

    Raises:
        ExportError: one line naming the file / field and what to do (the run is unfinished, a MoLRE run asked for
            PEFT, the licence forbids ``include_backbone``, ``out`` already holds files, ...).
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out {out} already holds files; export into a new or empty folder")
    info = read_run(run_dir)
    return FORMATS[fmt](info, out, include_backbone)


__all__ = ["FORMATS", "ExportError", "RunInfo", "check_card", "export_run", "model_card", "peft_base_model",
           "read_run", "target_regex", "write_bundle", "write_peft"]
