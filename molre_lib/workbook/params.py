"""Validation of the notebooks' ``parameters`` cells.

Papermill injects overrides *after* the parameters cell and only warns about names the notebook
does not declare. Each notebook's next cell therefore calls

    P = check_parameters("01_train", globals())
    globals().update(P)   # path parameters now absolute, from the workbook root

which fails loudly, listing every problem at once: an unknown UPPER_CASE name (a typo such as
``-p EPOCH 3``), a missing one, a wrong type, or a value outside the allowed set; a misspelt name,
choice or finding key names its closest match. Path parameters come back absolute (relative ones are
taken from the workbook root, see :mod:`molre_lib.workbook.paths`). The schema of
each notebook lives here; ``tests/test_notebooks.py`` checks that it names exactly the
parameters of the notebook's parameters cell.
"""
from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

PARAM_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class ParameterError(ValueError):
    """One or more notebook parameters are unknown, missing or invalid."""


@dataclass(frozen=True)
class Param:
    types: tuple[type, ...]
    choices: Optional[Callable[[], Sequence[Any]] | Sequence[Any]] = None
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns the reason a value is bad, or None
    nullable: bool = False
    path: bool = False  # a file or folder: the validation cell resolves it (molre_lib.workbook.paths)


def _backbones() -> list[str]:
    from molre_lib.backbones import list_backbones

    return [spec.name for spec in list_backbones()]


def _findings() -> list[str]:
    from molre_lib.data.taxonomy import FINDING_KEYS

    return list(FINDING_KEYS)


def _train_choices(name: str) -> tuple[str, ...]:
    from molre_lib.engine import config as train_config

    return getattr(train_config, name)


