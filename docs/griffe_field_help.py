"""A griffe extension for the API pages: a dataclass field's ``metadata={"help": ...}`` becomes its docstring.

The workbook's config dataclasses (``MoLREConfig``, ``TrainConfig``, ``PreprocessConfig``, ...) document each
field once, in its ``help`` (which ``molre train --help`` also prints); with this extension the rendered API
reference shows the same text under each field instead of a bare signature. Loaded by mkdocs.yml
(``extensions: [docs/griffe_field_help.py]``).
"""
from __future__ import annotations

import ast
from typing import Any

from griffe import Attribute, Docstring, Extension


def field_help(node: ast.AST) -> str | None:
    """The ``help`` string of ``name: T = field(..., metadata={"help": "..."})``, else None."""
    value = getattr(node, "value", None)
    if not isinstance(value, ast.Call) or getattr(value.func, "id", getattr(value.func, "attr", None)) != "field":
        return None
    for keyword in value.keywords:
        if keyword.arg == "metadata" and isinstance(keyword.value, ast.Dict):
            for key, item in zip(keyword.value.keys, keyword.value.values):
                if isinstance(key, ast.Constant) and key.value == "help" and isinstance(item, ast.Constant):
                    return str(item.value)
    return None


def field_default(node: ast.AST) -> str | None:
    """The default of ``name: T = field(default=X, ...)`` as source (``factory()`` for ``default_factory=factory``),
    else None: the page shows ``= X``, not the whole ``field(...)`` call with the help text a second time."""
    value = getattr(node, "value", None)
    if not isinstance(value, ast.Call) or getattr(value.func, "id", getattr(value.func, "attr", None)) != "field":
        return None
    for keyword in value.keywords:
        if keyword.arg == "default":
            return ast.unparse(keyword.value)
        if keyword.arg == "default_factory":
            return f"{ast.unparse(keyword.value)}()"
    return None


class FieldHelp(Extension):
    def on_attribute_instance(self, *, node: Any, attr: Attribute, agent: Any, **kwargs: Any) -> None:
        if attr.docstring is None and isinstance(node, ast.AST) and (text := field_help(node)):
            attr.docstring = Docstring(text, parent=attr)
            if (default := field_default(node)) is not None:
                attr.value = default