def did_you_mean(value: Any, choices: Sequence[Any]) -> str:
    """' (did you mean 'x'?)' for the closest of ``choices`` to a misspelt string, else ''."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def finding_list(v: Any) -> Optional[str]:
    """A non-empty list of taxonomy finding keys; a misspelt key names its closest match."""
    if reason := str_list(v):
        return reason
    if not v:
        return "must name at least one finding"
    keys = _findings()
    bad = [f"{f!r}{did_you_mean(f, keys)}" for f in v if f not in keys]
    return f"unknown finding key(s) {', '.join(bad)}; keys are listed in data_manifests/findings.csv" if bad else None


def attribution_methods(v: Any) -> Optional[str]:
    """A non-empty list of attribution methods scored by 04 (molre_lib.analysis.explain.ATTRIBUTIONS)."""
    if reason := str_list(v):
        return reason
    known = ("gradcam", "occlusion")
    bad = [f"{m!r}{did_you_mean(m, known)}" for m in v if m not in known]
    if not v or bad:
        return f"must name methods among {list(known)}" + (f"; unknown {', '.join(bad)}" if bad else "")
    return None


def positive(v: Any) -> Optional[str]:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> Optional[str]:
    return None if v >= 0 else "must be >= 0"


def _shape(v: Any, axes: str) -> Optional[str]:
    ok = isinstance(v, (list, tuple)) and len(v) == len(axes) and all(isinstance(x, int) and x > 0 for x in v)
    return None if ok else f"must be a list of {len(axes)} positive integers [{', '.join(axes)}]"


def shape3(v: Any) -> Optional[str]:
    return _shape(v, "DHW")


def shape2(v: Any) -> Optional[str]:
    return _shape(v, "HW")


def split_fractions(v: Any) -> Optional[str]:
    ok = (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) and x >= 0 for x in v)
          and sum(v) > 0)
    return None if ok else "must be 3 non-negative fractions [train, val, test] with a positive sum"


def str_list(v: Any) -> Optional[str]:
    return None if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) else "must be a list of strings"


def fraction(v: Any) -> Optional[str]:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def device(v: Any) -> Optional[str]:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v) else "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


INT, FLOAT, STR, BOOL, LIST = (int,), (int, float), (str,), (bool,), (list, tuple)

SCHEMAS: dict[str, dict[str, Param]] = {
    "00_data": {
        "MANIFEST": Param(STR, path=True),
        "DATA_ROOT": Param(STR, path=True),
        "OUT_DIR": Param(STR, path=True),
        "N_SCANS": Param(INT, check=positive),
        "SHAPE": Param(LIST, check=shape3),
        "SEED": Param(INT, check=non_negative),
        "LABEL_NOISE": Param(FLOAT, check=fraction),
        "PREVALENCE_SCALE": Param(FLOAT, check=positive),
        "SPLITS": Param(LIST, check=split_fractions),
        "LABELS_FROM": Param(STR, choices=("manifest", "reports")),
        "REPORTS": Param(STR, path=True),
        "REPORT_UNCERTAIN": Param(STR, choices=("positive", "negative", "unknown")),
        "REPORT_UNMENTIONED": Param(STR, choices=("negative", "unknown")),
        "FIGURES_DIR": Param(STR, path=True),
    },
    "00_labels": {
        "REPORTS": Param(STR, path=True),
        "ID_COLUMN": Param(STR),
        "TEXT_COLUMN": Param(STR),
        "GOLD": Param(STR, path=True),
        "N_SYNTHETIC": Param(INT, check=positive),
        "UNCERTAIN": Param(STR, choices=("keep", "positive", "negative")),
        "SAMPLE": Param(INT, check=non_negative),
        "N_BOOT": Param(INT, check=non_negative),
        "SEED": Param(INT, check=non_negative),
        "OUT_DIR": Param(STR, path=True),
        "FIGURES_DIR": Param(STR, path=True),
    },
    "01_train": {
        "BACKBONE": Param(STR, choices=_backbones),
        "ADAPTER": Param(STR, choices=lambda: _train_choices("ADAPTERS")),
        "RANK": Param(INT, check=positive),
        "N_EXPERTS": Param(INT, check=positive),
        "SHARED_A": Param(BOOL),
        "LORA_ALPHA": Param(FLOAT, check=positive, nullable=True),
        "SCALING": Param(STR, choices=lambda: tuple(_train_choices("SCALING_RULES"))),
        "ROUTER": Param(STR, choices=lambda: _train_choices("ROUTERS")),
        "TEMPERATURE": Param(FLOAT, check=positive),
        "TOP_K": Param(INT, check=positive, nullable=True),
        "BALANCE_COEF": Param(FLOAT, check=non_negative),
        "EPOCHS": Param(INT, check=positive),
        "MAX_STEPS": Param(INT, check=non_negative),
        "LR": Param(FLOAT, check=positive),
        "BATCH_SIZE": Param(INT, check=positive),
        "MANIFEST": Param(STR, path=True),
        "DATA_ROOT": Param(STR, path=True),
        "TEST_SPLIT": Param(STR, choices=("test", "")),
        "VOLUME_SHAPE": Param(LIST, check=lambda v: None if not v else shape3(v)),
        "IMAGE_SIZE": Param(LIST, check=lambda v: None if not v else shape2(v)),
        "RUN_DIR": Param(STR, path=True),
        "CACHE_DIR": Param(STR, path=True),
        "DEVICE": Param(STR, check=device),
        "AMP": Param(STR, choices=lambda: _train_choices("AMP")),
        "GRAD_CHECKPOINTING": Param(BOOL),
        "SEED": Param(INT, check=non_negative),
        "NUM_WORKERS": Param(INT, check=non_negative),
        "THREADS": Param(INT, check=non_negative),
        "PRETRAINED": Param(BOOL),
        "REDUCED": Param(BOOL),
        "EVAL_BOOTSTRAP": Param(INT, check=non_negative),
        "FIGURES_DIR": Param(STR, path=True),
    },
    "02_routing": {
        "RUN_DIR": Param(STR, path=True),
        "SPLIT": Param(STR, choices=("train", "val", "test")),
        "MAX_SCANS": Param(INT, check=positive),
        "TOKEN_SCANS": Param(INT, check=positive),
        "PERMUTATIONS": Param(INT, check=positive),
        "LAYER": Param(STR),
        "DEVICE": Param(STR, check=device),
        "FIGURES_DIR": Param(STR, path=True),
    },
    "03_per_finding_auc": {
        "RUN_DIRS": Param(LIST, check=str_list, path=True),
        "SPLIT": Param(STR, choices=("val", "test")),
        "BOOTSTRAP": Param(INT, check=non_negative),
        "SEED": Param(INT, check=non_negative),
        "MIN_POSITIVES": Param(INT, check=positive),
        "OUT_DIR": Param(STR, path=True),
        "FIGURES_DIR": Param(STR, path=True),
    },
    "04_gradcam": {
        "RUN_DIR": Param(STR, path=True),
        "REFERENCE_RUN_DIR": Param(STR, path=True),
        "FINDINGS": Param(LIST, check=finding_list),
        "SPLIT": Param(STR, choices=("train", "val", "test")),
        "N_EXAMPLES": Param(INT, check=positive),
        "MAX_SCANS": Param(INT, check=positive),
        "METHODS": Param(LIST, check=attribution_methods),
        "MARGIN_MM": Param(FLOAT, check=non_negative),
        "BOOTSTRAP": Param(INT, check=positive),
        "CAM_SCALE": Param(STR, choices=("volume", "slice")),
        "DEVICE": Param(STR, check=device),
        "FIGURES_DIR": Param(STR, path=True),
    },
    "05_summary": {
        "SWEEP_DIR": Param(STR, path=True),
        "BOOTSTRAP": Param(INT, check=non_negative),
        "SEED": Param(INT, check=non_negative),
        "REFERENCE": Param(STR),
        "FIGURES_DIR": Param(STR, path=True),
    },
}


def _imported(name: str, value: Any) -> bool:
    """True for a constant imported from a module (e.g. ``FINDING_KEYS``): not a parameter.

    Only containers and objects count: a small int or short string is one shared object in CPython, so
    ``MIN_POSITIVES = 5`` in a parameters cell *is* ``plots.style.MIN_POSITIVES`` and identity says nothing."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return False
    missing = object()
    return any(getattr(mod, name, missing) is value for mod_name, mod in list(sys.modules.items())
               if mod is not None and mod_name.split(".")[0] in ("molre_lib", "torch", "numpy", "pandas", "matplotlib"))


def value_problem(name: str, param: Param, value: Any) -> Optional[str]:
    """Why ``value`` is not allowed for parameter ``name`` (type, choices, range), or None."""
    if value is None and param.nullable:
        return None
    if not isinstance(value, param.types) or (isinstance(value, bool) and bool not in param.types):
        expected = " or ".join(t.__name__ for t in param.types)
        return f"{name}={value!r}: expected {expected}, got {type(value).__name__}"
    choices = param.choices() if callable(param.choices) else param.choices
    if choices is not None and value not in choices:
        return f"{name}={value!r}: must be one of {list(choices)}{did_you_mean(value, choices)}"
    if param.check is not None and (reason := param.check(value)):
        return f"{name}={value!r}: {reason}"
    return None


def given_parameter_problems(notebook: str, values: Mapping[str, Any]) -> list[str]:
    """Problems of the parameters a caller injects (a sweep, papermill -p): unknown names and bad values;
    names not given keep the notebook's defaults. Empty for a notebook without a schema."""
    schema = SCHEMAS.get(notebook)
    if schema is None:
        return []
    problems = [f"unknown parameter {name}={value!r}{did_you_mean(name, list(schema))}"
                for name, value in values.items() if name not in schema]
    problems += [p for name, value in values.items() if name in schema
                 and (p := value_problem(name, schema[name], value))]
    return problems


def check_parameters(notebook: str, namespace: Mapping[str, Any], resolve: bool = True) -> dict[str, Any]:
    """Validate a notebook's parameters in ``namespace`` (its ``globals()``); return them as a dict, with the
    path parameters made absolute by the workbook rule (:mod:`molre_lib.workbook.paths`) unless ``resolve``
    is False. The validation cell puts them back with ``globals().update(P)``."""
    if notebook not in SCHEMAS:
        raise KeyError(f"no parameter schema for notebook {notebook!r}; known: {sorted(SCHEMAS)}")
    schema = SCHEMAS[notebook]
    problems = []
    present = {name for name in namespace if PARAM_NAME.fullmatch(name) and not _imported(name, namespace[name])}
    for name in sorted(present - set(schema)):
        problems.append(f"unknown parameter {name}={namespace[name]!r}{did_you_mean(name, list(schema))} "
                        f"(this notebook takes: {', '.join(schema)})")
    for name in sorted(set(schema) - present):
        problems.append(f"missing parameter {name}: the parameters cell must define it")
    for name, param in schema.items():
        if name in namespace and (problem := value_problem(name, param, namespace[name])):
            problems.append(problem)
    if problems:
        raise ParameterError(f"{notebook}: {len(problems)} parameter problem(s):\n  - " + "\n  - ".join(problems))
    params = {name: namespace[name] for name in schema}
    if resolve:
        from .paths import resolve_paths

        names = path_parameters(notebook)
        params.update(zip(names, resolve_paths(*(params[n] for n in names))))
    return params


def path_parameters(notebook: str) -> list[str]:
    """The parameters of ``notebook`` that are paths (its validation cell resolves exactly these)."""
    return [name for name, param in SCHEMAS[notebook].items() if param.path]


def train_config(params: Mapping[str, Any]):
    """The ``TrainConfig`` of a validated 01_train parameter set (empty paths mean "default")."""
    from molre_lib.engine.config import TrainConfig

    skip = {"RUN_DIR", "FIGURES_DIR"}
    kwargs = {name.lower(): value for name, value in params.items() if name not in skip}
    for key in ("data_root", "cache_dir", "volume_shape", "image_size"):
        kwargs[key] = kwargs[key] or None
    return TrainConfig(**kwargs)
